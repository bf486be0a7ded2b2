//! Store settings: segment size, durability and retention.

use std::time::Duration;

use super::StoreError;

/// When an append is acknowledged relative to the disk. Sync-before-ack is the safe default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// An append returns only after its records are fsynced (`msync(MS_SYNC)` of the written
    /// range). Concurrent appenders share one fsync (group commit): whoever finds no fsync
    /// running starts one covering everything written so far; the others wait for it or the
    /// next one. Readers see an event only once it is durable. Loses nothing acknowledged.
    Always,
    /// Appends return once the records are in the page cache; a background thread fsyncs every
    /// interval. A process crash loses nothing (the page cache survives it); a machine crash or
    /// power loss can lose up to the last interval of acknowledged events.
    Interval(Duration),
    /// Appends return once the records are in the page cache; the kernel writes them back when it
    /// likes, and the store fsyncs on close. A process crash loses nothing; a machine crash can
    /// lose everything since the last write-back.
    Never,
}

/// Which whole old segments to delete. The active segment is never deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete a sealed segment once its newest event is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest sealed segments while the log's segment files exceed this many bytes.
    pub max_bytes: Option<u64>,
}

/// How a [`super::Log`] is laid out and how careful it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Capacity of each segment file, header included. A batch must fit in one segment.
    pub segment_bytes: usize,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// What old data to delete.
    pub retention: Retention,
    /// Write an index checkpoint file (a delta; every 16th a full one, as on close) after this
    /// many events since the last one.
    pub checkpoint_every_events: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes: 64 * 1024 * 1024,
            durability: Durability::Always,
            retention: Retention::default(),
            checkpoint_every_events: 1_000_000,
        }
    }
}

/// The smallest segment allowed: room for the header and a few small records.
pub const MIN_SEGMENT_BYTES: usize = 4096;
/// The largest segment allowed (record offsets inside a segment are 32-bit).
pub const MAX_SEGMENT_BYTES: usize = (u32::MAX as usize) / 4096 * 4096;

impl StoreConfig {
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(4096)
        {
            return Err(StoreError::Config(format!(
                "segment_bytes must be a multiple of 4096 in {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            )));
        }
        if let Durability::Interval(interval) = self.durability {
            if interval.is_zero() {
                return Err(StoreError::Config("fsync interval must be at least 1 ms".into()));
            }
        }
        Ok(())
    }
}
