//! Feeds arbitrary bytes to the HTTP request parser as one connection's read buffer: every
//! complete request is answered (serialized) and parsing continues on the rest, as the reactor
//! does with pipelined requests. It proves that no input panics, that `consumed` never exceeds
//! the buffer, and that a complete request always occupies at least one byte.
#![no_main]

use herald_core::server::http::{parse, HttpError, Limits, Method, Parsed, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut offset = 0;
    let mut out = Vec::new();
    loop {
        let rest = &data[offset..];
        match parse(rest, &limits) {
            Ok(Parsed::Complete { request, consumed }) => {
                assert!(consumed <= rest.len(), "consumed {consumed} of {} bytes", rest.len());
                assert!(consumed > 0, "a complete request occupies bytes");
                assert!(request.body.len() <= limits.max_body_bytes);
                offset += consumed;
                let response = Response::json(200, request.body.clone()).with_header("x-path", request.path.clone());
                // Keep parsing even after `connection: close`, to reach more pipelined requests.
                response.write_to(&mut out, request.keep_alive, request.method == Method::Head);
            }
            Ok(Parsed::Partial { .. }) => break,
            Err(error) => {
                write_error(&error, &mut out);
                break;
            }
        }
    }
});

/// The reactor answers a parse error and closes: the error body must serialize too.
fn write_error(error: &HttpError, out: &mut Vec<u8>) {
    let status = error.status();
    assert!(matches!(status, 400 | 413 | 431 | 501 | 505), "unexpected status {status}");
    error.to_response().write_to(out, false, false);
}
