//! Store counters and latency histograms (HdrHistogram, nanoseconds, 3 significant digits).
//!
//! Counters are atomics; each histogram sits behind its own short lock, taken once per append
//! (after the append lock is released) or once per fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// A latency distribution, summarized.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// A point-in-time copy of the store's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreMetrics {
    /// Events appended over the log's life (the next position).
    pub total_events: u64,
    /// Snapshots stored over the log's life.
    pub total_snapshots: u64,
    /// Bytes of records and snapshots held (segment data and snapshot file).
    pub storage_bytes: u64,
    /// Whole append calls, durability wait included.
    pub append_latency: LatencySummary,
    /// Each fsync (one per group commit).
    pub fsync_latency: LatencySummary,
}

pub(crate) struct Recorder {
    pub snapshots: AtomicU64,
    pub record_bytes: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    append_ns: Mutex<Histogram<u64>>,
    fsync_ns: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 10 minutes at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).unwrap_or_else(|_| unreachable!("constant bounds"))
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            snapshots: AtomicU64::new(0),
            record_bytes: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            append_ns: Mutex::new(histogram()),
            fsync_ns: Mutex::new(histogram()),
        }
    }

    pub fn record_append(&self, elapsed: Duration) {
        self.append_ns.lock().saturating_record(elapsed.as_nanos().max(1) as u64);
    }

    pub fn record_fsync(&self, elapsed: Duration) {
        self.fsync_ns.lock().saturating_record(elapsed.as_nanos().max(1) as u64);
    }

    pub fn snapshot(&self, total_events: u64) -> StoreMetrics {
        StoreMetrics {
            total_events,
            total_snapshots: self.snapshots.load(Ordering::Relaxed),
            storage_bytes: self.record_bytes.load(Ordering::Relaxed) + self.snapshot_bytes.load(Ordering::Relaxed),
            append_latency: summarize(&self.append_ns.lock()),
            fsync_latency: summarize(&self.fsync_ns.lock()),
        }
    }
}

fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: histogram.len(),
        mean_ns: histogram.mean(),
        p50_ns: histogram.value_at_quantile(0.5),
        p99_ns: histogram.value_at_quantile(0.99),
        max_ns: histogram.max(),
    }
}
