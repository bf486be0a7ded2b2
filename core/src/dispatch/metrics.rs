//! Bus and per-handler counters, and a handling-time histogram per handler (HdrHistogram, ns).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::metrics::{latency_histogram, LatencySummary};

pub(crate) struct HandlerMetrics {
    pub name: String,
    pub group: String,
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    handling_ns: Mutex<Histogram<u64>>,
}

/// A handler's counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerStats {
    pub name: String,
    pub group: String,
    /// Events handled successfully.
    pub handled: u64,
    /// Failed attempts (errors and panics), retries included.
    pub failed: u64,
    /// Retries made.
    pub retried: u64,
    /// Events given up on.
    pub dead_lettered: u64,
    /// Time per successful handling.
    pub handling_time: LatencySummary,
}

/// The bus's metrics at one moment (the spec's `domain_events` block and more).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct BusMetrics {
    /// Events appended through the bus.
    pub published: u64,
    /// Successful handlings, over all handlers.
    pub handled: u64,
    /// Failed attempts, over all handlers.
    pub failed: u64,
    /// Mean handling time over all handlers, in milliseconds.
    pub average_handling_time_ms: f64,
    /// Publishes refused because the ring was full.
    pub overloaded: u64,
    pub handlers: Vec<HandlerStats>,
}

impl HandlerMetrics {
    pub fn new(name: &str, group: &str) -> Self {
        HandlerMetrics {
            name: name.to_owned(),
            group: group.to_owned(),
            handled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            handling_ns: Mutex::new(latency_histogram()),
        }
    }

    pub fn handled(&self, elapsed: Duration) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.handling_ns.lock().saturating_record(elapsed.as_nanos().max(1) as u64);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> HandlerStats {
        let handling_time = LatencySummary::of(&self.handling_ns.lock());
        HandlerStats {
            name: self.name.clone(),
            group: self.group.clone(),
            handled: self.handled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            handling_time,
        }
    }
}

pub(crate) fn summarize(published: u64, overloaded: u64, handlers: Vec<HandlerStats>) -> BusMetrics {
    let handled: u64 = handlers.iter().map(|h| h.handled).sum();
    let total_ns: f64 = handlers.iter().map(|h| h.handling_time.mean_ns * h.handling_time.count as f64).sum();
    let timed: u64 = handlers.iter().map(|h| h.handling_time.count).sum();
    BusMetrics {
        published,
        handled,
        failed: handlers.iter().map(|h| h.failed).sum(),
        average_handling_time_ms: if timed == 0 { 0.0 } else { total_ns / timed as f64 / 1e6 },
        overloaded,
        handlers,
    }
}
