//! Integration events and their webhook delivery: the [`IntegrationEvent`], the endpoint
//! registry, the durable outbox, delivery workers on ureq, Standard Webhooks signing, the SSRF
//! guard, and the domain → integration bridge.
//!
//! The flow: an integration event is appended to the log like any record; [`Webhooks::route`]
//! (called after the append is durable, before the publisher is answered) reads the log's new
//! integration events in position order and records one delivery per matching enabled
//! endpoint in the outbox journal. The log is the outbox's write-ahead log: routing resumes
//! after a crash from the journaled watermark, so an acknowledged event is never left
//! unrouted. A scheduler thread moves due deliveries to the workers; attempts and their
//! outcomes are journaled; waiting retries sit in a timer heap, not in sleeping threads.
//!
//! Isolation: an endpoint has at most `max_in_flight_per_endpoint` attempts in flight. An
//! endpoint whose last attempt failed is served on a separate slow lane of workers, so a dead or
//! hanging endpoint never takes the workers the healthy ones use; and a new (or just loaded)
//! endpoint gets one attempt at a time on the fast lane until one succeeds, so an endpoint that
//! hangs from its first request holds one fast worker for one timeout, not all of them.
//!
//! Delivery is at-least-once with a stable `webhook-id` (the event id): a crash between an
//! attempt and its journal record repeats the attempt.

pub mod bridge;
pub mod delivery;
pub mod endpoint;
pub mod event;
pub mod journal;
pub mod outbox;
pub mod signing;
pub mod ssrf;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use parking_lot::{Condvar, Mutex};

pub use delivery::RetryPolicy;
pub use endpoint::{Endpoint, EndpointChange, EndpointDraft};
pub use event::IntegrationEvent;
pub use journal::Status;

use crate::event::{Uuid, ValidationError};
use crate::metrics::{latency_histogram, LatencySummary};
use crate::store::EventStore;
use delivery::{Answer, Job};
use journal::{Journal, JournalError, Record};
use outbox::{RouteError, State};

/// Compact the journal once it is this large and at least twice its last compacted size.
const COMPACT_AT_BYTES: u64 = 64 * 1024 * 1024;
/// Most deliveries one list returns.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// The integration layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// A request field breaks a rule (400).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No such endpoint or delivery (404).
    #[error("{0}")]
    NotFound(String),
    /// The operation does not apply in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Routing could not read the log.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A worker thread could not be started.
    #[error("cannot start a webhook thread: {0}")]
    Thread(std::io::Error),
}

/// Webhook settings (the `[webhooks]` config section).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub retry: RetryPolicy,
    /// Bound on one attempt, connect to last byte.
    pub timeout: Duration,
    /// Workers for healthy endpoints (the slow lane gets half as many, at least one).
    pub workers: usize,
    pub allow_private_networks: bool,
    pub max_in_flight_per_endpoint: usize,
    /// Fsync the journal after routing (the store's `Always` durability).
    pub sync_routing: bool,
}

/// Counters and the delivery latency, for both metrics endpoints.
#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    /// Integration events published.
    pub published: u64,
    /// Messages delivered (a 2xx answer).
    pub delivered: u64,
    /// Messages whose attempts ran out.
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Deliveries pending now.
    pub pending: u64,
    /// Registered endpoints.
    pub endpoints: u64,
    /// From the event's timestamp to its successful delivery.
    pub delivery_latency: LatencySummary,
}

/// One delivery as the API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryInfo {
    pub message_id: Uuid,
    pub routing_key: String,
    pub status: Status,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_ns: Option<u64>,
    pub position: u64,
}

struct Shared {
    config: WebhookConfig,
    store: Arc<dyn EventStore>,
    state: Mutex<State>,
    /// Wakes the scheduler (with the state lock).
    wake: Condvar,
    /// Routing was asked for and not yet done.
    route_wanted: AtomicBool,
    stopping: AtomicBool,
    published: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Last compacted journal size.
    compacted_bytes: AtomicU64,
}

/// The webhook service: registry, outbox, scheduler and workers (see the module docs).
pub struct Webhooks {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lanes: Mutex<Option<(Sender<Job>, Sender<Job>)>>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Webhooks {
    /// Opens the journal in `dir` (in memory when `None`), rebuilds the outbox, routes what the
    /// log holds beyond the watermark, and starts the scheduler and workers.
    pub fn start(
        config: WebhookConfig,
        store: Arc<dyn EventStore>,
        dir: Option<&Path>,
    ) -> Result<Webhooks, IntegrationError> {
        let (journal, records) = match dir {
            Some(dir) => Journal::open(dir)?,
            None => (Journal::in_memory(), Vec::new()),
        };
        let record_count = records.len();
        let mut state = State::replay(journal, records);
        let snapshot = state.snapshot();
        if record_count > 2 * snapshot.len() + 1_000 {
            state.journal.rewrite(&snapshot)?;
        }
        // After a power loss under `interval` or `never`, the log can end before the journaled
        // watermark; new events then take those positions again and must still be routed.
        state.next_position = state.next_position.min(store.bounds().1);
        state.route(store.as_ref())?;
        let compacted = state.journal.bytes();
        let shared = Arc::new(Shared {
            config: config.clone(),
            store,
            state: Mutex::new(state),
            wake: Condvar::new(),
            route_wanted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            latency: Mutex::new(latency_histogram()),
            compacted_bytes: AtomicU64::new(compacted),
        });
        let (fast_tx, fast_rx) = crossbeam_channel::unbounded::<Job>();
        let (slow_tx, slow_rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        let spawn = |name: String, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(run).map_err(IntegrationError::Thread)
        };
        let slow_workers = (config.workers / 2).max(1);
        for (lane, count, rx) in [("fast", config.workers, &fast_rx), ("slow", slow_workers, &slow_rx)] {
            for index in 0..count {
                let shared = Arc::clone(&shared);
                let rx = rx.clone();
                let healthy_lane = lane == "fast";
                threads.push(spawn(
                    format!("herald-webhook-{lane}-{index}"),
                    Box::new(move || work(&shared, &rx, healthy_lane)),
                )?);
            }
        }
        {
            let shared = Arc::clone(&shared);
            let (fast, slow) = (fast_tx.clone(), slow_tx.clone());
            threads.push(spawn("herald-webhook-scheduler".into(), Box::new(move || schedule(&shared, &fast, &slow)))?);
        }
        Ok(Webhooks { shared, threads: Mutex::new(threads), lanes: Mutex::new(Some((fast_tx, slow_tx))) })
    }

    /// Counts published integration events (the caller appended them).
    pub fn note_published(&self, count: u64) {
        self.shared.published.fetch_add(count, Ordering::Relaxed);
    }

    /// Routes the log's new integration events now (call after their append is durable), and
    /// makes the new deliveries durable per the store's durability.
    pub fn route(&self) -> Result<usize, IntegrationError> {
        let mut state = self.shared.state.lock();
        let created = state.route(self.shared.store.as_ref())?;
        if self.shared.config.sync_routing {
            state.journal.sync()?;
        }
        drop(state);
        if created > 0 {
            self.shared.wake.notify_one();
        }
        Ok(created)
    }

    /// Asks the scheduler to route soon (when the caller cannot wait).
    pub fn route_later(&self) {
        self.shared.route_wanted.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Registers an endpoint. With private networks disallowed, an IP-literal or `localhost`
    /// host in a refused range is refused here; other names are vetted at every attempt.
    pub fn create(&self, draft: EndpointDraft) -> Result<Endpoint, IntegrationError> {
        let endpoint = draft.into_endpoint(now_ns())?;
        self.vet_url(&endpoint)?;
        let mut state = self.shared.state.lock();
        state.journal.append(&[Record::Endpoint(endpoint.clone())])?;
        state.journal.sync()?;
        state.put_endpoint(endpoint.clone());
        state.rebuild_matcher();
        Ok(endpoint)
    }

    fn vet_url(&self, endpoint: &Endpoint) -> Result<(), IntegrationError> {
        if self.shared.config.allow_private_networks {
            return Ok(());
        }
        let (host, port) = endpoint.host_and_port()?;
        let lower = host.to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            // RFC 6761: these names are loopback; refused by name, without a lookup.
            let reason = format!("`{host}` is a loopback name; set webhooks.allow_private_networks = true to allow it");
            return Err(ValidationError::new("url", reason).into());
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            // A literal needs no DNS, so this cannot stall the caller.
            ssrf::vet(&host, port, false).map_err(|error| ValidationError::new("url", error.to_string()))?;
        }
        Ok(())
    }

    /// Every endpoint, oldest first.
    pub fn list(&self) -> Vec<Endpoint> {
        self.shared.state.lock().endpoints.values().map(|e| e.endpoint.clone()).collect()
    }

    /// One endpoint.
    pub fn get(&self, id: &str) -> Result<Endpoint, IntegrationError> {
        let state = self.shared.state.lock();
        state.endpoints.get(id).map(|e| e.endpoint.clone()).ok_or_else(|| not_found(id))
    }

    /// Changes an endpoint; re-enabling it resumes its pending deliveries.
    pub fn update(&self, id: &str, change: EndpointChange) -> Result<Endpoint, IntegrationError> {
        let mut state = self.shared.state.lock();
        let current = state.endpoints.get(id).ok_or_else(|| not_found(id))?;
        let was_enabled = current.endpoint.enabled;
        let mut updated = current.endpoint.clone();
        updated.apply(change)?;
        self.vet_url(&updated)?;
        state.journal.append(&[Record::Endpoint(updated.clone())])?;
        state.journal.sync()?;
        state.put_endpoint(updated.clone());
        state.rebuild_matcher();
        if updated.enabled && !was_enabled {
            if let Some(endpoint) = state.endpoints.get_mut(id) {
                endpoint.healthy = true;
            }
            drop(state);
            self.shared.wake.notify_one();
        }
        Ok(updated)
    }

    /// Removes an endpoint and its deliveries.
    pub fn delete(&self, id: &str) -> Result<(), IntegrationError> {
        let mut state = self.shared.state.lock();
        if !state.endpoints.contains_key(id) {
            return Err(not_found(id));
        }
        state.journal.append(&[Record::Removed { id: id.to_owned() }])?;
        state.journal.sync()?;
        state.remove_endpoint(id);
        state.rebuild_matcher();
        Ok(())
    }

    /// An endpoint's deliveries, newest first, optionally of one status.
    pub fn deliveries(
        &self,
        id: &str,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<DeliveryInfo>, IntegrationError> {
        let state = self.shared.state.lock();
        let endpoint = state.endpoints.get(id).ok_or_else(|| not_found(id))?;
        let mut list: Vec<DeliveryInfo> = endpoint
            .deliveries
            .values()
            .filter(|d| status.is_none_or(|s| d.state.status == s))
            .map(|d| DeliveryInfo {
                message_id: d.state.message_id,
                routing_key: d.message.routing_key.clone(),
                status: d.state.status,
                attempts: d.state.attempts,
                last_status_code: d.state.last_status_code,
                last_error: d.state.last_error.clone(),
                next_attempt_ns: d.state.next_attempt_ns,
                position: d.message.position,
            })
            .collect();
        list.sort_by_key(|d| std::cmp::Reverse(d.position));
        list.truncate(limit.clamp(1, MAX_LIST_LIMIT));
        Ok(list)
    }

    /// Re-queues a failed delivery with a fresh retry budget.
    pub fn retry(&self, id: &str, message_id: Uuid) -> Result<(), IntegrationError> {
        let mut state = self.shared.state.lock();
        let endpoint = state.endpoints.get_mut(id).ok_or_else(|| not_found(id))?;
        let delivery = endpoint.deliveries.get_mut(&message_id).ok_or_else(|| {
            IntegrationError::NotFound(format!("endpoint `{id}` has no delivery of message {message_id}"))
        })?;
        if delivery.state.status != Status::Failed {
            return Err(IntegrationError::Conflict(format!(
                "message {message_id} is {}, not failed; only failed deliveries can be retried",
                delivery.state.status.as_str()
            )));
        }
        delivery.state.status = Status::Pending;
        delivery.state.budget_base = delivery.state.attempts;
        delivery.state.next_attempt_ns = None;
        let record = Record::Delivery(delivery.state.clone());
        endpoint.ready.push_back(message_id);
        state.pending += 1;
        state.journal.append(&[record])?;
        state.journal.sync()?;
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Counters, gauges and the latency histogram.
    pub fn metrics(&self) -> WebhookMetrics {
        let shared = &self.shared;
        let (pending, endpoints) = {
            let state = shared.state.lock();
            (state.pending as u64, state.endpoints.len() as u64)
        };
        WebhookMetrics {
            published: shared.published.load(Ordering::Relaxed),
            delivered: shared.delivered.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
            retried: shared.retried.load(Ordering::Relaxed),
            pending,
            endpoints,
            delivery_latency: LatencySummary::of(&shared.latency.lock()),
        }
    }

    /// Stops the scheduler and the workers (an attempt in flight finishes, bounded by the
    /// attempt timeout, within `timeout`), then makes the journal durable.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), IntegrationError> {
        self.shared.stopping.store(true, Ordering::Release);
        self.lanes.lock().take();
        self.shared.wake.notify_all();
        let deadline = Instant::now() + timeout;
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for thread in threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        self.shared.state.lock().journal.sync()?;
        Ok(())
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        let _ = self.shutdown(Duration::from_secs(1));
    }
}

fn not_found(id: &str) -> IntegrationError {
    IntegrationError::NotFound(format!("no webhook endpoint `{id}`"))
}

/// The scheduler: routes when asked, releases due timers, hands ready deliveries to the lanes
/// within each endpoint's in-flight bound, compacts the journal, sleeps until the next timer.
fn schedule(shared: &Shared, fast: &Sender<Job>, slow: &Sender<Job>) {
    let mut state = shared.state.lock();
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        if shared.route_wanted.swap(false, Ordering::AcqRel) {
            match state.route(shared.store.as_ref()) {
                Ok(_) if shared.config.sync_routing => {
                    if let Err(error) = state.journal.sync() {
                        eprintln!("herald: webhook routing: {error}");
                    }
                }
                Ok(_) => {}
                Err(error) => eprintln!("herald: webhook routing: {error}"),
            }
        }
        let next_due = state.release_due(now_ns());
        let max_in_flight = shared.config.max_in_flight_per_endpoint;
        let mut jobs = Vec::new();
        let busy: Vec<(String, bool)> = state
            .endpoints
            .iter()
            .filter(|(_, e)| e.endpoint.enabled && !e.ready.is_empty())
            .map(|(id, e)| (id.clone(), e.healthy))
            .collect();
        for (id, healthy) in busy {
            while let Some(job) = next_for(&mut state, &id, healthy, max_in_flight) {
                jobs.push((healthy, job));
            }
        }
        for (healthy, job) in jobs {
            // A send fails only when the workers are gone, i.e. while stopping.
            let _ = if healthy { fast.send(job) } else { slow.send(job) };
        }
        let compact_at = COMPACT_AT_BYTES.max(2 * shared.compacted_bytes.load(Ordering::Relaxed));
        if state.journal.bytes() > compact_at {
            let snapshot = state.snapshot();
            match state.journal.rewrite(&snapshot) {
                Ok(()) => shared.compacted_bytes.store(state.journal.bytes(), Ordering::Relaxed),
                Err(error) => eprintln!("herald: webhook journal compaction: {error}"),
            }
        }
        let wait = match next_due {
            Some(due) => Duration::from_nanos(due.saturating_sub(now_ns())).min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        shared.wake.wait_for(&mut state, wait);
    }
}

/// A worker: takes jobs from its lane until the lane closes. After each attempt it takes the
/// same endpoint's next ready delivery itself, when its lane has nothing else waiting and the
/// endpoint's bound allows (see [`settle`]), so a busy endpoint's deliveries flow without a round
/// trip through the scheduler while other endpoints' jobs still go first.
fn work(shared: &Shared, jobs: &Receiver<Job>, healthy_lane: bool) {
    let agent = delivery::agent(shared.config.timeout, shared.config.allow_private_networks);
    while let Ok(job) = jobs.recv() {
        let mut next = Some(job);
        while let Some(job) = next {
            if shared.stopping.load(Ordering::Acquire) {
                return;
            }
            if !still_wanted(shared, &job) {
                break;
            }
            let answer = delivery::attempt(&agent, &job);
            next = settle(shared, &job, &answer, healthy_lane && jobs.is_empty(), healthy_lane);
        }
    }
}

/// Whether a job taken from a lane should still be attempted: its endpoint may have been
/// deleted or disabled while it waited. A job no longer wanted gives its slot back.
fn still_wanted(shared: &Shared, job: &Job) -> bool {
    let mut state = shared.state.lock();
    let Some(endpoint) = state.endpoints.get_mut(&job.endpoint_id) else { return false };
    if endpoint.endpoint.enabled {
        return true;
    }
    endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
    if let Some(delivery) = endpoint.deliveries.get_mut(&job.message.id) {
        delivery.in_flight = false;
        endpoint.ready.push_front(job.message.id);
    }
    false
}

/// Applies an attempt's answer to its delivery and journals the new state. Returns the
/// endpoint's next ready delivery for this worker when `may_continue` and the endpoint is still
/// on the worker's lane and under its bound; otherwise wakes the scheduler if it has something
/// to do.
fn settle(shared: &Shared, job: &Job, answer: &Answer, may_continue: bool, healthy_lane: bool) -> Option<Job> {
    let now = now_ns();
    let mut state = shared.state.lock();
    let policy = shared.config.retry;
    let endpoint = state.endpoints.get_mut(&job.endpoint_id)?;
    endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
    let delivery = endpoint.deliveries.get_mut(&job.message.id)?;
    delivery.in_flight = false;
    let delivery_state = &mut delivery.state;
    delivery_state.attempts += 1;
    delivery_state.last_status_code = answer.status;
    delivery_state.last_error = answer.error.clone();
    let mut records = Vec::new();
    let mut timer = None;
    let mut pending_change = 0isize;
    let mut delivered = false;
    if answer.succeeded() {
        endpoint.healthy = true;
        endpoint.proven = true;
        delivery_state.status = Status::Delivered;
        delivery_state.next_attempt_ns = None;
        pending_change = -1;
        delivered = true;
        let latency = now.saturating_sub(job.message.created_ns).max(1);
        let _ = shared.latency.lock().record(latency);
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    } else if answer.gone() {
        // 410: the receiver says the endpoint is gone; disable it and keep the message.
        endpoint.healthy = false;
        endpoint.proven = false;
        endpoint.endpoint.enabled = false;
        delivery_state.next_attempt_ns = None;
        endpoint.ready.push_front(job.message.id);
        records.push(Record::Endpoint(endpoint.endpoint.clone()));
    } else {
        endpoint.healthy = false;
        endpoint.proven = false;
        let used = delivery_state.attempts - delivery_state.budget_base;
        if used <= policy.retry_attempts {
            let wait = match answer.retry_after {
                Some(after) => after.min(policy.max_retry_delay),
                None => policy.delay(used, delivery::random_unit()),
            };
            let due = now + wait.as_nanos() as u64;
            delivery_state.next_attempt_ns = Some(due);
            timer = Some(due);
            shared.retried.fetch_add(1, Ordering::Relaxed);
        } else {
            delivery_state.status = Status::Failed;
            delivery_state.next_attempt_ns = None;
            pending_change = -1;
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let disabled = answer.gone();
    records.push(Record::Delivery(delivery_state.clone()));
    if let Some(due) = timer {
        state.schedule(due, job.endpoint_id.clone(), job.message.id);
    }
    if delivered {
        state.mark_delivered(&job.endpoint_id, job.message.id);
    }
    if disabled {
        state.rebuild_matcher();
    }
    state.pending = state.pending.saturating_add_signed(pending_change);
    if let Err(error) = state.journal.append(&records) {
        eprintln!("herald: webhook journal: {error}");
    }
    let next = if may_continue {
        next_for(&mut state, &job.endpoint_id, healthy_lane, shared.config.max_in_flight_per_endpoint)
    } else {
        None
    };
    let ready_left = state.endpoints.get(&job.endpoint_id).is_some_and(|e| !e.ready.is_empty());
    drop(state);
    if timer.is_some() || disabled || (next.is_none() && ready_left) {
        shared.wake.notify_one();
    }
    next
}

/// Takes `endpoint_id`'s next ready delivery if the endpoint is enabled, on `healthy_lane`'s
/// lane and under its in-flight bound.
fn next_for(state: &mut State, endpoint_id: &str, healthy_lane: bool, max_in_flight: usize) -> Option<Job> {
    let endpoint = state.endpoints.get_mut(endpoint_id)?;
    // A new endpoint is tried one attempt at a time on the fast lane until one succeeds; a
    // failing one is on the slow lane, where its own bound applies again.
    let bound = if endpoint.healthy && !endpoint.proven { 1 } else { max_in_flight };
    if !endpoint.endpoint.enabled || endpoint.healthy != healthy_lane || endpoint.in_flight >= bound {
        return None;
    }
    while let Some(message_id) = endpoint.ready.pop_front() {
        let Some(delivery) = endpoint.deliveries.get_mut(&message_id) else { continue };
        if delivery.state.status != Status::Pending || delivery.in_flight {
            continue;
        }
        delivery.in_flight = true;
        endpoint.in_flight += 1;
        return Some(Job {
            endpoint_id: endpoint_id.to_owned(),
            url: endpoint.endpoint.url.clone(),
            key: Arc::clone(&endpoint.key),
            message: Arc::clone(&delivery.message),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::event::EventKind;
    use crate::store::{EventStore, Log, StoreConfig};

    fn config() -> WebhookConfig {
        WebhookConfig {
            retry: RetryPolicy {
                retry_attempts: 2,
                retry_delay: Duration::from_secs(60),
                max_retry_delay: Duration::from_secs(60),
            },
            timeout: Duration::from_secs(2),
            workers: 2,
            allow_private_networks: true,
            max_in_flight_per_endpoint: 2,
            sync_routing: true,
        }
    }

    fn append(store: &Log, routing_key: &str) -> Uuid {
        let event = IntegrationEvent::new(routing_key, "1.0.0", "tests", "{}");
        let outcome = store.append(&[event.to_draft()]).unwrap();
        outcome.events()[0].id
    }

    fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "condition not met within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A one-connection-at-a-time server answering every request with `answer`; counts requests.
    fn answering(answer: &'static [u8]) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&count);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buffer = [0u8; 65536];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                if stream.read(&mut buffer).unwrap_or(0) > 0 {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(answer);
                }
            }
        });
        (url, count)
    }

    fn endpoint(url: &str, filter: &str) -> EndpointDraft {
        EndpointDraft { url: Some(url.into()), filter: Some(vec![filter.into()]), ..EndpointDraft::default() }
    }

    #[test]
    fn a_redirect_is_a_failed_attempt_not_followed() {
        // A 302 is recorded as a failure with its status, and the retry is scheduled.
        let (url, requests) =
            answering(b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n");
        let store: Arc<Log> = Arc::new(Log::in_memory(StoreConfig::default()).unwrap());
        let webhooks = Webhooks::start(config(), Arc::clone(&store) as Arc<dyn EventStore>, None).unwrap();
        let hook = webhooks.create(endpoint(&url, "task.#")).unwrap();
        let id = append(&store, "task.moved");
        webhooks.route().unwrap();
        wait_for(|| webhooks.deliveries(&hook.id, None, 10).unwrap()[0].attempts == 1);
        let delivery = &webhooks.deliveries(&hook.id, None, 10).unwrap()[0];
        assert_eq!((delivery.message_id, delivery.status), (id, Status::Pending));
        assert_eq!(delivery.last_status_code, Some(302));
        assert!(delivery.last_error.as_deref().unwrap_or("").contains("redirects are not followed"));
        assert!(delivery.next_attempt_ns.is_some());
        assert_eq!(requests.load(Ordering::SeqCst), 1, "the redirect was not followed");
        assert_eq!(webhooks.metrics().retried, 1);
    }

    #[test]
    fn garbage_answers_and_resets_are_failed_attempts_retried_on_schedule() {
        // A receiver that answers bytes that are not HTTP, and one that closes without
        // answering: each attempt fails with a transport error and a retry is scheduled.
        for answer in [&b"NOT HTTP AT ALL\r\n\r\n"[..], &b""[..]] {
            let (url, requests) = answering(answer);
            let store: Arc<Log> = Arc::new(Log::in_memory(StoreConfig::default()).unwrap());
            let webhooks = Webhooks::start(config(), Arc::clone(&store) as Arc<dyn EventStore>, None).unwrap();
            let hook = webhooks.create(endpoint(&url, "#")).unwrap();
            append(&store, "anything");
            webhooks.route().unwrap();
            wait_for(|| webhooks.deliveries(&hook.id, None, 10).unwrap()[0].attempts == 1);
            let delivery = &webhooks.deliveries(&hook.id, None, 10).unwrap()[0];
            assert_eq!(delivery.status, Status::Pending);
            assert_eq!(delivery.last_status_code, None);
            assert!(delivery.last_error.is_some() && delivery.next_attempt_ns.is_some(), "{delivery:?}");
            assert_eq!(requests.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn pending_deliveries_and_endpoints_survive_a_restart() {
        // Journaled state comes back: the endpoint with its secret, the pending delivery with
        // its attempts; an event appended while the service was down is routed at start.
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<Log> = Arc::new(Log::open(dir.path().join("log"), StoreConfig::default()).unwrap());
        let dyn_store = || Arc::clone(&store) as Arc<dyn EventStore>;
        let (url, _) = answering(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
        let journal_dir = dir.path().join("webhooks");
        let webhooks = Webhooks::start(config(), dyn_store(), Some(&journal_dir)).unwrap();
        let hook = webhooks.create(endpoint(&url, "task.*")).unwrap();
        let first = append(&store, "task.done");
        append(&store, "other.thing");
        webhooks.route().unwrap();
        wait_for(|| webhooks.deliveries(&hook.id, None, 10).unwrap()[0].attempts == 1);
        webhooks.shutdown(Duration::from_secs(5)).unwrap();
        drop(webhooks);
        let second = append(&store, "task.later");

        let webhooks = Webhooks::start(config(), dyn_store(), Some(&journal_dir)).unwrap();
        assert_eq!(webhooks.list(), vec![hook.clone()]);
        let deliveries = webhooks.deliveries(&hook.id, Some(Status::Pending), 10).unwrap();
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.message_id).collect();
        assert_eq!(ids, vec![second, first], "newest first; the one appended while down was routed");
        assert_eq!(deliveries[1].attempts, 1);
        assert_eq!(deliveries[1].last_status_code, Some(500));
        assert_eq!(webhooks.metrics().pending, 2);
        let kinds = {
            let mut kinds = Vec::new();
            store
                .read(&crate::store::ReadQuery::default(), &mut |view| {
                    kinds.push(view.kind);
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            kinds
        };
        assert_eq!(kinds, vec![EventKind::Integration; 3]);
    }

    #[test]
    fn api_operations_check_their_preconditions() {
        // Unknown ids are not found; only failed deliveries can be retried; private literals are
        // refused when private networks are not allowed.
        let store: Arc<dyn EventStore> = Arc::new(Log::in_memory(StoreConfig::default()).unwrap());
        let strict = WebhookConfig { allow_private_networks: false, ..config() };
        let webhooks = Webhooks::start(strict, store, None).unwrap();
        assert!(matches!(webhooks.get("wh_nope"), Err(IntegrationError::NotFound(_))));
        assert!(matches!(webhooks.delete("wh_nope"), Err(IntegrationError::NotFound(_))));
        let refused = webhooks.create(endpoint("http://10.1.2.3/hook", "a")).unwrap_err().to_string();
        assert!(refused.contains("private"), "{refused}");
        let hook = webhooks.create(endpoint("https://example.com/hook", "a")).unwrap();
        let missing = webhooks.retry(&hook.id, Uuid::now_v7()).unwrap_err();
        assert!(matches!(missing, IntegrationError::NotFound(_)));
        let change = EndpointChange { url: Some("http://[::1]:9/".into()), ..EndpointChange::default() };
        assert!(webhooks.update(&hook.id, change).is_err());
        assert_eq!(webhooks.get(&hook.id).unwrap().url, "https://example.com/hook");
        webhooks.delete(&hook.id).unwrap();
        assert!(webhooks.list().is_empty());
    }
}
