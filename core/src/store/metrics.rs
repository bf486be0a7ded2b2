//! Store counters and latency histograms (HdrHistogram, nanoseconds, 3 significant digits).
//!
//! Counters are atomics; each histogram sits behind its own short lock, taken once per append
//! (after the append lock is released) or once per fsync.

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
    /// Whole append calls, durability wait included.
    pub append_latency: LatencySummary,
    /// Each fsync (one per group commit).
    pub fsync_latency: LatencySummary,
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
        self.append_ns.lock().saturating_record(elapsed.as_nanos().max(1) as u64);
    }

    pub fn record_fsync(&self, elapsed: Duration) {
        self.fsync_ns.lock().saturating_record(elapsed.as_nanos().max(1) as u64);
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
