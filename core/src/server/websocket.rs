//! The WebSocket side of a server connection: the upgrade of `GET /v1/ws` (auth, RFC 6455
//! handshake) and reading client frames with tungstenite in non-blocking, sans-IO fashion.
//!
//! tungstenite parses the client's frames from the bytes the reactor read (an adapter hands it
//! the connection's input and reports `WouldBlock` at its end) and writes its own replies (pongs,
//! the answer to a client's close) into the connection's output. Everything else the server
//! sends is frames the hub encoded once (`realtime::frame`), appended to the same output, so the
//! byte stream stays in order. Client frames above `websocket.max_frame_bytes` close the
//! connection with 1009, binary ones with 1003, invalid UTF-8 with 1007, protocol errors with
//! 1002.

use std::io::{ErrorKind, Write};
use std::time::Instant;

use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use super::http::{Method, Request, Response};
use crate::realtime::auth::{identify, Identity};
use crate::system::System;

/// What an upgrade request gets.
pub enum Upgrade {
    /// `101 Switching Protocols` (the bytes to send) for this identity.
    Accept(Vec<u8>, Identity),
    /// An HTTP error instead.
    Refuse(Response),
}

/// Checks a `GET /v1/ws` request: method, upgrade headers, version 13, key, then auth (401).
pub fn upgrade(system: &System, request: &Request) -> Upgrade {
    if request.method != Method::Get {
        return Upgrade::Refuse(
            Response::error(405, "method_not_allowed", "allowed methods: GET").with_header("allow", "GET"),
        );
    }
    if request.upgrade.as_deref() != Some("websocket") {
        return Upgrade::Refuse(
            Response::error(426, "upgrade_required", "this endpoint speaks WebSocket: send Upgrade: websocket")
                .with_header("upgrade", "websocket"),
        );
    }
    if request.header("sec-websocket-version") != Some("13") {
        return Upgrade::Refuse(
            Response::error(426, "upgrade_required", "only WebSocket version 13 is supported")
                .with_header("sec-websocket-version", "13"),
        );
    }
    let valid_key = |key: &&str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|bytes| bytes.len() == 16)
    };
    let Some(key) = request.header("sec-websocket-key").filter(valid_key) else {
        return Upgrade::Refuse(Response::error(400, "invalid_request", "Sec-WebSocket-Key is missing or malformed"));
    };
    let secret = system.config().auth.jwt_secret.as_deref();
    let identity = match identify(request.header("authorization"), &request.query, secret) {
        Ok(identity) => identity,
        Err(error) => return Upgrade::Refuse(Response::error(401, "unauthorized", &error.to_string())),
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    Upgrade::Accept(response.into_bytes(), identity)
}

/// How reading ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// All input consumed; the connection stays.
    More,
    /// The peer closed (tungstenite queued the answer to its close).
    PeerClosed,
    /// The server must close with this code and reason.
    Close(u16, &'static str),
}

/// A connection after the upgrade.
pub struct WsConn {
    context: WebSocketContext,
    pub last_ping: Instant,
    pub last_heard: Instant,
    /// When the connection started closing (for the grace period).
    pub closing_since: Option<Instant>,
    /// The write side was shut after the close frame.
    pub write_shut: bool,
}

/// tungstenite's view of the connection: reads come from the input the reactor read, writes go
/// to the output the reactor sends.
struct Io<'a> {
    input: &'a [u8],
    at: usize,
    output: &'a mut Vec<u8>,
}

impl std::io::Read for Io<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.input[self.at..];
        if rest.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buffer.len());
        buffer[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl WsConn {
    pub fn new(max_frame_bytes: usize) -> Self {
        // A small read buffer (it grows for a large frame): most of an idle connection's memory.
        let config = WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_message_size(Some(max_frame_bytes))
            .max_frame_size(Some(max_frame_bytes));
        let now = Instant::now();
        WsConn {
            context: WebSocketContext::new(Role::Server, Some(config)),
            last_ping: now,
            last_heard: now,
            closing_since: None,
            write_shut: false,
        }
    }

    /// Reads every complete client message in `input` (consumed), calling `on_text` for each
    /// text message; tungstenite's replies land in `output`.
    pub fn receive(&mut self, input: &mut Vec<u8>, output: &mut Vec<u8>, mut on_text: impl FnMut(&[u8])) -> Received {
        if !input.is_empty() {
            self.last_heard = Instant::now();
        }
        let mut io = Io { input, at: 0, output };
        let outcome = loop {
            match self.context.read(&mut io) {
                Ok(Message::Text(text)) => on_text(text.as_bytes()),
                Ok(Message::Binary(_)) => break Received::Close(1003, "binary frames are not supported"),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => break Received::PeerClosed,
                Err(WsError::Io(error)) if error.kind() == ErrorKind::WouldBlock => break Received::More,
                Err(WsError::Capacity(_)) => break Received::Close(1009, "frame too large"),
                Err(WsError::Utf8(_)) => break Received::Close(1007, "invalid UTF-8"),
                Err(WsError::Protocol(_)) => break Received::Close(1002, "protocol error"),
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break Received::PeerClosed,
                Err(_) => break Received::Close(1011, "internal error"),
            }
        };
        // Pongs and the close answer tungstenite queued.
        let _ = self.context.flush(&mut io);
        let consumed = io.at;
        input.drain(..consumed);
        outcome
    }
}
