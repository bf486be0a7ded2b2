//! The tokio-tungstenite peer: a small broadcast server speaking the subset of Herald's protocol
//! the benchmark uses, written the way one would write it on tokio-tungstenite.
//!
//! One port serves both sides, like Herald: a connection whose first bytes are `GET ` is handed
//! to `tokio_tungstenite::accept_hdr_async` (path `/v1/ws`, anything else 404); any other
//! connection is HTTP/1.1 keep-alive (pipelining allowed) answering `POST /v1/broadcast`.
//!
//! - WebSocket: `{"op":"subscribe","room"}` → `{"op":"subscribed","room"}`; `{"op":"ping"}` →
//!   `{"op":"pong"}`. One task per connection; each has a bounded `mpsc` channel of
//!   [`QUEUE_FRAMES`] messages (Herald's `send_queue_frames` in the benchmark). The task writes
//!   every message waiting in its channel with `feed`, then one `flush`.
//! - `POST /v1/broadcast`: the body is parsed (serde_json), `id`, `timestamp`, `priority`,
//!   `persistent`, `source` and `target.exclude_users` get Herald's defaults, so the frame has
//!   Herald's shape and size; the frame text `{"event":…,"op":"event","room":…}` is serialized
//!   once into one `Message::Text`, and each subscriber's channel gets a clone (a reference count
//!   on the shared `Utf8Bytes`). A full channel drops that subscriber from the room (Herald
//!   closes such a connection with 1013) and is counted; the answer is 202
//!   `{"delivered":N,"id":…}`.
//!
//! Usage: `peer --listen 127.0.0.1:PORT [--read-buffer-bytes N] [--threads N]`. It prints
//! `peer: listening on http://ADDR` once bound, and on SIGTERM/exit nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames a connection's channel holds before a broadcast gives up on it.
const QUEUE_FRAMES: usize = 65_536;
/// Largest request head + body the HTTP side accepts.
const MAX_REQUEST_BYTES: usize = 1 << 20;

type ConnId = u64;

#[derive(Default)]
struct State {
    /// Room → its subscribers' channels.
    rooms: Mutex<HashMap<String, HashMap<ConnId, mpsc::Sender<Message>>>>,
    next_conn: AtomicU64,
    next_event: AtomicU64,
    dropped_slow: AtomicU64,
}

fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut read_buffer_bytes = 4096usize;
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value(),
            "--read-buffer-bytes" => read_buffer_bytes = value().parse().expect("--read-buffer-bytes"),
            "--threads" => threads = value().parse().expect("--threads"),
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    runtime.block_on(serve(listen, read_buffer_bytes));
}

async fn serve(listen: String, read_buffer_bytes: usize) {
    let listener = TcpListener::bind(&listen).await.expect("bind");
    println!("peer: listening on http://{}", listener.local_addr().unwrap());
    let state = Arc::new(State::default());
    // Like Herald's gateway: a small read buffer (tungstenite's default is 128 KiB, touched on the
    // first read, which would dominate an idle connection's memory); writes batched as default.
    let config = WebSocketConfig::default().read_buffer_size(read_buffer_bytes);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut first = [0u8; 4];
            // Wait for the first 4 bytes without consuming them.
            loop {
                match stream.peek(&mut first).await {
                    Ok(0) | Err(_) => return,
                    Ok(4) => break,
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await, // not spin on a slow client
                }
            }
            if &first == b"GET " {
                websocket(stream, state, config).await;
            } else {
                http(stream, state).await;
            }
        });
    }
}

// The handshake callback's error type is tungstenite's `ErrorResponse`, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn websocket(stream: TcpStream, state: Arc<State>, config: WebSocketConfig) {
    let check_path = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() == "/v1/ws" {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some("not found".into()));
            *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await else {
        return;
    };
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE_FRAMES);
    let mut joined: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_op(&state, id, &tx, &mut joined, text.as_str());
                    if ws.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // pings are answered by tungstenite
            },
            outgoing = rx.recv() => {
                let Some(message) = outgoing else { break };
                if ws.feed(message).await.is_err() {
                    break;
                }
                let mut failed = false;
                while let Ok(message) = rx.try_recv() {
                    if ws.feed(message).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let mut rooms = state.rooms.lock().unwrap();
    for room in joined {
        if let Some(members) = rooms.get_mut(&room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
}

/// Handles a client op; returns the reply's text.
fn handle_op(state: &State, id: ConnId, tx: &mpsc::Sender<Message>, joined: &mut Vec<String>, text: &str) -> String {
    let Ok(op) = serde_json::from_str::<serde_json::Value>(text) else {
        return r#"{"code":"invalid_json","message":"not JSON","op":"error"}"#.to_owned();
    };
    match (op["op"].as_str(), op["room"].as_str()) {
        (Some("subscribe"), Some(room)) => {
            state.rooms.lock().unwrap().entry(room.to_owned()).or_default().insert(id, tx.clone());
            if !joined.iter().any(|r| r == room) {
                joined.push(room.to_owned());
            }
            serde_json::json!({"op": "subscribed", "room": room}).to_string()
        }
        (Some("ping"), _) => r#"{"op":"pong"}"#.to_owned(),
        _ => r#"{"code":"invalid_request","message":"unknown op","op":"error"}"#.to_owned(),
    }
}

/// HTTP/1.1 keep-alive with pipelining: every complete request in the buffer is answered, the
/// answers written together.
async fn http(mut stream: TcpStream, state: Arc<State>) {
    let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut output: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        input.extend_from_slice(&chunk[..read]);
        let mut consumed = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let head = match request.parse(&input[consumed..]) {
                Ok(httparse::Status::Complete(head)) => head,
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    let _ = stream.write_all(&response(400, r#"{"code":"invalid_request"}"#, false)).await;
                    return;
                }
            };
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if head + length > MAX_REQUEST_BYTES {
                let _ = stream.write_all(&response(413, r#"{"code":"payload_too_large"}"#, false)).await;
                return;
            }
            if input.len() - consumed < head + length {
                break;
            }
            let body = &input[consumed + head..consumed + head + length];
            let answer = match (request.method, request.path) {
                (Some("POST"), Some("/v1/broadcast")) => broadcast(&state, body),
                _ => response(404, r#"{"code":"not_found"}"#, true),
            };
            output.extend_from_slice(&answer);
            consumed += head + length;
        }
        input.drain(..consumed);
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
    }
}

fn response(status: u16, body: &str, keep_alive: bool) -> Vec<u8> {
    let reason = match status {
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `POST /v1/broadcast`: see the module docs.
fn broadcast(state: &State, body: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return response(400, r#"{"code":"invalid_request","message":"a JSON object"}"#, true);
    };
    let room = match event.get_mut("target") {
        Some(serde_json::Value::Object(target)) => {
            let room = match (target.get("type").and_then(|v| v.as_str()), target.get("id").and_then(|v| v.as_str())) {
                (Some(kind), Some(id)) => format!("{kind}:{id}"),
                _ => return response(400, r#"{"code":"invalid_request","message":"target"}"#, true),
            };
            target.entry("exclude_users").or_insert_with(|| serde_json::json!([]));
            room
        }
        _ => return response(400, r#"{"code":"invalid_request","message":"target"}"#, true),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let id = uuid_like(now.as_millis() as u64, state.next_event.fetch_add(1, Ordering::Relaxed));
    event.entry("id").or_insert_with(|| id.clone().into());
    event.entry("timestamp").or_insert_with(|| rfc3339_micros(now.as_micros() as u64).into());
    event.entry("priority").or_insert_with(|| "normal".into());
    event.entry("persistent").or_insert_with(|| false.into());
    event.entry("source").or_insert_with(|| serde_json::json!({}));
    // serde_json's map keeps keys sorted, so this is Herald's byte layout.
    let text = serde_json::json!({"event": event, "op": "event", "room": room}).to_string();
    let message = Message::Text(Utf8Bytes::from(text));
    let mut delivered = 0usize;
    let mut rooms = state.rooms.lock().unwrap();
    if let Some(members) = rooms.get_mut(&room) {
        members.retain(|_, tx| match tx.try_send(message.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                state.dropped_slow.fetch_add(1, Ordering::Relaxed);
                eprintln!("peer: a subscriber of {room} is {QUEUE_FRAMES} frames behind: dropped from the room");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
    drop(rooms);
    response(202, &format!(r#"{{"delivered":{delivered},"id":"{id}"}}"#), true)
}

/// A UUIDv7-shaped id (36 characters) from the time and a counter.
fn uuid_like(millis: u64, counter: u64) -> String {
    let a = millis & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        a >> 16,
        a & 0xffff,
        (counter >> 48) & 0xfff,
        0x8000 | ((counter >> 36) & 0x3fff),
        counter & 0xffff_ffff_ffff
    )
}

/// `2026-11-27T03:55:44.995421Z` from microseconds since the epoch.
fn rfc3339_micros(micros: u64) -> String {
    let seconds = micros / 1_000_000;
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        micros % 1_000_000
    )
}
