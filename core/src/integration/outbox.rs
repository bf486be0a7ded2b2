//! The outbox: the endpoint registry and every delivery (one integration event to one endpoint),
//! kept in memory and journaled (`journal`), with the timers of waiting retries.
//!
//! Invariants, all under the one `State` lock:
//! - every integration event in the log before `next_position` has been routed: its deliveries
//!   exist (or no enabled endpoint matched it when it was routed). Routing reads the log in
//!   position order, so after a crash it resumes from the journaled watermark and re-routes
//!   what the journal lost; a delivery that already exists is not created twice;
//! - a pending delivery is in exactly one place: its endpoint's `ready` queue, a timer, or in
//!   flight with a worker (`in_flight`). Timers are a min-heap keyed by due time; an entry whose
//!   delivery moved on (delivered, deleted, rescheduled) is skipped when it comes up;
//! - `pending` counts the deliveries whose status is pending;
//! - every state change of a delivery is journaled before the lock is released.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;

use super::endpoint::Endpoint;
use super::event::Stored;
use super::journal::{DeliveryState, Journal, JournalError, Record, Status};
use super::signing::secret_key;
use crate::event::Uuid;
use crate::routing::PatternSet;
use crate::store::{EventStore, ReadQuery, StoreError};

/// Delivered deliveries kept listable per endpoint (older ones are forgotten).
pub const KEPT_DELIVERED_PER_ENDPOINT: usize = 1_000;
/// Integration events routed per store read.
const ROUTE_BATCH: usize = 1_000;

/// A routed integration event, shared by its deliveries.
#[derive(Debug)]
pub struct Message {
    pub id: Uuid,
    pub position: u64,
    pub routing_key: String,
    /// The webhook body, signed and sent as is.
    pub body: Bytes,
    /// The event's timestamp (unix ns).
    pub created_ns: u64,
}

/// One message to one endpoint.
#[derive(Debug)]
pub struct Delivery {
    pub state: DeliveryState,
    pub message: Arc<Message>,
    pub in_flight: bool,
}

/// An endpoint with its deliveries.
pub struct EndpointState {
    pub endpoint: Endpoint,
    /// The signing key decoded from the secret.
    pub key: Arc<[u8]>,
    pub deliveries: HashMap<Uuid, Delivery>,
    /// Pending deliveries due now, oldest first.
    pub ready: VecDeque<Uuid>,
    /// Delivered ones, oldest first (to forget beyond [`KEPT_DELIVERED_PER_ENDPOINT`]).
    delivered: VecDeque<Uuid>,
    pub in_flight: usize,
    /// Whether its last attempt succeeded (a failing endpoint gets one attempt at a time, on
    /// the slow lane).
    pub healthy: bool,
    /// Whether an attempt succeeded since it was registered, loaded or last failed: a healthy
    /// endpoint not yet proven gets one attempt at a time on the fast lane, so an endpoint that
    /// hangs from the start holds one worker for one timeout, not all of them.
    pub proven: bool,
}

impl EndpointState {
    fn new(endpoint: Endpoint) -> Result<Self, String> {
        let key = secret_key(&endpoint.secret)?;
        Ok(EndpointState {
            endpoint,
            key: key.into(),
            deliveries: HashMap::new(),
            ready: VecDeque::new(),
            delivered: VecDeque::new(),
            in_flight: 0,
            healthy: true,
            proven: false,
        })
    }
}

/// The outbox state (see the module docs).
pub struct State {
    pub journal: Journal,
    pub endpoints: BTreeMap<String, EndpointState>,
    matcher: PatternSet,
    /// Pattern id → endpoint id.
    owners: Vec<String>,
    timers: BinaryHeap<Reverse<(u64, u64, String, Uuid)>>,
    timer_seq: u64,
    pub next_position: u64,
    pub pending: usize,
}

impl State {
    /// Rebuilds the state from the journal's records.
    pub fn replay(journal: Journal, records: Vec<Record>) -> State {
        let mut state = State {
            journal,
            endpoints: BTreeMap::new(),
            matcher: PatternSet::new(),
            owners: Vec::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            next_position: 0,
            pending: 0,
        };
        let mut messages: HashMap<Uuid, Arc<Message>> = HashMap::new();
        for record in records {
            match record {
                Record::Endpoint(endpoint) => state.put_endpoint(endpoint),
                Record::Removed { id } => {
                    state.endpoints.remove(&id);
                }
                Record::Message { id, position, routing_key, body, created_ns } => {
                    let body = Bytes::from(body);
                    messages.insert(id, Arc::new(Message { id, position, routing_key, body, created_ns }));
                }
                Record::Delivery(delivery) => {
                    let (Some(endpoint), Some(message)) =
                        (state.endpoints.get_mut(&delivery.endpoint_id), messages.get(&delivery.message_id))
                    else {
                        continue;
                    };
                    let id = delivery.message_id;
                    let delivery = Delivery { state: delivery, message: Arc::clone(message), in_flight: false };
                    endpoint.deliveries.insert(id, delivery);
                }
                Record::Through { next_position } => state.next_position = state.next_position.max(next_position),
            }
        }
        // Place every pending delivery: due ones (or ones paused by a disabled endpoint) ready,
        // later ones on a timer; count them; forget delivered ones beyond the limit.
        let mut timers = Vec::new();
        for (endpoint_id, endpoint) in &mut state.endpoints {
            let mut ordered: Vec<&Delivery> = endpoint.deliveries.values().collect();
            ordered.sort_by_key(|d| d.message.position);
            for delivery in ordered {
                match delivery.state.status {
                    Status::Pending => {
                        state.pending += 1;
                        match delivery.state.next_attempt_ns {
                            Some(due) => timers.push((due, endpoint_id.clone(), delivery.state.message_id)),
                            None => endpoint.ready.push_back(delivery.state.message_id),
                        }
                    }
                    Status::Delivered => endpoint.delivered.push_back(delivery.state.message_id),
                    Status::Failed => {}
                }
            }
            while endpoint.delivered.len() > KEPT_DELIVERED_PER_ENDPOINT {
                if let Some(old) = endpoint.delivered.pop_front() {
                    endpoint.deliveries.remove(&old);
                }
            }
        }
        for (due, endpoint_id, message_id) in timers {
            state.schedule(due, endpoint_id, message_id);
        }
        state.rebuild_matcher();
        state
    }

    /// The records that recreate this state (for compaction).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self.endpoints.values().map(|e| Record::Endpoint(e.endpoint.clone())).collect();
        let mut written = HashSet::new();
        for endpoint in self.endpoints.values() {
            let mut deliveries: Vec<&Delivery> = endpoint.deliveries.values().collect();
            deliveries.sort_by_key(|d| d.message.position);
            for delivery in deliveries {
                let message = &delivery.message;
                if written.insert(message.id) {
                    records.push(message_record(message));
                }
                records.push(Record::Delivery(delivery.state.clone()));
            }
        }
        records.push(Record::Through { next_position: self.next_position });
        records
    }

    /// Inserts or replaces an endpoint (its deliveries stay).
    pub fn put_endpoint(&mut self, endpoint: Endpoint) {
        match self.endpoints.get_mut(&endpoint.id) {
            Some(existing) => {
                if let Ok(key) = secret_key(&endpoint.secret) {
                    existing.key = key.into();
                }
                existing.endpoint = endpoint;
            }
            None => {
                // A journaled endpoint was validated when created; a bad one is skipped.
                if let Ok(state) = EndpointState::new(endpoint.clone()) {
                    self.endpoints.insert(endpoint.id, state);
                }
            }
        }
    }

    /// Removes an endpoint and its deliveries.
    pub fn remove_endpoint(&mut self, id: &str) -> bool {
        match self.endpoints.remove(id) {
            Some(endpoint) => {
                self.pending -= endpoint.deliveries.values().filter(|d| d.state.status == Status::Pending).count();
                true
            }
            None => false,
        }
    }

    /// Compiles the enabled endpoints' filters into one trie.
    pub fn rebuild_matcher(&mut self) {
        let mut matcher = PatternSet::new();
        let mut owners = Vec::new();
        for (id, endpoint) in self.endpoints.iter().filter(|(_, e)| e.endpoint.enabled) {
            for pattern in &endpoint.endpoint.filter {
                if matcher.insert(pattern).is_ok() {
                    owners.push(id.clone());
                }
            }
        }
        self.matcher = matcher;
        self.owners = owners;
    }

    /// Puts a delivery on a timer.
    pub fn schedule(&mut self, due_ns: u64, endpoint_id: String, message_id: Uuid) {
        self.timer_seq += 1;
        self.timers.push(Reverse((due_ns, self.timer_seq, endpoint_id, message_id)));
    }

    /// Moves deliveries whose timer is due to their endpoint's ready queue; returns the next
    /// due time, if any.
    pub fn release_due(&mut self, now_ns: u64) -> Option<u64> {
        while let Some(Reverse((due, _, _, _))) = self.timers.peek() {
            if *due > now_ns {
                return Some(*due);
            }
            let Some(Reverse((due, _, endpoint_id, message_id))) = self.timers.pop() else { break };
            let Some(endpoint) = self.endpoints.get_mut(&endpoint_id) else { continue };
            let Some(delivery) = endpoint.deliveries.get(&message_id) else { continue };
            let current = delivery.state.status == Status::Pending
                && !delivery.in_flight
                && delivery.state.next_attempt_ns == Some(due);
            if current {
                endpoint.ready.push_back(message_id);
            }
        }
        None
    }

    /// Routes the log's integration events from `next_position` on: one delivery per enabled
    /// endpoint whose filter matches, journaled. Returns how many deliveries were created.
    pub fn route(&mut self, store: &dyn EventStore) -> Result<usize, RouteError> {
        let mut created = 0;
        loop {
            let query = ReadQuery {
                from_position: self.next_position,
                kind: Some(crate::event::EventKind::Integration),
                limit: ROUTE_BATCH,
                ..ReadQuery::default()
            };
            let mut routed: Vec<(Arc<Message>, Vec<String>)> = Vec::new();
            let mut failure = None;
            let summary = store.read(&query, &mut |view| {
                let Some(stored) = Stored::from_view(&view) else { return ControlFlow::Continue(()) };
                let mut targets: Vec<String> =
                    self.matcher.matches(stored.routing_key).into_iter().map(|p| self.owners[p].clone()).collect();
                targets.dedup();
                if targets.is_empty() {
                    return ControlFlow::Continue(());
                }
                match stored.webhook_body() {
                    Ok(body) => routed.push((
                        Arc::new(Message {
                            id: stored.id,
                            position: stored.position,
                            routing_key: stored.routing_key.to_owned(),
                            body: Bytes::from(body),
                            created_ns: stored.timestamp_ns,
                        }),
                        targets,
                    )),
                    Err(error) => {
                        failure = Some(format!("event at position {} has no valid body: {error}", stored.position));
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            let summary = match summary {
                Ok(summary) => summary,
                Err(StoreError::BeforeRetention { first_position, .. }) => {
                    // Retention removed events before they were routed: nothing to deliver.
                    self.next_position = first_position;
                    continue;
                }
                Err(error) => return Err(RouteError::Store(error)),
            };
            if let Some(reason) = failure {
                return Err(RouteError::Corrupt(reason));
            }
            // Journal first, then change memory: a failed write leaves the state as it was,
            // and routing is retried from the same watermark.
            let mut records = Vec::new();
            let mut deliveries = Vec::new();
            for (message, targets) in routed {
                let mut wrote_message = false;
                for endpoint_id in targets {
                    let Some(endpoint) = self.endpoints.get(&endpoint_id) else { continue };
                    if endpoint.deliveries.contains_key(&message.id) {
                        continue; // routed before a crash lost the watermark
                    }
                    if !wrote_message {
                        records.push(message_record(&message));
                        wrote_message = true;
                    }
                    let state = DeliveryState {
                        message_id: message.id,
                        endpoint_id,
                        status: Status::Pending,
                        attempts: 0,
                        budget_base: 0,
                        last_status_code: None,
                        last_error: None,
                        next_attempt_ns: None,
                    };
                    records.push(Record::Delivery(state.clone()));
                    deliveries.push(Delivery { state, message: Arc::clone(&message), in_flight: false });
                }
            }
            let done = summary.count < ROUTE_BATCH;
            let next_position = summary.next_position.max(self.next_position);
            records.push(Record::Through { next_position });
            self.journal.append(&records)?;
            self.next_position = next_position;
            for delivery in deliveries {
                if let Some(endpoint) = self.endpoints.get_mut(&delivery.state.endpoint_id) {
                    let id = delivery.state.message_id;
                    endpoint.deliveries.insert(id, delivery);
                    endpoint.ready.push_back(id);
                    self.pending += 1;
                    created += 1;
                }
            }
            if done {
                return Ok(created);
            }
        }
    }

    /// Records that a delivery was delivered (forgetting the oldest delivered beyond the limit).
    pub fn mark_delivered(&mut self, endpoint_id: &str, message_id: Uuid) {
        let Some(endpoint) = self.endpoints.get_mut(endpoint_id) else { return };
        endpoint.delivered.push_back(message_id);
        while endpoint.delivered.len() > KEPT_DELIVERED_PER_ENDPOINT {
            if let Some(old) = endpoint.delivered.pop_front() {
                endpoint.deliveries.remove(&old);
            }
        }
    }
}

fn message_record(message: &Message) -> Record {
    Record::Message {
        id: message.id,
        position: message.position,
        routing_key: message.routing_key.clone(),
        // Bodies are JSON written by `Stored::webhook_body`: valid UTF-8.
        body: String::from_utf8_lossy(&message.body).into_owned(),
        created_ns: message.created_ns,
    }
}

/// Why routing stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot route: {0}")]
    Corrupt(String),
}
