//! The event loop: one `mio::Poll` owning the listener, every connection and a `Waker`.
//!
//! A turn: wait for readiness (at most [`TICK`]); accept; read what each ready connection sent
//! and answer every complete request in order (pipelining); then, if the turn appended anything
//! under `fsync = always`, one fsync covers all of it before those answers go out and the events
//! are dispatched; then write. A read in a connection's pipeline after an append of the same
//! turn first settles that fsync, so a client reads its own writes.
//!
//! WebSocket connections with frames queued in the hub wait in one line (`to_pump`), served in
//! order for at most [`PUMP_BUDGET`] per turn (or as long as the rest of the turn took), each
//! with one write of all its queued frames (up to [`WS_OUTPUT_BOUND`], gathered in one send
//! buffer; the connection's own output keeps only what the socket did not take); connections a
//! client just talked to go to the front. Under a broadcast to many connections a turn
//! therefore reads new requests between slices of the fan-out, and each connection's write
//! carries what arrived since its last one: at 1,000 subscribers, writes of hundreds of frames
//! instead of about thirty, which made the server about 1.7 times as fast per CPU-second (a
//! loopback write's cost in the kernel is mostly per write, not per byte).
//!
//! Bounds, per connection: unparsed input at most the header and body limits plus one read
//! chunk (the parser refuses anything larger with 413/431 and the connection closes); unsent
//! output at most [`MAX_UNSENT_BYTES`] before the connection stops being read (a client that
//! pipelines without reading its answers waits for itself, nobody else does); at most
//! [`MAX_ANSWERS_PER_TURN`] requests of one connection per turn (the rest next turn); a partial request
//! older than `server.request_timeout_ms` gets 408 and is closed; a connection idle for
//! `server.idle_timeout_ms` is closed; past `server.max_connections` new connections are closed
//! at once. After a malformed request the connection is answered and closed (HTTP/1.1 framing
//! cannot be trusted after it).
//!
//! Sockets are edge-triggered (mio on epoll): a readable connection is read until a short read
//! (on Linux every arrival raises a new edge, so no extra `read` for `WouldBlock` is needed),
//! and a connection that stopped early at a bound is put on a list to be served again next turn.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::api::{self, Reply};
use super::http::{self, Limits, Method, Parsed, Response, Version};
use super::websocket::{self, Received, Upgrade, WsConn};
use super::{ServerError, ServerHandle};
use crate::dispatch::PendingDispatch;
use crate::realtime::frame;
use crate::realtime::hub::Drained;
use crate::system::System;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// Longest wait for readiness, so timeouts and shutdown are noticed without traffic.
const TICK: Duration = Duration::from_millis(200);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Unsent response bytes after which a connection is not read until it catches up.
const MAX_UNSENT_BYTES: usize = 4 * 1024 * 1024;
/// Requests of one connection answered per turn, so one pipelining client cannot hold the
/// reactor (the rest wait for the next turn).
const MAX_ANSWERS_PER_TURN: usize = 256;
/// How often connections are checked for timeouts.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Bytes of a WebSocket connection's frames moved from its priority queue to its socket buffer
/// at a time: the rest wait in the queue, where a higher priority can still overtake them.
const WS_OUTPUT_BOUND: usize = 64 * 1024;
/// How long a turn may spend sending WebSocket frames before it reads again, at least: as long
/// as the rest of the turn took, if that was longer (so sending keeps up with what the turn's
/// requests queue: a flood of subscriptions with large presence replies, say). Connections not
/// reached wait in line for the next turn, their queues gathering frames meanwhile: under a
/// steady fan-out each connection is written less often and with more frames per write, and a
/// write's cost to the kernel is mostly per write.
const PUMP_BUDGET: Duration = Duration::from_micros(500);
/// How long a closing WebSocket connection may take to send its close and see the peer's.
const WS_CLOSE_GRACE: Duration = Duration::from_secs(2);

struct Settings {
    limits: Limits,
    max_connections: usize,
    idle_timeout: Duration,
    request_timeout: Duration,
    shutdown_timeout: Duration,
    ws_max_frame_bytes: usize,
    ws_ping_interval: Duration,
    ws_idle_timeout: Duration,
}

pub(super) struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    connections: HashMap<Token, Connection>,
    next_token: usize,
    /// Connections that stopped reading early (backpressure) and must be read again.
    unread: Vec<Token>,
    /// WebSocket connections to pump, in turn (each once: its `pump_scheduled` flag).
    to_pump: VecDeque<Token>,
    /// Open WebSocket connections (without any, a turn does not touch the hub).
    ws_connections: usize,
    /// Where reads land before they are appended to a connection's input.
    scratch: Box<[u8]>,
    /// Where a WebSocket connection's queued frames are gathered for one write.
    send_buffer: Vec<u8>,
    system: Arc<System>,
    settings: Settings,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

struct Connection {
    stream: TcpStream,
    /// Received, not yet parsed.
    input: Vec<u8>,
    /// Answers of this turn, in request order, not yet serialized.
    answers: Vec<Answer>,
    /// Serialized, not yet sent (from `sent`).
    output: Vec<u8>,
    sent: usize,
    last_active: Instant,
    /// When the oldest unparsed byte arrived.
    partial_since: Option<Instant>,
    /// Close once `output` is sent.
    closing: bool,
    /// The peer shut its side down.
    peer_closed: bool,
    /// `100 Continue` was sent for the request being received.
    continued: bool,
    /// The last read stopped at a bound with bytes possibly left in the socket.
    read_blocked: bool,
    /// The last `answer` stopped at the output bound with requests left in `input`.
    answer_blocked: bool,
    /// An interim `100 Continue` for the partial request, sent after this turn's answers.
    interim: Vec<u8>,
    /// Set once the connection was upgraded to WebSocket (`input` then holds frames).
    ws: Option<Box<WsConn>>,
    /// In the reactor's `to_pump` line.
    pump_scheduled: bool,
}

struct Answer {
    response: Response,
    version: Version,
    keep_alive: bool,
    head: bool,
    /// For an append: which of the turn's settles makes it durable (its answer becomes an error
    /// if that settle's fsync fails).
    settle: Option<u32>,
    /// For an accepted WebSocket upgrade: the `101` bytes, sent instead of `response`.
    upgrade: Option<Vec<u8>>,
}

/// Events a turn may append before it settles them mid-turn (their ring slots stay claimed
/// until they are dispatched, so a turn must not hold too many).
const MAX_PENDING_EVENTS: usize = 4096;

/// What a turn appended and has not yet made durable.
struct Turn<'a> {
    pending: Vec<PendingDispatch<'a>>,
    pending_events: usize,
    /// Settles done so far in this turn (the next one's number).
    settles: u32,
    /// The first settle whose fsync failed, and why: its appends and later ones are not acknowledged.
    failed: Option<(u32, String)>,
}

impl<'a> Turn<'a> {
    fn new() -> Self {
        Turn { pending: Vec::new(), pending_events: 0, settles: 0, failed: None }
    }

    /// Makes the turn's appends so far durable and dispatches them.
    fn settle(&mut self, system: &'a System) {
        if self.pending.is_empty() {
            return;
        }
        match system.sync_pending() {
            Ok(()) => {
                self.pending.drain(..).for_each(PendingDispatch::dispatch);
                system.after_sync();
            }
            Err(error) => {
                eprintln!("herald: fsync failed, appends of this turn are not acknowledged: {error}");
                self.failed.get_or_insert((self.settles, error.to_string()));
                self.pending.clear();
            }
        }
        self.pending_events = 0;
        self.settles += 1;
    }

    /// Why the append settled by settle number `settle` was not made durable, if it was not.
    fn failure_for(&self, settle: u32) -> Option<&str> {
        self.failed.as_ref().filter(|(first, _)| *first <= settle).map(|(_, cause)| cause.as_str())
    }
}

impl Reactor {
    pub(super) fn bind(system: Arc<System>) -> Result<Reactor, ServerError> {
        let config = system.config();
        let address = config.server.listen.clone();
        let bind_error = |source| ServerError::Bind { address: address.clone(), source };
        let parsed: SocketAddr = address
            .parse()
            .map_err(|error| bind_error(std::io::Error::new(ErrorKind::InvalidInput, format!("{error}"))))?;
        let mut listener = TcpListener::bind(parsed).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let poll = Poll::new().map_err(ServerError::Reactor)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(ServerError::Reactor)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(ServerError::Reactor)?);
        let server = &config.server;
        let settings = Settings {
            limits: Limits {
                max_header_bytes: server.max_header_bytes,
                max_body_bytes: server.max_body_bytes,
                ..Limits::default()
            },
            max_connections: server.max_connections,
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            request_timeout: Duration::from_millis(server.request_timeout_ms),
            shutdown_timeout: Duration::from_millis(server.shutdown_timeout_ms),
            ws_max_frame_bytes: config.websocket.max_frame_bytes,
            ws_ping_interval: Duration::from_millis(config.websocket.ping_interval_ms),
            ws_idle_timeout: Duration::from_millis(config.websocket.idle_timeout_ms),
        };
        system.realtime().set_waker(Arc::clone(&waker));
        Ok(Reactor {
            poll,
            listener: Some(listener),
            local_addr,
            connections: HashMap::new(),
            next_token: FIRST_CONNECTION,
            unread: Vec::new(),
            to_pump: VecDeque::new(),
            ws_connections: 0,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            send_buffer: Vec::new(),
            system,
            settings,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(super) fn handle(&self) -> ServerHandle {
        ServerHandle { stop: Arc::clone(&self.stop), waker: Arc::clone(&self.waker) }
    }

    pub(super) fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        let mut shutdown_deadline: Option<Instant> = None;
        let mut last_sweep = Instant::now();
        let system = Arc::clone(&self.system);
        system.realtime().set_reactor_thread();
        loop {
            let timeout = if self.unread.is_empty() && self.to_pump.is_empty() { TICK } else { Duration::ZERO };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != ErrorKind::Interrupted {
                    return Err(ServerError::Reactor(error));
                }
            }
            let shutting_down = shutdown_deadline.is_some();
            let turn_started = Instant::now();
            let mut turn = Turn::new();
            // (token, whether to read it): connections left unread last turn, and this turn's.
            let mut touched: Vec<(Token, bool)> = self.unread.drain(..).map(|token| (token, true)).collect();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token => {
                        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                        if let Some(connection) = self.connections.get_mut(&token) {
                            if readable {
                                connection.last_active = Instant::now();
                            }
                        }
                        touched.push((token, readable));
                    }
                }
            }
            // One entry per connection, readable if any of its entries was.
            touched.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            touched.dedup_by_key(|entry| entry.0);
            for &(token, readable) in &touched {
                let Some(connection) = self.connections.get_mut(&token) else { continue };
                if readable && connection.ws.is_some() && connection.closing {
                    connection.discard_input(&mut self.scratch);
                } else if readable {
                    connection.read_some(&self.settings.limits, &mut self.scratch);
                }
                if connection.ws.is_none() {
                    connection.answer(token, &system, &self.settings, shutting_down, &mut turn);
                    if connection.ws.is_some() {
                        self.ws_connections += 1;
                    }
                }
                // After an upgrade the rest of the input is the client's first frames.
                if connection.ws.is_some() {
                    connection.receive_frames(token, &system);
                    if connection.read_blocked {
                        self.unread.push(token);
                    }
                }
            }
            turn.settle(&system);
            for &(token, _) in &touched {
                let Some(connection) = self.connections.get_mut(&token) else { continue };
                connection.serialize(&turn);
                if connection.ws.is_some() {
                    continue; // flushed by `pump` below
                }
                if connection.flush() {
                    self.close(token);
                } else if connection.blocked() && connection.unsent() < MAX_UNSENT_BYTES {
                    // It stopped with bytes left in the socket or requests left unanswered; no
                    // new readiness edge will come for them.
                    self.unread.push(token);
                }
            }
            // Also with no WebSocket connection left: the line may still hold the tokens of
            // closed ones, and a turn does not wait for readiness while it holds anything.
            if self.ws_connections > 0 || !self.to_pump.is_empty() {
                self.pump(&touched, turn_started.elapsed().max(PUMP_BUDGET));
            }
            if self.stop.load(Ordering::Acquire) && shutdown_deadline.is_none() {
                shutdown_deadline = Some(Instant::now() + self.settings.shutdown_timeout);
                self.stop_accepting();
            }
            if last_sweep.elapsed() >= SWEEP_EVERY || shutdown_deadline.is_some() {
                last_sweep = Instant::now();
                self.sweep(shutdown_deadline.is_some());
            }
            if let Some(deadline) = shutdown_deadline {
                if self.connections.is_empty() || Instant::now() >= deadline {
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        loop {
            match listener.accept() {
                Ok((mut stream, _peer)) => {
                    if self.connections.len() >= self.settings.max_connections {
                        continue; // dropped: closed at once
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, token, interest).is_err() {
                        continue;
                    }
                    self.connections.insert(token, Connection::new(stream));
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of file descriptors, say: keep serving the open connections.
                    eprintln!("herald: accept failed: {error}");
                    return;
                }
            }
        }
    }

    /// Puts a WebSocket connection in line to be pumped (at the front: one its client just
    /// talked to, whose reply or handshake should not wait behind a fan-out), unless it is already.
    fn schedule_pump(&mut self, token: Token, front: bool) {
        let Some(connection) = self.connections.get_mut(&token) else { return };
        if connection.ws.is_none() || connection.pump_scheduled {
            return;
        }
        connection.pump_scheduled = true;
        if front {
            self.to_pump.push_front(token);
        } else {
            self.to_pump.push_back(token);
        }
    }

    /// Sends queued frames of WebSocket connections, one write each of at most
    /// [`WS_OUTPUT_BOUND`]; makes the closes the hub asked for. Connections are
    /// served in line (those the hub marked, and this turn's `touched`) for at most `budget`;
    /// the rest wait for the next turn, which first reads what clients sent.
    fn pump(&mut self, touched: &[(Token, bool)], budget: Duration) {
        let started = Instant::now();
        let dirty = self.system.realtime().hub().take_dirty();
        for id in dirty {
            self.schedule_pump(Token(id), false);
        }
        for &(token, _) in touched {
            self.schedule_pump(token, true);
        }
        while started.elapsed() < budget {
            let Some(token) = self.to_pump.pop_front() else { break };
            let Some(connection) = self.connections.get_mut(&token) else { continue };
            connection.pump_scheduled = false;
            let mut more = false;
            if !connection.closing {
                // With nothing unsent, the frames go through the reactor's one send buffer,
                // which stays in cache, instead of the connection's own; only what the socket
                // does not take is kept there.
                let direct = connection.unsent() == 0;
                let (target, limit) = if direct {
                    self.send_buffer.clear();
                    (&mut self.send_buffer, WS_OUTPUT_BOUND)
                } else {
                    (&mut connection.output, connection.sent + WS_OUTPUT_BOUND)
                };
                // The hub's lock is held while frames are copied, not while they are sent.
                match self.system.realtime().hub().drain_into(token.0, target, limit) {
                    Drained::Frames { more_queued } => more = more_queued,
                    Drained::Close(code, reason) => {
                        connection.output.extend_from_slice(&frame::close(code, reason));
                        connection.closing = true;
                    }
                }
                if direct && !self.send_buffer.is_empty() {
                    connection.send_or_keep(&self.send_buffer);
                }
            }
            if connection.flush_ws() {
                self.close(token);
            } else if more && connection.unsent() == 0 {
                // Sent everything it was given with frames still queued: in line again
                // (with output left, the socket's writable edge brings it back).
                self.schedule_pump(token, false);
            }
        }
    }

    fn stop_accepting(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    /// Closes timed-out connections; while shutting down, also every idle one.
    fn sweep(&mut self, shutting_down: bool) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for (&token, connection) in &mut self.connections {
            if let Some(ws) = &mut connection.ws {
                if connection.closing {
                    // A closing connection whose peer neither reads its close nor closes is
                    // dropped after a grace period.
                    let since = *ws.closing_since.get_or_insert(now);
                    if now.duration_since(since) >= WS_CLOSE_GRACE || connection.flush_ws() {
                        expired.push(token);
                    }
                    continue;
                }
                // Buffers a burst grew stay while frames flow (regrowing them every turn was a
                // sixth of a busy fan-out's time, in malloc); an idle connection gives them back.
                let queued = self.system.realtime().hub().shrink_if_idle(token.0);
                if queued == 0 && connection.output.len() == connection.sent {
                    shrink_idle(&mut connection.output);
                    shrink_idle(&mut connection.input);
                }
                let close = if shutting_down && connection.output.len() == connection.sent && queued == 0 {
                    Some((1001, "server shutting down"))
                } else if now.duration_since(ws.last_heard) >= self.settings.ws_idle_timeout {
                    Some((1001, "idle timeout"))
                } else {
                    None
                };
                if let Some((code, reason)) = close {
                    if !connection.closing {
                        connection.output.extend_from_slice(&frame::close(code, reason));
                        connection.closing = true;
                    }
                } else if now.duration_since(ws.last_ping) >= self.settings.ws_ping_interval {
                    ws.last_ping = now;
                    connection.output.extend_from_slice(&frame::ping());
                }
                if connection.flush_ws() {
                    expired.push(token);
                }
                continue;
            }
            // While shutting down, a connection owed nothing is closed, even mid-request: that
            // request would be refused anyway.
            let owed_nothing = connection.unsent() == 0 && connection.answers.is_empty();
            if shutting_down && owed_nothing {
                expired.push(token);
                continue;
            }
            if let Some(since) = connection.partial_since {
                if now.duration_since(since) >= self.settings.request_timeout && !connection.closing {
                    let response = Response::error(408, "request_timeout", "the request was not completed in time");
                    connection.input.clear();
                    connection.partial_since = None;
                    connection.closing = true;
                    let version = Version::Http11;
                    connection.answers.push(Answer {
                        response,
                        version,
                        keep_alive: false,
                        head: false,
                        settle: None,
                        upgrade: None,
                    });
                    connection.serialize(&Turn::new());
                    if connection.flush() {
                        expired.push(token);
                    }
                    continue;
                }
            }
            if now.duration_since(connection.last_active) >= self.settings.idle_timeout {
                expired.push(token);
            }
        }
        for token in expired {
            self.close(token);
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut connection) = self.connections.remove(&token) {
            let _ = self.poll.registry().deregister(&mut connection.stream);
            if connection.ws.is_some() {
                self.ws_connections -= 1;
                self.system.realtime().hub().disconnect(token.0);
            }
        }
        // A token is never reused: `to_pump` skips it once the connection is gone.
        self.unread.retain(|t| *t != token);
    }
}

/// Writes `bytes` until they are all sent, the socket would block, or it fails: how many were
/// sent, and whether it failed (an error, or a write of nothing).
fn write_until_blocked(stream: &mut TcpStream, bytes: &[u8]) -> (usize, bool) {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return (sent, true),
            Ok(written) => sent += written,
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (sent, true),
        }
    }
    (sent, false)
}

/// Gives back the memory of an empty buffer a burst grew, so an idle connection holds little.
fn shrink_idle(buffer: &mut Vec<u8>) {
    if buffer.capacity() > 4 * 1024 && buffer.is_empty() {
        *buffer = Vec::new();
    }
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            input: Vec::new(),
            answers: Vec::new(),
            output: Vec::new(),
            sent: 0,
            last_active: Instant::now(),
            partial_since: None,
            closing: false,
            peer_closed: false,
            continued: false,
            read_blocked: false,
            answer_blocked: false,
            interim: Vec::new(),
            ws: None,
            pump_scheduled: false,
        }
    }

    /// Reads the WebSocket frames in the input: text messages go to the hub; a close the
    /// gateway must make is queued as a close frame.
    fn receive_frames(&mut self, token: Token, system: &System) {
        let Some(ws) = &mut self.ws else { return };
        if self.closing {
            self.input.clear();
            return;
        }
        if self.input.is_empty() && !self.peer_closed {
            return;
        }
        let received = {
            let realtime = system.realtime();
            let mut hub = None;
            ws.receive(&mut self.input, &mut self.output, |text| {
                hub.get_or_insert_with(|| realtime.hub()).handle(token.0, text, system.store().as_ref())
            })
        };
        match received {
            Received::More => {}
            Received::PeerClosed => self.closing = true,
            Received::Close(code, reason) => {
                self.output.extend_from_slice(&frame::close(code, reason));
                self.closing = true;
                self.input.clear();
            }
        }
    }

    /// Reads and drops what a closing WebSocket peer still sends, to see its end of stream.
    fn discard_input(&mut self, scratch: &mut [u8]) {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    return;
                }
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.peer_closed = true;
                    return;
                }
            }
        }
    }

    /// [`Connection::flush`] for a WebSocket connection, which has no answers.
    fn flush_ws(&mut self) -> bool {
        if self.closing && self.peer_closed {
            return true;
        }
        let mut done = self.flush();
        if done && self.closing && self.unsent() == 0 && !self.peer_closed {
            // Everything, the close frame last, is sent: stop writing and let the peer close,
            // so unread input does not turn the close into a reset that could destroy the
            // close frame. Reads go on (discarded) until its end of stream or the grace period.
            if let Some(ws) = &mut self.ws {
                if !ws.write_shut {
                    ws.write_shut = true;
                    let _ = self.stream.shutdown(std::net::Shutdown::Write);
                }
            }
            done = false;
        }
        done
    }

    fn unsent(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Whether it stopped short of what it was given (see `read_blocked`, `answer_blocked`).
    fn blocked(&self) -> bool {
        !self.closing && (self.read_blocked || self.answer_blocked)
    }

    /// Whether reading more is within the bounds now.
    fn can_read(&self, limits: &Limits) -> bool {
        // The parser may need a head, a body and chunk framing up to the header limit.
        let max_input = 2 * limits.max_header_bytes + limits.max_body_bytes + READ_CHUNK;
        !self.closing && !self.peer_closed && self.input.len() < max_input && self.unsent() < MAX_UNSENT_BYTES
    }

    /// Reads what the socket holds, within the bounds; sets `read_blocked` when it stopped
    /// before the socket was drained.
    ///
    /// A read shorter than `scratch` means the socket had nothing more at that moment: it stops
    /// there instead of paying another `read` for `WouldBlock`, because on Linux epoll every
    /// arrival of data (or of the FIN) raises a new edge even when earlier data was not drained.
    fn read_some(&mut self, limits: &Limits, scratch: &mut [u8]) {
        self.read_blocked = false;
        loop {
            if !self.can_read(limits) {
                self.read_blocked = !self.closing && !self.peer_closed;
                return;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    return;
                }
                Ok(read) => {
                    self.input.extend_from_slice(&scratch[..read]);
                    if self.partial_since.is_none() {
                        self.partial_since = Some(Instant::now());
                    }
                    if read < scratch.len() {
                        return;
                    }
                }
                Err(error) => match error.kind() {
                    ErrorKind::WouldBlock => return,
                    ErrorKind::Interrupted => {}
                    _ => {
                        self.peer_closed = true;
                        self.closing = true;
                        return;
                    }
                },
            }
        }
    }

    /// Answers every complete request in the input, in order; an accepted WebSocket upgrade
    /// switches the connection to frames (the rest of the input is the client's first frames).
    fn answer<'a>(
        &mut self,
        token: Token,
        system: &'a System,
        settings: &Settings,
        shutting_down: bool,
        turn: &mut Turn<'a>,
    ) {
        let limits = &settings.limits;
        let mut consumed_total = 0;
        self.answer_blocked = false;
        while !self.closing {
            let rest = &self.input[consumed_total..];
            if rest.is_empty() {
                break;
            }
            if self.unsent() >= MAX_UNSENT_BYTES || self.answers.len() >= MAX_ANSWERS_PER_TURN {
                self.answer_blocked = true;
                break;
            }
            match http::parse(rest, limits) {
                Ok(Parsed::Partial { expect_continue }) => {
                    if expect_continue && !self.continued {
                        // The client waits for this before it sends the body (curl does).
                        self.continued = true;
                        self.interim.extend_from_slice(http::CONTINUE_RESPONSE);
                    }
                    break;
                }
                Ok(Parsed::Complete { request, consumed }) => {
                    consumed_total += consumed;
                    self.continued = false;
                    let keep_alive = request.keep_alive && !shutting_down;
                    let head = request.method == Method::Head;
                    let version = request.version;
                    let appends = request.method == Method::Post;
                    if !appends || request.path == "/v1/broadcast" {
                        // Reads see this turn's appends: settle them first. A broadcast too: its
                        // fan-out must follow the fan-out of the turn's earlier events.
                        turn.settle(system);
                    }
                    if request.path == "/v1/ws" && !shutting_down {
                        match websocket::upgrade(system, &request) {
                            Upgrade::Accept(bytes, identity) => {
                                let response = Response::empty(101);
                                let upgrade = Some(bytes);
                                self.answers.push(Answer {
                                    response,
                                    version,
                                    keep_alive,
                                    head,
                                    settle: None,
                                    upgrade,
                                });
                                self.ws = Some(Box::new(WsConn::new(settings.ws_max_frame_bytes)));
                                system.realtime().hub().connect(token.0, identity);
                                self.partial_since = None;
                                self.input.drain(..consumed_total);
                                return;
                            }
                            Upgrade::Refuse(response) => {
                                let (keep_alive, settle, upgrade) = (false, None, None);
                                self.answers.push(Answer { response, version, keep_alive, head, settle, upgrade });
                                self.closing = true;
                                continue;
                            }
                        }
                    }
                    let answer = match api::handle(system, &request, shutting_down) {
                        Reply::Now(response) => {
                            Answer { response, version, keep_alive, head, settle: None, upgrade: None }
                        }
                        Reply::AfterSync(response, pending) => {
                            turn.pending_events += pending.len();
                            turn.pending.push(pending);
                            let settle = Some(turn.settles);
                            Answer { response, version, keep_alive, head, settle, upgrade: None }
                        }
                    };
                    if turn.pending_events >= MAX_PENDING_EVENTS {
                        turn.settle(system);
                    }
                    if !keep_alive {
                        self.closing = true;
                    }
                    self.answers.push(answer);
                }
                Err(error) => {
                    let response = error.to_response();
                    let version = Version::Http11;
                    let (keep_alive, head, settle, upgrade) = (false, false, None, None);
                    self.answers.push(Answer { response, version, keep_alive, head, settle, upgrade });
                    self.closing = true;
                    consumed_total = self.input.len();
                }
            }
        }
        self.input.drain(..consumed_total);
        self.partial_since = if self.input.is_empty() { None } else { self.partial_since.or(Some(Instant::now())) };
    }

    /// Turns the answers into bytes; an append's becomes an error if its settle's fsync failed.
    fn serialize(&mut self, turn: &Turn<'_>) {
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
        for answer in self.answers.drain(..) {
            if let Some(bytes) = &answer.upgrade {
                self.output.extend_from_slice(bytes);
                continue;
            }
            let response = match answer.settle.and_then(|settle| turn.failure_for(settle)) {
                Some(cause) => Response::error(
                    500,
                    "internal_error",
                    &format!("the events could not be made durable, nothing is acknowledged: {cause}"),
                ),
                _ => answer.response,
            };
            response.write_to_version(&mut self.output, answer.version, answer.keep_alive, answer.head);
        }
        // After every complete request's answer: it is for the partial request that follows.
        self.output.append(&mut self.interim);
    }

    /// Sends `bytes` now, with nothing unsent before them; what the socket does not take is
    /// kept in `output` (also after an error, which the next flush meets again).
    fn send_or_keep(&mut self, bytes: &[u8]) {
        let (written, _) = write_until_blocked(&mut self.stream, bytes);
        self.output.extend_from_slice(&bytes[written..]);
    }

    /// Sends what it can. Returns whether the connection is finished and must be closed.
    fn flush(&mut self) -> bool {
        let (written, failed) = write_until_blocked(&mut self.stream, &self.output[self.sent..]);
        self.sent += written;
        if failed {
            return true;
        }
        if self.sent < self.output.len() {
            return false;
        }
        self.output.clear();
        self.sent = 0;
        // Once the peer closed, what is left in `input` can never complete: once every complete
        // request is answered (none left over at a per-turn bound), the connection is done.
        self.closing || (self.peer_closed && !self.answer_blocked)
    }
}
