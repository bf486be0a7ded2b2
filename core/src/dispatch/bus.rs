//! The domain event bus: `publish` appends to the store, then dispatches the committed events to
//! handlers, each group on its own thread behind the ring.
//!
//! The ring's sequences are the log's positions: the bus claims ring slots inside the store's
//! append lock (the store's reservation hook), so a claim's first sequence is the batch's first
//! position, and handlers see events in position order. A claim whose append failed is
//! published empty, so consumers never stall. The bus must be the only writer of its store.
//!
//! Guarantees:
//! - only committed events are dispatched (under `Always` durability, only fsynced ones);
//! - each group sees every event once, in position order; groups run independently;
//! - a handler that errs or panics is retried with backoff, then its event is dead-lettered; the
//!   group, the other handlers and the publisher carry on;
//! - a durable handler resumes after a restart from its checkpoint: it first catches up from the
//!   store, then takes live events from the ring; no gap, and duplicates only of the last batch
//!   whose checkpoint was not written;
//! - synchronous mode (the testing preset) runs handlers on the publisher's thread, in order;
//!   events published by a handler are dispatched after it returns.

use std::collections::{HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::checkpoint::Checkpoints;
use super::context;
use super::handler::{run_isolated, DeadLetter, DeadLetterSink, DomainEvent, Group, Subscription};
use super::metrics::{summarize, BusMetrics, HandlerMetrics};
use super::ring::{Claim, ClaimError, Consumer, Producer, RingBuilder, Wait, WaitStrategy};
use crate::event::{EventDraft, ValidationError};
use crate::store::{AppendOutcome, Appended, EventStore, ReadQuery, StoreError};

/// What the bus does when the ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait up to this long for free slots, then refuse with [`BusError::Overloaded`].
    Block(Duration),
    /// Refuse at once with [`BusError::Overloaded`].
    Reject,
}

/// Bus settings (the `dispatch` section of the config).
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Ring slots (a power of two).
    pub ring_capacity: usize,
    /// Most events a group takes from the ring at once.
    pub batch_size: usize,
    /// How group threads wait for events.
    pub wait: WaitStrategy,
    /// What a publish does when the ring is full.
    pub backpressure: Backpressure,
    /// Run handlers on the publisher's thread (the testing preset), without ring or threads.
    pub synchronous: bool,
    /// Where durable handlers keep their positions (`None`: in memory).
    pub checkpoint_dir: Option<PathBuf>,
    /// Dead letters kept in memory by the default sink.
    pub dead_letter_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            ring_capacity: 65_536,
            batch_size: 256,
            wait: WaitStrategy::Blocking,
            backpressure: Backpressure::Block(Duration::from_secs(1)),
            synchronous: false,
            checkpoint_dir: None,
            dead_letter_capacity: 10_000,
        }
    }
}

/// The bus layer's errors. Refused drafts are handed back.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The store refused the append (invalid event, version conflict, duplicate id, …).
    #[error(transparent)]
    Store(StoreError),
    /// The ring stayed full; nothing was stored.
    #[error("overloaded: the dispatch ring is full")]
    Overloaded(Vec<EventDraft>),
    /// The bus is shutting down; nothing was stored.
    #[error("the event bus is shutting down")]
    ShuttingDown(Vec<EventDraft>),
    /// A typed event could not be serialized.
    #[error("cannot serialize the event: {0}")]
    Serialize(String),
    /// A subscription or setting is invalid, or durable state could not be read.
    #[error("invalid bus configuration: {0}")]
    Config(String),
}

/// A subscription with its metrics, before its group is built.
type Member = (Subscription, Arc<HandlerMetrics>);

/// Builds a bus: register every subscription, then [`BusBuilder::build`] starts it.
pub struct BusBuilder {
    store: Arc<dyn EventStore>,
    config: BusConfig,
    subscriptions: Vec<Subscription>,
    sink: Option<DeadLetterSink>,
}

impl BusBuilder {
    /// Adds a handler.
    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscriptions.push(subscription);
        self
    }

    /// Sends dead letters here instead of keeping them in memory.
    pub fn dead_letter_sink(mut self, sink: DeadLetterSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Starts the bus: catches durable handlers up, then starts one thread per handler group
    /// (none in synchronous mode).
    pub fn build(self) -> Result<EventBus, BusError> {
        let BusBuilder { store, config, subscriptions, sink } = self;
        let mut names = HashSet::new();
        for subscription in &subscriptions {
            subscription.check().map_err(BusError::Config)?;
            if !names.insert(subscription.name.clone()) {
                return Err(BusError::Config(format!("two handlers are named `{}`", subscription.name)));
            }
        }
        if config.batch_size == 0 {
            return Err(BusError::Config("batch_size must be at least 1".into()));
        }
        let checkpoints = Checkpoints::new(config.checkpoint_dir.clone()).map_err(BusError::Config)?;
        let mut groups: Vec<(String, Vec<Member>)> = Vec::new();
        let mut metrics = Vec::new();
        for subscription in subscriptions {
            let handler_metrics = Arc::new(HandlerMetrics::new(&subscription.name, &subscription.group));
            metrics.push(Arc::clone(&handler_metrics));
            match groups.iter_mut().find(|(name, _)| *name == subscription.group) {
                Some((_, members)) => members.push((subscription, handler_metrics)),
                None => groups.push((subscription.group.clone(), vec![(subscription, handler_metrics)])),
            }
        }
        let start = store.bounds().1;
        let capacity = config.dead_letter_capacity;
        let dead_letters = Arc::new(Mutex::new(VecDeque::new()));
        let sink = sink.unwrap_or_else(|| {
            let kept = Arc::clone(&dead_letters);
            Arc::new(move |letter: DeadLetter| {
                let mut kept = kept.lock();
                if kept.len() >= capacity.max(1) {
                    kept.pop_front();
                }
                kept.push_back(letter);
            })
        });
        let mut groups: Vec<Group> = groups.into_iter().map(|(name, members)| Group::new(name, members)).collect();
        let shared = |producer| {
            Arc::new(Inner {
                store: Arc::clone(&store),
                config: config.clone(),
                producer,
                accepting: AtomicBool::new(true),
                published: AtomicU64::new(0),
                overloaded: AtomicU64::new(0),
                metrics: metrics.clone(),
                dead_letters: Arc::clone(&dead_letters),
                sink: Arc::clone(&sink),
                checkpoints,
                sync_groups: Mutex::new(Vec::new()),
                sync_queue: Mutex::new(VecDeque::new()),
                running: Mutex::new(0),
                stopped: Condvar::new(),
            })
        };
        if groups.is_empty() {
            // Nothing to dispatch to: no ring and no thread, a publish is an append.
            return Ok(EventBus { inner: shared(None), threads: Mutex::new(Vec::new()) });
        }
        if config.synchronous {
            let inner = shared(None);
            for group in &mut groups {
                inner.catch_up(group, start)?;
            }
            *inner.sync_groups.lock() = groups;
            return Ok(EventBus { inner, threads: Mutex::new(Vec::new()) });
        }
        let mut ring = RingBuilder::new(config.ring_capacity).starting_at(start);
        for _ in &groups {
            ring.consumer(config.wait, &[]);
        }
        let (producer, consumers) = ring.build::<u64>().map_err(BusError::Config)?;
        let inner = shared(Some(producer));
        *inner.running.lock() = groups.len();
        let mut threads = Vec::new();
        for (group, consumer) in groups.into_iter().zip(consumers) {
            let inner = Arc::clone(&inner);
            let thread = std::thread::Builder::new()
                .name(format!("herald-{}", group.name))
                .spawn(move || inner.run_group(group, consumer, start))
                .map_err(|error| BusError::Config(format!("cannot start a handler thread: {error}")))?;
            threads.push(thread);
        }
        Ok(EventBus { inner, threads: Mutex::new(threads) })
    }
}

/// Appended events waiting to be dispatched (see [`EventBus::publish_batch_deferred`]).
#[must_use = "dropping it leaves the events undispatched"]
pub struct PendingDispatch<'a> {
    /// The ring slots of the events, claimed at their positions (sequence = position).
    claim: Option<Claim<'a, u64>>,
    count: usize,
}

impl PendingDispatch<'_> {
    const NONE: PendingDispatch<'static> = PendingDispatch { claim: None, count: 0 };

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Hands the events to the handlers (publishes their ring slots).
    pub fn dispatch(mut self) {
        if let Some(mut claim) = self.claim.take() {
            let first = claim.start();
            for position in first..first + self.count as u64 {
                claim.write(position);
            }
        }
    }
}

/// The domain event bus (see the module docs).
pub struct EventBus {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    config: BusConfig,
    producer: Option<Producer<u64>>,
    accepting: AtomicBool,
    published: AtomicU64,
    overloaded: AtomicU64,
    metrics: Vec<Arc<HandlerMetrics>>,
    dead_letters: Arc<Mutex<VecDeque<DeadLetter>>>,
    sink: DeadLetterSink,
    checkpoints: Checkpoints,
    /// Synchronous mode: the groups, locked while a publisher runs their handlers.
    sync_groups: Mutex<Vec<Group>>,
    /// Synchronous mode: `(first position, count)` of appends waiting for dispatch.
    sync_queue: Mutex<VecDeque<(u64, usize)>>,
    running: Mutex<usize>,
    stopped: Condvar,
}

thread_local! {
    /// Set while this thread drains the synchronous queue, so a handler's publish only queues.
    static DISPATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl EventBus {
    /// Starts building a bus over `store`.
    pub fn builder(store: Arc<dyn EventStore>, config: BusConfig) -> BusBuilder {
        BusBuilder { store, config, subscriptions: Vec::new(), sink: None }
    }

    /// Publishes one typed event.
    pub fn publish<E: DomainEvent>(&self, event: &E) -> Result<Appended, BusError> {
        let data = serde_json::to_vec(event).map_err(|error| BusError::Serialize(error.to_string()))?;
        // Not marked as checked JSON: a hand-written `Serialize` can make serde_json emit text
        // that is not (a key without a value, a raw value), so the store checks it.
        let draft = EventDraft::new(E::EVENT_TYPE, event.aggregate_id(), data);
        let outcome = self.publish_owned([draft])?;
        outcome.events().first().copied().ok_or_else(|| BusError::Config("the store returned no result".into()))
    }

    /// Publishes one draft (full control: id, expected version, metadata).
    pub fn publish_draft(&self, draft: EventDraft) -> Result<AppendOutcome, BusError> {
        self.publish_owned([draft])
    }

    /// Publishes drafts atomically: all are stored and dispatched, or none.
    pub fn publish_batch(&self, drafts: Vec<EventDraft>) -> Result<AppendOutcome, BusError> {
        self.publish_owned(drafts)
    }

    /// [`EventBus::publish_batch`] for any owner of drafts: one draft goes in an array, with no
    /// allocation unless it comes back in an error.
    fn publish_owned<D>(&self, mut drafts: D) -> Result<AppendOutcome, BusError>
    where
        D: AsRef<[EventDraft]> + AsMut<[EventDraft]> + Into<Vec<EventDraft>>,
    {
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::Acquire) {
            return Err(BusError::ShuttingDown(drafts.into()));
        }
        drafts.as_mut().iter_mut().for_each(context::apply);
        match &inner.producer {
            Some(producer) => {
                let (outcome, pending) = inner.publish_through_ring(producer, drafts, false)?;
                pending.dispatch();
                Ok(outcome)
            }
            None if inner.metrics.is_empty() => inner.publish_without_handlers(drafts.as_ref(), false),
            None => inner.publish_synchronously(drafts.as_ref()),
        }
    }

    /// [`EventBus::publish_batch`] for a caller that shares one fsync among many publishes (the
    /// server, per reactor turn): the events are appended with
    /// [`EventStore::append_deferred_with`] and dispatched only by [`PendingDispatch::dispatch`],
    /// which the caller calls after [`EventStore::sync`] succeeded (when
    /// [`EventStore::syncs_before_ack`]); dropping it instead never dispatches them. In
    /// synchronous mode the events are dispatched before this returns.
    pub fn publish_batch_deferred(
        &self,
        mut drafts: Vec<EventDraft>,
    ) -> Result<(AppendOutcome, PendingDispatch<'_>), BusError> {
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::Acquire) {
            return Err(BusError::ShuttingDown(drafts));
        }
        drafts.iter_mut().for_each(context::apply);
        match &inner.producer {
            Some(producer) => inner.publish_through_ring(producer, drafts, true),
            None if inner.metrics.is_empty() => {
                Ok((inner.publish_without_handlers(&drafts, true)?, PendingDispatch::NONE))
            }
            None => Ok((inner.publish_synchronously(&drafts)?, PendingDispatch::NONE)),
        }
    }

    /// Counters and handling times.
    pub fn metrics(&self) -> BusMetrics {
        let inner = &self.inner;
        summarize(
            inner.published.load(Ordering::Relaxed),
            inner.overloaded.load(Ordering::Relaxed),
            inner.metrics.iter().map(|m| m.stats()).collect(),
        )
    }

    /// The dead letters the default sink kept, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead_letters.lock().iter().cloned().collect()
    }

    /// The store the bus appends to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Stops accepting, lets every group drain what is committed, and joins the threads, within
    /// `timeout`. Returns whether everything drained in time (threads still running then are
    /// left to finish on their own).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        if let Some(producer) = &inner.producer {
            producer.close();
        }
        let deadline = Instant::now() + timeout;
        let mut running = inner.running.lock();
        while *running > 0 {
            if inner.stopped.wait_until(&mut running, deadline).timed_out() {
                break;
            }
        }
        let drained = *running == 0;
        drop(running);
        if drained {
            for thread in self.threads.lock().drain(..) {
                let _ = thread.join();
            }
        }
        drained
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(5));
    }
}

impl Inner {
    fn publish_through_ring<'a, D>(
        &self,
        producer: &'a Producer<u64>,
        drafts: D,
        deferred: bool,
    ) -> Result<(AppendOutcome, PendingDispatch<'a>), BusError>
    where
        D: AsRef<[EventDraft]> + Into<Vec<EventDraft>>,
    {
        let mut claim = None;
        // Why the ring refused, if it did: decides which error hands the drafts back.
        let mut refused = None;
        let mut reserve = |first, count| {
            let claimed = match self.config.backpressure {
                Backpressure::Reject => producer.try_claim(count),
                Backpressure::Block(timeout) => producer.claim_timeout(count, timeout),
            };
            match claimed {
                Ok(slots) if slots.start() == first => {
                    claim = Some(slots);
                    Ok(())
                }
                Ok(slots) => Err(StoreError::Overloaded(format!(
                    "ring sequence {} does not match log position {first}: the store was appended to outside the bus",
                    slots.start()
                ))),
                Err(reason @ (ClaimError::Full | ClaimError::Closed)) => {
                    refused = Some(reason);
                    Err(StoreError::Overloaded("the dispatch ring refused the claim".into()))
                }
                Err(ClaimError::TooMany) => Err(StoreError::Invalid(ValidationError::new(
                    "events",
                    format!("a batch may hold at most {} events (dispatch.ring_capacity)", self.config.ring_capacity),
                ))),
            }
        };
        let result = if deferred {
            self.store.append_deferred_with(drafts.as_ref(), &mut reserve)
        } else {
            self.store.append_with(drafts.as_ref(), &mut reserve)
        };
        match result {
            Ok(AppendOutcome::Appended(appended)) => {
                self.published.fetch_add(appended.len() as u64, Ordering::Relaxed);
                let count = appended.len();
                Ok((AppendOutcome::Appended(appended), PendingDispatch { claim, count }))
            }
            Ok(retry) => Ok((retry, PendingDispatch::NONE)),
            Err(error) => match refused {
                Some(ClaimError::Full) => {
                    self.overloaded.fetch_add(1, Ordering::Relaxed);
                    Err(BusError::Overloaded(drafts.into()))
                }
                Some(_) => Err(BusError::ShuttingDown(drafts.into())),
                None => Err(BusError::Store(error)),
            },
        }
    }

    /// A bus without handlers: append (deferred or not) and count.
    fn publish_without_handlers(&self, drafts: &[EventDraft], deferred: bool) -> Result<AppendOutcome, BusError> {
        let none = &mut |_, _| Ok(());
        let outcome = if deferred { self.store.append_deferred_with(drafts, none) } else { self.store.append(drafts) };
        let outcome = outcome.map_err(BusError::Store)?;
        if let AppendOutcome::Appended(appended) = &outcome {
            self.published.fetch_add(appended.len() as u64, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    fn publish_synchronously(&self, drafts: &[EventDraft]) -> Result<AppendOutcome, BusError> {
        let outcome = self.store.append(drafts).map_err(BusError::Store)?;
        let AppendOutcome::Appended(appended) = &outcome else { return Ok(outcome) };
        self.published.fetch_add(appended.len() as u64, Ordering::Relaxed);
        if let Some(first) = appended.first() {
            self.sync_queue.lock().push_back((first.position, appended.len()));
        }
        if DISPATCHING.with(|dispatching| dispatching.replace(true)) {
            // Published by a handler: dispatched once it returns, in order.
            return Ok(outcome);
        }
        let mut groups = self.sync_groups.lock();
        loop {
            let next = self.sync_queue.lock().pop_front();
            let Some((first, count)) = next else { break };
            let end = first + count as u64;
            for group in groups.iter_mut() {
                self.handle_range(group, first..end, |_| true);
                self.save_durable(group, end);
            }
        }
        drop(groups);
        DISPATCHING.with(|dispatching| dispatching.set(false));
        Ok(outcome)
    }

    /// The group thread: catch-up of durable handlers, then live events until the ring closes.
    fn run_group(self: Arc<Self>, mut group: Group, mut consumer: Consumer<u64>, start: u64) {
        if let Err(error) = self.catch_up(&mut group, start) {
            eprintln!("herald: handler group `{}` could not catch up: {error}", group.name);
        }
        loop {
            match consumer.wait_readable(self.config.batch_size, Duration::from_millis(200)) {
                Ok(range) => {
                    self.handle_range(&mut group, range.clone(), |position| {
                        consumer.with_value(position, |value| value.is_some())
                    });
                    consumer.release(range.end);
                    self.save_durable(&group, range.end);
                }
                Err(Wait::Closed) => break,
                Err(_) => {}
            }
        }
        let mut running = self.running.lock();
        *running -= 1;
        self.stopped.notify_all();
    }

    /// Dispatches the committed events at positions `range` to the group's handlers.
    fn handle_range(&self, group: &mut Group, range: std::ops::Range<u64>, live: impl Fn(u64) -> bool) {
        let query =
            ReadQuery { from_position: range.start, limit: (range.end - range.start) as usize, ..ReadQuery::default() };
        let mut chosen = Vec::new();
        let result = self.store.read(&query, &mut |view| {
            if view.position >= range.end {
                return ControlFlow::Break(());
            }
            if live(view.position) {
                group.interested(&view, &mut chosen);
                for &index in &chosen {
                    run_isolated(&mut group.handlers[index], &view, &self.sink);
                }
            }
            ControlFlow::Continue(())
        });
        if let Err(error) = result {
            eprintln!("herald: handler group `{}` could not read positions {range:?}: {error}", group.name);
        }
    }

    /// Runs each durable handler of `group` over the stored events from its checkpoint up to
    /// `start` (where the ring begins), checkpointing as it goes.
    fn catch_up(&self, group: &mut Group, start: u64) -> Result<(), BusError> {
        for index in 0..group.handlers.len() {
            if !group.handlers[index].subscription.durable {
                continue;
            }
            let name = group.handlers[index].subscription.name.clone();
            let checkpoint = self.checkpoints.load(&name).map_err(BusError::Config)?;
            let (first_retained, _) = self.store.bounds();
            let mut from = checkpoint.unwrap_or(0);
            if from < first_retained {
                eprintln!("herald: durable handler `{name}` resumes at {first_retained}: retention removed {from}..{first_retained}");
                from = first_retained;
            }
            let mut chosen = Vec::new();
            while from < start {
                let limit = ((start - from) as usize).min(4096);
                let query = ReadQuery { from_position: from, limit, ..ReadQuery::default() };
                let mut next = from;
                let summary = self
                    .store
                    .read(&query, &mut |view| {
                        next = view.position + 1;
                        if view.position >= start {
                            return ControlFlow::Break(());
                        }
                        group.interested(&view, &mut chosen);
                        if chosen.contains(&index) {
                            run_isolated(&mut group.handlers[index], &view, &self.sink);
                        }
                        ControlFlow::Continue(())
                    })
                    .map_err(BusError::Store)?;
                from = next.max(summary.next_position).min(start);
                self.checkpoints.save(&name, from).map_err(BusError::Config)?;
            }
        }
        Ok(())
    }

    fn save_durable(&self, group: &Group, end: u64) {
        for handler in group.handlers.iter().filter(|h| h.subscription.durable) {
            if let Err(error) = self.checkpoints.save(&handler.subscription.name, end) {
                eprintln!("herald: checkpoint of `{}`: {error}", handler.subscription.name);
            }
        }
    }
}
