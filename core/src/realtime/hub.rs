//! The hub: connections, rooms, presence and fan-out, behind one lock (`super::Realtime`).
//!
//! Invariants:
//! - every connection is in `user:<its user id>`; a room lists exactly the connections
//!   subscribed to it, and a connection lists exactly its rooms;
//! - presence (not kept for `user:` rooms) counts, per room and user, that user's connections in
//!   the room; a member exists only with a count above zero. `join` goes to the room's other
//!   connections when a count goes 0 → 1, `leave` when it goes 1 → 0 (also on disconnect);
//! - a subscription taken at log position `P` (the last visible position then) replays the
//!   room's persistent events in `(since, P]` from the log and skips any live persistent event
//!   at or before `P` that reaches it later, so the switch-over has no gap and no duplicate: an
//!   event after `P` was not yet visible, so its fan-out (which runs after its append, under
//!   this lock) comes after the subscription;
//! - a frame is encoded once per broadcast, stored once in `frames` and shared by every
//!   recipient's queue (see [`super::queue`]); a disconnect releases what its queue held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;

use super::auth::Identity;
use super::event::{Priority, WsEvent};
use super::frame;
use super::queue::{FrameId, Frames, Push, Queued, SendQueue};
use crate::event::time::format_rfc3339_micros;
use crate::event::EventKind;
use crate::metrics::latency_histogram;
use crate::store::{EventStore, ReadQuery, StoreError};

/// A connection's id (the reactor's token).
pub type ConnId = usize;

/// The hub's maps hash with foldhash: keys are connection ids and room names it made itself.
type Fast = foldhash::fast::RandomState;

/// One user's presence in a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub connections: u32,
    pub joined_ns: u64,
}

#[derive(Default)]
struct Room {
    conns: HashSet<ConnId, Fast>,
    members: BTreeMap<String, Member>,
}

/// A connection as the hub sees it.
pub struct Conn {
    pub identity: Identity,
    /// Room → live persistent events at or before this position are skipped (replayed or
    /// older than the subscription).
    rooms: HashMap<String, Option<u64>, Fast>,
    queue: SendQueue,
    /// Listed in the hub's `dirty` already.
    dirty: bool,
    /// Set when the connection must be closed (code, reason): its queue overflowed.
    pub close: Option<(u16, &'static str)>,
}

/// What [`Hub::drain_into`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Appended frames; whether some are still queued.
    Frames { more_queued: bool },
    /// Appended nothing: the connection must be closed with this code and reason.
    Close(u16, &'static str),
}

/// Counters for both metrics endpoints.
#[derive(Clone, Debug, Default)]
pub struct HubCounters {
    pub broadcast: u64,
    pub delivered: u64,
    pub dropped_low_priority: u64,
    pub dropped_slow_consumer: u64,
    pub dropped_excluded: u64,
}

/// See the module docs.
pub struct Hub {
    conns: HashMap<ConnId, Conn, Fast>,
    rooms: HashMap<String, Room, Fast>,
    /// Connections with frames to send or a close to make (each once: its `dirty` flag).
    dirty: Vec<ConnId>,
    /// The frames the queues hold.
    frames: Frames,
    queue_frames: usize,
    history_size: usize,
    pub counters: HubCounters,
    pub fanout_latency: Histogram<u64>,
}

#[derive(Deserialize)]
struct Op {
    op: Option<String>,
    room: Option<serde_json::Value>,
    since: Option<serde_json::Value>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn text(value: &serde_json::Value) -> Bytes {
    frame::text(value.to_string().as_bytes())
}

fn error_frame(code: &str, message: &str) -> Bytes {
    text(&json!({"op": "error", "code": code, "message": message}))
}

impl Hub {
    pub fn new(queue_frames: usize, history_size: usize) -> Self {
        Hub {
            conns: HashMap::default(),
            rooms: HashMap::default(),
            dirty: Vec::new(),
            frames: Frames::default(),
            queue_frames,
            history_size,
            counters: HubCounters::default(),
            fanout_latency: latency_histogram(),
        }
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Registers a connection (in its `user:` room).
    pub fn connect(&mut self, id: ConnId, identity: Identity) {
        let user_room = format!("user:{}", identity.user_id);
        let mut rooms = HashMap::default();
        rooms.insert(user_room.clone(), None);
        let queue = SendQueue::new(self.queue_frames);
        self.conns.insert(id, Conn { identity, rooms, queue, close: None, dirty: false });
        self.rooms.entry(user_room).or_default().conns.insert(id);
    }

    /// Removes a connection from every room (presence `leave`s go out).
    pub fn disconnect(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        conn.queue.clear(&mut self.frames);
        self.frames.shrink_if_empty();
        for room in conn.rooms.keys() {
            self.leave(id, &conn.identity.user_id, room);
        }
    }

    /// The connections with something to send, emptied.
    pub fn take_dirty(&mut self) -> Vec<ConnId> {
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.dirty = false;
            }
        }
        dirty
    }

    fn mark(dirty: &mut Vec<ConnId>, id: ConnId, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            dirty.push(id);
        }
    }

    /// [`SendQueue::shrink_if_idle`] on a connection (and the frame table, once no frame is
    /// queued anywhere); the frames it has queued (0 if unknown).
    pub fn shrink_if_idle(&mut self, id: ConnId) -> usize {
        self.frames.shrink_if_empty();
        self.conns.get_mut(&id).map_or(0, |conn| {
            conn.queue.shrink_if_idle();
            conn.queue.len()
        })
    }

    /// A connection's state (for tests: the reactor drains queues with `drain_into`).
    #[cfg(test)]
    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    /// For the reactor: the close to make on a connection, if the hub asked for one; otherwise
    /// its queued frames are appended to `out`, in order, until `out` holds `limit` bytes.
    pub fn drain_into(&mut self, id: ConnId, out: &mut Vec<u8>, limit: usize) -> Drained {
        let Some(conn) = self.conns.get_mut(&id) else { return Drained::Frames { more_queued: false } };
        if let Some((code, reason)) = conn.close {
            return Drained::Close(code, reason);
        }
        while out.len() < limit && conn.queue.pop_into(&mut self.frames, out) {}
        Drained::Frames { more_queued: !conn.queue.is_empty() }
    }

    /// Queues one frame on each of `ids` at `priority`.
    fn push_each(&mut self, ids: &[ConnId], item: Queued, priority: Priority) {
        let frame = self.frames.add(item);
        for id in ids {
            if let Some(conn) = self.conns.get_mut(id) {
                Self::push_to(&mut self.dirty, &mut self.counters, &mut self.frames, *id, conn, frame, priority);
            }
        }
        self.frames.release(frame);
    }

    /// Queues `frame` on `conn` (see [`SendQueue::push`]); whether it was queued.
    fn push_to(
        dirty: &mut Vec<ConnId>,
        counters: &mut HubCounters,
        frames: &mut Frames,
        id: ConnId,
        conn: &mut Conn,
        frame: FrameId,
        priority: Priority,
    ) -> bool {
        if conn.close.is_some() {
            return false;
        }
        Self::mark(dirty, id, conn);
        match conn.queue.push(frames, frame, priority) {
            Push::Queued => true,
            Push::DroppedLow => {
                counters.dropped_low_priority += 1;
                priority != Priority::Low
            }
            Push::Overflow => {
                counters.dropped_slow_consumer += 1;
                conn.close = Some((1013, "slow consumer"));
                false
            }
        }
    }

    /// Handles one client text frame; replies are queued on the connection.
    pub fn handle(&mut self, id: ConnId, text_frame: &[u8], store: &dyn EventStore) {
        let op: Op = match serde_json::from_slice(text_frame) {
            Ok(op) => op,
            Err(error) if error.classify() == serde_json::error::Category::Data => {
                return self.reply(id, error_frame("invalid_request", "a message is a JSON object with an `op`"));
            }
            Err(error) => return self.reply(id, error_frame("invalid_json", &error.to_string())),
        };
        let room = match &op.room {
            Some(serde_json::Value::String(room)) if !room.is_empty() && room.len() <= 256 => Some(room.clone()),
            Some(_) => return self.reply(id, error_frame("invalid_request", "`room` must be a string of 1–256 bytes")),
            None => None,
        };
        match (op.op.as_deref(), room) {
            (Some("ping"), _) => self.reply(id, text(&json!({"op": "pong"}))),
            (Some("subscribe" | "unsubscribe" | "presence"), Some(room)) if !well_formed(&room) => {
                self.reply(id, error_frame("invalid_request", "a room is named `<kind>:<id>`"))
            }
            (Some("subscribe"), Some(room)) => {
                let since = match op.since {
                    None | Some(serde_json::Value::Null) => None,
                    Some(value) => match value.as_u64() {
                        Some(since) => Some(since),
                        None => {
                            return self.reply(id, error_frame("invalid_request", "`since` must be a position"));
                        }
                    },
                };
                self.subscribe(id, &room, since, store);
            }
            (Some("unsubscribe"), Some(room)) => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if room != format!("user:{}", conn.identity.user_id) && conn.rooms.remove(&room).is_some() {
                        conn.queue.forget_room(&mut self.frames, &room);
                        let user = conn.identity.user_id.clone();
                        self.leave(id, &user, &room);
                    }
                }
                self.reply(id, text(&json!({"op": "unsubscribed", "room": room})));
            }
            (Some("presence"), Some(room)) => {
                let allowed = self.conns.get(&id).is_some_and(|c| c.identity.may_join(&room));
                if !allowed {
                    return self.reply(id, error_frame("forbidden", &format!("room `{room}` is not allowed")));
                }
                let members = self.members_json(&room);
                self.reply(id, text(&json!({"op": "presence", "room": room, "members": members})));
            }
            (Some("subscribe" | "unsubscribe" | "presence"), None) => {
                self.reply(id, error_frame("invalid_request", "`room` is required"))
            }
            (Some(other), _) => self.reply(id, error_frame("invalid_request", &format!("unknown op `{other}`"))),
            (None, _) => self.reply(id, error_frame("invalid_request", "`op` is required")),
        }
    }

    /// Queues a reply in the ordered lane (replies keep the order of the ops).
    fn reply(&mut self, id: ConnId, frame: Bytes) {
        self.push_ordered(id, vec![Queued { frame, room: None, persistent: false }]);
    }

    /// Queues frames in the ordered lane; a client that lets more than a full replay plus a
    /// full queue of them pile up is closed as a slow consumer.
    fn push_ordered(&mut self, id: ConnId, items: Vec<Queued>) {
        let bound = self.history_size + self.queue_frames;
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.close.is_some() {
            return;
        }
        Self::mark(&mut self.dirty, id, conn);
        if conn.queue.ordered_len() + items.len() > bound {
            self.counters.dropped_slow_consumer += 1;
            conn.close = Some((1013, "slow consumer"));
            return;
        }
        for item in items {
            let frame = self.frames.add(item);
            conn.queue.push_ordered(&mut self.frames, frame);
            self.frames.release(frame);
        }
    }

    /// Queues an error frame (the gateway's own errors, such as a frame it cannot read).
    pub fn error(&mut self, id: ConnId, code: &str, message: &str) {
        self.reply(id, error_frame(code, message));
    }

    fn subscribe(&mut self, id: ConnId, room: &str, since: Option<u64>, store: &dyn EventStore) {
        let Some(conn) = self.conns.get(&id) else { return };
        if !conn.identity.may_join(room) {
            return self.reply(id, error_frame("forbidden", &format!("room `{room}` is not allowed")));
        }
        let user = conn.identity.user_id.clone();
        // Subscribed already: the subscription keeps the position it took effect at, since
        // every later event of the room has been (or will be) queued live on it.
        let previous = conn.rooms.get(room).copied();
        let last = match previous {
            Some(taken_at) => taken_at,
            None => store.bounds().1.checked_sub(1),
        };
        let (replay, recovered) = match since {
            Some(since) => self.history(room, since, last, &user, store),
            None => (Vec::new(), true),
        };
        if previous.is_none() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.rooms.insert(room.to_owned(), last);
            }
            self.join(id, &user, room);
        }
        let mut reply =
            json!({"op": "subscribed", "room": room, "position": last, "presence": self.members_json(room)});
        if since.is_some() {
            reply["recovered"] = json!(recovered);
        }
        let tag: Arc<str> = Arc::from(room);
        let mut items = vec![Queued { frame: text(&reply), room: None, persistent: false }];
        items.extend(replay.into_iter().map(|frame| Queued { frame, room: Some(Arc::clone(&tag)), persistent: true }));
        self.push_ordered(id, items);
    }

    /// The room's persistent events in `(since, last]` not excluding `user`, as frames, and
    /// whether history reaches back that far (the log retained it, and it is no more than
    /// `history_size` events).
    fn history(
        &self,
        room: &str,
        since: u64,
        last: Option<u64>,
        user: &str,
        store: &dyn EventStore,
    ) -> (Vec<Bytes>, bool) {
        let Some(last) = last else { return (Vec::new(), false) };
        if since >= last {
            // Nothing missed (`since == last`), or a position the log never reached.
            return (Vec::new(), since == last);
        }
        let query = ReadQuery {
            from_position: since + 1,
            kind: Some(EventKind::WebSocket),
            event_type: Some(room.to_owned()),
            limit: self.history_size + 1,
            ..ReadQuery::default()
        };
        let mut events = Vec::new();
        let read = store.read(&query, &mut |view| {
            if view.position > last {
                return ControlFlow::Break(());
            }
            if let Some(event) = WsEvent::from_stored(view.data, view.position) {
                events.push(event);
            }
            ControlFlow::Continue(())
        });
        match read {
            Ok(_) if events.len() <= self.history_size => {}
            Ok(_) | Err(StoreError::BeforeRetention { .. }) => return (Vec::new(), false),
            Err(error) => {
                eprintln!("herald: websocket history of `{room}`: {error}");
                return (Vec::new(), false);
            }
        }
        let frames = events
            .iter()
            .filter(|event| !event.target.exclude_users.iter().any(|u| u == user))
            .map(|event| frame::text(event.frame_text().as_bytes()))
            .collect();
        (frames, true)
    }

    fn join(&mut self, id: ConnId, user: &str, room: &str) {
        let entry = self.rooms.entry(room.to_owned()).or_default();
        entry.conns.insert(id);
        if room.starts_with("user:") {
            return;
        }
        let member = entry.members.entry(user.to_owned()).or_insert(Member { connections: 0, joined_ns: now_ns() });
        member.connections += 1;
        if member.connections == 1 {
            let others: Vec<ConnId> = entry.conns.iter().copied().filter(|c| *c != id).collect();
            let diff = text(&json!({"op": "join", "room": room, "user_id": user}));
            self.push_each(&others, Queued { frame: diff, room: None, persistent: false }, Priority::High);
        }
    }

    fn leave(&mut self, id: ConnId, user: &str, room: &str) {
        let Some(entry) = self.rooms.get_mut(room) else { return };
        entry.conns.remove(&id);
        let mut left = false;
        if let Some(member) = entry.members.get_mut(user) {
            member.connections -= 1;
            if member.connections == 0 {
                entry.members.remove(user);
                left = true;
            }
        }
        let others: Vec<ConnId> = entry.conns.iter().copied().collect();
        if entry.conns.is_empty() {
            self.rooms.remove(room);
        }
        if left {
            let diff = text(&json!({"op": "leave", "room": room, "user_id": user}));
            self.push_each(&others, Queued { frame: diff, room: None, persistent: false }, Priority::High);
        }
    }

    /// A room's members (`GET /v1/presence/{room}`).
    pub fn members(&self, room: &str) -> Vec<(String, Member)> {
        self.rooms
            .get(room)
            .map(|r| r.members.iter().map(|(user, member)| (user.clone(), member.clone())).collect())
            .unwrap_or_default()
    }

    fn members_json(&self, room: &str) -> Vec<serde_json::Value> {
        self.members(room)
            .into_iter()
            .map(|(user, m)| {
                json!({"user_id": user, "connections": m.connections, "joined_at": format_rfc3339_micros(m.joined_ns)})
            })
            .collect()
    }

    /// Queues `event` on every connection it targets (its room, or all), minus excluded users
    /// and subscriptions that replayed it; returns how many connections it was queued on.
    pub fn fan_out(&mut self, event: &WsEvent) -> usize {
        let started = Instant::now();
        let frame = frame::text(event.frame_text().as_bytes());
        let room = event.room();
        let recipients: Vec<ConnId> = match &room {
            Some(room) => self.rooms.get(room).map(|r| r.conns.iter().copied().collect()).unwrap_or_default(),
            None => self.conns.keys().copied().collect(),
        };
        let persistent = event.position.is_some();
        let item = Queued { frame, room: room.as_deref().map(Arc::from), persistent };
        let frame = self.frames.add(item);
        let excluded = &event.target.exclude_users;
        let mut delivered = 0;
        for id in recipients {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            if !excluded.is_empty() && excluded.contains(&conn.identity.user_id) {
                self.counters.dropped_excluded += 1;
                continue;
            }
            let seen = match (&room, event.position) {
                (Some(room), Some(position)) => conn.rooms.get(room).copied().flatten().is_some_and(|p| position <= p),
                _ => false,
            };
            if seen {
                continue;
            }
            if Self::push_to(&mut self.dirty, &mut self.counters, &mut self.frames, id, conn, frame, event.priority) {
                delivered += 1;
            }
        }
        self.frames.release(frame);
        self.counters.broadcast += 1;
        self.counters.delivered += delivered as u64;
        let _ = self.fanout_latency.record(started.elapsed().as_nanos().max(1) as u64);
        delivered
    }
}

/// Whether `room` is `<kind>:<id>` with both parts non-empty.
fn well_formed(room: &str) -> bool {
    room.split_once(':').is_some_and(|(kind, id)| !kind.is_empty() && !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Log, StoreConfig};

    fn identity(user: &str) -> Identity {
        Identity { user_id: user.into(), rooms: None }
    }

    /// The frames queued on `id`, one at a time (a limit of one byte more stops after each).
    fn drain(hub: &mut Hub, id: ConnId) -> Vec<serde_json::Value> {
        let mut payloads = Vec::new();
        loop {
            let mut out = Vec::new();
            assert!(matches!(hub.drain_into(id, &mut out, 1), Drained::Frames { .. }));
            if out.is_empty() {
                return payloads;
            }
            payloads.push(serde_json::from_slice(frame::payload(&out)).unwrap());
        }
    }

    fn event(room: &str, exclude: &[&str], persistent: bool) -> WsEvent {
        let (kind, id) = room.split_once(':').unwrap();
        let body = json!({"type": "t", "event": "t.x", "data": {}, "persistent": persistent,
            "target": {"type": kind, "id": id, "exclude_users": exclude}});
        WsEvent::from_request(body.to_string().as_bytes(), 1_000).unwrap()
    }

    #[test]
    fn presence_joins_once_per_user_and_leaves_with_the_last_connection() {
        // u1 on two connections: one join for u2, a leave only when both are gone.
        let store = Log::in_memory(StoreConfig::default()).unwrap();
        let mut hub = Hub::new(16, 100);
        hub.connect(1, identity("u2"));
        hub.connect(2, identity("u1"));
        hub.connect(3, identity("u1"));
        let subscribe = br#"{"op":"subscribe","room":"project:p1"}"#;
        hub.handle(1, subscribe, &store);
        drain(&mut hub, 1);
        hub.handle(2, subscribe, &store);
        hub.handle(3, subscribe, &store);
        let seen = drain(&mut hub, 1);
        assert_eq!(seen, vec![json!({"op": "join", "room": "project:p1", "user_id": "u1"})]);
        let members = hub.members("project:p1");
        assert_eq!(members.iter().find(|(user, _)| user == "u1").map(|(_, m)| m.connections), Some(2));
        hub.disconnect(2);
        assert!(drain(&mut hub, 1).is_empty());
        hub.disconnect(3);
        assert_eq!(drain(&mut hub, 1), vec![json!({"op": "leave", "room": "project:p1", "user_id": "u1"})]);
        assert_eq!(hub.members("project:p1").len(), 1);
    }

    #[test]
    fn fan_out_targets_rooms_excludes_users_and_errors_keep_the_connection() {
        // Only the room's connections get it, minus exclusions; bad ops get error frames.
        let store = Log::in_memory(StoreConfig::default()).unwrap();
        let mut hub = Hub::new(16, 100);
        for (id, user) in [(1, "u1"), (2, "u2"), (3, "u3")] {
            hub.connect(id, identity(user));
        }
        hub.handle(1, br#"{"op":"subscribe","room":"project:p1"}"#, &store);
        hub.handle(2, br#"{"op":"subscribe","room":"project:p1"}"#, &store);
        for id in 1..=3 {
            drain(&mut hub, id);
        }
        assert_eq!(hub.fan_out(&event("project:p1", &["u2"], false)), 1);
        assert_eq!(drain(&mut hub, 1)[0]["op"], "event");
        assert!(drain(&mut hub, 2).is_empty() && drain(&mut hub, 3).is_empty());
        hub.handle(3, b"{nope", &store);
        hub.handle(3, br#"{"op":"dance"}"#, &store);
        hub.handle(3, br#"{"op":"subscribe","room":"user:u1"}"#, &store);
        hub.handle(3, br#"{"op":"ping"}"#, &store);
        let codes: Vec<serde_json::Value> = drain(&mut hub, 3).iter().map(|f| f["code"].clone()).collect();
        assert_eq!(
            codes,
            vec![json!("invalid_json"), json!("invalid_request"), json!("forbidden"), serde_json::Value::Null]
        );
    }

    #[test]
    fn a_subscription_with_since_replays_then_skips_what_it_replayed() {
        // Stored events after `since` are replayed in order; a late live copy of a replayed
        // event is skipped; a newer one is delivered.
        let store = Log::in_memory(StoreConfig::default()).unwrap();
        let mut hub = Hub::new(16, 100);
        let mut stored = Vec::new();
        for _ in 0..3 {
            let mut e = event("project:p1", &[], true);
            let outcome = store.append(&[e.to_draft()]).unwrap();
            e.position = Some(outcome.events()[0].position);
            stored.push(e);
        }
        hub.connect(1, identity("u1"));
        hub.handle(1, br#"{"op":"subscribe","room":"project:p1","since":0}"#, &store);
        let frames = drain(&mut hub, 1);
        assert_eq!(frames[0]["op"], "subscribed");
        assert_eq!((frames[0]["position"].clone(), frames[0]["recovered"].clone()), (json!(2), json!(true)));
        let positions: Vec<u64> = frames[1..].iter().map(|f| f["event"]["position"].as_u64().unwrap()).collect();
        assert_eq!(positions, vec![1, 2]);
        assert_eq!(hub.fan_out(&stored[2]), 0, "already replayed");
        let mut newer = event("project:p1", &[], true);
        newer.position = Some(3);
        assert_eq!(hub.fan_out(&newer), 1);
    }

    #[test]
    fn a_full_queue_drops_low_then_closes_with_1013() {
        // A connection that never drains loses low frames first, then is marked for 1013.
        let mut hub = Hub::new(2, 100);
        hub.connect(1, identity("u1"));
        let mut low = event("user:u1", &[], false);
        low.priority = Priority::Low;
        let mut high = event("user:u1", &[], false);
        high.priority = Priority::High;
        hub.fan_out(&low);
        hub.fan_out(&high);
        hub.fan_out(&high);
        assert_eq!(hub.counters.dropped_low_priority, 1);
        assert!(hub.conn_mut(1).unwrap().close.is_none());
        hub.fan_out(&high);
        assert_eq!(hub.conn_mut(1).unwrap().close, Some((1013, "slow consumer")));
        assert_eq!(hub.frames.len(), 2, "the dropped frames are freed, the queued ones kept");
        hub.disconnect(1);
        assert!(hub.frames.is_empty(), "a disconnect releases what its queue held");
    }
}
