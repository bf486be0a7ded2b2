//! Server-to-client WebSocket frames (RFC 6455 §5.2), encoded once: FIN set, unmasked, the
//! payload length in the shortest form.

use bytes::{BufMut, Bytes, BytesMut};

/// A text frame holding `payload` (UTF-8 JSON).
pub fn text(payload: &[u8]) -> Bytes {
    frame(0x1, payload)
}

/// A close frame with `code` and `reason` (reason cut to fit a control frame's 125 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(0x8, &payload)
}

/// A ping frame.
pub fn ping() -> Bytes {
    frame(0x9, b"")
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=65_535 => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// The payload of a frame made here (for tests).
#[cfg(test)]
pub fn payload(frame: &[u8]) -> &[u8] {
    match frame[1] {
        126 => &frame[4..],
        127 => &frame[10..],
        _ => &frame[2..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_shortest_form() {
        // 125 fits the first byte, 126..=65535 two more, larger eight more.
        assert_eq!(&text(b"hi")[..], b"\x81\x02hi");
        assert_eq!(text(&[b'a'; 125]).len(), 127);
        assert_eq!(&text(&[b'a'; 126])[..4], b"\x81\x7e\x00\x7e");
        assert_eq!(&text(&vec![b'a'; 70_000])[..10], b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
        assert_eq!(&close(1013, "slow consumer")[..4], b"\x88\x0f\x03\xf5");
    }
}
