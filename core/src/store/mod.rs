//! The event store: Herald's memory. Every event of every kind is appended here before it goes
//! anywhere else.
//!
//! [`Log`] is the one implementation of [`EventStore`]: on disk ([`Log::open`]) it is an
//! append-only sequence of memory-mapped segment files with checksummed records; in memory
//! ([`Log::in_memory`], the testing preset) the same code runs over anonymous maps, without
//! files, fsync, checkpoints or recovery.
//!
//! Invariants (`DESIGN.md`):
//! 1. An acknowledged event is durable per [`Durability`] and readable at its position, unchanged,
//!    until retention removes its whole segment. Recovery truncates only a torn tail that was never
//!    acknowledged; a complete record with a bad checksum is reported, never dropped.
//! 2. Positions are 0-based and gap-free over all kinds; `aggregate_version` is 1-based and
//!    gap-free per aggregate; `expected_version` and id idempotency are checked under the same
//!    lock as the append, so they are atomic with it. A batch is appended all or nothing.
//! 3. Timestamps never decrease along positions, so the position order is also the time order.
//!
//! The byte layout, the fsync points and what each durability mode can lose are in
//! `docs/storage.md`.

mod config;
mod cursor;
mod delta;
mod error;
mod index;
mod log;
mod metrics;
mod prefault;
mod record;
mod segment;
mod snapshot;

use std::ops::ControlFlow;

pub use config::{Durability, Retention, StoreConfig};
pub use cursor::Cursor;
pub use error::StoreError;
pub use log::{Log, VerifyReport};
pub use metrics::{LatencySummary, StoreMetrics};
pub use record::EventView;
pub use snapshot::Snapshot;

use crate::event::{EventDraft, EventKind, Uuid};

/// The hook of [`EventStore::append_with`]: `(first position, count)`.
pub type Reserve<'a> = &'a mut dyn FnMut(u64, usize) -> Result<(), StoreError>;

/// Where one appended event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub id: Uuid,
    pub position: u64,
    pub aggregate_version: u64,
}

/// The result of an append: new events, or an idempotent retry of events already stored.
///
/// The third outcome, a conflict (some ids stored, or stored with another type or aggregate),
/// is the error [`StoreError::DuplicateId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were appended now, in draft order.
    Appended(Vec<Appended>),
    /// Every id was already stored with the same type and aggregate: nothing was appended, and
    /// these are the original results.
    AlreadyAppended(Vec<Appended>),
}

impl AppendOutcome {
    /// The per-event results, whichever the outcome.
    pub fn events(&self) -> &[Appended] {
        match self {
            AppendOutcome::Appended(events) | AppendOutcome::AlreadyAppended(events) => events,
        }
    }
}

/// A read of the log in position order (the HTTP `GET /v1/events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadQuery {
    /// First position to examine.
    pub from_position: u64,
    /// Only this kind (`None`: every kind).
    pub kind: Option<EventKind>,
    /// Only this type (uses the type index).
    pub event_type: Option<String>,
    /// Only events at or after this unix-ns timestamp (binary search over the log).
    pub since_ns: Option<u64>,
    /// At most this many events.
    pub limit: usize,
}

impl Default for ReadQuery {
    fn default() -> Self {
        ReadQuery { from_position: 0, kind: None, event_type: None, since_ns: None, limit: usize::MAX }
    }
}

/// What a read examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSummary {
    /// Events handed to the visitor.
    pub count: usize,
    /// The position after the last record examined: reading on from it never rescans.
    pub next_position: u64,
}

/// What a stream read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// Events handed to the visitor.
    pub count: usize,
    /// The stream's current version (0: no such stream).
    pub version: u64,
}

/// The store's contract, shared by every implementation and used by the rest of Herald.
///
/// Reads hand each event to a visitor as a zero-copy [`EventView`]; return
/// `ControlFlow::Break(())` to stop early. [`Log::cursor`] offers the same as a pull iterator.
pub trait EventStore: Send + Sync {
    /// Appends the drafts atomically (all or none), after checking ids and expected versions.
    /// `reserve` runs under the append lock once every check passed, with the first position
    /// the drafts will take and their count; an error from it aborts the append with nothing
    /// written. The dispatch ring claims its slots here, so ring sequences follow positions.
    /// It is not called for an idempotent retry.
    fn append_with(&self, drafts: &[EventDraft], reserve: Reserve<'_>) -> Result<AppendOutcome, StoreError>;

    /// [`EventStore::append_with`] without waiting for the fsync that `Durability::Always`
    /// requires: the events are written, but neither visible to readers nor durable until the
    /// next [`EventStore::sync`], which the caller must complete before it acknowledges them.
    /// A server uses it to cover every append of one reactor turn with one fsync (as Redis does
    /// with `appendfsync always`). Under other modes, and by default, the same as `append_with`.
    fn append_deferred_with(&self, drafts: &[EventDraft], reserve: Reserve<'_>) -> Result<AppendOutcome, StoreError> {
        self.append_with(drafts, reserve)
    }

    /// Whether appends wait for an fsync (`Durability::Always` on disk): callers of
    /// [`EventStore::append_deferred_with`] must then [`EventStore::sync`] before acknowledging.
    fn syncs_before_ack(&self) -> bool {
        false
    }

    /// Appends the drafts atomically (all or none), after checking ids and expected versions.
    fn append(&self, drafts: &[EventDraft]) -> Result<AppendOutcome, StoreError> {
        self.append_with(drafts, &mut |_, _| Ok(()))
    }

    /// Reads the log in position order with the query's filters.
    fn read(
        &self,
        query: &ReadQuery,
        visit: &mut dyn FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<ReadSummary, StoreError>;

    /// Reads one aggregate's events from `from_version` (1-based) in version order.
    fn read_stream(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
        visit: &mut dyn FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<StreamSummary, StoreError>;

    /// The aggregate's current version (0: no such stream).
    fn stream_version(&self, aggregate_id: &str) -> u64;

    /// Stores `state` (typically an rkyv archive) as the aggregate's snapshot at `version`.
    /// The stream must exist and be at `version` or later.
    fn save_snapshot(&self, aggregate_id: &str, version: u64, state: &[u8]) -> Result<(), StoreError>;

    /// The snapshot with the highest version (the last written among equals), if any.
    fn load_snapshot(&self, aggregate_id: &str) -> Result<Option<Snapshot>, StoreError>;

    /// `(first retained position, next position)`: readable positions are `first..next`.
    fn bounds(&self) -> (u64, u64);

    /// Makes everything appended so far durable, whatever the durability mode.
    fn sync(&self) -> Result<(), StoreError>;

    /// Counters and latency summaries.
    fn metrics(&self) -> StoreMetrics;

    /// Appends one draft.
    fn append_one(&self, draft: &EventDraft) -> Result<AppendOutcome, StoreError> {
        self.append(std::slice::from_ref(draft))
    }

    /// Loads the newest snapshot, then visits the events after it: the way to rebuild an
    /// aggregate. Returns the snapshot (if any) and the stream summary.
    fn load_aggregate(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<(Option<Snapshot>, StreamSummary), StoreError> {
        let snapshot = self.load_snapshot(aggregate_id)?;
        let from_version = snapshot.as_ref().map_or(1, |s| s.version + 1);
        let summary = self.read_stream(aggregate_id, from_version, usize::MAX, visit)?;
        Ok((snapshot, summary))
    }
}
