//! Store counters and latency histograms (HdrHistogram, nanoseconds, 3 significant digits).
//!
//! Counters are atomics; each histogram sits behind its own short lock, taken once per fsync or
//! per append that waits for one. The log keeps the other appends' latencies under its append
//! lock and hands them over here when its metrics are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::metrics::latency_histogram;
pub use crate::metrics::LatencySummary;

/// A point-in-time copy of the store's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreMetrics {
    /// Events appended over the log's life (the next position).
    pub total_events: u64,
    /// Snapshots stored over the log's life.
    pub total_snapshots: u64,
    /// Bytes of records and snapshots held (segment data and snapshot file).
    pub storage_bytes: u64,
    /// Append calls, durability wait included (an append that waits for no fsync is measured
    /// to the release of the append lock, its last step).
    pub append_latency: LatencySummary,
    /// Each fsync (one per group commit).
    pub fsync_latency: LatencySummary,
}

/// Records one latency in nanoseconds (at least 1; beyond the bounds saturates).
pub(crate) fn record_latency(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(elapsed.as_nanos().max(1) as u64);
}

pub(crate) struct Recorder {
    pub snapshots: AtomicU64,
    append_ns: Mutex<Histogram<u64>>,
    fsync_ns: Mutex<Histogram<u64>>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            snapshots: AtomicU64::new(0),
            append_ns: Mutex::new(latency_histogram()),
            fsync_ns: Mutex::new(latency_histogram()),
        }
    }

    pub fn record_append(&self, elapsed: Duration) {
        record_latency(&mut self.append_ns.lock(), elapsed);
    }

    pub fn record_fsync(&self, elapsed: Duration) {
        record_latency(&mut self.fsync_ns.lock(), elapsed);
    }

    /// Adds append latencies recorded elsewhere (the log records those that wait for no fsync
    /// under its append lock, and hands them over here).
    pub fn add_appends(&self, recorded: &Histogram<u64>) {
        // Both come from `latency_histogram`, with the same bounds: adding cannot fail.
        let _ = self.append_ns.lock().add(recorded);
    }

    pub fn snapshot(&self, total_events: u64, storage_bytes: u64) -> StoreMetrics {
        StoreMetrics {
            total_events,
            total_snapshots: self.snapshots.load(Ordering::Relaxed),
            storage_bytes,
            append_latency: LatencySummary::of(&self.append_ns.lock()),
            fsync_latency: LatencySummary::of(&self.fsync_ns.lock()),
        }
    }
}
