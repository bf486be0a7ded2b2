//! Tails of the log: pull subscriptions that read the committed events from a position, then
//! wait for new ones (EventStoreDB's catch-up subscription, a Kafka consumer's poll loop).
//!
//! A [`Tail`] reads the store (which only shows committed events: fsynced ones under `Always`),
//! so it sees every event after its start once, in position order, with no gap between the
//! history it catches up on and the live events that follow. It holds no slot in the dispatch
//! ring, so a slow or abandoned tail never slows publishers; it costs one buffer of at most
//! [`BATCH_EVENTS`] owned events.
//!
//! Waiting: publishers bump [`Appends`] after every append (one atomic load when nobody
//! waits); a tail waits on it for at most [`POLL_CAP`] at a time and re-reads, so an event
//! appended by a path that does not signal is still seen within that cap.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::event::{Event, EventKind, ValidationError};
use crate::routing::{routing_key_for_type, PatternSet};
use crate::store::{EventStore, ReadQuery, StoreError};

/// Most events one read of the store buffers.
pub const BATCH_EVENTS: usize = 256;

/// Longest single wait before a tail looks at the store again.
pub const POLL_CAP: Duration = Duration::from_millis(100);

/// Where a tail starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the first retained event.
    Beginning,
    /// After the last committed event: only events appended from now on.
    End,
    /// At this position (an error if retention already removed it).
    Position(u64),
}

/// The wake-up signal of tails: a generation counter bumped after appends.
#[derive(Default)]
pub struct Appends {
    generation: Mutex<u64>,
    changed: Condvar,
    waiters: AtomicUsize,
}

impl Appends {
    /// Wakes every waiting tail; costs one atomic load when none waits.
    pub fn notify(&self) {
        // Pairs with the fence in `wait`: either the waiter sees the new events, or we see it.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            *self.generation.lock() += 1;
            self.changed.notify_all();
        }
    }

    /// Waits until `ready` holds, a notification comes, or `timeout` passes.
    fn wait(&self, timeout: Duration, ready: impl Fn() -> bool) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut generation = self.generation.lock();
        let seen = *generation;
        if !ready() {
            let deadline = Instant::now() + timeout;
            while *generation == seen {
                if self.changed.wait_until(&mut generation, deadline).timed_out() {
                    break;
                }
            }
        }
        drop(generation);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which events a tail hands out.
enum Filter {
    /// Every record of every kind.
    All,
    /// Domain events whose routing key matches the pattern (AMQP `*`/`#`).
    Pattern(PatternSet),
}

/// A pull subscription over the log (see the module docs).
pub struct Tail {
    store: Arc<dyn EventStore>,
    appends: Arc<Appends>,
    filter: Filter,
    /// The first position not read yet.
    next_position: u64,
    buffer: VecDeque<Event>,
}

impl Tail {
    /// A tail of `store` from `start`: every kind with `pattern` `None`, else the domain events
    /// whose routing key matches it.
    pub fn new(
        store: Arc<dyn EventStore>,
        appends: Arc<Appends>,
        pattern: Option<&str>,
        start: Start,
    ) -> Result<Tail, StoreError> {
        let filter = match pattern {
            None => Filter::All,
            Some(pattern) => {
                let mut set = PatternSet::new();
                set.insert(pattern).map_err(|error| ValidationError::new("pattern", error.to_string()))?;
                Filter::Pattern(set)
            }
        };
        let (first, next) = store.bounds();
        let next_position = match start {
            Start::Beginning => first,
            Start::End => next,
            Start::Position(position) if position < first => {
                return Err(StoreError::BeforeRetention { requested: position, first_position: first })
            }
            Start::Position(position) => position,
        };
        Ok(Tail { store, appends, filter, next_position, buffer: VecDeque::new() })
    }

    /// The next event, waiting up to `timeout` for one; `None` when none came in time.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Event>, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(Some(event));
            }
            if self.fill()? {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let store = &self.store;
            let next_position = self.next_position;
            self.appends.wait((deadline - now).min(POLL_CAP), || store.bounds().1 > next_position);
        }
    }

    /// The position the next read starts at (after the last event handed out or skipped).
    pub fn position(&self) -> u64 {
        self.buffer.front().map_or(self.next_position, |event| event.position)
    }

    /// Reads the next committed events into the buffer; whether it found any that pass the
    /// filter.
    fn fill(&mut self) -> Result<bool, StoreError> {
        if self.store.bounds().1 <= self.next_position {
            return Ok(false);
        }
        let query = ReadQuery {
            from_position: self.next_position,
            kind: matches!(self.filter, Filter::Pattern(_)).then_some(EventKind::Domain),
            limit: BATCH_EVENTS,
            ..ReadQuery::default()
        };
        let (filter, buffer) = (&self.filter, &mut self.buffer);
        let summary = self.store.read(&query, &mut |view| {
            let wanted = match filter {
                Filter::All => true,
                Filter::Pattern(set) => !set.matches(&routing_key_for_type(view.event_type)).is_empty(),
            };
            if wanted {
                buffer.push_back(view.to_event());
            }
            ControlFlow::Continue(())
        })?;
        self.next_position = self.next_position.max(summary.next_position);
        Ok(!self.buffer.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventDraft;
    use crate::store::{Log, StoreConfig};

    fn store_with(types: &[&str]) -> Arc<dyn EventStore> {
        let store: Arc<dyn EventStore> = Arc::new(Log::in_memory(StoreConfig::default()).expect("in-memory log"));
        for event_type in types {
            store.append_one(&EventDraft::new(*event_type, "a-1", "{}")).expect("append");
        }
        store
    }

    #[test]
    fn a_tail_catches_up_then_sees_live_events_once_in_order() {
        let store = store_with(&["TaskCreated", "TaskCompleted"]);
        let appends = Arc::new(Appends::default());
        let mut tail = Tail::new(Arc::clone(&store), Arc::clone(&appends), None, Start::Beginning).expect("tail");
        let mut positions = Vec::new();
        while let Some(event) = tail.next(Duration::ZERO).expect("next") {
            positions.push(event.position);
        }
        assert_eq!(positions, [0, 1]);
        let writer = {
            let (store, appends) = (Arc::clone(&store), Arc::clone(&appends));
            std::thread::spawn(move || {
                for _ in 0..50 {
                    store.append_one(&EventDraft::new("TaskUpdated", "a-1", "{}")).expect("append");
                    appends.notify();
                }
            })
        };
        while positions.len() < 52 {
            let event = tail.next(Duration::from_secs(10)).expect("next").expect("a live event in time");
            positions.push(event.position);
        }
        writer.join().expect("writer");
        assert_eq!(positions, (0..52).collect::<Vec<u64>>(), "no gap, no duplicate at the switch to live");
        assert!(tail.next(Duration::from_millis(1)).expect("next").is_none());
    }

    #[test]
    fn a_pattern_tail_sees_only_matching_domain_events() {
        let store = store_with(&["TaskCreated", "UserRegistered", "TaskCompleted"]);
        let appends = Arc::new(Appends::default());
        let mut tail = Tail::new(store, appends, Some("task.*"), Start::Position(0)).expect("tail");
        let mut types = Vec::new();
        while let Some(event) = tail.next(Duration::ZERO).expect("next") {
            types.push(event.event_type);
        }
        assert_eq!(types, ["TaskCreated", "TaskCompleted"]);
    }

    #[test]
    fn end_skips_history_and_bad_patterns_name_the_field() {
        let store = store_with(&["TaskCreated"]);
        let appends = Arc::new(Appends::default());
        let mut tail = Tail::new(Arc::clone(&store), Arc::clone(&appends), None, Start::End).expect("tail");
        assert!(tail.next(Duration::ZERO).expect("next").is_none(), "history is skipped");
        assert_eq!(tail.position(), 1);
        let error = Tail::new(store, appends, Some("Task.*"), Start::End).err().expect("a bad pattern");
        assert!(matches!(error, StoreError::Invalid(ref e) if e.field == "pattern"), "{error}");
    }
}
