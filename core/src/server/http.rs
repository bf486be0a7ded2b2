//! Sans-IO HTTP/1.1 for Herald's server: bytes in, [`Request`]s out; [`Response`]s to bytes.
//!
//! # What this module owns
//! The wire format of HTTP/1.0 and HTTP/1.1 requests and responses, nothing else: no sockets, no
//! clock, no routing, no JSON beyond the error body. The reactor owns each connection's read
//! buffer and calls [`parse`] on it; it owns the write buffer and calls [`Response::write_to`].
//! The request head is tokenised by `httparse`; framing, limits, target decoding and the
//! connection rules are decided here.
//!
//! # Limits
//! Every byte a client can make the server hold is bounded by [`Limits`]:
//! - `max_header_bytes` (16 KiB): the request line and header block, up to and including the
//!   empty line. It is enforced while the head is still incomplete: once the buffer holds more
//!   than the limit without the end of the head, [`parse`] fails with
//!   [`HttpError::HeadersTooLarge`] instead of asking for more.
//! - `max_headers` (64): header fields per request.
//! - `max_body_bytes` (1 MiB): the request body. A `Content-Length` above it fails as soon as the
//!   head is complete, before any of the body arrives. A chunked body fails as soon as a chunk
//!   size would take the decoded total over it. The chunked framing itself (size lines,
//!   extensions, CRLFs, trailers) is metadata and is bounded by `max_header_bytes`, so the raw
//!   chunked body never exceeds `max_body_bytes + max_header_bytes`.
//!
//! The reactor can therefore cap a connection's read buffer at
//! `max_header_bytes + max_body_bytes + max_header_bytes` (head, body, chunk framing): a buffer
//! that reaches that size always makes [`parse`] return a request or an error.
//!
//! # Pipelining contract
//! [`parse`] is stateless. It looks at the start of the buffer and returns either
//! [`Parsed::Partial`] (nothing consumed: call again with the same bytes plus more) or
//! [`Parsed::Complete`] with `consumed`, the number of bytes the request occupied, head and
//! body (for a chunked body: up to and including the final empty line after the trailers).
//! `consumed` is never greater than `buffer.len()`. The caller answers the request, then calls
//! [`parse`] again on `&buffer[consumed..]`, which may already hold the next pipelined request,
//! and answers requests in the order they were parsed. Empty lines before a request line are
//! skipped and counted in `consumed`.
//!
//! # Cost of a call
//! Each call re-reads the head (at most `max_header_bytes`) and, for a chunked body, the chunk
//! framing (also at most `max_header_bytes`); chunk data is skipped, not scanned, until the body
//! is complete, and the body is copied once, into [`Request::body`]. A caller should call
//! [`parse`] after each read that added bytes, not in a loop on the same bytes.
//!
//! # Failure modes: every error closes the connection
//! Any [`HttpError`] means the byte stream can no longer be trusted to be framed correctly. The
//! caller writes [`HttpError::to_response`] with `keep_alive = false` (that response says
//! `connection: close`), stops reading from the connection and closes it once the response is
//! flushed; it never calls [`parse`] again on that buffer. Each error maps to a status
//! ([`HttpError::status`]) and a code of the protocol's JSON error body ([`HttpError::code`]):
//! `invalid_request` for 400, 501 and 505, `too_large` for 413 and 431.
//!
//! # `Expect: 100-continue`
//! When an HTTP/1.1 head asks for it and its body has not fully arrived, [`parse`] returns
//! `Parsed::Partial { expect_continue: true }`; the caller writes [`CONTINUE_RESPONSE`] once for
//! that request and keeps reading. A head that fails a check (a `Content-Length` over the limit,
//! say) fails at once, so such a client gets its final status instead of a 100.
//!
//! # What is deliberately not done
//! - No `Date` header, no compression, no response chunking: responses are whole [`Bytes`].
//! - No dot-segment normalisation of the path (`/v1/../x` stays as is and matches no route).
//! - The absolute form `http://host/path` is accepted and reduced to its path; the authority
//!   form (`CONNECT`) is rejected; `*` is accepted for `OPTIONS` only.
//! - An HTTP/1.1 request must carry exactly one `Host` header (RFC 9112 §3.2); its value is not
//!   checked.

use bytes::Bytes;

/// What a server writes before reading the body of a request that sent
/// `Expect: 100-continue` (see [`Parsed::Partial`]).
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How many header slots live on the stack; a larger `max_headers` uses a heap vector.
const INLINE_HEADER_SLOTS: usize = 64;

/// Bounds on what one request may make the server buffer. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header block, including the final empty line.
    pub max_header_bytes: usize,
    /// Header fields per request.
    pub max_headers: usize,
    /// Request body after chunked decoding (`server.max_body_bytes` in the config).
    pub max_body_bytes: usize,
}

impl Limits {
    /// 16 KiB of head, 64 headers, 1 MiB of body.
    pub const DEFAULT: Limits = Limits { max_header_bytes: 16 * 1024, max_headers: 64, max_body_bytes: 1024 * 1024 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A request method. Methods are case-sensitive: `get` is `Other("get")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
    /// Any other token, as sent.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

/// The protocol version of a request. Responses are always written as HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

/// One parsed request, owning its data (it does not borrow the read buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target exactly as sent (`/v1/events?limit=5`), for logs; see
    /// [`Request::raw_path`] for routing on undecoded segments.
    pub target: String,
    /// The percent-decoded path, without query or fragment. `+` stays `+`.
    pub path: String,
    /// Query pairs in order, percent-decoded, `+` read as a space; `a` alone gives `("a", "")`.
    pub query: Vec<(String, String)>,
    pub version: Version,
    /// Header fields in order; names lowercased, values trimmed of surrounding spaces and tabs.
    pub headers: Vec<(String, String)>,
    /// The body, decoded if it was chunked; empty when the request had none.
    pub body: Bytes,
    /// Whether the client wants the connection kept after the response: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive` (and no `close`).
    pub keep_alive: bool,
    /// The lowercased `Upgrade` header (`websocket`) when an HTTP/1.1 request's `Connection`
    /// header lists `upgrade`; `None` otherwise.
    pub upgrade: Option<String>,
}

impl Request {
    /// The first header with this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// Every header with this name (any case), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The first query parameter with this (decoded) name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The path as sent, before percent-decoding (no query, no fragment, no `http://host`). A
    /// router splits this on `/` and decodes each segment with [`percent_decode`], so that an id
    /// containing `%2F` stays one segment.
    pub fn raw_path(&self) -> &str {
        split_target(&self.target, &self.method).map_or(self.target.as_str(), |(raw_path, _)| raw_path)
    }
}

/// The outcome of [`parse`] on the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request occupying `buffer[..consumed]`.
    Complete { request: Request, consumed: usize },
    /// More bytes are needed; nothing was consumed. `expect_continue` is true when the head is
    /// complete and valid, it is HTTP/1.1 with `Expect: 100-continue`, and its body has not fully
    /// arrived: write [`CONTINUE_RESPONSE`] once for this request.
    Partial { expect_continue: bool },
}

/// Why a request was refused. After any of these the connection must be closed (module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line or a header line is not valid HTTP/1.x syntax.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A version other than HTTP/1.0 and HTTP/1.1.
    #[error("HTTP version not supported: only HTTP/1.0 and HTTP/1.1 are")]
    UnsupportedVersion,
    /// The head is longer than `max_header_bytes`.
    #[error("request head exceeds {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// More than `max_headers` header fields.
    #[error("request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    /// A `Content-Length` that is not a decimal number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: the framing is ambiguous.
    #[error("request has both Content-Length and Transfer-Encoding")]
    LengthWithTransferEncoding,
    /// A transfer coding other than a single `chunked`.
    #[error("unsupported Transfer-Encoding: only chunked is supported")]
    UnsupportedTransferEncoding,
    /// A chunked body whose framing is broken.
    #[error("malformed chunked body: {0}")]
    InvalidChunked(&'static str),
    /// The body (decoded) is, or announces it will be, over `max_body_bytes`.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// Chunk size lines, extensions and trailers together exceed `max_header_bytes`.
    #[error("chunked body framing exceeds {limit} bytes")]
    ChunkFramingTooLarge { limit: usize },
    /// A `%` not followed by two hex digits in the path or query.
    #[error("invalid percent-encoding in the request target")]
    InvalidPercentEncoding,
    /// The path or query is not UTF-8 once percent-decoded.
    #[error("request target is not UTF-8 once percent-decoded")]
    InvalidUtf8,
    /// An HTTP/1.1 request without a `Host` header, or any request with several.
    #[error("request must carry exactly one Host header")]
    BadHost,
}

impl HttpError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadersTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } | HttpError::ChunkFramingTooLarge { .. } => 413,
            HttpError::UnsupportedVersion => 505,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::Malformed(_)
            | HttpError::InvalidContentLength
            | HttpError::ConflictingContentLength
            | HttpError::LengthWithTransferEncoding
            | HttpError::InvalidChunked(_)
            | HttpError::InvalidPercentEncoding
            | HttpError::InvalidUtf8
            | HttpError::BadHost => 400,
        }
    }

    /// The protocol's error code: `too_large` for 413 and 431, `invalid_request` otherwise (the
    /// protocol has no codes of its own for 501 and 505; the status tells them apart).
    pub fn code(&self) -> &'static str {
        match self.status() {
            413 | 431 => "too_large",
            _ => "invalid_request",
        }
    }

    /// The human text of the error body. It never echoes request bytes.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The response to write before closing: `{"error": {"code", "message"}}` with the status.
    pub fn to_response(&self) -> Response {
        Response::error(self.status(), self.code(), &self.message())
    }
}

/// Parses the request at the start of `buffer`. See the module docs for the contract.
pub fn parse(buffer: &[u8], limits: &Limits) -> Result<Parsed, HttpError> {
    // httparse never sees more than the head may occupy, so a call costs at most that much.
    let window = &buffer[..buffer.len().min(limits.max_header_bytes)];
    let mut inline_slots = [httparse::EMPTY_HEADER; INLINE_HEADER_SLOTS];
    let mut heap_slots: Vec<httparse::Header<'_>>;
    let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= INLINE_HEADER_SLOTS {
        &mut inline_slots[..limits.max_headers]
    } else {
        heap_slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
        &mut heap_slots
    };
    let mut raw = httparse::Request::new(slots);
    let head_bytes = match raw.parse(window) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        Ok(httparse::Status::Partial) if buffer.len() > limits.max_header_bytes => {
            return Err(HttpError::HeadersTooLarge { limit: limits.max_header_bytes });
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial { expect_continue: false }),
        Err(error) => return Err(map_httparse_error(error, window, limits)),
    };
    let (Some(method), Some(target), Some(minor_version)) = (raw.method, raw.path, raw.version) else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let version = match minor_version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HttpError::UnsupportedVersion),
    };
    let method = Method::from_token(method);

    let mut headers = Vec::with_capacity(raw.headers.len());
    for header in raw.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| HttpError::Malformed("header value is not UTF-8"))?;
        headers.push((header.name.to_ascii_lowercase(), value.trim_matches([' ', '\t']).to_owned()));
    }
    let head = HeadFacts::collect(&headers)?;
    let framing = head.framing(version)?;
    if (version == Version::Http11 && head.host_count != 1) || head.host_count > 1 {
        return Err(HttpError::BadHost);
    }

    let (path, query) = decode_target(target, &method)?;
    let keep_alive = match version {
        Version::Http11 => !head.connection_close,
        Version::Http10 => head.connection_keep_alive && !head.connection_close,
    };
    // RFC 9110 §7.8: an Upgrade header in an HTTP/1.0 request is ignored.
    let upgrade = match (version, head.connection_upgrade, head.upgrade) {
        (Version::Http11, true, Some(protocol)) => Some(protocol.to_ascii_lowercase()),
        _ => None,
    };
    let expect_continue = version == Version::Http11 && head.expect_continue;

    let body_region = &buffer[head_bytes..];
    let (body, body_bytes) = match framing {
        Framing::None => (Bytes::new(), 0),
        Framing::Length(length) => {
            let length = usize::try_from(length)
                .ok()
                .filter(|length| *length <= limits.max_body_bytes)
                .ok_or(HttpError::BodyTooLarge { limit: limits.max_body_bytes })?;
            let Some(raw_body) = body_region.get(..length) else {
                return Ok(Parsed::Partial { expect_continue });
            };
            (Bytes::copy_from_slice(raw_body), length)
        }
        Framing::Chunked => {
            // First pass: validate and measure without copying; only a complete body is copied.
            let Some(scan) = scan_chunked(body_region, limits, None)? else {
                return Ok(Parsed::Partial { expect_continue });
            };
            let mut decoded = Vec::with_capacity(scan.decoded_bytes);
            scan_chunked(body_region, limits, Some(&mut decoded))?;
            (Bytes::from(decoded), scan.raw_bytes)
        }
    };

    let request =
        Request { method, target: target.to_owned(), path, query, version, headers, body, keep_alive, upgrade };
    Ok(Parsed::Complete { request, consumed: head_bytes + body_bytes })
}

fn map_httparse_error(error: httparse::Error, window: &[u8], limits: &Limits) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders { limit: limits.max_headers },
        httparse::Error::Version if names_other_http_version(window) => HttpError::UnsupportedVersion,
        httparse::Error::Version => HttpError::Malformed("invalid HTTP version"),
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Token => HttpError::Malformed("invalid request line"),
        httparse::Error::Status => HttpError::Malformed("invalid request line"),
    }
}

/// Whether the request line is well formed but names a version other than 1.0 and 1.1
/// (`HTTP/2.0`, `HTTP/1.2`, or `HTTP/2` still incomplete): that is a 505, anything else a 400.
fn names_other_http_version(window: &[u8]) -> bool {
    let start = window.iter().position(|&byte| byte != b'\r' && byte != b'\n').unwrap_or(window.len());
    let rest = &window[start..];
    let line = rest.split(|&byte| byte == b'\n').next().unwrap_or(rest);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&byte| byte == b' ');
    let (Some(_method), Some(_target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match version.strip_prefix(b"HTTP/") {
        Some([major]) => major.is_ascii_digit(),
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What the header fields say about framing and the connection.
#[derive(Debug, Default)]
struct HeadFacts<'a> {
    content_length: Option<u64>,
    transfer_encoding_seen: bool,
    chunked_codings: usize,
    other_codings: bool,
    host_count: usize,
    connection_close: bool,
    connection_keep_alive: bool,
    connection_upgrade: bool,
    upgrade: Option<&'a str>,
    expect_continue: bool,
}

impl<'a> HeadFacts<'a> {
    fn collect(headers: &'a [(String, String)]) -> Result<HeadFacts<'a>, HttpError> {
        let mut facts = HeadFacts::default();
        for (name, value) in headers {
            match name.as_str() {
                "content-length" => {
                    // `Content-Length: 5, 5` and repeated equal headers are one length (RFC 9110 §8.6).
                    for item in value.split(',') {
                        let length = parse_content_length(item.trim_matches([' ', '\t']))?;
                        match facts.content_length {
                            Some(previous) if previous != length => return Err(HttpError::ConflictingContentLength),
                            _ => facts.content_length = Some(length),
                        }
                    }
                }
                "transfer-encoding" => {
                    facts.transfer_encoding_seen = true;
                    for coding in list_items(value) {
                        if coding.eq_ignore_ascii_case("chunked") {
                            facts.chunked_codings += 1;
                        } else {
                            facts.other_codings = true;
                        }
                    }
                }
                "host" => facts.host_count += 1,
                "connection" => {
                    for option in list_items(value) {
                        if option.eq_ignore_ascii_case("close") {
                            facts.connection_close = true;
                        } else if option.eq_ignore_ascii_case("keep-alive") {
                            facts.connection_keep_alive = true;
                        } else if option.eq_ignore_ascii_case("upgrade") {
                            facts.connection_upgrade = true;
                        }
                    }
                }
                "upgrade" if facts.upgrade.is_none() => facts.upgrade = Some(value.as_str()),
                "expect" if value.eq_ignore_ascii_case("100-continue") => facts.expect_continue = true,
                _ => {}
            }
        }
        Ok(facts)
    }

    fn framing(&self, version: Version) -> Result<Framing, HttpError> {
        if !self.transfer_encoding_seen {
            return Ok(self.content_length.map_or(Framing::None, Framing::Length));
        }
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        if version == Version::Http10 {
            return Err(HttpError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if self.content_length.is_some() {
            return Err(HttpError::LengthWithTransferEncoding);
        }
        if self.other_codings || self.chunked_codings != 1 {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        Ok(Framing::Chunked)
    }
}

/// The non-empty, trimmed elements of a comma-separated header value.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(|item| item.trim_matches([' ', '\t'])).filter(|item| !item.is_empty())
}

/// `1*DIGIT`, nothing else (no sign, no spaces inside). A number too big for `u64` is a body too
/// large rather than a syntax error, so it is reported as the largest length.
fn parse_content_length(text: &str) -> Result<u64, HttpError> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(HttpError::InvalidContentLength);
    }
    Ok(text.bytes().fold(0u64, |length, digit| length.saturating_mul(10).saturating_add(u64::from(digit - b'0'))))
}

/// Splits the request target into the decoded path and query.
fn decode_target(target: &str, method: &Method) -> Result<(String, Vec<(String, String)>), HttpError> {
    let (raw_path, query) = split_target(target, method)?;
    let path = percent_decode(raw_path, false)?;
    let query = match query {
        Some(query) => parse_query(query)?,
        None => Vec::new(),
    };
    Ok((path, query))
}

/// The raw path and raw query of a request target.
fn split_target<'a>(target: &'a str, method: &Method) -> Result<(&'a str, Option<&'a str>), HttpError> {
    // A fragment is never part of a request target; tolerate and drop one.
    let without_fragment = target.split_once('#').map_or(target, |(before, _)| before);
    let (before_query, query) = match without_fragment.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (without_fragment, None),
    };
    let raw_path = if before_query.starts_with('/') {
        before_query
    } else if before_query == "*" && *method == Method::Options && query.is_none() {
        "*"
    } else if let Some(after_scheme) = strip_http_scheme(before_query) {
        // Absolute form: drop the authority, keep the path.
        after_scheme.find('/').map_or("/", |slash| &after_scheme[slash..])
    } else {
        return Err(HttpError::Malformed("request target must be an absolute path"));
    };
    Ok((raw_path, query))
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if let Some(prefix) = target.get(..scheme.len()) {
            if prefix.eq_ignore_ascii_case(scheme) {
                return target.get(scheme.len()..);
            }
        }
    }
    None
}

/// `a=1&b=x+y&c` → `[("a", "1"), ("b", "x y"), ("c", "")]`; empty pieces are skipped.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, HttpError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`, as in a query). Fails on a
/// `%` without two hex digits, or when the decoded bytes are not UTF-8. Routers that split a raw
/// path ([`Request::target`]) into segments decode each with this.
pub fn percent_decode(input: &str, plus_as_space: bool) -> Result<String, HttpError> {
    let bytes = input.as_bytes();
    if !bytes.iter().any(|&byte| byte == b'%' || (plus_as_space && byte == b'+')) {
        return Ok(input.to_owned());
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let high = bytes.get(index + 1).and_then(|&digit| hex_value(digit));
                let low = bytes.get(index + 2).and_then(|&digit| hex_value(digit));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(HttpError::InvalidPercentEncoding);
                };
                decoded.push(high << 4 | low);
                index += 3;
            }
            b'+' if plus_as_space => {
                decoded.push(b' ');
                index += 1;
            }
            other => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| HttpError::InvalidUtf8)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The measure of a complete chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkedScan {
    /// Bytes from the end of the head to the end of the trailer section.
    raw_bytes: usize,
    /// Bytes of chunk data.
    decoded_bytes: usize,
}

/// Walks a chunked body at the start of `raw`. `Ok(None)`: incomplete. With a `sink`, appends
/// the chunk data to it. Lines must end in CRLF (a bare LF is refused: framing that two parsers
/// could read differently is how requests get smuggled).
fn scan_chunked(raw: &[u8], limits: &Limits, mut sink: Option<&mut Vec<u8>>) -> Result<Option<ChunkedScan>, HttpError> {
    let mut position = 0usize;
    let mut decoded_bytes = 0usize;
    let mut framing_bytes = 0usize;
    loop {
        let Some(line) = next_framing_line(raw, position, framing_bytes, limits)? else {
            return Ok(None);
        };
        let size = parse_chunk_size_line(&raw[position..line.content_end], limits)?;
        framing_bytes += line.next - position;
        position = line.next;
        if size == 0 {
            break;
        }
        decoded_bytes = decoded_bytes
            .checked_add(size)
            .filter(|total| *total <= limits.max_body_bytes)
            .ok_or(HttpError::BodyTooLarge { limit: limits.max_body_bytes })?;
        let data_end = position.checked_add(size).ok_or(HttpError::BodyTooLarge { limit: limits.max_body_bytes })?;
        let Some(data) = raw.get(position..data_end) else {
            return Ok(None);
        };
        let terminator = raw.get(data_end..).unwrap_or_default();
        let expected = &b"\r\n"[..terminator.len().min(2)];
        if &terminator[..expected.len()] != expected {
            return Err(HttpError::InvalidChunked("chunk data not followed by CRLF"));
        }
        if terminator.len() < 2 {
            return Ok(None);
        }
        framing_bytes += 2;
        if framing_bytes > limits.max_header_bytes {
            return Err(HttpError::ChunkFramingTooLarge { limit: limits.max_header_bytes });
        }
        if let Some(sink) = sink.as_deref_mut() {
            sink.extend_from_slice(data);
        }
        position = data_end + 2;
    }
    // Trailer fields are read past and ignored, up to the empty line.
    loop {
        let Some(line) = next_framing_line(raw, position, framing_bytes, limits)? else {
            return Ok(None);
        };
        let content = &raw[position..line.content_end];
        framing_bytes += line.next - position;
        position = line.next;
        if content.is_empty() {
            return Ok(Some(ChunkedScan { raw_bytes: position, decoded_bytes }));
        }
        let well_formed = match content.iter().position(|&byte| byte == b':') {
            Some(colon) => colon > 0 && content.iter().all(|&byte| byte == b'\t' || byte >= b' ' && byte != 0x7f),
            None => false,
        };
        if !well_formed {
            return Err(HttpError::InvalidChunked("malformed trailer field"));
        }
    }
}

/// A CRLF-terminated line of chunk framing: its content is `raw[start..content_end]`, the next
/// line starts at `next`.
struct FramingLine {
    content_end: usize,
    next: usize,
}

/// Finds the line starting at `start` without looking past what the framing budget allows.
fn next_framing_line(
    raw: &[u8],
    start: usize,
    framing_bytes: usize,
    limits: &Limits,
) -> Result<Option<FramingLine>, HttpError> {
    let budget = limits.max_header_bytes.saturating_sub(framing_bytes);
    let rest = raw.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(budget)];
    match window.iter().position(|&byte| byte == b'\n') {
        Some(newline) if newline > 0 && window[newline - 1] == b'\r' => {
            Ok(Some(FramingLine { content_end: start + newline - 1, next: start + newline + 1 }))
        }
        Some(_) => Err(HttpError::InvalidChunked("line not terminated by CRLF")),
        None if rest.len() >= budget => Err(HttpError::ChunkFramingTooLarge { limit: limits.max_header_bytes }),
        None => Ok(None),
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]`: the hex size; extensions are checked for stray control
/// bytes and otherwise ignored. A size beyond `usize` is reported as too large.
fn parse_chunk_size_line(line: &[u8], limits: &Limits) -> Result<usize, HttpError> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::InvalidChunked("chunk size is not hexadecimal"));
    }
    let mut size = 0usize;
    for &digit in &line[..digits] {
        size = size
            .checked_mul(16)
            .and_then(|size| size.checked_add(usize::from(hex_value(digit).unwrap_or(0))))
            .ok_or(HttpError::BodyTooLarge { limit: limits.max_body_bytes })?;
    }
    let rest = &line[digits..];
    let extensions = rest.iter().position(|&byte| byte != b' ' && byte != b'\t').map(|index| &rest[index..]);
    match extensions {
        None if rest.is_empty() => Ok(size),
        Some([b';', extension @ ..]) if extension.iter().all(|&byte| byte == b'\t' || byte >= b' ' && byte != 0x7f) => {
            Ok(size)
        }
        _ => Err(HttpError::InvalidChunked("invalid chunk size line")),
    }
}

/// A response to serialize. `headers` holds extra fields; `content-length` and
/// `transfer-encoding` there are ignored because [`Response::write_to`] owns the framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    /// A JSON body (`content-type: application/json` is added when writing).
    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response { status, headers: Vec::new(), body: body.into() }
    }

    /// A body of another media type, e.g. Prometheus text for `GET /metrics`.
    pub fn with_content_type(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response {
        Response { status, headers: vec![("content-type", content_type.to_owned())], body: body.into() }
    }

    /// No body: `204`, or `202` with `content-length: 0`.
    pub fn empty(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Bytes::new() }
    }

    /// The protocol's error body, exactly `{"error":{"code":"…","message":"…"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let mut body = String::with_capacity(32 + code.len() + message.len());
        body.push_str("{\"error\":{\"code\":");
        push_json_string(&mut body, code);
        body.push_str(",\"message\":");
        push_json_string(&mut body, message);
        body.push_str("}}");
        Response::json(status, body)
    }

    /// Adds a header field (`allow`, `retry-after`, `www-authenticate`, …). Control characters
    /// in the value are written as spaces, so a value can never split the head.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Serializes the response for an HTTP/1.1 client. See [`Response::write_to_version`].
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        self.write_to_version(out, Version::Http11, keep_alive, head_only);
    }

    /// Appends the status line, `content-length` (none for 1xx, 204 and 304),
    /// `content-type: application/json` when there is a body and no content type was given,
    /// `connection: close` when `!keep_alive` (or `connection: keep-alive` for an HTTP/1.0
    /// client that keeps the connection, which it needs to hear), the extra headers, and the
    /// body, which is left out for `head_only` (a HEAD request) and for 1xx, 204 and 304.
    /// A status outside 100..=599 is written as 500.
    pub fn write_to_version(&self, out: &mut Vec<u8>, version: Version, keep_alive: bool, head_only: bool) {
        let status = if (100..=599).contains(&self.status) { self.status } else { 500 };
        let bodyless = status < 200 || status == 204 || status == 304;
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, usize::from(status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if !bodyless {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, self.body.len());
            out.extend_from_slice(b"\r\n");
            let has_content_type = self.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
            if !self.body.is_empty() && !has_content_type {
                out.extend_from_slice(b"content-type: application/json\r\n");
            }
        }
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::Http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend(value.bytes().map(|byte| if byte.is_ascii_control() && byte != b'\t' { b' ' } else { byte }));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && !bodyless {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase written for a status; empty for statuses Herald never sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `text` as a JSON string literal: quotes, backslashes and every control character
/// escaped.
fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            control if u32::from(control) < 0x20 => {
                let code = u32::from(control) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(bytes: &[u8]) -> Result<Parsed, HttpError> {
        parse(bytes, &Limits::default())
    }

    fn complete(bytes: &[u8]) -> (Request, usize) {
        match parse_default(bytes) {
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn error_of(bytes: &[u8]) -> HttpError {
        error_with(bytes, &Limits::default())
    }

    fn error_with(bytes: &[u8], limits: &Limits) -> HttpError {
        match parse(bytes, limits) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn written(response: &Response, keep_alive: bool, head_only: bool) -> String {
        let mut out = Vec::new();
        response.write_to(&mut out, keep_alive, head_only);
        String::from_utf8(out).expect("responses are ASCII here")
    }

    const PARTIAL: Parsed = Parsed::Partial { expect_continue: false };

    #[test]
    fn simple_get() {
        // A plain GET parses into method, path, headers, an empty body and HTTP/1.1 keep-alive.
        let bytes = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
        let (request, consumed) = complete(bytes);
        assert_eq!(consumed, bytes.len());
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/healthz");
        assert_eq!(request.target, "/healthz");
        assert!(request.query.is_empty());
        assert_eq!(request.version, Version::Http11);
        assert_eq!(
            request.headers,
            vec![("host".to_owned(), "localhost".to_owned()), ("accept".to_owned(), "*/*".to_owned())]
        );
        assert_eq!(request.header("HOST"), Some("localhost"));
        assert_eq!(request.header("missing"), None);
        assert!(request.body.is_empty());
        assert!(request.keep_alive);
        assert_eq!(request.upgrade, None);
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        // Known methods map to variants; others (including lowercase ones) are kept as sent.
        for (token, method) in [
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("PATCH", Method::Patch),
            ("DELETE", Method::Delete),
            ("HEAD", Method::Head),
            ("OPTIONS", Method::Options),
            ("get", Method::Other("get".to_owned())),
            ("PURGE", Method::Other("PURGE".to_owned())),
        ] {
            let bytes = format!("{token} / HTTP/1.1\r\nHost: h\r\n\r\n");
            let (request, _) = complete(bytes.as_bytes());
            assert_eq!(request.method.as_str(), token);
            assert_eq!(request.method, method);
        }
    }

    #[test]
    fn post_with_content_length_body() {
        // A Content-Length body is returned whole and counted in `consumed`.
        let bytes = b"POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"type\":\"x\"}\n";
        let (request, consumed) = complete(bytes);
        assert_eq!(consumed, bytes.len());
        assert_eq!(request.method, Method::Post);
        assert_eq!(&request.body[..], b"{\"type\":\"x\"}\n");
        assert_eq!(request.header("content-type"), Some("application/json"));
    }

    #[test]
    fn body_waits_for_all_its_bytes() {
        // Until Content-Length bytes are present the result is Partial; extra bytes are not consumed.
        let head = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"abc");
        assert_eq!(parse_default(&bytes), Ok(PARTIAL));
        bytes.extend_from_slice(b"deGET");
        let (request, consumed) = complete(&bytes);
        assert_eq!(&request.body[..], b"abcde");
        assert_eq!(consumed, head.len() + 5);
    }

    #[test]
    fn query_decoding() {
        // Query pairs are split on & and =, `+` is a space, %XX is decoded, and the path keeps `+`.
        let bytes = b"GET /v1/a%20b+c?from_position=10&type=task%2Bdone&q=x+y&flag&&empty=&e=%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n";
        let (request, _) = complete(bytes);
        assert_eq!(request.path, "/v1/a b+c");
        let pairs: Vec<(&str, &str)> = request.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![("from_position", "10"), ("type", "task+done"), ("q", "x y"), ("flag", ""), ("empty", ""), ("e", "é")]
        );
        assert_eq!(request.query_param("type"), Some("task+done"));
        assert_eq!(request.query_param("none"), None);
        assert_eq!(request.target, "/v1/a%20b+c?from_position=10&type=task%2Bdone&q=x+y&flag&&empty=&e=%C3%A9");
    }

    #[test]
    fn target_forms() {
        // Absolute form reduces to its path, `*` is for OPTIONS only, a fragment is dropped.
        let (request, _) = complete(b"GET http://example.com:7700/v1/events?limit=5 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.path, "/v1/events");
        assert_eq!(request.query_param("limit"), Some("5"));
        assert_eq!(request.raw_path(), "/v1/events");
        let (request, _) = complete(b"GET /v1/streams/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.path, "/v1/streams/a/b");
        assert_eq!(request.raw_path(), "/v1/streams/a%2Fb");
        let (request, _) = complete(b"GET HTTPS://example.com HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.path, "/");
        let (request, _) = complete(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.path, "*");
        let (request, _) = complete(b"GET /a#frag?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.path, "/a");
        assert!(request.query.is_empty());
        assert_eq!(error_of(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(error_of(b"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
    }

    #[test]
    fn pipelined_requests() {
        // Three requests in one buffer come out one by one; the caller re-parses from `consumed`.
        let bytes = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz\
POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
\r\nDELETE /d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n\
GET /e HT";
        let mut offset = 0;
        let mut seen = Vec::new();
        while let Parsed::Complete { request, consumed } = parse_default(&bytes[offset..]).expect("valid stream") {
            assert!(consumed > 0 && consumed <= bytes.len() - offset);
            offset += consumed;
            seen.push((request.method, request.path, request.body, request.keep_alive));
        }
        assert_eq!(
            seen,
            vec![
                (Method::Get, "/a".to_owned(), Bytes::new(), true),
                (Method::Post, "/b".to_owned(), Bytes::from_static(b"xyz"), true),
                (Method::Post, "/c".to_owned(), Bytes::from_static(b"hi"), true),
                (Method::Delete, "/d".to_owned(), Bytes::new(), false),
            ]
        );
        assert_eq!(&bytes[offset..], b"GET /e HT");
    }

    #[test]
    fn byte_at_a_time() {
        // Every strict prefix is Partial, the whole is the same request as parsed in one go.
        let requests: [&[u8]; 3] = [
            b"POST /v1/events?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
            b"PUT /v1/snapshots/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"\r\nGET / HTTP/1.0\r\n\r\n",
        ];
        for bytes in requests {
            for end in 0..bytes.len() {
                assert_eq!(parse_default(&bytes[..end]), Ok(PARTIAL), "prefix of {end} bytes");
            }
            let whole = complete(bytes);
            assert_eq!(whole.1, bytes.len());
            let mut fed = Vec::new();
            let mut result = None;
            for &byte in bytes {
                fed.push(byte);
                if let Ok(Parsed::Complete { request, consumed }) = parse_default(&fed) {
                    result = Some((request, consumed));
                }
            }
            assert_eq!(result, Some(whole));
        }
    }

    #[test]
    fn chunked_body() {
        // Chunks are concatenated; sizes are hex; extensions and trailers are ignored.
        let bytes = b"POST /v1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n\
5\r\nhello\r\n1 ; name=\"v\"\r\n \r\nA\r\n0123456789\r\n000\r\nExpires: never\r\nX-Other: 1\r\n\r\nNEXT";
        let (request, consumed) = complete(bytes);
        assert_eq!(&request.body[..], b"hello 0123456789");
        assert_eq!(consumed, bytes.len() - 4);
        // An empty chunked body.
        let (request, _) = complete(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(request.body.is_empty());
    }

    #[test]
    fn chunked_errors() {
        // Broken chunk framing is a 400; sizes over the limit and bloated framing are 413.
        let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, status) in [
            ("x\r\n", 400),
            ("5\r\nhelloX\r\n", 400),
            ("5\nhello\r\n0\r\n\r\n", 400),
            ("5\r\nhello\r\n0\r\n\n", 400),
            ("5 x\r\nhello\r\n", 400),
            ("5;a\x01\r\nhello\r\n", 400),
            ("-5\r\n", 400),
            ("0\r\nno-colon\r\n\r\n", 400),
            ("100001\r\n", 413),
            ("ffffffffffffffffffffff\r\n", 413),
        ] {
            let bytes = format!("{head}{body}");
            let error = error_of(bytes.as_bytes());
            assert_eq!(error.status(), status, "{body:?}: {error}");
        }
        // The decoded size counts across chunks.
        let limits = Limits { max_body_bytes: 8, ..Limits::default() };
        let bytes = format!("{head}5\r\nhello\r\n4\r\n");
        assert_eq!(error_with(bytes.as_bytes(), &limits), HttpError::BodyTooLarge { limit: 8 });
        let bytes = format!("{head}5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n");
        assert!(matches!(parse(bytes.as_bytes(), &limits), Ok(Parsed::Complete { .. })));
        // Many one-byte chunks exhaust the framing budget even though the body stays small.
        let limits = Limits { max_header_bytes: 256, ..Limits::default() };
        let bytes = format!("{head}{}", "1\r\nx\r\n".repeat(100));
        assert_eq!(error_with(bytes.as_bytes(), &limits), HttpError::ChunkFramingTooLarge { limit: 256 });
        // So does a size line that never ends, while the request is still incomplete.
        let bytes = format!("{head}1;{}", "e".repeat(300));
        assert_eq!(error_with(bytes.as_bytes(), &limits), HttpError::ChunkFramingTooLarge { limit: 256 });
        let bytes = format!("{head}1;{}", "e".repeat(100));
        assert_eq!(parse(bytes.as_bytes(), &limits), Ok(PARTIAL));
    }

    #[test]
    fn framing_errors() {
        // Ambiguous or unsupported framing is refused with the documented status.
        let cases: [(&str, HttpError); 11] = [
            ("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", HttpError::LengthWithTransferEncoding),
            ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", HttpError::LengthWithTransferEncoding),
            ("Content-Length: abc\r\n", HttpError::InvalidContentLength),
            ("Content-Length: -1\r\n", HttpError::InvalidContentLength),
            ("Content-Length: +3\r\n", HttpError::InvalidContentLength),
            ("Content-Length: \r\n", HttpError::InvalidContentLength),
            ("Content-Length: 1 2\r\n", HttpError::InvalidContentLength),
            ("Content-Length: 3\r\nContent-Length: 4\r\n", HttpError::ConflictingContentLength),
            ("Content-Length: 3, 4\r\n", HttpError::ConflictingContentLength),
            ("Transfer-Encoding: gzip\r\n", HttpError::UnsupportedTransferEncoding),
            ("Transfer-Encoding: gzip, chunked\r\n", HttpError::UnsupportedTransferEncoding),
        ];
        for (headers, expected) in cases {
            let bytes = format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\nabc");
            let error = error_of(bytes.as_bytes());
            assert_eq!(error, expected, "{headers:?}");
            let status = if expected == HttpError::UnsupportedTransferEncoding { 501 } else { 400 };
            assert_eq!(error.status(), status);
            assert_eq!(error.code(), "invalid_request");
        }
        for headers in
            ["Transfer-Encoding: chunked, chunked\r\n", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"]
        {
            let bytes = format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
            assert_eq!(error_of(bytes.as_bytes()), HttpError::UnsupportedTransferEncoding);
        }
        // Transfer-Encoding in HTTP/1.0 is faulty framing.
        assert_eq!(error_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status(), 400);
        // Equal repeated lengths are one length.
        let (request, _) =
            complete(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3, 3\r\n\r\nabc");
        assert_eq!(&request.body[..], b"abc");
    }

    #[test]
    fn header_limits() {
        // The head limit applies while Partial and when complete; too many headers is also 431.
        let limits = Limits { max_header_bytes: 64, ..Limits::default() };
        let mut bytes = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ".to_vec();
        bytes.resize(64, b'a');
        assert_eq!(parse(&bytes, &limits), Ok(PARTIAL));
        bytes.push(b'a');
        let error = error_with(&bytes, &limits);
        assert_eq!(error, HttpError::HeadersTooLarge { limit: 64 });
        assert_eq!((error.status(), error.code()), (431, "too_large"));
        // A complete head over the limit, even with the end of the head in the buffer.
        let bytes = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Long: {}\r\n\r\n", "a".repeat(64));
        assert_eq!(error_with(bytes.as_bytes(), &limits), HttpError::HeadersTooLarge { limit: 64 });
        // A head of exactly the limit is fine, and body bytes beyond it do not count.
        let head = "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n";
        let limits = Limits { max_header_bytes: head.len(), ..Limits::default() };
        let bytes = format!("{head}0123456789");
        assert!(matches!(parse(bytes.as_bytes(), &limits), Ok(Parsed::Complete { .. })));

        let limits = Limits { max_headers: 3, ..Limits::default() };
        let ok = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(matches!(parse(ok, &limits), Ok(Parsed::Complete { .. })));
        let error = error_with(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &limits);
        assert_eq!(error, HttpError::TooManyHeaders { limit: 3 });
        assert_eq!((error.status(), error.code()), (431, "too_large"));
        // More slots than live on the stack.
        let limits = Limits { max_headers: 100, ..Limits::default() };
        let mut bytes = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for index in 0..99 {
            bytes.extend_from_slice(format!("X-{index}: v\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&bytes, &limits), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn body_limit_is_decided_from_content_length() {
        // A Content-Length over the limit fails before any body byte has arrived.
        let limits = Limits { max_body_bytes: 10, ..Limits::default() };
        let error = error_with(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", &limits);
        assert_eq!(error, HttpError::BodyTooLarge { limit: 10 });
        assert_eq!((error.status(), error.code()), (413, "too_large"));
        let huge = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        assert_eq!(error_of(huge).status(), 413);
        let exact = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789";
        assert!(matches!(parse(exact, &limits), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn version_errors() {
        // Other HTTP versions are 505; a garbled version is a 400.
        for bytes in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/2",
        ] {
            let error = error_of(bytes);
            assert_eq!(error, HttpError::UnsupportedVersion, "{}", String::from_utf8_lossy(bytes));
            assert_eq!((error.status(), error.code()), (505, "invalid_request"));
        }
        for bytes in [
            &b"GET / HTTP/x.1\r\n\r\n"[..],
            b"GET / FTP/1.1\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET / HTTP/12\r\n\r\n",
        ] {
            assert_eq!(error_of(bytes).status(), 400, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn malformed_heads() {
        // httparse syntax errors, bad targets, bad values and a missing Host are 400s.
        for bytes in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: \xff\r\n\r\n",
            b"GET / HTTP/1.1\rHost: h\r\n\r\n",
            b"\rGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET relative HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            let error = error_of(bytes);
            assert_eq!((error.status(), error.code()), (400, "invalid_request"), "{}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(error_of(b"GET / HTTP/1.1\r\n\r\n"), HttpError::BadHost);
        // HTTP/1.0 needs no Host.
        assert!(matches!(parse_default(b"GET / HTTP/1.0\r\n\r\n"), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn target_decoding_errors() {
        // Bad escapes and non-UTF-8 results, in the path or the query, are 400s.
        for (target, expected) in [
            ("/a%zz", HttpError::InvalidPercentEncoding),
            ("/a%4", HttpError::InvalidPercentEncoding),
            ("/a%", HttpError::InvalidPercentEncoding),
            ("/a%FF", HttpError::InvalidUtf8),
            ("/a?x=%G1", HttpError::InvalidPercentEncoding),
            ("/a?%C3=1", HttpError::InvalidUtf8),
            ("/a?x=%ff%fe", HttpError::InvalidUtf8),
        ] {
            let bytes = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let error = error_of(bytes.as_bytes());
            assert_eq!(error, expected, "{target}");
            assert_eq!((error.status(), error.code()), (400, "invalid_request"));
        }
        assert_eq!(percent_decode("a%2Fb", false), Ok("a/b".to_owned()));
        assert_eq!(percent_decode("a+b", false), Ok("a+b".to_owned()));
        assert_eq!(percent_decode("a+b%2b", true), Ok("a b+".to_owned()));
    }

    #[test]
    fn keep_alive_rules() {
        // 1.1 keeps unless `close`; 1.0 closes unless `keep-alive`; `close` always wins.
        for (version, connection, expected) in [
            ("1.1", None, true),
            ("1.1", Some("close"), false),
            ("1.1", Some("Keep-Alive"), true),
            ("1.1", Some("keep-alive, CLOSE"), false),
            ("1.0", None, false),
            ("1.0", Some("keep-alive"), true),
            ("1.0", Some("Keep-Alive"), true),
            ("1.0", Some("keep-alive, close"), false),
            ("1.0", Some("upgrade"), false),
        ] {
            let connection = connection.map(|value| format!("Connection: {value}\r\n")).unwrap_or_default();
            let bytes = format!("GET / HTTP/{version}\r\nHost: h\r\n{connection}\r\n");
            let (request, _) = complete(bytes.as_bytes());
            assert_eq!(request.keep_alive, expected, "{bytes:?}");
        }
    }

    #[test]
    fn upgrade_detection() {
        // `upgrade` is set only when Connection lists `upgrade`, lowercased, and only for HTTP/1.1.
        let websocket = b"GET /v1/ws?token=abc HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (request, _) = complete(websocket);
        assert_eq!(request.upgrade.as_deref(), Some("websocket"));
        assert_eq!(request.path, "/v1/ws");
        assert_eq!(request.header("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        let (request, _) = complete(b"GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(request.upgrade, None);
        let (request, _) = complete(b"GET /v1/ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n");
        assert_eq!(request.upgrade, None);
        let (request, _) = complete(b"GET /v1/ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(request.upgrade, None);
    }

    #[test]
    fn expect_continue() {
        // Partial says to send 100 Continue once the head is in and the body is not.
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse_default(&head[..head.len() - 1]), Ok(PARTIAL));
        assert_eq!(parse_default(head), Ok(Parsed::Partial { expect_continue: true }));
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"ab");
        assert_eq!(parse_default(&bytes), Ok(Parsed::Partial { expect_continue: true }));
        bytes.push(b'c');
        assert!(matches!(parse_default(&bytes), Ok(Parsed::Complete { .. })));
        let old = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse_default(old), Ok(PARTIAL));
        assert_eq!(CONTINUE_RESPONSE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn writes_json_and_connection_headers() {
        // The head carries length, type and `connection: close` only when closing.
        let response = Response::json(201, &b"{\"ok\":true}"[..]);
        assert_eq!(
            written(&response, true, false),
            "HTTP/1.1 201 Created\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{\"ok\":true}"
        );
        assert_eq!(
            written(&response, false, false),
            "HTTP/1.1 201 Created\r\ncontent-length: 11\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"ok\":true}"
        );
        let mut out = Vec::new();
        Response::empty(200).write_to_version(&mut out, Version::Http10, true, false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n");
        let metrics = Response::with_content_type(200, "text/plain; version=0.0.4", "herald_up 1\n")
            .with_header("x-note", "a\r\nb")
            .with_header("Content-Length", "999");
        assert_eq!(
            written(&metrics, true, false),
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\ncontent-type: text/plain; version=0.0.4\r\nx-note: a  b\r\n\r\nherald_up 1\n"
        );
        assert_eq!(written(&Response::empty(599), true, false), "HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            written(&Response::empty(42), true, false),
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn writes_head_and_bodyless_statuses() {
        // HEAD keeps the length but drops the body; 204, 304 and 101 carry neither.
        let response = Response::json(200, "{\"status\":\"ok\"}");
        assert_eq!(
            written(&response, true, true),
            "HTTP/1.1 200 OK\r\ncontent-length: 15\r\ncontent-type: application/json\r\n\r\n"
        );
        assert_eq!(written(&Response::empty(204), true, false), "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            written(&Response::json(204, "ignored"), false, false),
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(written(&Response::json(304, "ignored"), true, false), "HTTP/1.1 304 Not Modified\r\n\r\n");
        let switch = Response::empty(101)
            .with_header("upgrade", "websocket")
            .with_header("connection", "Upgrade")
            .with_header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            written(&switch, true, false),
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn error_bodies_escape_json() {
        // Quotes, backslashes and control characters are escaped; other text passes through.
        let response = Response::error(400, "invalid_request", "bad \"x\" \\ \n\r\t\u{8}\u{c}\u{1}\u{1f} é ☃");
        assert_eq!(
            &response.body[..],
            "{\"error\":{\"code\":\"invalid_request\",\"message\":\"bad \\\"x\\\" \\\\ \\n\\r\\t\\b\\f\\u0001\\u001f é ☃\"}}"
                .as_bytes()
        );
        let response = HttpError::BodyTooLarge { limit: 1024 }.to_response();
        assert_eq!(response.status, 413);
        assert_eq!(
            &response.body[..],
            b"{\"error\":{\"code\":\"too_large\",\"message\":\"request body exceeds 1024 bytes\"}}"
        );
        assert!(written(&response, false, false).starts_with("HTTP/1.1 413 Content Too Large\r\n"));
    }

    #[test]
    fn reason_phrases_cover_the_protocol() {
        // Every status the protocol uses has a reason phrase.
        for status in [200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 410, 413, 429, 431, 500, 501, 503, 505] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
    }

    /// A deterministic generator so the garbage loop below is reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    /// Parses `bytes` as a pipelined stream, writing a response per request; returns requests.
    fn drain(bytes: &[u8], limits: &Limits) -> Vec<Request> {
        let mut offset = 0;
        let mut requests = Vec::new();
        while let Ok(Parsed::Complete { request, consumed }) = parse(&bytes[offset..], limits) {
            assert!(consumed <= bytes.len() - offset, "consumed past the buffer");
            assert!(consumed > 0, "a complete request occupies bytes");
            offset += consumed;
            let mut out = Vec::new();
            Response::json(200, request.body.clone()).write_to(
                &mut out,
                request.keep_alive,
                request.method == Method::Head,
            );
            requests.push(request);
        }
        requests
    }

    #[test]
    fn seeded_garbage_never_panics() {
        // Random splices of HTTP fragments and random bytes never panic nor overrun the buffer.
        const PIECES: [&[u8]; 24] = [
            b"GET ",
            b"POST ",
            b"/v1/events",
            b"?a=%2",
            b"%",
            b"+",
            b" HTTP/1.1",
            b" HTTP/1.0",
            b"\r\n",
            b"\n",
            b"\r\n\r\n",
            b"Host: h\r\n",
            b"Content-Length: ",
            b"Transfer-Encoding: chunked\r\n",
            b"0\r\n",
            b"5\r\n",
            b"hello",
            b";ext",
            b"Connection: upgrade\r\nUpgrade: websocket\r\n",
            b"Expect: 100-continue\r\n",
            b"\xff",
            b"\x00",
            b"3",
            b": ",
        ];
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        let limits = [Limits::default(), Limits { max_header_bytes: 40, max_headers: 2, max_body_bytes: 4 }];
        for _ in 0..20_000 {
            let mut bytes = Vec::new();
            for _ in 0..random.below(24) {
                if random.below(4) == 0 {
                    bytes.push(random.next() as u8);
                } else {
                    bytes.extend_from_slice(PIECES[random.below(PIECES.len())]);
                }
            }
            for limits in &limits {
                drain(&bytes, limits);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn valid_request() -> impl Strategy<Value = Vec<u8>> {
            let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD"]);
            let path = "(/[a-z0-9+._-]{0,8}|/%2[0-9A-F]){1,3}(\\?[a-z0-9=&+]{0,12})?";
            let body = prop::collection::vec(any::<u8>(), 0..40);
            (method, path, body, any::<bool>(), 1usize..5).prop_map(|(method, path, body, chunked, chunk)| {
                let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: h\r\n").into_bytes();
                if chunked {
                    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for piece in body.chunks(chunk) {
                        bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        bytes.extend_from_slice(piece);
                        bytes.extend_from_slice(b"\r\n");
                    }
                    bytes.extend_from_slice(b"0\r\n\r\n");
                } else {
                    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                    bytes.extend_from_slice(&body);
                }
                bytes
            })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                // Any input yields a result, never a panic or an overrun.
                drain(&bytes, &Limits::default());
                drain(&bytes, &Limits { max_header_bytes: 32, max_headers: 1, max_body_bytes: 3 });
            }

            #[test]
            fn mutated_requests_never_panic(
                request in valid_request(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                cut in any::<prop::sample::Index>(),
            ) {
                // Near-valid input (a few bytes changed, then truncated) reaches deep paths safely.
                let mut bytes = request;
                for (index, byte) in edits {
                    let at = index.index(bytes.len());
                    bytes[at] = byte;
                }
                let end = cut.index(bytes.len() + 1);
                drain(&bytes[..end], &Limits::default());
            }

            #[test]
            fn splits_do_not_change_requests(
                requests in prop::collection::vec(valid_request(), 1..4),
                splits in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            ) {
                // A pipelined stream fed in arbitrary pieces yields the same requests as fed whole.
                let stream: Vec<u8> = requests.concat();
                let whole = drain(&stream, &Limits::default());
                prop_assert_eq!(whole.len(), requests.len());
                let mut cuts: Vec<usize> = splits.iter().map(|index| index.index(stream.len() + 1)).collect();
                cuts.push(stream.len());
                cuts.sort_unstable();
                let mut buffer = Vec::new();
                let mut fed = 0;
                let mut pieces = Vec::new();
                for cut in cuts {
                    buffer.extend_from_slice(&stream[fed..cut]);
                    fed = cut;
                    loop {
                        match parse(&buffer, &Limits::default()) {
                            Ok(Parsed::Complete { request, consumed }) => {
                                buffer.drain(..consumed);
                                pieces.push(request);
                            }
                            Ok(Parsed::Partial { .. }) => break,
                            Err(error) => return Err(TestCaseError::fail(format!("valid stream refused: {error}"))),
                        }
                    }
                }
                prop_assert!(buffer.is_empty());
                prop_assert_eq!(pieces, whole);
            }
        }
    }
}
