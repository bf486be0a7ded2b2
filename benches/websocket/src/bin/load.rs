//! The WebSocket load client: drives one broadcast server (Herald, the tokio-tungstenite peer or
//! the Node `ws` peer; all three speak the same protocol) and prints `RESULT` lines.
//!
//! ```text
//! load bench  --name NAME --url ws://HOST:PORT/v1/ws --publish http://HOST:PORT/v1/broadcast
//!             --pid SERVER_PID --out FILE [--subscribers 1,100,1000] [--warmup-s 1]
//!             [--duration-s 5] [--window-events 256] [--depth 32] [--latency-rate 200]
//!             [--latency-s 5] [--users distinct|shared] [--threads 2] [--timeout-s 30]
//! load rss    --name NAME --url … --pid SERVER_PID --out FILE [--connections 5000]
//!             [--settle-s 3] [--users shared|distinct] [--gc-signal usr2]
//! load report --results FILE        (the Markdown tables of a results file, on stdout)
//! ```
//!
//! The client is a minimal RFC 6455 client on tokio (one task per subscriber): the handshake and
//! the frame parsing are done here, so that the client's own cost per frame is a header parse
//! and two substring searches, not a JSON parse; it must keep up with 1,000 subscribers on the
//! cores it shares with the server.
//!
//! Per subscriber count `N` (`bench`): `N` subscribers connect (`?user_id=`), subscribe to
//! `bench:r1` and wait for `subscribed`; then
//! - **throughput**: one publisher connection sends `POST /v1/broadcast` over HTTP/1.1
//!   keep-alive, pipelined up to `--depth` requests in flight, as fast as the server answers,
//!   with a bound: at most `--window-events` events per subscriber published and not yet
//!   received (on average over the subscribers), so the server's queues stay far below their
//!   65,536 frames and the figure is the sustained delivery rate, not queue growth. After
//!   `--warmup-s`, the event frames received by all subscribers during `--duration-s` give
//!   frames/s; the server's utime + stime (`/proc/PID/stat`) over the same window give its CPU
//!   seconds, and frames per server CPU-second.
//! - **latency**: the same publisher at `--latency-rate` events/s for `--latency-s`; each event
//!   carries `sent_ns` (this process's monotonic clock when the request was built), each
//!   subscriber records receive time − `sent_ns` (the clock read once per socket read) into an
//!   HDR histogram: p50/p99/p99.9/max.
//! - **checks** after each phase: every subscriber received every event exactly once, in order
//!   (`seq` consecutive), the servers' `delivered` answers add up to events × N, no connection
//!   was closed by the server. A failed check is printed as `CHECK-FAILED` and makes the exit
//!   status 1.
//!
//! `rss`: reads the server's VmRSS once it is steady (with `--gc-signal usr2`, after asking the
//! Node peer for a full garbage collection), opens `--connections` WebSocket connections subscribed to
//! `bench:r1`, waits until all are subscribed and `--settle-s` more, reads VmRSS again:
//! (after − before) / connections.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

const ROOM: &str = "bench:r1";
/// A subscriber's read buffer starts at this and doubles, up to [`READ_BUFFER_MAX`], while reads
/// fill it (idle connections stay small).
const READ_BUFFER_START: usize = 4 * 1024;
const READ_BUFFER_MAX: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Arguments

struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> Args {
        let mut map = BTreeMap::new();
        let mut raw = raw.peekable();
        while let Some(arg) = raw.next() {
            let key = arg.strip_prefix("--").unwrap_or_else(|| die(&format!("unexpected argument {arg}")));
            let value = raw.next().unwrap_or_else(|| die(&format!("--{key} needs a value")));
            map.insert(key.to_owned(), value);
        }
        Args(map)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn required(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| die(&format!("--{key} is required")))
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.get(key) {
            Some(value) => value.parse().unwrap_or_else(|_| die(&format!("--{key}: bad number {value}"))),
            None => default,
        }
    }
}

fn die(message: &str) -> ! {
    eprintln!("load: {message}");
    std::process::exit(2)
}

/// `ws://host:port/path` or `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or_else(|| die(&format!("not a ws:// or http:// URL: {url}")));
    match rest.find('/') {
        Some(at) => (rest[..at].to_owned(), rest[at..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// The server's process, from /proc

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process, in clock ticks (every thread).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|error| die(&format!("/proc/{pid}/stat: {error}")));
    // Fields after the command's closing parenthesis start at field 3 (state); utime is 14.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| die(&format!("/proc/{pid}/status: {error}")));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// This process's CPU seconds (user + system).
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Raises this process's open-file limit to its hard limit (5,000 connections need it).
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state between the controller, the publisher and the subscribers

struct Shared {
    base: Instant,
    /// Event frames received by all subscribers.
    received: AtomicU64,
    /// Subscribers that got their `subscribed` reply.
    subscribed: AtomicUsize,
    /// Events with `seq` at or above this are latency samples.
    latency_from_seq: AtomicU64,
    /// The publisher waits for the window to open.
    publisher_waiting: AtomicBool,
    window_opened: Notify,
    /// Connections the server closed (a close frame or EOF) while the phase ran.
    closed_by_server: AtomicU64,
    /// Frames that are neither events nor `subscribed` (presence `join`s, for instance).
    other_frames: AtomicU64,
    /// Bytes of the event frames received (header included).
    event_frame_bytes: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            base: Instant::now(),
            received: AtomicU64::new(0),
            subscribed: AtomicUsize::new(0),
            latency_from_seq: AtomicU64::new(u64::MAX),
            publisher_waiting: AtomicBool::new(false),
            window_opened: Notify::new(),
            closed_by_server: AtomicU64::new(0),
            other_frames: AtomicU64::new(0),
            event_frame_bytes: AtomicU64::new(0),
        })
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// One subscriber's counts, read by the controller.
#[derive(Default)]
struct Sub {
    events: AtomicU64,
    last_seq: AtomicU64,
    /// Events whose `seq` was not the previous one + 1.
    out_of_order: AtomicU64,
    latencies_ns: Mutex<Vec<u64>>,
}

// ---------------------------------------------------------------------------------------------
// A subscriber: a minimal WebSocket client

const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A masked client frame (RFC 6455 requires clients to mask).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=65_535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    out
}

/// A complete server frame at the start of `bytes`: (fin, opcode, header length, payload length).
fn frame_at(bytes: &[u8]) -> Option<(bool, u8, usize, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let fin = bytes[0] & 0x80 != 0;
    let opcode = bytes[0] & 0x0f;
    let masked = bytes[1] & 0x80 != 0;
    let (header, length) = match bytes[1] & 0x7f {
        126 => (4, u16::from_be_bytes(bytes.get(2..4)?.try_into().unwrap()) as usize),
        127 => (10, u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap()) as usize),
        length => (2, length as usize),
    };
    let header = header + if masked { 4 } else { 0 };
    Some((fin, opcode, header, length))
}

/// The unsigned integer after `key` in `payload`.
fn number_after(payload: &[u8], finder: &memmem::Finder<'_>) -> Option<u64> {
    let at = finder.find(payload)? + finder.needle().len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

enum Ended {
    /// The server closed the connection (close frame code, or None for EOF / reset).
    ByServer(Option<u16>),
}

async fn subscriber(
    address: String,
    path: String,
    user: String,
    shared: Arc<Shared>,
    sub: Arc<Sub>,
    mut ready: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Ended, String> {
    let mut stream = TcpStream::connect(&address).await.map_err(|e| format!("connect {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path}?user_id={user} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("handshake write: {e}"))?;
    let mut buffer = vec![0u8; READ_BUFFER_START];
    let mut end = 0usize;
    let head_end = loop {
        if end == buffer.len() {
            return Err("handshake answer too long".into());
        }
        let read = stream.read(&mut buffer[end..]).await.map_err(|e| format!("handshake read: {e}"))?;
        if read == 0 {
            return Err("closed during the handshake".into());
        }
        end += read;
        if let Some(at) = memmem::find(&buffer[..end], b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") || !head.contains(&HANDSHAKE_ACCEPT.to_ascii_lowercase()) {
        return Err(format!("handshake refused: {}", head.lines().next().unwrap_or("")));
    }
    let mut start = head_end;
    let subscribe = format!(r#"{{"op":"subscribe","room":"{ROOM}"}}"#);
    stream.write_all(&client_frame(0x1, subscribe.as_bytes())).await.map_err(|e| format!("subscribe: {e}"))?;

    let seq_key = memmem::Finder::new(b"\"seq\":");
    let sent_key = memmem::Finder::new(b"\"sent_ns\":");
    let subscribed_key = memmem::Finder::new(b"\"subscribed\"");
    let mut is_subscribed = false;
    let mut last_seq = 0u64;
    let mut samples: Vec<u64> = Vec::new();
    let mut replies: Vec<u8> = Vec::new();
    loop {
        // Every complete frame in the buffer.
        let now_ns = shared.now_ns();
        let latency_from = shared.latency_from_seq.load(Ordering::Relaxed);
        let (mut events, mut out_of_order, mut other, mut event_bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut closed = None;
        while let Some((fin, opcode, header, length)) = frame_at(&buffer[start..end]) {
            if end - start < header + length {
                // Incomplete: make room for the whole frame.
                let needed = header + length;
                if needed > buffer.len() - start {
                    buffer.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                    if needed > buffer.len() {
                        buffer.resize(needed.next_power_of_two(), 0);
                    }
                }
                break;
            }
            let payload = &buffer[start + header..start + header + length];
            match opcode {
                0x1 if fin => {
                    if let Some(seq) = number_after(payload, &seq_key) {
                        events += 1;
                        event_bytes += (header + length) as u64;
                        if last_seq != 0 && seq != last_seq + 1 {
                            out_of_order += 1;
                        }
                        last_seq = seq;
                        if seq >= latency_from {
                            if let Some(sent) = number_after(payload, &sent_key) {
                                samples.push(now_ns.saturating_sub(sent));
                            }
                        }
                    } else if !is_subscribed && subscribed_key.find(payload).is_some() {
                        is_subscribed = true;
                        shared.subscribed.fetch_add(1, Ordering::SeqCst);
                        ready.take();
                    } else {
                        other += 1;
                    }
                }
                0x9 => replies.extend_from_slice(&client_frame(0xA, payload)), // ping → pong
                0x8 => {
                    closed = Some(if length >= 2 { Some(u16::from_be_bytes([payload[0], payload[1]])) } else { None });
                }
                _ => other += 1, // pong, binary, fragments: not expected from these servers
            }
            start += header + length;
            if closed.is_some() {
                break;
            }
        }
        if events > 0 {
            sub.events.fetch_add(events, Ordering::Relaxed);
            sub.last_seq.store(last_seq, Ordering::Relaxed);
            if out_of_order > 0 {
                sub.out_of_order.fetch_add(out_of_order, Ordering::Relaxed);
            }
            shared.event_frame_bytes.fetch_add(event_bytes, Ordering::Relaxed);
            shared.received.fetch_add(events, Ordering::SeqCst);
            if shared.publisher_waiting.load(Ordering::SeqCst) && shared.publisher_waiting.swap(false, Ordering::SeqCst)
            {
                shared.window_opened.notify_one();
            }
            if !samples.is_empty() {
                sub.latencies_ns.lock().unwrap().append(&mut samples);
            }
        }
        if other > 0 {
            shared.other_frames.fetch_add(other, Ordering::Relaxed);
        }
        if let Some(code) = closed {
            shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
            return Ok(Ended::ByServer(code));
        }
        if !replies.is_empty() {
            stream.write_all(&replies).await.map_err(|e| format!("pong: {e}"))?;
            replies.clear();
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buffer.len() && start > 0 {
            buffer.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let read = match stream.read(&mut buffer[end..]).await {
            Ok(0) | Err(_) => {
                shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
                return Ok(Ended::ByServer(None));
            }
            Ok(read) => read,
        };
        end += read;
        if end == buffer.len() && buffer.len() < READ_BUFFER_MAX {
            buffer.resize(buffer.len() * 2, 0);
        }
    }
}

/// Subscribers of one phase set.
struct Subscribers {
    subs: Vec<Arc<Sub>>,
    tasks: Vec<tokio::task::JoinHandle<Result<Ended, String>>>,
}

impl Subscribers {
    /// Connects `count` subscribers, at most 128 handshakes at a time, and waits until all are
    /// subscribed (or `timeout`).
    async fn connect(
        count: usize,
        address: &str,
        path: &str,
        users: &str,
        shared: &Arc<Shared>,
        timeout: Duration,
    ) -> Result<Subscribers, String> {
        let before = shared.subscribed.load(Ordering::SeqCst);
        let gate = Arc::new(Semaphore::new(128));
        let mut subs = Vec::with_capacity(count);
        let mut tasks = Vec::with_capacity(count);
        let deadline = Instant::now() + timeout;
        for i in 0..count {
            let permit = tokio::time::timeout_at(deadline.into(), Arc::clone(&gate).acquire_owned())
                .await
                .map_err(|_| format!("{i} of {count} subscribed before the timeout"))?
                .unwrap();
            let sub = Arc::new(Sub::default());
            let user = if users == "shared" { "bench".to_owned() } else { format!("bench-{i}") };
            subs.push(Arc::clone(&sub));
            tasks.push(tokio::spawn(subscriber(
                address.to_owned(),
                path.to_owned(),
                user,
                Arc::clone(shared),
                sub,
                Some(permit),
            )));
        }
        while shared.subscribed.load(Ordering::SeqCst) - before < count {
            if Instant::now() >= deadline {
                let failed: Vec<String> = futures_first_errors(&mut tasks).await;
                return Err(format!(
                    "{} of {count} subscribed within {timeout:?}; {}",
                    shared.subscribed.load(Ordering::SeqCst) - before,
                    failed.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Subscribers { subs, tasks })
    }

    fn events_min_max(&self) -> (u64, u64) {
        let counts = self.subs.iter().map(|s| s.events.load(Ordering::Relaxed));
        counts.fold((u64::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)))
    }

    async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The errors of subscriber tasks that already ended (at most 3).
async fn futures_first_errors(tasks: &mut [tokio::task::JoinHandle<Result<Ended, String>>]) -> Vec<String> {
    let mut errors = Vec::new();
    for task in tasks.iter_mut().filter(|t| t.is_finished()) {
        match task.await {
            Ok(Err(error)) => errors.push(error),
            Ok(Ok(Ended::ByServer(code))) => errors.push(format!("closed by the server ({code:?})")),
            Err(error) => errors.push(error.to_string()),
        }
        if errors.len() == 3 {
            break;
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// The publisher: HTTP/1.1 keep-alive, pipelined

struct PublishPlan {
    /// Events per second; None: as fast as the window and the depth allow.
    rate: Option<f64>,
    /// Stop when set (throughput) …
    stop: Arc<AtomicBool>,
    /// … or after this many events (latency).
    count: Option<u64>,
    subscribers: u64,
    window_events: u64,
    depth: usize,
    first_seq: u64,
}

#[derive(Debug, Default)]
struct PublishOutcome {
    events: u64,
    answered: u64,
    /// Sum of the `delivered` fields of the answers.
    delivered: u64,
    /// Answers that were not 202 (first one kept).
    refused: u64,
    first_refusal: Option<String>,
}

fn broadcast_request(host: &str, path: &str, seq: u64, sent_ns: u64, out: &mut Vec<u8>) {
    let body = format!(
        r#"{{"type":"bench","event":"bench.tick","data":{{"seq":{seq},"sent_ns":{sent_ns}}},"target":{{"type":"bench","id":"r1"}}}}"#
    );
    write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

async fn publish(
    address: String,
    path: String,
    shared: Arc<Shared>,
    plan: PublishPlan,
) -> Result<PublishOutcome, String> {
    let stream = TcpStream::connect(&address).await.map_err(|e| format!("publisher connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = stream.into_split();
    let in_flight = Arc::new(Semaphore::new(plan.depth));
    let outcome = Arc::new(Mutex::new(PublishOutcome::default()));
    let reader_task = {
        let in_flight = Arc::clone(&in_flight);
        let outcome = Arc::clone(&outcome);
        tokio::spawn(async move {
            let delivered_key = memmem::Finder::new(b"\"delivered\":");
            let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let read = match reader.read(&mut chunk).await {
                    Ok(0) => return Err("the server closed the publisher's connection".to_owned()),
                    Err(error) => return Err(format!("publisher read: {error}")),
                    Ok(read) => read,
                };
                buffer.extend_from_slice(&chunk[..read]);
                let mut consumed = 0;
                let mut answered = 0;
                loop {
                    let mut headers = [httparse::EMPTY_HEADER; 16];
                    let mut response = httparse::Response::new(&mut headers);
                    let head = match response.parse(&buffer[consumed..]) {
                        Ok(httparse::Status::Complete(head)) => head,
                        Ok(httparse::Status::Partial) => break,
                        Err(error) => return Err::<(), String>(format!("bad HTTP answer: {error}")),
                    };
                    let length = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                        .ok_or("an answer without content-length")?;
                    if buffer.len() - consumed < head + length {
                        break;
                    }
                    let body = &buffer[consumed + head..consumed + head + length];
                    let mut outcome = outcome.lock().unwrap();
                    outcome.answered += 1;
                    if response.code == Some(202) {
                        outcome.delivered += number_after(body, &delivered_key).unwrap_or(0);
                    } else {
                        outcome.refused += 1;
                        outcome
                            .first_refusal
                            .get_or_insert_with(|| format!("{:?} {}", response.code, String::from_utf8_lossy(body)));
                    }
                    consumed += head + length;
                    answered += 1;
                }
                buffer.drain(..consumed);
                in_flight.add_permits(answered);
            }
        })
    };
    let received_base = shared.received.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut seq = plan.first_seq;
    let mut events = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    let window_frames = plan.window_events * plan.subscribers;
    let window_open = |events: u64| {
        (events * plan.subscribers).saturating_sub(shared.received.load(Ordering::SeqCst) - received_base)
            <= window_frames
    };
    loop {
        if plan.stop.load(Ordering::Relaxed) || plan.count.is_some_and(|count| events >= count) {
            break;
        }
        if reader_task.is_finished() {
            break;
        }
        if let Some(rate) = plan.rate {
            let due = started + Duration::from_secs_f64(events as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        // The window: wait until enough of what was published has been received.
        while !window_open(events) {
            shared.publisher_waiting.store(true, Ordering::SeqCst);
            if window_open(events) {
                shared.publisher_waiting.store(false, Ordering::SeqCst);
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), shared.window_opened.notified()).await;
            if plan.stop.load(Ordering::Relaxed) || reader_task.is_finished() {
                break;
            }
        }
        if plan.stop.load(Ordering::Relaxed) {
            break;
        }
        // At least one request in flight slot; take as many more as are free (one write).
        let Ok(permit) = in_flight.acquire().await else { break };
        permit.forget();
        let mut batch = 1u64;
        if plan.rate.is_none() {
            while window_open(events + batch) {
                match in_flight.try_acquire() {
                    Ok(permit) => {
                        permit.forget();
                        batch += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        out.clear();
        for _ in 0..batch {
            broadcast_request(&address, &path, seq, shared.now_ns(), &mut out);
            seq += 1;
        }
        if let Err(error) = writer.write_all(&out).await {
            reader_task.abort();
            return Err(format!("publisher write: {error}"));
        }
        events += batch;
    }
    // Every answer in.
    let all = tokio::time::timeout(Duration::from_secs(30), in_flight.acquire_many(plan.depth as u32)).await;
    if reader_task.is_finished() {
        if let Ok(Err(error)) = reader_task.await {
            return Err(error);
        }
    } else {
        reader_task.abort();
    }
    if all.is_err() {
        return Err("answers still missing 30 s after the last request".into());
    }
    let mut outcome = std::mem::take(&mut *outcome.lock().unwrap());
    outcome.events = events;
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// bench

struct Failures(Mutex<Vec<String>>);

impl Failures {
    fn check(&self, ok: bool, what: String) {
        if !ok {
            println!("CHECK-FAILED {what}");
            self.0.lock().unwrap().push(what);
        }
    }
}

fn emit(out: &Mutex<std::fs::File>, line: String) {
    println!("{line}");
    writeln!(out.lock().unwrap(), "{line}").expect("write the results file");
}

fn runtime(args: &Args) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.num("threads", 2usize))
        .enable_all()
        .build()
        .unwrap()
}

fn results_file(args: &Args) -> Mutex<std::fs::File> {
    let path = args.required("out");
    Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|error| die(&format!("{path}: {error}"))),
    )
}

/// Waits until every subscriber has `events` events (or the timeout).
async fn drain(subs: &Subscribers, events: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if subs.events_min_max().0 >= events {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bench(args: &Args) -> i32 {
    let name = args.required("name").to_owned();
    let (ws_address, ws_path) = split_url(args.required("url"));
    let (http_address, http_path) = split_url(args.required("publish"));
    let pid: u32 = args.required("pid").parse().unwrap_or_else(|_| die("--pid: a process id"));
    let counts: Vec<usize> = args
        .get("subscribers")
        .unwrap_or("1,100,1000")
        .split(',')
        .map(|n| n.trim().parse().unwrap_or_else(|_| die("--subscribers: counts like 1,100,1000")))
        .collect();
    let warmup = Duration::from_secs_f64(args.num("warmup-s", 1.0));
    let duration = Duration::from_secs_f64(args.num("duration-s", 5.0));
    let window_events: u64 = args.num("window-events", 256);
    let depth: usize = args.num("depth", 32);
    let latency_rate: f64 = args.num("latency-rate", 200.0);
    let latency_s: f64 = args.num("latency-s", 5.0);
    let users = args.get("users").unwrap_or("distinct").to_owned();
    let timeout = Duration::from_secs_f64(args.num("timeout-s", 30.0));
    let out = results_file(args);
    let failures = Failures(Mutex::new(Vec::new()));
    let hz = clock_ticks_per_s();
    raise_nofile();
    let runtime = runtime(args);
    runtime.block_on(async {
        let shared = Shared::new();
        let mut next_seq = 1u64;
        for &count in &counts {
            let setup = Instant::now();
            let other_before = shared.other_frames.load(Ordering::Relaxed);
            let subs = match Subscribers::connect(count, &ws_address, &ws_path, &users, &shared, timeout).await {
                Ok(subs) => subs,
                Err(error) => {
                    failures.check(false, format!("{name} subs={count}: {error}"));
                    continue;
                }
            };
            // Let the server's presence traffic (Herald's joins) finish before measuring.
            let mut other = shared.other_frames.load(Ordering::Relaxed);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = shared.other_frames.load(Ordering::Relaxed);
                if now == other {
                    break;
                }
                other = now;
            }
            let setup_s = setup.elapsed().as_secs_f64();
            let setup_frames = shared.other_frames.load(Ordering::Relaxed) - other_before;
            eprintln!("{name}: {count} subscribers in {setup_s:.2} s ({setup_frames} other frames meanwhile)");
            let closed_before = shared.closed_by_server.load(Ordering::Relaxed);

            // Throughput.
            let stop = Arc::new(AtomicBool::new(false));
            let plan = PublishPlan {
                rate: None,
                stop: Arc::clone(&stop),
                count: None,
                subscribers: count as u64,
                window_events,
                depth,
                first_seq: next_seq,
            };
            let bytes_before = shared.event_frame_bytes.load(Ordering::Relaxed);
            let received_before = shared.received.load(Ordering::SeqCst);
            let publisher = tokio::spawn(publish(http_address.clone(), http_path.clone(), Arc::clone(&shared), plan));
            tokio::time::sleep(warmup).await;
            let (t0, frames0, ticks0, client0) =
                (Instant::now(), shared.received.load(Ordering::SeqCst), cpu_ticks(pid), own_cpu_s());
            tokio::time::sleep(duration).await;
            let (t1, frames1, ticks1, client1) =
                (Instant::now(), shared.received.load(Ordering::SeqCst), cpu_ticks(pid), own_cpu_s());
            stop.store(true, Ordering::Relaxed);
            shared.window_opened.notify_one();
            let outcome = match publisher.await.unwrap() {
                Ok(outcome) => outcome,
                Err(error) => {
                    failures.check(false, format!("{name} subs={count} throughput publisher: {error}"));
                    subs.close().await;
                    continue;
                }
            };
            let drained = drain(&subs, outcome.events, timeout).await;
            let seconds = (t1 - t0).as_secs_f64();
            let frames = frames1 - frames0;
            let server_cpu_s = (ticks1 - ticks0) as f64 / hz;
            let total_frames = shared.received.load(Ordering::SeqCst) - received_before;
            let frame_bytes = (shared.event_frame_bytes.load(Ordering::Relaxed) - bytes_before) as f64
                / total_frames.max(1) as f64;
            let (lo, hi) = subs.events_min_max();
            let out_of_order: u64 = subs.subs.iter().map(|s| s.out_of_order.load(Ordering::Relaxed)).sum();
            emit(
                &out,
                format!(
                    "RESULT kind=throughput impl={name} subs={count} events={} frames={frames} seconds={seconds:.3} \
                     frames_per_s={:.0} server_cpu_s={server_cpu_s:.2} frames_per_cpu_s={:.0} server_cores={:.2} \
                     client_cores={:.2} events_per_s={:.0} frame_bytes={frame_bytes:.0} delivered={} refused={} \
                     min_events={lo} max_events={hi} out_of_order={out_of_order} closed_by_server={} \
                     setup_s={setup_s:.2} setup_other_frames={setup_frames}",
                    outcome.events,
                    frames as f64 / seconds,
                    frames as f64 / server_cpu_s.max(1e-9),
                    server_cpu_s / seconds,
                    (client1 - client0) / seconds,
                    frames as f64 / count as f64 / seconds,
                    outcome.delivered,
                    outcome.refused,
                    shared.closed_by_server.load(Ordering::Relaxed) - closed_before,
                ),
            );
            let what = format!("{name} subs={count} throughput");
            failures.check(drained, format!("{what}: subscribers got {lo}..{hi} of {} events", outcome.events));
            failures.check(hi <= outcome.events, format!("{what}: a subscriber got {hi} > {} events", outcome.events));
            failures.check(out_of_order == 0, format!("{what}: {out_of_order} events out of order"));
            failures.check(
                outcome.refused == 0,
                format!("{what}: {} answers not 202, first: {:?}", outcome.refused, outcome.first_refusal),
            );
            failures.check(
                outcome.delivered == outcome.events * count as u64,
                format!("{what}: delivered {} for {} events × {count}", outcome.delivered, outcome.events),
            );
            next_seq += outcome.events;
            for sub in &subs.subs {
                sub.events.store(0, Ordering::Relaxed);
            }

            // Latency at a fixed rate.
            let events = (latency_rate * latency_s).round() as u64;
            shared.latency_from_seq.store(next_seq, Ordering::Relaxed);
            let plan = PublishPlan {
                rate: Some(latency_rate),
                stop: Arc::new(AtomicBool::new(false)),
                count: Some(events),
                subscribers: count as u64,
                window_events,
                depth,
                first_seq: next_seq,
            };
            let (t0, ticks0, client0) = (Instant::now(), cpu_ticks(pid), own_cpu_s());
            let outcome = publish(http_address.clone(), http_path.clone(), Arc::clone(&shared), plan).await;
            let drained = drain(&subs, events, timeout).await;
            let (t1, ticks1, client1) = (Instant::now(), cpu_ticks(pid), own_cpu_s());
            shared.latency_from_seq.store(u64::MAX, Ordering::Relaxed);
            let mut histogram = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
            for sub in &subs.subs {
                for sample in sub.latencies_ns.lock().unwrap().drain(..) {
                    histogram.saturating_record(sample.max(1_000));
                }
            }
            let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
            let seconds = (t1 - t0).as_secs_f64();
            let (lo, hi) = subs.events_min_max();
            let what = format!("{name} subs={count} latency");
            match outcome {
                Ok(outcome) => {
                    emit(
                        &out,
                        format!(
                            "RESULT kind=latency impl={name} subs={count} rate={latency_rate} events={} samples={} \
                             p50_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0} server_cores={:.2} client_cores={:.2}",
                            outcome.events,
                            histogram.len(),
                            us(0.5),
                            us(0.99),
                            us(0.999),
                            histogram.max() as f64 / 1000.0,
                            (ticks1 - ticks0) as f64 / hz / seconds,
                            (client1 - client0) / seconds,
                        ),
                    );
                    failures.check(drained, format!("{what}: subscribers got {lo}..{hi} of {events} events"));
                    failures.check(
                        histogram.len() == events * count as u64,
                        format!("{what}: {} samples for {events} events × {count}", histogram.len()),
                    );
                    failures.check(
                        outcome.delivered == events * count as u64 && outcome.refused == 0,
                        format!("{what}: delivered {} (refused {})", outcome.delivered, outcome.refused),
                    );
                }
                Err(error) => failures.check(false, format!("{what}: publisher: {error}")),
            }
            next_seq += events;
            let closed = shared.closed_by_server.load(Ordering::Relaxed) - closed_before;
            failures.check(closed == 0, format!("{name} subs={count}: the server closed {closed} connections"));
            subs.close().await;
            // Let the server notice the closes before the next count connects.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let failed = !failures.0.lock().unwrap().is_empty();
    i32::from(failed)
}

// ---------------------------------------------------------------------------------------------
// rss

fn rss(args: &Args) -> i32 {
    let name = args.required("name").to_owned();
    let (ws_address, ws_path) = split_url(args.required("url"));
    let pid: u32 = args.required("pid").parse().unwrap_or_else(|_| die("--pid: a process id"));
    let connections: usize = args.num("connections", 5000);
    let settle = Duration::from_secs_f64(args.num("settle-s", 3.0));
    let users = args.get("users").unwrap_or("shared").to_owned();
    let timeout = Duration::from_secs_f64(args.num("timeout-s", 60.0));
    let out = results_file(args);
    let limit = raise_nofile();
    if limit < connections as u64 + 64 {
        die(&format!("RLIMIT_NOFILE is {limit}: too low for {connections} connections"));
    }
    let runtime = runtime(args);
    let gc_signal = args.get("gc-signal") == Some("usr2");
    runtime.block_on(async {
        let shared = Shared::new();
        let before_kib = settled_rss_kib(pid, gc_signal).await;
        let started = Instant::now();
        let subs = match Subscribers::connect(connections, &ws_address, &ws_path, &users, &shared, timeout).await {
            Ok(subs) => subs,
            Err(error) => {
                println!("CHECK-FAILED {name} rss: {error}");
                return 1;
            }
        };
        let setup_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let after_kib = settled_rss_kib(pid, gc_signal).await;
        let closed = shared.closed_by_server.load(Ordering::Relaxed);
        let bytes_per_connection = (after_kib.saturating_sub(before_kib) * 1024) as f64 / connections as f64;
        emit(
            &out,
            format!(
                "RESULT kind=rss impl={name} connections={connections} users={users} rss_before_kib={before_kib} \
                 rss_after_kib={after_kib} bytes_per_connection={bytes_per_connection:.0} setup_s={setup_s:.2} \
                 other_frames={} closed_by_server={closed}",
                shared.other_frames.load(Ordering::Relaxed)
            ),
        );
        subs.close().await;
        if closed > 0 {
            println!("CHECK-FAILED {name} rss: the server closed {closed} connections");
            return 1;
        }
        0
    })
}

/// VmRSS once it has stopped moving: a fresh server may still be touching memory it set up at
/// start (Herald prefaults its first segment), and a garbage-collected one may still be
/// collecting. With `gc`, SIGUSR2 first asks the Node peer for a full collection. Samples every
/// 250 ms until four in a row are within 64 KiB of each other, at most 10 s.
async fn settled_rss_kib(pid: u32, gc: bool) -> u64 {
    if gc {
        // SAFETY: kill has no memory-safety preconditions; the pid is the server we were given.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR2) };
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut samples = vec![vm_rss_kib(pid)];
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(vm_rss_kib(pid));
        let last = &samples[samples.len().saturating_sub(4)..];
        if last.len() == 4 && last.iter().max().unwrap() - last.iter().min().unwrap() < 64 {
            break;
        }
    }
    *samples.last().unwrap()
}

// ---------------------------------------------------------------------------------------------
// report

fn report(args: &Args) -> i32 {
    let path = args.required("results");
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| die(&format!("{path}: {error}")));
    let records: Vec<BTreeMap<String, String>> = text
        .lines()
        .filter_map(|line| line.strip_prefix("RESULT "))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect();
    let find = |kind: &str, name: &str, subs: Option<&str>| {
        records.iter().find(|r| {
            r.get("kind").map(String::as_str) == Some(kind)
                && r.get("impl").map(String::as_str) == Some(name)
                && subs.is_none_or(|s| r.get("subs").map(String::as_str) == Some(s))
        })
    };
    let mut names: Vec<String> = Vec::new();
    let mut counts: Vec<String> = Vec::new();
    for record in &records {
        if let Some(name) = record.get("impl") {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        if let Some(subs) = record.get("subs") {
            if !counts.contains(subs) {
                counts.push(subs.clone());
            }
        }
    }
    let field = |record: Option<&BTreeMap<String, String>>, key: &str| -> Option<f64> {
        record.and_then(|r| r.get(key)).and_then(|v| v.parse().ok())
    };
    let thousands = |value: f64| {
        let digits = format!("{:.0}", value);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let cell = |value: Option<f64>, format: &dyn Fn(f64) -> String| value.map_or("–".to_owned(), format);
    let ms = |us: f64| format!("{:.2} ms", us / 1000.0);

    println!("| subscribers | server | delivered frames/s | server CPU s | frames per server CPU-s | server cores | client cores | frame bytes | p50 | p99 | p99.9 | server cores at the fixed rate |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for subs in &counts {
        for name in &names {
            let t = find("throughput", name, Some(subs));
            let l = find("latency", name, Some(subs));
            if t.is_none() && l.is_none() {
                continue;
            }
            println!(
                "| {subs} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(field(t, "frames_per_s"), &thousands),
                cell(field(t, "server_cpu_s"), &|v| format!("{v:.2}")),
                cell(field(t, "frames_per_cpu_s"), &thousands),
                cell(field(t, "server_cores"), &|v| format!("{v:.2}")),
                cell(field(t, "client_cores"), &|v| format!("{v:.2}")),
                cell(field(t, "frame_bytes"), &|v| format!("{v:.0}")),
                cell(field(l, "p50_us"), &ms),
                cell(field(l, "p99_us"), &ms),
                cell(field(l, "p999_us"), &ms),
                cell(field(l, "server_cores"), &|v| format!("{v:.2}")),
            );
        }
    }
    let rate =
        records.iter().find(|r| r.get("kind").map(String::as_str) == Some("latency")).and_then(|r| r.get("rate"));
    if let Some(rate) = rate {
        println!();
        println!("Latency columns: {rate} events/s for the latency phase's duration, publish → receive, to every subscriber of the row.");
    }

    println!();
    println!("| subscribers | herald ÷ tokio-tungstenite, frames per server CPU-s | herald ÷ node-ws | herald ÷ tokio-tungstenite, frames/s | herald ÷ node-ws, frames/s |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    };
    for subs in &counts {
        let h = find("throughput", "herald", Some(subs));
        let t = find("throughput", "tokio-tungstenite", Some(subs));
        let n = find("throughput", "node-ws", Some(subs));
        println!(
            "| {subs} | {} | {} | {} | {} |",
            ratio(field(h, "frames_per_cpu_s"), field(t, "frames_per_cpu_s")),
            ratio(field(h, "frames_per_cpu_s"), field(n, "frames_per_cpu_s")),
            ratio(field(h, "frames_per_s"), field(t, "frames_per_s")),
            ratio(field(h, "frames_per_s"), field(n, "frames_per_s")),
        );
    }

    let rss: Vec<&BTreeMap<String, String>> =
        records.iter().filter(|r| r.get("kind").map(String::as_str) == Some("rss")).collect();
    if !rss.is_empty() {
        println!();
        println!("| server | idle connections | users | RSS before | RSS after | RSS per idle connection | time to subscribe all | frames besides `subscribed` |");
        println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
        for r in &rss {
            let per = field(Some(r), "bytes_per_connection").unwrap_or(0.0);
            println!(
                "| {} | {} | {} | {} KiB | {} KiB | {:.1} KiB ({} B) | {:.2} s | {} |",
                r["impl"],
                thousands(field(Some(r), "connections").unwrap_or(0.0)),
                r.get("users").map_or("", String::as_str),
                thousands(field(Some(r), "rss_before_kib").unwrap_or(0.0)),
                thousands(field(Some(r), "rss_after_kib").unwrap_or(0.0)),
                per / 1024.0,
                thousands(per),
                field(Some(r), "setup_s").unwrap_or(0.0),
                thousands(field(Some(r), "other_frames").unwrap_or(0.0)),
            );
        }
    }

    println!();
    println!("| target | figure | verdict |");
    println!("| --- | --- | --- |");
    let top = counts.iter().map(|c| c.parse::<u64>().unwrap_or(0)).max().map(|c| c.to_string());
    if let Some(top) = top {
        let h = field(find("throughput", "herald", Some(&top)), "frames_per_cpu_s");
        let t = field(find("throughput", "tokio-tungstenite", Some(&top)), "frames_per_cpu_s");
        match (h, t) {
            (Some(h), Some(t)) if t > 0.0 => println!(
                "| ≥ 1.5× tokio-tungstenite's frames per server CPU-second at {top} subscribers | {} / {} = {:.2}× | {} |",
                thousands(h),
                thousands(t),
                h / t,
                if h / t >= 1.5 { "met" } else { "missed" }
            ),
            _ => println!("| ≥ 1.5× tokio-tungstenite's frames per server CPU-second at {top} subscribers | not measured | – |"),
        }
    }
    let herald_rss: Vec<_> = rss.iter().filter(|r| r.get("impl").map(String::as_str) == Some("herald")).collect();
    if herald_rss.is_empty() {
        println!("| ≤ 16 KiB RSS per idle connection | not measured | – |");
    }
    for r in herald_rss {
        let per = field(Some(r), "bytes_per_connection").unwrap_or(f64::MAX);
        println!(
            "| ≤ 16 KiB RSS per idle connection ({} connections, fresh server, {} user ids) | {:.1} KiB | {} |",
            r["connections"],
            r.get("users").map_or("?", String::as_str),
            per / 1024.0,
            if per <= 16.0 * 1024.0 { "met" } else { "missed" }
        );
    }
    0
}

fn main() {
    let mut raw = std::env::args().skip(1);
    let mode = raw.next().unwrap_or_else(|| die("usage: load bench|rss|report --…"));
    let args = Args::parse(raw);
    let code = match mode.as_str() {
        "bench" => bench(&args),
        "rss" => rss(&args),
        "report" => report(&args),
        other => die(&format!("unknown mode {other}")),
    };
    std::process::exit(code);
}
