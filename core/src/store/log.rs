//! The log: segments in order, the append path, group commit, recovery, retention, checkpoints.
//!
//! Concurrency: one `state` mutex serializes appends (checks, encoding into the map, index
//! updates); readers never take it for sequential reads. They clone the segment list (`view`)
//! and read below the `visible` watermark, which the append path (or, with
//! [`Durability::Always`], the group commit once the fsync returned) raises after the records
//! are complete. Lock order: `state`, then `view`, then a segment's `offsets`; a roll holds
//! `state` while it takes, one at a time, `unsynced_creation` (which a sync holds across its
//! fsync), `spare` and `stop` (to wake the `herald-create` thread); `commit` is never held
//! with another lock.
//!
//! Data directory: `LOCK` (an exclusive `flock` while open), `segments/` (segment files only),
//! `index.ckpt` and `snapshots.dat`. Any other entry is refused at open, naming it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::cursor::{decode_at, decode_record, locate, Cursor, Source};
use super::delta::{self, ArchivedDeltaData, DeltaBuilder, DeltaRecord, MAX_DELTAS};
use super::index::{
    archived, ArchivedCheckpointData, CheckpointData, IdEntry, Index, SegmentState, StreamSlot, CHECKPOINT_FILE,
};
use super::metrics::{record_latency, Recorder};
use super::prefault;
use super::record::{
    classify, frame_len, frame_len_for_body, lost_sector, write_frame, DecodeError, EventView, Frame, RecordFields,
    FRAME_HEADER_BYTES,
};
use super::segment::{
    io_error, parse_segment_file_name, prefetch_for_write, sync_dir, Reopen, Segment, SEGMENT_HEADER_BYTES,
};
use super::snapshot::{SnapshotStore, SNAPSHOT_FILE};
use super::{
    AppendOutcome, Appended, Durability, EventStore, ReadQuery, ReadSummary, Reserve, Snapshot, StoreConfig,
    StoreError, StoreMetrics, StreamSummary,
};
use crate::event::time::{now_ns, WallClock};
use crate::event::{new_event_id, EventDraft, EventKind, ExpectedVersion, Uuid, ValidationError};
use crate::metrics::latency_histogram;
use hdrhistogram::Histogram;

const SEGMENTS_DIR: &str = "segments";
/// How far ahead of the writer the prefault thread keeps pages faulted in.
const PREFAULT_WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// Failed checkpoints in a row after which retention deletes segments no checkpoint covers.
const RETENTION_CHECKPOINT_TRIES: u64 = 3;
/// The longest a group fsync waits for the appenders of the last one before it starts (twice
/// this while they keep arriving; see `gather_appends`).
const MAX_GATHER_WAIT: Duration = Duration::from_millis(1);
/// Waiters yield through a group fsync instead of sleeping only while the fsync's moving
/// average is at most this, and for at most twice that average (see `yield_until_synced`).
const MAX_SPIN_FSYNC_NS: u64 = 200_000;
/// How much the prefault thread faults in per call.
const PREFAULT_STEP_BYTES: usize = 512 * 1024;
const LOCK_FILE: &str = "LOCK";
/// The most of a record prefetched before an append (the lines of a typical record).
const PREFETCH_MAX_BYTES: usize = 1024;
/// The next segment file, zero-filled ahead of time by the maintenance thread.
const SPARE_FILE: &str = "spare.tmp";

/// The event log (see the module docs of [`crate::store`]).
pub struct Log {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    config: StoreConfig,
    /// The data directory; `None` for the in-memory store.
    dir: Option<PathBuf>,
    _lock: Option<File>,
    state: Mutex<State>,
    /// The segments, oldest first; replaced (never mutated) on roll and retention.
    view: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// Positions below this are complete (and durable under `Always`); readers stop here.
    visible: AtomicU64,
    /// Positions below this are written (maybe not durable); lets a syncer see appends arrive.
    appended: AtomicU64,
    /// Where the next record goes in the map, as far as the last append knew: an address only
    /// prefetched (see `segment::prefetch_for_write`), never dereferenced; 0 for none.
    next_write: AtomicUsize,
    commit: Mutex<CommitState>,
    /// Positions below this are on disk (raised under `commit`, read without it).
    durable: AtomicU64,
    /// Bumped (under `commit`) when a group fsync ends: the appenders waiting for it sleep on
    /// this word, and one futex call wakes them all. A wake-up per waiter took the syncer 7
    /// system calls, each preempted by the thread it had just woken, while the last ones waited.
    commit_epoch: AtomicU32,
    /// Whether a waiter is yielding through the running fsync (see `yield_until_synced`). An
    /// atomic, not in `CommitState`, so the spinner can give its turn back without the lock.
    spinning: AtomicBool,
    /// Held by a flush while it writes the runs it took from `State::unwritten` (taken while
    /// holding the state lock, so the order is always state, then this): a reader that needs
    /// one of those records waits for it here.
    writing: Mutex<()>,
    /// Set once by the first failed fsync; the log then refuses writes.
    failure: OnceLock<String>,
    snapshots: SnapshotStore,
    recorder: Recorder,
    events_since_checkpoint: AtomicU64,
    /// What the checkpoint files on disk cover; held while one is written.
    checkpointed: Mutex<Checkpointed>,
    /// `checkpointed.end`, readable under the append lock (which may not take `checkpointed`):
    /// retention deletes only segments whose records are all below it.
    checkpoint_covers: AtomicU64,
    /// Set when retention kept a segment only because no checkpoint file covers it yet: the
    /// maintenance thread then writes one and applies retention again.
    retention_waits: AtomicBool,
    /// Checkpoints that failed in a row while retention waited for one (see `maintain`).
    retention_checkpoint_failures: AtomicU64,
    /// Appends under `Always` waiting for their ack whose frames the next flush will write;
    /// counted under the append lock, taken to zero by the flush that covers them.
    acks_waiting: AtomicU64,
    /// A prepared segment file ready for the next roll, if the maintenance thread made one.
    spare: Mutex<Option<PathBuf>>,
    /// The segment the last roll created, until its header and name are synced (by its own
    /// thread right after the roll, or by the next flush, roll or close, whichever comes
    /// first; not by the prefault thread, which must not wait for the disk). So a roll does not
    /// wait for the disk under the append lock (with a checkpoint's fsync in flight, the two
    /// fsyncs of a roll took up to 140 ms), unless the roll before it is still unsynced or,
    /// under `Always` without a prepared spare, it zero-fills the new file. At most one is
    /// pending (a roll syncs the one before), so segment files reach the disk in order. Held
    /// while syncing.
    unsynced_creation: Mutex<Option<Arc<Segment>>>,
    /// Whether `unsynced_creation` holds a segment (for the thread's wait, without the lock).
    creation_pending: AtomicBool,
    /// Segment files retention took out of the view, oldest first, deleted by
    /// [`Shared::delete_retired`] outside the append lock: an unlink of a 64 MiB file and the
    /// directory's fsync stalled every appender while a roll held the lock.
    retired: Mutex<Vec<PathBuf>>,
    /// Whether `retired` holds a path or their deletion is under way (checked by every append
    /// without the lock; cleared once the files are gone).
    retired_pending: AtomicBool,
    /// Held while deleting retired files, so they go oldest first even with two deleters: a
    /// crash leaves only the newest of them, next to the kept segments (a gap only if an unlink
    /// failed, which is logged).
    deleting: Mutex<()>,
    stop: Mutex<bool>,
    stop_signal: Condvar,
    prefault_wanted: Condvar,
    /// Whether the prefault thread keeps the active segment populated ahead of the writer: not
    /// under `Always` on disk, nor once the kernel refused. Appends wake it for that only when
    /// set: under `Always` every append woke it for nothing, a futex wake and a context switch
    /// that made each durable append of a lone writer 15 µs slower.
    prefault_segments: AtomicBool,
    /// Wakes the thread that syncs a new segment's creation (see `unsynced_creation`).
    segment_created: Condvar,
    #[cfg(test)]
    fail_syncs: AtomicBool,
    /// Set by `Log::panic_in_next_sync` in tests: the next flush panics (after a pause).
    #[cfg(test)]
    panic_syncs: AtomicBool,
    /// Spins of waiters that ran out before their fsync ended (see `yield_until_synced`).
    #[cfg(test)]
    spins_run_out: AtomicU32,
    /// Set by `Log::crash` in tests: drop without the closing sync and checkpoint.
    #[cfg(test)]
    crashed: AtomicBool,
}

/// The index checkpoint files: the full one and the deltas after it cover `[0, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Checkpointed {
    end: u64,
    /// Deltas written since the full checkpoint (the next one is full at `MAX_DELTAS`).
    deltas: usize,
}

struct State {
    index: Index,
    /// Under `Always` on disk: frames appended but not yet written to their files, oldest
    /// first; the next group fsync writes them all (one pwrite per run) before it syncs. Readers
    /// never see them (they are above `visible`); `same_event` looks them up here.
    unwritten: Vec<Unwritten>,
    active: Arc<Segment>,
    next_position: u64,
    last_timestamp_ns: u64,
    /// The events' clock (a cycle counter read, not a system clock read, per append).
    clock: WallClock,
    /// Scratch for one append: each draft's stream slot, from the version check to the index.
    stream_slots: Vec<Option<StreamSlot>>,
    /// Latencies of the appends that do not wait for an fsync, up to the release of this lock,
    /// since the last `metrics` call, which moves them to `Shared::recorder` (where the waiting
    /// ones go directly).
    append_latency: Histogram<u64>,
}

/// The one waiter's turn to yield through a group fsync (`Shared::spinning`), given back on drop.
struct SpinTurn<'a>(&'a AtomicBool);

impl Drop for SpinTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Frames waiting for the next flush: `bytes` go at `start` in `segment`.
struct Unwritten {
    segment: Arc<Segment>,
    start: usize,
    bytes: Vec<u8>,
}

struct CommitState {
    /// Whether some thread is running an fsync right now.
    syncing: bool,
    /// Appends waiting for their ack that the last group fsync covered: its appenders, who
    /// append again as soon as it is done (see [`Shared::gather_appends`]).
    last_batch: u64,
    /// A moving average of the fsync time (ns), which bounds the wait for them.
    fsync_average_ns: u64,
    /// Threads sleeping on `Shared::commit_epoch` until the running fsync ends (not the
    /// spinner: it watches the word and needs no wake-up).
    waiting: u32,
}

/// What [`Log::verify`] walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub first_position: u64,
    pub next_position: u64,
}

/// The result of recovering the segment files.
struct Recovered {
    index: Index,
    segments: Vec<Arc<Segment>>,
    next_position: u64,
    last_timestamp_ns: u64,
    /// What the checkpoint files it used cover.
    checkpointed: Checkpointed,
}

enum RecoverError {
    /// The checkpoint disagrees with the segments: recover again without it.
    CheckpointMismatch(String),
    Store(StoreError),
}

impl From<StoreError> for RecoverError {
    fn from(error: StoreError) -> Self {
        RecoverError::Store(error)
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it: a torn tail is truncated, a damaged or
    /// foreign file is an error naming it.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Log, StoreError> {
        config.check()?;
        let dir = dir.as_ref().to_path_buf();
        let segments_dir = dir.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&segments_dir).map_err(io_error(format!("create {}", segments_dir.display())))?;
        let lock = lock_directory(&dir)?;
        let files = list_segment_files(&dir, &segments_dir)?;

        let checkpoint = match CheckpointData::read(&dir) {
            Ok(checkpoint) => checkpoint,
            Err(reason) => {
                eprintln!("herald: ignoring the index checkpoint: {reason}");
                None
            }
        };
        let checkpoint = match checkpoint.as_ref().map(|(bytes, ordered_ids)| (archived(bytes), *ordered_ids)) {
            Some((Ok(data), ordered_ids)) => Some((data, ordered_ids)),
            Some((Err(reason), _)) => {
                eprintln!("herald: rebuilding the index from the records: {reason}");
                None
            }
            None => None,
        };
        // The deltas continue a usable full checkpoint (or none: then they start at 0). After an
        // unusable one, the next checkpoint is a full one.
        let unusable = checkpoint.is_none() && dir.join(CHECKPOINT_FILE).exists();
        let (chain, stopped) = match &checkpoint {
            Some((data, _)) => delta::read_chain(&dir, data.next_position.to_native())?,
            None if unusable => (Vec::new(), None),
            None => delta::read_chain(&dir, 0)?,
        };
        if let Some(reason) = stopped {
            eprintln!("herald: scanning the records after the last usable index delta: {reason}");
        }
        let deltas: Vec<&ArchivedDeltaData> =
            chain.iter().filter_map(|bytes| delta::archived_delta(bytes).ok()).collect();
        // A chain the segments disagree with is shortened, delta by delta, before the full
        // checkpoint itself is given up (with retention on, it alone remembers deleted events).
        let mut used = deltas.len();
        let (mut recovered, used) = loop {
            match recover(&config, &segments_dir, &files, checkpoint, &deltas[..used]) {
                Ok(recovered) => break (recovered, used),
                Err(RecoverError::CheckpointMismatch(reason)) if used > 0 => {
                    eprintln!("herald: not using index delta {used} of {}: {reason}", deltas.len());
                    used -= 1;
                }
                Err(RecoverError::CheckpointMismatch(reason)) => {
                    eprintln!("herald: rebuilding the index from the records: {reason}");
                    break (recover_without_checkpoint(&config, &segments_dir, &files)?, 0);
                }
                Err(RecoverError::Store(error)) => return Err(error),
            }
        };
        if unusable {
            recovered.checkpointed.deltas = MAX_DELTAS;
        }
        // Delta files the recovery did not use can never continue a chain again.
        let used: Vec<u64> = deltas[..used].iter().map(|d| d.first_position.to_native()).collect();
        for (first, path) in delta::delta_files(&dir)? {
            if !used.contains(&first) {
                std::fs::remove_file(&path).map_err(io_error(format!("remove {}", path.display())))?;
            }
        }
        let (snapshots, snapshot_count) = SnapshotStore::open(&dir)?;
        let log = Log::assemble(config, Some(dir), Some(lock), recovered, snapshots, snapshot_count);
        Ok(log)
    }

    /// A log in memory only (the testing preset): same code, anonymous maps, no files, no fsync.
    /// Its durability setting is ignored.
    pub fn in_memory(config: StoreConfig) -> Result<Log, StoreError> {
        config.check()?;
        let config = StoreConfig { durability: Durability::Never, ..config };
        let segment = Arc::new(Segment::anonymous(0, config.segment_bytes)?);
        let recovered = Recovered {
            index: Index::default(),
            segments: vec![segment],
            next_position: 0,
            last_timestamp_ns: 0,
            checkpointed: Checkpointed::default(),
        };
        Ok(Log::assemble(config, None, None, recovered, SnapshotStore::in_memory(), 0))
    }

    fn assemble(
        config: StoreConfig,
        dir: Option<PathBuf>,
        lock: Option<File>,
        recovered: Recovered,
        snapshots: SnapshotStore,
        snapshot_count: u64,
    ) -> Log {
        let Recovered { mut index, segments, next_position, last_timestamp_ns, checkpointed } = recovered;
        // What the recovery's inserts grew is mostly written already (or freed since).
        drop(index.prefault.take());
        let active = Arc::clone(segments.last().unwrap_or_else(|| unreachable!("recovery yields a segment")));
        let recorder = Recorder::new();
        recorder.snapshots.store(snapshot_count, Ordering::Relaxed);
        let prefault_segments = !(config.durability == Durability::Always && dir.is_some());
        let shared = Arc::new(Shared {
            dir,
            _lock: lock,
            state: Mutex::new(State {
                index,
                unwritten: Vec::new(),
                active,
                next_position,
                last_timestamp_ns,
                clock: WallClock::new(),
                stream_slots: Vec::new(),
                append_latency: latency_histogram(),
            }),
            view: RwLock::new(Arc::new(segments)),
            visible: AtomicU64::new(next_position),
            appended: AtomicU64::new(next_position),
            next_write: AtomicUsize::new(0),
            commit: Mutex::new(CommitState { syncing: false, last_batch: 0, fsync_average_ns: 0, waiting: 0 }),
            durable: AtomicU64::new(next_position),
            commit_epoch: AtomicU32::new(0),
            spinning: AtomicBool::new(false),
            writing: Mutex::new(()),
            failure: OnceLock::new(),
            snapshots,
            recorder,
            events_since_checkpoint: AtomicU64::new(next_position - checkpointed.end),
            checkpoint_covers: AtomicU64::new(checkpointed.end),
            checkpointed: Mutex::new(checkpointed),
            retention_waits: AtomicBool::new(false),
            retention_checkpoint_failures: AtomicU64::new(0),
            acks_waiting: AtomicU64::new(0),
            spare: Mutex::new(None),
            unsynced_creation: Mutex::new(None),
            creation_pending: AtomicBool::new(false),
            retired: Mutex::new(Vec::new()),
            retired_pending: AtomicBool::new(false),
            deleting: Mutex::new(()),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            prefault_wanted: Condvar::new(),
            prefault_segments: AtomicBool::new(prefault_segments),
            segment_created: Condvar::new(),
            #[cfg(test)]
            fail_syncs: AtomicBool::new(false),
            #[cfg(test)]
            panic_syncs: AtomicBool::new(false),
            #[cfg(test)]
            spins_run_out: AtomicU32::new(0),
            #[cfg(test)]
            crashed: AtomicBool::new(false),
            config,
        });
        let spawn = |name: &str, work: fn(&Shared)| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || work(&shared))
                .unwrap_or_else(|error| panic!("cannot start the {name} thread: {error}"))
        };
        let mut threads = vec![spawn("herald-prefault", Shared::prefault)];
        if shared.dir.is_some() {
            threads.push(spawn("herald-store", Shared::maintain));
            threads.push(spawn("herald-create", Shared::sync_creations));
        }
        Log { shared, threads }
    }

    /// A cursor over the log per `query` (see [`Cursor`]).
    pub fn cursor(&self, query: &ReadQuery) -> Result<Cursor, StoreError> {
        let shared = &self.shared;
        // The watermark first: every segment holding a position below it is then in the list.
        let end = shared.visible.load(Ordering::Acquire);
        let segments = Arc::clone(&shared.view.read());
        let mut from = query.from_position;
        if let Some(since) = query.since_ns {
            from = from.max(position_at_time(&segments, end, since));
        }
        let first = segments[0].first_position;
        if from < first {
            return Err(StoreError::BeforeRetention { requested: from, first_position: first });
        }
        let source = match &query.event_type {
            Some(event_type) => {
                let positions =
                    shared.state.lock().index.type_positions(event_type, query.kind, from, end, query.limit);
                Source::Positions { positions, next: 0 }
            }
            None => {
                let (segment, offset) = if from < end { locate(&segments, from)? } else { (segments.len() - 1, 0) };
                Source::Sequential { next: from, segment, offset }
            }
        };
        Ok(Cursor {
            segments,
            end,
            source,
            kind: query.kind,
            event_type: query.event_type.clone(),
            remaining: query.limit,
            next_position: from,
            failed: false,
        })
    }

    /// A cursor over one aggregate from `from_version` (1-based), and the stream's version.
    pub fn stream_cursor(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<(Cursor, u64), StoreError> {
        let shared = &self.shared;
        let end = shared.visible.load(Ordering::Acquire);
        let segments = Arc::clone(&shared.view.read());
        let (positions, version) = {
            let state = shared.state.lock();
            let all = state.index.streams.get(aggregate_id).map_or(&[][..], Vec::as_slice);
            let visible = all.partition_point(|&p| p < end);
            let start = (from_version.max(1) - 1).min(visible as u64) as usize;
            let stop = visible.min(start.saturating_add(limit));
            (all[start..stop].to_vec(), visible as u64)
        };
        let first = segments[0].first_position;
        if let Some(&oldest) = positions.first() {
            if oldest < first {
                return Err(StoreError::BeforeRetention { requested: oldest, first_position: first });
            }
        }
        let cursor = Cursor {
            segments,
            end,
            source: Source::Positions { positions, next: 0 },
            kind: None,
            event_type: None,
            remaining: limit,
            next_position: 0,
            failed: false,
        };
        Ok((cursor, version))
    }

    /// Walks every record of every segment, checking checksums, positions and the indexes.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        // Every record must be in its file first: appends waiting for a group fsync are written
        // by one (a few tries, in case appends keep arriving).
        let mut state = self.shared.state.lock();
        for _ in 0..100 {
            if state.unwritten.is_empty() {
                break;
            }
            drop(state);
            self.shared.sync()?;
            state = self.shared.state.lock();
        }
        if !state.unwritten.is_empty() {
            return Err(StoreError::Overloaded("appends keep arriving; verify when the log is quieter".into()));
        }
        // And none still in a syncer's hands, mid-pwrite (lock order: state, then writing).
        let _writing = self.shared.writing.lock();
        let segments = Arc::clone(&self.shared.view.read());
        let mut report = VerifyReport {
            segments: segments.len(),
            records: 0,
            bytes: 0,
            first_position: segments[0].first_position,
            next_position: state.next_position,
        };
        let mut position = segments[0].first_position;
        for segment in segments.iter() {
            let written = segment.written.load(Ordering::Acquire);
            let mut offset = SEGMENT_HEADER_BYTES;
            while offset < written {
                let view = decode_record(segment, offset, written, position, true)?;
                let index_error = |what: &str| StoreError::Corruption {
                    file: PathBuf::from(CHECKPOINT_FILE),
                    offset: 0,
                    position: Some(position),
                    reason: format!("the {what} index disagrees with the record"),
                };
                if state.index.ids.get(&view.id).map(|e| e.position) != Some(position) {
                    return Err(index_error("id"));
                }
                if view.kind == EventKind::Domain {
                    let stream = state.index.streams.get(view.aggregate_id);
                    let at = (view.aggregate_version as usize).checked_sub(1);
                    if at.and_then(|at| stream.and_then(|s| s.get(at))) != Some(&position) {
                        return Err(index_error("stream"));
                    }
                }
                offset += view.frame_len;
                position += 1;
                report.records += 1;
            }
            report.bytes += written as u64;
        }
        if position != state.next_position {
            return Err(StoreError::Corruption {
                file: PathBuf::from(SEGMENTS_DIR),
                offset: 0,
                position: Some(position),
                reason: format!("records end at position {position}, the log expects {}", state.next_position),
            });
        }
        Ok(report)
    }

    /// Writes the full index checkpoint now (after making what it covers durable), replacing
    /// any deltas.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.shared.checkpoint()
    }

    /// Writes what the periodic checkpoint writes: an index delta for the records since the last
    /// checkpoint file, or a full checkpoint every few deltas (see `docs/storage.md`).
    pub fn checkpoint_incremental(&self) -> Result<(), StoreError> {
        self.shared.checkpoint_delta()
    }

    /// Syncs, checkpoints and closes, reporting what `drop` would only log.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_threads();
        self.shared.close()
    }

    /// Heap bytes the indexes use, roughly.
    pub fn index_bytes(&self) -> usize {
        let state = self.shared.state.lock();
        let offsets: usize = self.shared.view.read().iter().map(|s| s.offsets.read().capacity() * 4).sum();
        state.index.approximate_bytes() + offsets
    }

    fn stop_threads(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.stop_signal.notify_all();
        self.shared.prefault_wanted.notify_all();
        self.shared.segment_created.notify_all();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }

    /// Drops the log as a crash would leave it: no closing sync or checkpoint.
    #[cfg(test)]
    fn crash(self) {
        self.shared.crashed.store(true, Ordering::SeqCst);
    }

    #[cfg(test)]
    fn fail_next_syncs(&self) {
        self.shared.fail_syncs.store(true, Ordering::SeqCst);
    }

    #[cfg(test)]
    fn panic_in_next_sync(&self) {
        self.shared.panic_syncs.store(true, Ordering::SeqCst);
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_threads();
        #[cfg(test)]
        if self.shared.crashed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = self.shared.close() {
            eprintln!("herald: closing the log: {error}");
        }
    }
}

impl Shared {
    #[allow(unsafe_code)] // one call to `Segment::writable`, justified below
    /// `wait_fsync: false` is [`EventStore::append_deferred_with`]: under `Always` the caller
    /// syncs later.
    fn append(
        &self,
        drafts: &[EventDraft],
        reserve: Reserve<'_>,
        wait_fsync: bool,
    ) -> Result<AppendOutcome, StoreError> {
        // One clock read for the events' timestamp and the start of the append latency: a
        // system clock read took 15 % of an append, a cycle counter read takes a third of that.
        let started = quanta::Instant::now();
        let Some(first) = drafts.first() else {
            return Err(ValidationError::new("events", "at least one event is required").into());
        };
        // The first record's lines load while the drafts are checked.
        prefetch_for_write(self.next_write.load(Ordering::Relaxed), frame_len(first).min(PREFETCH_MAX_BYTES));
        let mut batch_bytes = 0usize;
        for draft in drafts {
            draft.validate()?;
            if draft.kind != EventKind::Domain && draft.expected_version != ExpectedVersion::Any {
                return Err(ValidationError::new("expected_version", "applies to domain events only").into());
            }
            batch_bytes += frame_len(draft);
        }
        let mut state = self.state.lock();
        if let Some(cause) = self.failure.get() {
            return Err(StoreError::ReadOnly { cause: cause.clone() });
        }
        let clock_ns = state.clock.unix_ns(started);
        if let Some(original) = self.stored_already(&state, drafts)? {
            drop(state);
            if self.config.durability == Durability::Always && wait_fsync {
                // The originals may still be waiting for their fsync: acknowledge only durable events.
                let end = original.iter().map(|a| a.position + 1).max().unwrap_or(0);
                self.wait_durable(end)?;
            }
            self.recorder.record_append(started.elapsed());
            return Ok(AppendOutcome::AlreadyAppended(original));
        }
        // The results, filled in three steps (versions, ids, positions): one vector per append.
        let State { index, stream_slots, .. } = &mut *state;
        let mut results = assign_versions(index, drafts, stream_slots)?;
        // The timestamp the records get, which never goes back, so generated ids do not either.
        generate_ids(&state.index, drafts, clock_ns.max(state.last_timestamp_ns), &mut results);
        let segment = self.room_for(&mut state, batch_bytes)?;
        reserve(state.next_position, drafts.len())?;

        let timestamp_ns = clock_ns.max(state.last_timestamp_ns);
        let first_position = state.next_position;
        for (i, result) in results.iter_mut().enumerate() {
            result.position = first_position + i as u64;
        }
        let start = segment.written.load(Ordering::Relaxed);
        // Under `Always` a file segment is written with pwrite, by the next group fsync, which
        // writes every append waiting for it at once (see `Segment::sync_to` for why pwrite);
        // otherwise the frames are encoded straight into the map.
        let durable_path = self.config.durability == Durability::Always && self.dir.is_some();
        let mut waiting = durable_path.then(|| take_unwritten(&mut state, &segment, start));
        let region: &mut [u8] = if let Some(waiting) = &mut waiting {
            let at = waiting.bytes.len();
            waiting.bytes.resize(at + batch_bytes, 0);
            &mut waiting.bytes[at..]
        } else {
            // SAFETY: we hold the append lock, so we are the only writer; the range starts at
            // `written`, below which readers stay, and `room_for` made sure it fits.
            unsafe { segment.writable(start, start + batch_bytes) }
        };
        let mut at = 0usize;
        for (i, (draft, result)) in drafts.iter().zip(&results).enumerate() {
            let length = frame_len(draft);
            let fields = RecordFields {
                draft,
                id: result.id,
                position: result.position,
                timestamp_ns,
                aggregate_version: result.aggregate_version,
                batch_remaining: (drafts.len() - 1 - i) as u32,
            };
            write_frame(&mut region[at..at + length], &fields);
            at += length;
        }
        if let Some(waiting) = waiting {
            state.unwritten.push(waiting);
            if wait_fsync {
                self.acks_waiting.fetch_add(1, Ordering::Relaxed);
            }
        }
        {
            let mut offsets = segment.offsets.write();
            let mut at = 0usize;
            let State { index, stream_slots, .. } = &mut *state;
            for ((draft, result), &stream) in drafts.iter().zip(&results).zip(stream_slots.iter()) {
                index.prefault.push(&mut offsets, (start + at) as u32);
                at += frame_len(draft);
                let generated = draft.id.is_none();
                let (kind, event_type, aggregate_id) = (draft.kind, &draft.event_type, &draft.aggregate_id);
                let Appended { id, position, aggregate_version } = *result;
                index.insert(id, generated, kind, event_type, aggregate_id, position, aggregate_version, stream);
            }
        }
        // The checksums were just computed from these bytes: readers need not check them again.
        let _ = segment.verified.compare_exchange(start, start + batch_bytes, Ordering::AcqRel, Ordering::Relaxed);
        segment.written.store(start + batch_bytes, Ordering::Release);
        // Once the whole segment is populated there is nothing to ask for (a wake-up per
        // append near the end of a segment cost a futex call each).
        let populated = segment.populated.load(Ordering::Relaxed);
        let behind = populated < segment.capacity() && start + batch_bytes + PREFAULT_WINDOW_BYTES / 2 > populated;
        if (behind && self.prefault_segments.load(Ordering::Relaxed)) || !state.index.prefault.is_empty() {
            self.prefault_wanted.notify_one();
        }
        segment.last_timestamp_ns.store(timestamp_ns, Ordering::Relaxed);
        state.next_position += drafts.len() as u64;
        state.last_timestamp_ns = timestamp_ns;
        let end = state.next_position;
        self.appended.store(end, Ordering::Release);
        if !durable_path {
            self.next_write.store(segment.address_of(start + batch_bytes), Ordering::Relaxed);
        }
        if self.config.durability != Durability::Always {
            self.visible.store(end, Ordering::Release);
        }
        let waits = self.config.durability == Durability::Always && wait_fsync;
        if !waits {
            // Done but for the unlock: recorded here, under the lock already held, where the
            // recorder's own lock was 3 % of an append.
            record_latency(&mut state.append_latency, started.elapsed());
        }
        drop(state);

        self.events_since_checkpoint.fetch_add(drafts.len() as u64, Ordering::Relaxed);
        if self.retired_pending.load(Ordering::Acquire) {
            self.delete_retired();
        }
        if waits {
            self.wait_durable(end)?;
            self.recorder.record_append(started.elapsed());
        }
        Ok(AppendOutcome::Appended(results))
    }

    /// `Some(original results)` when every id is stored with the same type and aggregate; an
    /// error when only some are, or differently, or an id repeats inside the batch.
    fn stored_already(&self, state: &State, drafts: &[EventDraft]) -> Result<Option<Vec<Appended>>, StoreError> {
        let mut original = Vec::new();
        let mut conflicting = Vec::new();
        // Only publisher-given ids can be stored already: a generated id is fresh.
        for (draft, id) in drafts.iter().filter_map(|draft| Some((draft, draft.id?))) {
            if let Some(entry) = state.index.ids.get(&id) {
                if self.same_event(state, &entry, draft) {
                    original.push(Appended {
                        id,
                        position: entry.position,
                        aggregate_version: entry.aggregate_version,
                    });
                } else {
                    conflicting.push(id);
                }
            }
        }
        if drafts.len() > 1 {
            let mut seen = HashSet::with_capacity(drafts.len());
            conflicting.extend(drafts.iter().filter_map(|draft| draft.id).filter(|id| !seen.insert(*id)));
        }
        match (original.len(), conflicting.is_empty()) {
            (0, true) => Ok(None),
            (found, true) if found == drafts.len() => Ok(Some(original)),
            _ => {
                let mut ids: Vec<Uuid> = conflicting.into_iter().chain(original.iter().map(|a| a.id)).collect();
                ids.sort();
                ids.dedup();
                Err(StoreError::DuplicateId { ids })
            }
        }
    }

    /// Whether the stored record at `entry` has the draft's type and aggregate. A record that
    /// retention deleted cannot be compared and counts as the same (its id matched).
    fn same_event(&self, state: &State, entry: &IdEntry, draft: &EventDraft) -> bool {
        let segments = Arc::clone(&self.view.read());
        let Ok((segment, offset)) = locate(&segments, entry.position) else { return true };
        let segment = &segments[segment];
        let same = |view: EventView<'_>| {
            view.event_type == draft.event_type && view.aggregate_id == draft.aggregate_id && view.kind == draft.kind
        };
        // A record still waiting for its pwrite is only in memory.
        let waiting = state.unwritten.iter().find(|run| {
            Arc::ptr_eq(&run.segment, segment) && (run.start..run.start + run.bytes.len()).contains(&offset)
        });
        if let Some(run) = waiting {
            let frame = &run.bytes[offset - run.start..];
            return match classify(frame) {
                Frame::Complete(length) => EventView::decode(&frame[..length]).is_ok_and(same),
                _ => false,
            };
        }
        // Or a flush is writing it right now.
        let _written = self.writing.lock();
        match decode_at(segment, offset, segment.written.load(Ordering::Acquire), entry.position) {
            Ok(view) => same(view),
            Err(_) => false,
        }
    }

    /// The active segment if `bytes` fit in it; otherwise a new segment (applying retention).
    fn room_for(&self, state: &mut State, bytes: usize) -> Result<Arc<Segment>, StoreError> {
        let active = &state.active;
        if active.written.load(Ordering::Relaxed) + bytes <= active.capacity() {
            return Ok(Arc::clone(active));
        }
        let limit = self.config.segment_bytes - SEGMENT_HEADER_BYTES;
        if bytes > limit {
            return Err(StoreError::TooLarge { bytes, limit });
        }
        let segment = Arc::new(match &self.dir {
            Some(dir) => {
                // The creation before this one first: segment files reach the disk in order.
                self.sync_creation()?;
                self.write_waiting_frames(state)?;
                let spare = self.spare.lock().take();
                let zero_fill = self.config.durability == Durability::Always;
                let segments_dir = dir.join(SEGMENTS_DIR);
                let segment = Segment::create(
                    &segments_dir,
                    state.next_position,
                    self.config.segment_bytes,
                    spare.as_deref(),
                    zero_fill,
                )?;
                // Ask the maintenance thread for the next spare.
                self.stop_signal.notify_all();
                segment
            }
            None => Segment::anonymous(state.next_position, self.config.segment_bytes)?,
        });
        if self.dir.is_some() {
            *self.unsynced_creation.lock() = Some(Arc::clone(&segment));
            self.creation_pending.store(true, Ordering::Release);
            // Under its lock, so the thread cannot miss it between its check and its wait.
            let _stop = self.stop.lock();
            self.segment_created.notify_one();
        }
        let mut view = self.view.write();
        let mut segments = Vec::clone(&view);
        segments.push(Arc::clone(&segment));
        self.apply_retention(&mut segments);
        *view = Arc::new(segments);
        state.active = Arc::clone(&segment);
        Ok(segment)
    }

    /// The `herald-create` thread: syncs each new segment's creation right after its roll.
    fn sync_creations(&self) {
        loop {
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                // An atomic, not the lock: a flush may hold that lock across an fsync, and a
                // roll (holding the append lock) takes `stop` to wake this thread.
                if !self.creation_pending.load(Ordering::Acquire) {
                    self.segment_created.wait_for(&mut stop, Duration::from_secs(1));
                }
                if *stop {
                    return;
                }
            }
            // A failure is latched inside; the thread then only waits for the stop.
            let _ = self.sync_creation();
        }
    }

    /// Under `Always`, writes the frames still waiting for the group fsync's pwrite (the next
    /// fsync still covers them): before a roll, so that the process dying can never leave the
    /// next segment's file after a segment that lacks its end (open would report that gap).
    ///
    /// A segment sealed by an earlier roll that no fsync has covered yet (two rolls within one
    /// group fsync: tiny segments or huge batches) is synced first, so the frames of a later
    /// segment never reach the disk before the end of an earlier one does: a machine crash
    /// then leaves at most the newest sealed segment torn, with no record after it, which
    /// recovery takes for the log's torn tail instead of corruption.
    fn write_waiting_frames(&self, state: &mut State) -> Result<(), StoreError> {
        if state.unwritten.is_empty() {
            return Ok(());
        }
        // After a flush still writing runs it took earlier (lock order: state, then writing).
        let _writing = self.writing.lock();
        // Whose write may have failed meanwhile, leaving a hole before these frames.
        if let Some(cause) = self.failure.get() {
            return Err(StoreError::ReadOnly { cause: cause.clone() });
        }
        let first_waiting = state.unwritten[0].segment.first_position;
        let segments = Arc::clone(&self.view.read());
        for segment in segments.iter().filter(|s| s.first_position < first_waiting) {
            let written = segment.written.load(Ordering::Acquire);
            segment.sync_to(written, false).map_err(|error| self.latch(error))?;
        }
        for mut run in std::mem::take(&mut state.unwritten) {
            run.segment.write_frames(run.start, &mut run.bytes).map_err(|error| self.latch(error))?;
        }
        Ok(())
    }

    /// Syncs the header and the name of the segment the last roll created, if nobody has yet.
    /// A failure latches the log read-only (as a failed fsync does): retrying an fsync after an
    /// error can report success for data that never reached the disk. Once latched, this
    /// fails, so no flush acknowledges records in a segment whose creation is undecided.
    fn sync_creation(&self) -> Result<(), StoreError> {
        let mut unsynced = self.unsynced_creation.lock();
        if let Some(segment) = unsynced.take() {
            self.creation_pending.store(false, Ordering::Release);
            segment.sync_creation().map_err(|error| self.latch(error))?;
        }
        match self.failure.get() {
            Some(cause) => Err(StoreError::ReadOnly { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Drops the oldest sealed segments the retention policy no longer keeps.
    fn apply_retention(&self, segments: &mut Vec<Arc<Segment>>) {
        let retention = self.config.retention;
        let now = now_ns();
        while segments.len() > 1 {
            let total: u64 = segments.iter().map(|s| s.capacity() as u64).sum();
            let too_big = retention.max_bytes.is_some_and(|max| total > max);
            let age_ns = |age: Duration| u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
            let too_old = retention.max_age.is_some_and(|age| {
                segments[0].last_timestamp_ns.load(Ordering::Relaxed).saturating_add(age_ns(age)) < now
            });
            if !too_big && !too_old {
                break;
            }
            // Deleting records no checkpoint file holds would lose their index entries (stream
            // versions, ids) at the next crash: keep the segment until a checkpoint covers it.
            let oldest_end = segments[1].first_position;
            let checkpoints_failing =
                self.retention_checkpoint_failures.load(Ordering::Relaxed) >= RETENTION_CHECKPOINT_TRIES;
            if self.dir.is_some() && oldest_end > self.checkpoint_covers.load(Ordering::Acquire) && !checkpoints_failing
            {
                self.retention_waits.store(true, Ordering::Release);
                self.stop_signal.notify_all();
                break;
            }
            let oldest = segments.remove(0);
            if let Some(path) = &oldest.path {
                let mut retired = self.retired.lock();
                retired.push(path.clone());
                self.retired_pending.store(true, Ordering::Release);
            }
        }
    }

    /// Deletes the segment files retention retired, oldest first, then fsyncs the directory.
    /// Runs after the append lock is released (by the append whose roll retired them, the
    /// maintenance thread, or close); `retired_pending` stays set until the files are gone, so
    /// an append that sees it returns only after them. If a crash comes first, the files stay:
    /// `open` removes those wholly before the first segment the checkpoint lists, and reads the
    /// others as part of the log until retention drops them again.
    fn delete_retired(&self) {
        let _deleting = self.deleting.lock();
        let paths = std::mem::take(&mut *self.retired.lock());
        if paths.is_empty() {
            return;
        }
        for path in &paths {
            if let Err(error) = std::fs::remove_file(path) {
                eprintln!("herald: retention could not delete {}: {error}", path.display());
            }
        }
        if let Some(dir) = &self.dir {
            if let Err(error) = sync_dir(&dir.join(SEGMENTS_DIR)) {
                eprintln!("herald: {error}");
            }
        }
        let retired = self.retired.lock();
        if retired.is_empty() {
            self.retired_pending.store(false, Ordering::Release);
        }
    }

    /// Blocks until positions below `end` are durable, running the fsync itself when none is in
    /// flight (group commit: one fsync covers every append written before it started); while
    /// one is, sleeps on the futex word, or yields through it if no other waiter does.
    fn wait_durable(&self, end: u64) -> Result<(), StoreError> {
        let mut commit = self.commit.lock();
        // Until a spin outlasts its fsync: then this waiter sleeps (a stalled disk burns no CPU).
        let mut may_spin = true;
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if let Some(cause) = self.failure.get() {
                return Err(StoreError::ReadOnly { cause: cause.clone() });
            }
            let fsync_ns = commit.fsync_average_ns;
            let short = fsync_ns > 0 && fsync_ns <= MAX_SPIN_FSYNC_NS;
            let turn = (commit.syncing && may_spin && short).then(|| self.spin_turn()).flatten();
            if let Some(turn) = turn {
                let epoch = self.commit_epoch.load(Ordering::Acquire);
                drop(commit);
                may_spin = self.yield_until_synced(turn, epoch, Duration::from_nanos(2 * fsync_ns));
                if self.durable.load(Ordering::Acquire) >= end {
                    return Ok(());
                }
                commit = self.commit.lock();
                continue;
            }
            if commit.syncing {
                // On a futex word, not a condvar: a condvar's waiters re-take the lock one after
                // the other, each woken only when the one before releases it, and that chain of
                // wake-ups was a third of a group fsync's cycle with 8 writers on 2 cores. Woken
                // at once, they look at `durable` without the lock.
                let epoch = self.commit_epoch.load(Ordering::Acquire);
                commit.waiting += 1;
                drop(commit);
                atomic_wait::wait(&self.commit_epoch, epoch);
                if self.durable.load(Ordering::Acquire) >= end {
                    return Ok(());
                }
                commit = self.commit.lock();
                continue;
            }
            commit.syncing = true;
            let last_batch = commit.last_batch;
            // Waiting for the appenders costs at most half an fsync for one fsync saved (a whole
            // one while they keep arriving, see `gather_appends`).
            let patience = Duration::from_nanos(commit.fsync_average_ns / 2).min(MAX_GATHER_WAIT);
            drop(commit);
            // A panic in here (a bug) must not leave `syncing` set with the waiters asleep for
            // good: they are woken to the latched failure (the runs the flush took may be lost,
            // as after a failed write), then the panic goes on.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.gather_appends(last_batch, patience);
                // The flush alone: the gather's own wait must not lengthen the next one's.
                let started = Instant::now();
                let result = self.flush();
                (result, u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))
            }));
            let (result, took_ns, panicked) = match run {
                Ok((result, took_ns)) => (result, took_ns, None),
                Err(payload) => {
                    let cause = "a group fsync panicked".to_string();
                    let _ = self.failure.set(cause.clone());
                    (Err(StoreError::ReadOnly { cause }), 0, Some(payload))
                }
            };
            commit = self.commit.lock();
            commit.syncing = false;
            match result {
                Ok((durable, acks)) => {
                    commit.last_batch = acks;
                    commit.fsync_average_ns = (commit.fsync_average_ns * 7 + took_ns) / 8;
                    // Visible first: a waiter that sees `durable` (without the lock) returns,
                    // and its client may read its events at once.
                    self.visible.fetch_max(durable, Ordering::AcqRel);
                    self.durable.fetch_max(durable, Ordering::AcqRel);
                }
                Err(error) => {
                    self.latch(error);
                }
            }
            let waiting = std::mem::take(&mut commit.waiting);
            self.commit_epoch.fetch_add(1, Ordering::Release);
            drop(commit);
            // Each returns if its appends are durable; otherwise one runs the next fsync.
            if waiting > 0 {
                atomic_wait::wake_all(&self.commit_epoch);
            }
            if let Some(payload) = panicked {
                std::panic::resume_unwind(payload);
            }
            commit = self.commit.lock();
        }
    }

    /// The turn to yield through the running fsync, unless another waiter has it.
    fn spin_turn(&self) -> Option<SpinTurn<'_>> {
        // Read first: a swap per arrival would take the line the spinner polls next to it.
        let taken = self.spinning.load(Ordering::Relaxed) || self.spinning.swap(true, Ordering::Acquire);
        (!taken).then_some(SpinTurn(&self.spinning))
    }

    /// Waits, yielding the CPU, for the group fsync running at `epoch` to end, at most `limit`;
    /// returns whether it ended. One waiter at a time (the holder of `turn`) does this instead
    /// of sleeping on the futex word, so that a vCPU stays awake through the fsync: with 8
    /// writers on 2 vCPUs both went idle during every fsync, and the wake-ups at its end (the
    /// disk's completion, then the syncer's wake-up of the waiters) each found a halted vCPU.
    /// The guest has no halt polling (`haltpoll.guest_halt_poll_ns=0`), so each waited for the
    /// host to run that vCPU again. `sched_yield` usually lets any other runnable thread run
    /// first, so the spinner mostly takes time the vCPU would have idled; it is the one waiter
    /// that needs no wake-up. The price is that idle time: with 8 durable writers the process
    /// used about 40 % of a vCPU more, for 7–19 % more appends per second. (RocksDB's write
    /// thread spins and yields up to 100 µs by default while it waits for its group's leader.)
    fn yield_until_synced(&self, turn: SpinTurn<'_>, epoch: u32, limit: Duration) -> bool {
        let started = Instant::now();
        let ended = loop {
            if self.commit_epoch.load(Ordering::Acquire) != epoch {
                break true;
            }
            if started.elapsed() >= limit {
                break false;
            }
            std::thread::yield_now();
        };
        drop(turn);
        #[cfg(test)]
        if !ended {
            self.spins_run_out.fetch_add(1, Ordering::Relaxed);
        }
        ended
    }

    /// Before a group fsync, gives the appenders the chance to finish writing so the fsync covers
    /// them too. Under `Always`, first waits (yielding) until as many appends wait for an ack as
    /// the last fsync covered (`last_batch`): the appenders it released are appending again,
    /// and with more of them than cores they come back one by one, so without the wait each
    /// fsync took only the first few (5 of 8 writers here). The wait lasts at most `patience`,
    /// or half of it after the latest arrival while they keep coming, and never more than
    /// twice `patience` in all: with a fast disk half an fsync was too short for 8 writers to
    /// come back on 2 cores. Meanwhile the frames that arrived are written (`write_early`), on
    /// this otherwise idle thread, so the flush has only the last ones left. Then yields while
    /// appends keep arriving, at most a few times. A lone writer pays one `sched_yield` per fsync.
    fn gather_appends(&self, last_batch: u64, patience: Duration) {
        if self.config.durability == Durability::Always && !patience.is_zero() {
            let started = Instant::now();
            let mut deadline = started + patience;
            let limit = started + patience * 2;
            let mut written = self.appended.load(Ordering::Acquire);
            loop {
                let now = Instant::now();
                if self.acks_waiting.load(Ordering::Acquire) >= last_batch || now >= deadline {
                    break;
                }
                let appended = self.appended.load(Ordering::Acquire);
                if appended != written {
                    written = appended;
                    deadline = deadline.max((now + patience / 2).min(limit));
                    if self.write_early().is_err() {
                        return;
                    }
                } else {
                    std::thread::yield_now();
                }
            }
        }
        let mut seen = self.appended.load(Ordering::Acquire);
        for _ in 0..8 {
            std::thread::yield_now();
            let now = self.appended.load(Ordering::Acquire);
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// During a gather: writes the runs appended so far, so the flush after it has only the
    /// last ones left. Only runs of a segment every earlier one of which is synced (at most the
    /// newest sealed segment is unsynced: it is the one before the runs' segment).
    fn write_early(&self) -> Result<(), StoreError> {
        let (runs, _writing) = {
            let mut state = self.state.lock();
            let Some(first) = state.unwritten.first() else { return Ok(()) };
            let first_position = first.segment.first_position;
            if state.unwritten.iter().any(|run| run.segment.first_position != first_position) {
                return Ok(());
            }
            let segments = Arc::clone(&self.view.read());
            let before = segments.iter().rev().find(|s| s.first_position < first_position);
            if before.is_some_and(|s| s.synced.load(Ordering::Acquire) < s.written.load(Ordering::Acquire)) {
                return Ok(());
            }
            let writing = self.writing.lock();
            (std::mem::take(&mut state.unwritten), writing)
        };
        for mut run in runs {
            run.segment.write_frames(run.start, &mut run.bytes).map_err(|error| self.latch(error))?;
        }
        Ok(())
    }

    /// Latches the log read-only with `error` as the cause (the first failure wins) and returns
    /// it. A failed write or fsync leaves it unknown which bytes reached the disk, and retrying
    /// an fsync after an error can report success for data that never did.
    fn latch(&self, error: StoreError) -> StoreError {
        let _ = self.failure.set(error.to_string());
        error
    }

    /// Fsyncs every written, unsynced range; returns the position everything below is durable,
    /// and how many appends waiting for an ack it covered.
    fn flush(&self) -> Result<(u64, u64), StoreError> {
        let (target, pending, unwritten, writing, acks) = {
            let mut state = self.state.lock();
            let writing = self.writing.lock();
            let unwritten = std::mem::take(&mut state.unwritten);
            let acks = self.acks_waiting.swap(0, Ordering::AcqRel);
            let segments = Arc::clone(&self.view.read());
            let pending: Vec<(Arc<Segment>, usize)> = segments
                .iter()
                .map(|s| (Arc::clone(s), s.written.load(Ordering::Acquire)))
                .filter(|(s, written)| s.synced.load(Ordering::Acquire) < *written)
                .collect();
            (state.next_position, pending, unwritten, writing, acks)
        };
        if pending.is_empty() || self.dir.is_none() {
            return Ok((target, acks));
        }
        #[cfg(test)]
        if self.panic_syncs.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            panic!("injected panic in a group fsync");
        }
        #[cfg(test)]
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                context: "fsync segment (injected failure)".into(),
                source: std::io::Error::other("injected"),
            });
        }
        // Flushes run one at a time (`CommitState::syncing`) and each takes every run appended
        // before it, so runs reach their files in append order. An error leaves it unknown which
        // bytes did: the caller latches the log read-only, as for a failed fsync.
        //
        // Segment by segment, oldest first: the frames of a segment are written only once the
        // segments before it are synced, so no crash leaves records in a segment after a torn
        // one (recovery takes a torn segment followed by one without a record for the torn tail
        // of the log; records after a tear are corruption). Only a flush that spans a roll
        // syncs twice (holding `writing` through the first, since runs are left).
        let mut runs = unwritten.into_iter().peekable();
        let mut writing = Some(writing);
        // Under `Always` the frames went in with pwrite; otherwise through the map.
        let through_map = self.config.durability != Durability::Always;
        let mut fsync_time = Duration::ZERO;
        // A failure latches here, before `writing` is released: a roll waiting for it must not
        // write the next segment's frames after a hole.
        let latch = |error| self.latch(error);
        for (segment, written) in pending {
            while let Some(mut run) = runs.next_if(|run| run.segment.first_position <= segment.first_position) {
                run.segment.write_frames(run.start, &mut run.bytes).map_err(latch)?;
            }
            if runs.peek().is_none() {
                // Readers waiting for those records need not wait for the fsync too.
                writing = None;
            }
            let started = Instant::now();
            // Nothing in a segment is synced before its creation is.
            self.sync_creation()?;
            segment.sync_to(written, through_map).map_err(latch)?;
            fsync_time += started.elapsed();
        }
        // None is left: a run raised its segment's `written` above `synced`, so that segment is
        // in `pending`. Written anyway rather than dropped.
        for mut run in runs {
            run.segment.write_frames(run.start, &mut run.bytes).map_err(latch)?;
        }
        drop(writing);
        self.recorder.record_fsync(fsync_time);
        Ok((target, acks))
    }

    fn sync(&self) -> Result<(), StoreError> {
        let end = self.state.lock().next_position;
        self.wait_durable(end)
    }

    /// Writes the full checkpoint (capturing the index under the append lock), then removes the
    /// deltas it makes redundant.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut checkpointed = self.checkpointed.lock();
        let (data, ordered_ids) = {
            let state = self.state.lock();
            let segments = Arc::clone(&self.view.read());
            let states = segments
                .iter()
                .map(|s| SegmentState {
                    first_position: s.first_position,
                    written: s.written.load(Ordering::Acquire) as u64,
                    last_timestamp_ns: s.last_timestamp_ns.load(Ordering::Relaxed),
                    offsets: s.offsets.read().clone(),
                })
                .collect();
            let data = CheckpointData::capture(&state.index, state.next_position, state.last_timestamp_ns, states);
            (data, state.index.ids.ordered_len() as u64)
        };
        // The checkpoint may only cover records already on disk.
        self.wait_durable(data.next_position)?;
        data.write(dir, ordered_ids)?;
        // What the files cover from now on, even if removing the deltas fails below.
        *checkpointed = Checkpointed { end: data.next_position, deltas: 0 };
        self.checkpoint_covers.store(data.next_position, Ordering::Release);
        delta::remove_deltas(dir)?;
        self.events_since_checkpoint
            .store(self.appended.load(Ordering::Acquire) - data.next_position, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the full checkpoint and the deltas after it with one full checkpoint, built from
    /// those files alone (no lock: appends go on). False when the files on disk are not the
    /// chain `checkpointed` describes (the caller then writes a full checkpoint from the index).
    fn merge_checkpoint_files(&self, checkpointed: &mut Checkpointed) -> Result<bool, StoreError> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let Ok(base) = CheckpointData::read(dir) else { return Ok(false) };
        let base = match &base {
            Some((bytes, ordered_ids)) => match archived(bytes) {
                Ok(data) => Some((data, *ordered_ids)),
                Err(_) => return Ok(false),
            },
            None => None,
        };
        let base_end = base.map_or(0, |(data, _)| data.next_position.to_native());
        let (chain, _) = delta::read_chain(dir, base_end)?;
        let deltas: Vec<&ArchivedDeltaData> =
            chain.iter().filter_map(|bytes| delta::archived_delta(bytes).ok()).collect();
        let end = deltas.last().map_or(base_end, |d| d.next_position.to_native());
        if end != checkpointed.end || deltas.len() != checkpointed.deltas {
            return Ok(false);
        }
        let mut index = base.map(|(data, ordered_ids)| Index::from_checkpoint(data, ordered_ids)).unwrap_or_default();
        for delta in &deltas {
            delta.apply(&mut index);
        }
        // Segments retention deleted since are left out, as a capture from the index leaves them.
        let first_retained = self.view.read().first().map_or(0, |s| s.first_position);
        let mut segments = delta::merged_segments(base.map(|(data, _)| data), &deltas);
        segments.retain(|s| s.first_position >= first_retained);
        let last_timestamp_ns =
            segments.iter().rev().find(|s| !s.offsets.is_empty()).map_or(0, |s| s.last_timestamp_ns);
        let ordered_ids = index.ids.ordered_len() as u64;
        let data = CheckpointData::capture(&index, end, last_timestamp_ns, segments);
        drop(index);
        data.write(dir, ordered_ids)?;
        *checkpointed = Checkpointed { end, deltas: 0 };
        self.checkpoint_covers.store(end, Ordering::Release);
        delta::remove_deltas(dir)?;
        Ok(true)
    }

    /// Writes a delta: what the records since the last checkpoint file add to the indexes, read
    /// from the records (not the index), so appends go on meanwhile. Every `MAX_DELTAS` deltas
    /// the files are first merged into a full checkpoint; a full checkpoint from the index
    /// instead when retention already removed records the delta would need.
    fn checkpoint_delta(&self) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut checkpointed = self.checkpointed.lock();
        if checkpointed.deltas >= MAX_DELTAS && !self.merge_checkpoint_files(&mut checkpointed)? {
            drop(checkpointed);
            return self.checkpoint();
        }
        let end = self.appended.load(Ordering::Acquire);
        // A checkpoint file may only cover records already on disk.
        self.wait_durable(end)?;
        let from = checkpointed.end;
        if end <= from {
            return Ok(());
        }
        let segments = Arc::clone(&self.view.read());
        if segments.first().is_none_or(|first| first.first_position > from) {
            drop(checkpointed);
            return self.checkpoint();
        }
        let mut delta = DeltaBuilder::new(from);
        for segment in segments.iter() {
            // Copied, so appends (which push offsets) never wait for the decoding below.
            let offsets: Vec<u32> = {
                let offsets = segment.offsets.read();
                let first = segment.first_position;
                let at = |position: u64| (position.clamp(first, first + offsets.len() as u64) - first) as usize;
                offsets[at(from)..at(end)].to_vec()
            };
            let start = from.max(segment.first_position);
            let limit = segment.written.load(Ordering::Acquire);
            for (position, &offset) in (start..).zip(&offsets) {
                let view = decode_at(segment, offset as usize, limit, position)?;
                delta.push(&DeltaRecord {
                    id: view.id,
                    generated: looks_generated(view.id, view.timestamp_ns),
                    kind: view.kind,
                    event_type: view.event_type,
                    aggregate_id: view.aggregate_id,
                    aggregate_version: view.aggregate_version,
                    timestamp_ns: view.timestamp_ns,
                    segment_first: segment.first_position,
                    offset,
                    end: (offset as usize + view.frame_len) as u64,
                });
            }
        }
        let data = delta.finish();
        if data.next_position != end {
            return Err(StoreError::Config(format!(
                "index delta: read positions {from}..{} of {from}..{end}",
                data.next_position
            )));
        }
        data.write(dir)?;
        *checkpointed = Checkpointed { end, deltas: checkpointed.deltas + 1 };
        self.checkpoint_covers.store(end, Ordering::Release);
        self.events_since_checkpoint.store(self.appended.load(Ordering::Acquire) - end, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self) -> Result<(), StoreError> {
        if let Some(spare) = self.spare.lock().take() {
            let _ = std::fs::remove_file(spare);
        }
        self.delete_retired();
        if self.dir.is_none() || self.failure.get().is_some() {
            return Ok(());
        }
        self.sync_creation()?;
        if self.events_since_checkpoint.load(Ordering::Relaxed) > 0
            || !self.dir.as_ref().is_some_and(|d| d.join(CHECKPOINT_FILE).exists())
        {
            self.checkpoint()
        } else {
            self.sync()
        }
    }

    /// The prefault thread: keeps the active segment's pages faulted in ahead of the writer,
    /// and populates the indexes' fresh capacity (`store::prefault`). Segments are left alone
    /// under `Always` on disk (that path writes with pwrite, and writable mappings of its pages
    /// would make every fsync pay for write-protecting them again) and where the kernel cannot
    /// populate (the writer then faults its pages in itself).
    fn prefault(&self) {
        // Index memory still to populate: a step at a time, between segment steps, so a big
        // region does not hold the segment's window back.
        let mut grown = VecDeque::new();
        loop {
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                if grown.is_empty() {
                    self.prefault_wanted.wait_for(&mut stop, Duration::from_millis(100));
                    if *stop {
                        return;
                    }
                }
            }
            grown.extend(self.state.lock().index.prefault.take());
            if self.prefault_segments.load(Ordering::Relaxed) {
                if let Some(segment) = self.view.read().last().cloned() {
                    if !self.populate_ahead(&segment) {
                        self.prefault_segments.store(false, Ordering::Relaxed);
                    }
                }
            }
            if let Some(region) = grown.pop_front() {
                let (step, rest) = region.split(PREFAULT_STEP_BYTES);
                if let Some(rest) = rest {
                    grown.push_front(rest);
                }
                prefault::populate(step);
            }
        }
    }

    /// Faults in `segment` up to a window past its writer, in steps, each published as it
    /// completes: the writer, which may be right behind (a fresh segment starts with nothing
    /// populated), faults only on the step in progress. False where the kernel cannot.
    fn populate_ahead(&self, segment: &Segment) -> bool {
        let target = (segment.written.load(Ordering::Acquire) + PREFAULT_WINDOW_BYTES).min(segment.capacity());
        while segment.populated.load(Ordering::Acquire) < target {
            let from = segment.populated.load(Ordering::Acquire).max(segment.written.load(Ordering::Acquire));
            if !segment.populate((from + PREFAULT_STEP_BYTES).min(target)) {
                return false;
            }
        }
        true
    }

    /// Under `Always`, zero-fills the next segment file once the active one is half full, so the
    /// roll that needs it does not wait for 64 MiB of zeros (see [`Segment::prepare_file`]).
    fn prepare_spare(&self) {
        let Some(dir) = &self.dir else { return };
        if self.config.durability != Durability::Always || self.spare.lock().is_some() {
            return;
        }
        let active_half_full =
            self.view.read().last().is_some_and(|s| s.written.load(Ordering::Relaxed) > s.capacity() / 2);
        if !active_half_full {
            return;
        }
        let path = dir.join(SEGMENTS_DIR).join(SPARE_FILE);
        let keep_going = || !*self.stop.lock();
        match Segment::prepare_file(&path, self.config.segment_bytes, Some(&keep_going)) {
            Ok(()) => *self.spare.lock() = Some(path),
            Err(_) if !keep_going() => {
                let _ = std::fs::remove_file(&path);
            }
            Err(error) => eprintln!("herald: preparing the next segment: {error}"),
        }
    }

    /// The background thread: interval fsync, retention by age, periodic checkpoints.
    fn maintain(&self) {
        let tick = match self.config.durability {
            Durability::Interval(interval) => interval,
            _ => Duration::from_secs(1),
        };
        loop {
            if self.failure.get().is_none() {
                self.prepare_spare();
            }
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                // Retention waiting for a checkpoint waits 100 ms at most, not a tick (a
                // wake-up sent before this wait began is lost; and failed checkpoints are
                // retried that often).
                let wait = if self.retention_waits.load(Ordering::Acquire) {
                    tick.min(Duration::from_millis(100))
                } else {
                    tick
                };
                self.stop_signal.wait_for(&mut stop, wait);
                if *stop {
                    return;
                }
            }
            if self.failure.get().is_some() {
                continue;
            }
            if matches!(self.config.durability, Durability::Interval(_)) {
                if let Err(error) = self.sync() {
                    eprintln!("herald: {error}");
                }
            }
            let retention_waits = self.retention_waits.swap(false, Ordering::AcqRel);
            if retention_waits
                || self.events_since_checkpoint.load(Ordering::Relaxed) >= self.config.checkpoint_every_events
            {
                let result = self.checkpoint_delta();
                if let Err(error) = &result {
                    eprintln!("herald: index checkpoint: {error}");
                }
                // Retention must not wait for checkpoints forever: a full disk, where a delta
                // cannot be written, is when deleting old segments matters most. After a few
                // failures it deletes anyway (a crash may then lose those events' index entries).
                match (&result, retention_waits) {
                    (Ok(()), _) => self.retention_checkpoint_failures.store(0, Ordering::Relaxed),
                    (Err(_), true) => {
                        let failures = self.retention_checkpoint_failures.fetch_add(1, Ordering::Relaxed) + 1;
                        if failures == RETENTION_CHECKPOINT_TRIES {
                            eprintln!(
                                "herald: retention deletes segments no checkpoint file covers after \
                                 {failures} failed checkpoints"
                            );
                        }
                    }
                    (Err(_), false) => {}
                }
            }
            if self.config.retention.max_age.is_some() || retention_waits {
                {
                    let _state = self.state.lock();
                    let mut view = self.view.write();
                    let mut segments = Vec::clone(&view);
                    self.apply_retention(&mut segments);
                    *view = Arc::new(segments);
                }
                self.delete_retired();
            }
        }
    }
}

/// The unwritten run that `start` in `segment` continues (taken out of `state`), or a new one.
fn take_unwritten(state: &mut State, segment: &Arc<Segment>, start: usize) -> Unwritten {
    match state.unwritten.pop() {
        Some(last) if Arc::ptr_eq(&last.segment, segment) && last.start + last.bytes.len() == start => last,
        other => {
            state.unwritten.extend(other);
            Unwritten { segment: Arc::clone(segment), start, bytes: Vec::new() }
        }
    }
}

/// The drafts' ids: the publisher's, or a new UUIDv7 for the time `timestamp_ns` (which never
/// goes back), greater than every generated id before it: within a millisecond the random low
/// bits count up by a random step (RFC 9562 §6.2, method 2), so the ids stay unguessable and sort
/// by position, and the id index only appends them. A candidate that a publisher already chose
/// (stored, or in this batch) is stepped over, so a generated id is always fresh.
fn generate_ids(index: &Index, drafts: &[EventDraft], timestamp_ns: u64, results: &mut [Appended]) {
    /// The low 62 bits of a UUIDv7: `rand_b`, below the variant bits.
    const RAND_B: u128 = (1 << 62) - 1;
    // The publisher-given ids of this batch, gathered once (a scan per generated id made big
    // batches quadratic); usually there are none.
    let given: Option<HashSet<Uuid>> =
        drafts.iter().any(|draft| draft.id.is_some()).then(|| drafts.iter().filter_map(|draft| draft.id).collect());
    let taken = |candidate: &Uuid| {
        index.ids.contains_unordered(candidate) || given.as_ref().is_some_and(|given| given.contains(candidate))
    };
    let mut last = index.ids.last_ordered();
    for (draft, result) in drafts.iter().zip(results.iter_mut()) {
        if let Some(id) = draft.id {
            result.id = id;
            continue;
        }
        let mut id = new_event_id(timestamp_ns);
        loop {
            if let Some(previous) = last.filter(|previous| id.as_u128() <= *previous) {
                // The same millisecond as the last generated id: step up from it, unless its
                // random bits are nearly exhausted (then the id goes to the unordered part).
                let step = 1 + u128::from(id.as_u128() as u32);
                if previous >> 80 == id.as_u128() >> 80 && (previous & RAND_B) + step <= RAND_B {
                    id = Uuid::from_u128(previous + step);
                }
            }
            if !taken(&id) {
                break;
            }
            last = Some(last.map_or(id.as_u128(), |previous| previous.max(id.as_u128())));
            id = new_event_id(timestamp_ns);
        }
        if last.is_none_or(|previous| id.as_u128() > previous) {
            last = Some(id.as_u128());
        }
        result.id = id;
    }
}

/// Whether a scanned record's id may have been generated by the log (a UUIDv7 no later than
/// its record), so that it belongs to the ordered part of the id index.
fn looks_generated(id: Uuid, timestamp_ns: u64) -> bool {
    id.get_version_num() == 7 && (id.as_u128() >> 80) as u64 <= timestamp_ns / 1_000_000
}

/// The drafts' results with their aggregate versions (ids and positions come later).
/// `slots` gets each draft's stream slot (`None` for a new stream or a kind without one).
fn assign_versions(
    index: &Index,
    drafts: &[EventDraft],
    slots: &mut Vec<Option<StreamSlot>>,
) -> Result<Vec<Appended>, StoreError> {
    slots.clear();
    // Only a batch needs it (making one costs a seed per append); sized up front (growing it
    // rehashed every key on the way).
    let mut in_batch: Option<HashMap<&str, u64, foldhash::fast::RandomState>> =
        (drafts.len() > 1).then(|| HashMap::with_capacity_and_hasher(drafts.len(), Default::default()));
    let mut results = Vec::with_capacity(drafts.len());
    let result = |aggregate_version| Appended { id: Uuid::nil(), position: 0, aggregate_version };
    for draft in drafts {
        if draft.kind != EventKind::Domain {
            results.push(result(0));
            slots.push(None);
            continue;
        }
        let aggregate = draft.aggregate_id.as_str();
        let slot = index.streams.slot(aggregate);
        slots.push(slot);
        let earlier_in_batch = in_batch.as_ref().and_then(|in_batch| in_batch.get(aggregate).copied());
        let current = earlier_in_batch.unwrap_or_else(|| index.streams.version(slot));
        if !draft.expected_version.allows(current) {
            return Err(StoreError::VersionConflict {
                aggregate_id: draft.aggregate_id.clone(),
                expected: draft.expected_version,
                current,
            });
        }
        results.push(result(current + 1));
        if let Some(in_batch) = &mut in_batch {
            in_batch.insert(aggregate, current + 1);
        }
    }
    Ok(results)
}

/// The first position at or after `since_ns` (or `end`): timestamps never decrease along
/// positions, so a binary search over segments, then over one segment's records, finds it.
fn position_at_time(segments: &[Arc<Segment>], end: u64, since_ns: u64) -> u64 {
    let timestamp_at = |segment: &Segment, offset: u32| -> u64 {
        let bytes = segment.bytes(offset as usize, offset as usize + 24);
        super::record::read_u64(bytes, 16)
    };
    for segment in segments {
        let offsets = segment.offsets.read();
        let visible = (end.saturating_sub(segment.first_position) as usize).min(offsets.len());
        let offsets = &offsets[..visible];
        if offsets.last().is_none_or(|&last| timestamp_at(segment, last) < since_ns) {
            continue;
        }
        let index = offsets.partition_point(|&offset| timestamp_at(segment, offset) < since_ns);
        return segment.first_position + index as u64;
    }
    end
}

fn lock_directory(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(format!("open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path: dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(error)) => Err(io_error(format!("lock {}", path.display()))(error)),
    }
}

/// Directories of Herald's other layers that share the data directory (the webhook journal);
/// the log leaves them alone.
const SIBLING_DIRS: [&str; 1] = ["webhooks"];

/// A segment file as found at open, before recovery touched it.
struct SegmentFile {
    first: u64,
    path: PathBuf,
    length: u64,
}

/// The segment files in position order; refuses anything else in the directory, and removes
/// the temporary files a crash can leave (never-renamed segments, unfinished checkpoints).
fn list_segment_files(dir: &Path, segments_dir: &Path) -> Result<Vec<SegmentFile>, StoreError> {
    let read = |path: &Path| -> Result<Vec<(String, PathBuf)>, StoreError> {
        let entries = std::fs::read_dir(path).map_err(io_error(format!("list {}", path.display())))?;
        entries
            .map(|entry| {
                let entry = entry.map_err(io_error(format!("list {}", path.display())))?;
                Ok((entry.file_name().to_string_lossy().into_owned(), entry.path()))
            })
            .collect()
    };
    for (name, path) in read(dir)? {
        match name.as_str() {
            LOCK_FILE | SEGMENTS_DIR | CHECKPOINT_FILE | SNAPSHOT_FILE => {}
            _ if SIBLING_DIRS.contains(&name.as_str()) && path.is_dir() => {}
            _ if name == format!("{CHECKPOINT_FILE}.tmp") || delta::is_unfinished_delta(&name) => {
                std::fs::remove_file(&path).map_err(io_error(format!("remove {}", path.display())))?;
            }
            _ if delta::parse_delta_file_name(&name).is_some() => {}
            _ => return Err(StoreError::ForeignFile { path, reason: "not a file Herald writes".into() }),
        }
    }
    let mut files = Vec::new();
    for (name, path) in read(segments_dir)? {
        if let Some(first) = parse_segment_file_name(&name) {
            let length = std::fs::metadata(&path).map_err(io_error(format!("stat {}", path.display())))?.len();
            files.push(SegmentFile { first, path, length });
        } else if name == SPARE_FILE || name.strip_suffix(".tmp").and_then(parse_segment_file_name).is_some() {
            std::fs::remove_file(&path).map_err(io_error(format!("remove {}", path.display())))?;
        } else {
            return Err(StoreError::ForeignFile { path, reason: "not a segment file (<20 digits>.seg)".into() });
        }
    }
    files.sort_by_key(|file| file.first);
    Ok(files)
}

fn recover_without_checkpoint(
    config: &StoreConfig,
    segments_dir: &Path,
    files: &[SegmentFile],
) -> Result<Recovered, StoreError> {
    match recover(config, segments_dir, files, None, &[]) {
        // The checkpoint on disk is of no use: the next one is a full one.
        Ok(recovered) => Ok(Recovered { checkpointed: Checkpointed { end: 0, deltas: MAX_DELTAS }, ..recovered }),
        Err(RecoverError::Store(error)) => Err(error),
        Err(RecoverError::CheckpointMismatch(reason)) => unreachable!("no checkpoint, yet a mismatch: {reason}"),
    }
}

/// Opens every segment, takes what the checkpoint and the deltas after it cover, and scans the
/// rest.
fn recover(
    config: &StoreConfig,
    segments_dir: &Path,
    files: &[SegmentFile],
    checkpoint: Option<(&ArchivedCheckpointData, u64)>,
    deltas: &[&ArchivedDeltaData],
) -> Result<Recovered, RecoverError> {
    let mut index = checkpoint.map(|(data, ordered_ids)| Index::from_checkpoint(data, ordered_ids)).unwrap_or_default();
    for delta in deltas {
        delta.apply(&mut index);
    }
    let checkpoint = checkpoint.map(|(data, _)| data);
    let covered_end = match (deltas.last(), checkpoint) {
        (Some(delta), _) => delta.next_position.to_native(),
        (None, Some(checkpoint)) => checkpoint.next_position.to_native(),
        (None, None) => 0,
    };
    let checkpointed = Checkpointed { end: covered_end, deltas: deltas.len() };
    let mut covered: HashMap<u64, SegmentState> =
        delta::merged_segments(checkpoint, deltas).into_iter().map(|s| (s.first_position, s)).collect();
    if files.is_empty() {
        if covered_end > 0 {
            return Err(StoreError::Corruption {
                file: segments_dir.to_path_buf(),
                offset: 0,
                position: None,
                reason: "the index checkpoint covers events but no segment file exists".into(),
            }
            .into());
        }
        let zero_fill = config.durability == Durability::Always;
        let segment = Segment::create(segments_dir, 0, config.segment_bytes, None, zero_fill)?;
        segment.sync_creation()?;
        return Ok(Recovered {
            index,
            segments: vec![Arc::new(segment)],
            next_position: 0,
            last_timestamp_ns: 0,
            checkpointed,
        });
    }
    let mut segments = Vec::with_capacity(files.len());
    let mut next_position = files[0].first;
    let mut last_timestamp_ns = 0;
    // A crash right after a roll, before the tail of the segment it sealed reached the disk,
    // leaves that segment torn and the new one without a record: the torn tail of the log,
    // which happens to span two files. The segment before an empty last one is therefore
    // recovered like a last one, and if it was torn, the empty file goes. Records after a
    // tear are still corruption: only a file with no record is dropped.
    let empty_last = match files {
        [.., _, last] => Segment::holds_no_record(&last.path)?,
        _ => false,
    };
    let mut torn_roll = None;
    // Files wholly before the first segment the checkpoint lists are ones retention retired
    // before that checkpoint was taken, whose deletion a crash kept from the disk: their events
    // are in the index already, and they go now, as retention meant.
    let checkpoint_first = covered.keys().min().copied();
    let mut retired = Vec::new();
    for (i, SegmentFile { first, path, length }) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let next_first = files.get(i + 1).map(|next| next.first);
        if let (Some(checkpoint_first), Some(next_first)) = (checkpoint_first, next_first) {
            if *first == next_position && next_first <= checkpoint_first {
                retired.push(path);
                next_position = next_first;
                continue;
            }
        }
        if is_last && *first > next_position && empty_last {
            torn_roll = Some(path);
            break;
        }
        let reopen = if is_last {
            Reopen::Last
        } else if empty_last && i + 2 == files.len() {
            Reopen::Writable
        } else {
            Reopen::Sealed
        };
        let is_last = reopen != Reopen::Sealed;
        if *first != next_position {
            return Err(StoreError::Corruption {
                file: path.clone(),
                offset: 0,
                position: Some(next_position),
                reason: format!("segment starts at position {first}, the previous one ends at {next_position}"),
            }
            .into());
        }
        let segment = Segment::open(path, *first, reopen, *length)?;
        let mut scan_from = SEGMENT_HEADER_BYTES;
        if let Some(state) = covered.remove(first) {
            let SegmentState { offsets, written, last_timestamp_ns: last_ns, .. } = state;
            let written = written as usize;
            if let Some(&last) = offsets.last() {
                let position = first + offsets.len() as u64 - 1;
                let valid = written <= segment.capacity()
                    && decode_at(&segment, last as usize, written, position)
                        .is_ok_and(|v| last as usize + v.frame_len == written);
                if !valid {
                    return Err(RecoverError::CheckpointMismatch(format!(
                        "{} does not hold the records the checkpoint lists",
                        path.display()
                    )));
                }
            }
            segment.written.store(written, Ordering::Relaxed);
            segment.synced.store(written, Ordering::Relaxed);
            segment.last_timestamp_ns.store(last_ns, Ordering::Relaxed);
            last_timestamp_ns = last_ns;
            next_position = first + offsets.len() as u64;
            *segment.offsets.write() = offsets;
            scan_from = written;
        } else if *first < covered_end {
            return Err(RecoverError::CheckpointMismatch(format!("{} is missing from the checkpoint", path.display())));
        }
        let scanned = scan(&segment, scan_from, next_position, is_last, &mut index)?;
        if scanned.count > 0 {
            last_timestamp_ns = scanned.last_timestamp_ns;
        }
        next_position += scanned.count;
        segments.push(Arc::new(segment));
    }
    if covered_end > next_position {
        return Err(RecoverError::CheckpointMismatch("the checkpoint covers more events than the log holds".into()));
    }
    for path in retired.iter().chain(torn_roll.as_ref()) {
        eprintln!("herald: {}: removed (a segment retention retired, or empty after a torn tail)", path.display());
        std::fs::remove_file(path).map_err(io_error(format!("remove {}", path.display())))?;
    }
    if !retired.is_empty() || torn_roll.is_some() {
        sync_dir(segments_dir)?;
    }
    // The last roll's creation may not have been synced before the process ended, and nothing
    // after this would sync it (appends sync only the file's data): its name and header now.
    if let Some(last) = segments.last() {
        last.sync_creation()?;
    }
    Ok(Recovered { index, segments, next_position, last_timestamp_ns, checkpointed })
}

struct Scanned {
    count: u64,
    last_timestamp_ns: u64,
}

/// Scans records from `offset`, adding them to the index. In the last segment, an incomplete
/// record, an unfinished batch or a record with a sector a power loss left unwritten at the end
/// is a torn tail: it is cut off and zeroed. Anywhere else, and for any other complete record
/// that fails its checksum, the scan reports corruption.
fn scan(
    segment: &Segment,
    mut offset: usize,
    first_position: u64,
    is_last: bool,
    index: &mut Index,
) -> Result<Scanned, StoreError> {
    let capacity = segment.capacity();
    // Only the bytes the file really had: the last file may have been grown back with zeros.
    let data_end = segment.length_at_open.max(offset);
    let corrupt = |offset: usize, position: u64, reason: String| StoreError::Corruption {
        file: segment.path.clone().unwrap_or_default(),
        offset: offset as u64,
        position: Some(position),
        reason,
    };
    let mut position = first_position;
    let mut committed_end = offset;
    let mut pending: Vec<(usize, EventView<'_>)> = Vec::new();
    let mut scanned = Scanned { count: 0, last_timestamp_ns: 0 };
    let mut offsets = segment.offsets.write();
    let torn = loop {
        let region = segment.bytes(offset, data_end);
        match classify(region) {
            Frame::End => {
                // Bytes after a zero length are records whose length was never stored (a crash
                // mid-write; after a power loss, any pages of unsynced appends): a torn tail in
                // the last segment. A sealed segment was complete before the next one began.
                if region.iter().any(|&b| b != 0) {
                    if !is_last {
                        return Err(corrupt(offset, position, "data after a zero record length".into()));
                    }
                    break true;
                }
                break !pending.is_empty();
            }
            Frame::Incomplete => {
                if region.len() >= FRAME_HEADER_BYTES {
                    // No crash stores a length that overruns the segment: the writer never does,
                    // and an aligned length is never torn. So this is damage.
                    let claimed = frame_len_for_body(super::record::read_u32(region, 0));
                    if claimed > capacity - offset {
                        return Err(corrupt(
                            offset,
                            position,
                            format!("record length {claimed} runs past the segment"),
                        ));
                    }
                }
                break true;
            }
            Frame::Complete(length) => {
                let view = match EventView::decode(&region[..length]) {
                    Ok(view) => view,
                    // A write the power loss tore: a sector after the length never reached
                    // the disk. Like a missing length, a torn tail in the last segment.
                    Err(DecodeError::Checksum { .. }) if is_last && lost_sector(region, offset) => break true,
                    Err(error) => return Err(corrupt(offset, position, error.to_string())),
                };
                if view.position != position {
                    return Err(corrupt(offset, position, format!("record holds position {}", view.position)));
                }
                let batch_done = view.batch_remaining == 0;
                pending.push((offset, view));
                offset += length;
                position += 1;
                if batch_done {
                    for (at, view) in pending.drain(..) {
                        offsets.push(at as u32);
                        index.insert(
                            view.id,
                            looks_generated(view.id, view.timestamp_ns),
                            view.kind,
                            view.event_type,
                            view.aggregate_id,
                            view.position,
                            view.aggregate_version,
                            None,
                        );
                        scanned.count += 1;
                        scanned.last_timestamp_ns = view.timestamp_ns;
                    }
                    committed_end = offset;
                }
            }
        }
    };
    if torn && !is_last {
        return Err(corrupt(
            committed_end,
            first_position + scanned.count,
            "incomplete record in a sealed segment".into(),
        ));
    }
    drop(pending);
    if is_last {
        zero_tail(segment, committed_end)?;
    }
    segment.written.store(committed_end, Ordering::Relaxed);
    segment.synced.store(committed_end, Ordering::Relaxed);
    if scanned.count > 0 {
        segment.last_timestamp_ns.store(scanned.last_timestamp_ns, Ordering::Relaxed);
    }
    Ok(scanned)
}

/// Zeroes whatever a torn write left after `end`, so the next append starts on clean bytes.
#[allow(unsafe_code)] // one call to `Segment::writable`, justified below
fn zero_tail(segment: &Segment, end: usize) -> Result<(), StoreError> {
    let tail = segment.bytes(end, segment.length_at_open.max(end));
    let Some(last_dirty) = tail.iter().rposition(|&b| b != 0) else { return Ok(()) };
    // SAFETY: recovery runs before the log is shared; nobody else reads or writes this segment,
    // and `written` is still at most `end` (it is set after this call).
    unsafe { segment.writable(end, end + last_dirty + 1) }.fill(0);
    segment.synced.store(end, Ordering::Relaxed);
    segment.sync_to(end + last_dirty + 1, false)
}

impl EventStore for Log {
    fn append_with(&self, drafts: &[EventDraft], reserve: Reserve<'_>) -> Result<AppendOutcome, StoreError> {
        self.shared.append(drafts, reserve, true)
    }

    fn append_deferred_with(&self, drafts: &[EventDraft], reserve: Reserve<'_>) -> Result<AppendOutcome, StoreError> {
        self.shared.append(drafts, reserve, false)
    }

    fn syncs_before_ack(&self) -> bool {
        self.shared.config.durability == Durability::Always && self.shared.dir.is_some()
    }

    fn read(
        &self,
        query: &ReadQuery,
        visit: &mut dyn FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<ReadSummary, StoreError> {
        let mut cursor = self.cursor(query)?;
        let count = cursor.visit(visit)?;
        Ok(ReadSummary { count, next_position: cursor.next_position() })
    }

    fn read_stream(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
        visit: &mut dyn FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<StreamSummary, StoreError> {
        let (mut cursor, version) = self.stream_cursor(aggregate_id, from_version, limit)?;
        Ok(StreamSummary { count: cursor.visit(visit)?, version })
    }

    fn stream_version(&self, aggregate_id: &str) -> u64 {
        let end = self.shared.visible.load(Ordering::Acquire);
        let state = self.shared.state.lock();
        state.index.streams.get(aggregate_id).map_or(0, |p| p.partition_point(|&p| p < end) as u64)
    }

    fn save_snapshot(&self, aggregate_id: &str, version: u64, state: &[u8]) -> Result<(), StoreError> {
        let current = self.stream_version(aggregate_id);
        if current == 0 {
            return Err(StoreError::StreamNotFound { aggregate_id: aggregate_id.to_owned() });
        }
        if version > current {
            return Err(StoreError::VersionConflict {
                aggregate_id: aggregate_id.to_owned(),
                expected: ExpectedVersion::Exact(version),
                current,
            });
        }
        if let Some(cause) = self.shared.failure.get() {
            return Err(StoreError::ReadOnly { cause: cause.clone() });
        }
        let sync = self.shared.config.durability == Durability::Always;
        self.shared.snapshots.save(aggregate_id, version, now_ns(), state, sync)?;
        self.shared.recorder.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn load_snapshot(&self, aggregate_id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.shared.snapshots.load(aggregate_id)
    }

    fn bounds(&self) -> (u64, u64) {
        let first = self.shared.view.read()[0].first_position;
        (first, self.shared.visible.load(Ordering::Acquire))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.shared.sync()
    }

    fn metrics(&self) -> StoreMetrics {
        let total_events = self.shared.visible.load(Ordering::Acquire);
        let record_bytes: u64 = self.shared.view.read().iter().map(|s| s.written.load(Ordering::Relaxed) as u64).sum();
        // The append state's latencies since the last call: swapped for an empty histogram
        // (allocated before the lock) and added to the recorder's outside it.
        let mut recorded = latency_histogram();
        std::mem::swap(&mut self.shared.state.lock().append_latency, &mut recorded);
        self.shared.recorder.add_appends(&recorded);
        self.shared.recorder.snapshot(total_events, record_bytes + self.shared.snapshots.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, ExpectedVersion};
    use bytes::Bytes;

    fn small() -> StoreConfig {
        StoreConfig { segment_bytes: 8 * 1024, durability: Durability::Never, ..StoreConfig::default() }
    }

    fn draft(aggregate: &str, n: u32) -> EventDraft {
        EventDraft::new("TaskUpdated", aggregate, format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(n as usize % 50)))
    }

    fn all(log: &Log, query: &ReadQuery) -> Vec<Event> {
        let mut events = Vec::new();
        log.read(query, &mut |view| {
            events.push(view.to_event());
            ControlFlow::Continue(())
        })
        .unwrap();
        events
    }

    fn stream(log: &Log, aggregate: &str, from: u64) -> Vec<Event> {
        let mut events = Vec::new();
        log.read_stream(aggregate, from, usize::MAX, &mut |view| {
            events.push(view.to_event());
            ControlFlow::Continue(())
        })
        .unwrap();
        events
    }

    /// Appends `range` (aggregates a0..a2 in turn), returning where they landed.
    fn append_range(log: &Log, range: std::ops::Range<u32>) -> Vec<Appended> {
        range.flat_map(|n| log.append_one(&draft(&format!("a{}", n % 3), n)).unwrap().events().to_vec()).collect()
    }

    fn assert_holds(log: &Log, written: &[Appended]) {
        let events = all(log, &ReadQuery::default());
        assert_eq!(events.len(), written.len());
        for (event, appended) in events.iter().zip(written) {
            assert_eq!(
                (event.id, event.position, event.aggregate_version),
                (appended.id, appended.position, appended.aggregate_version)
            );
        }
        for aggregate in ["a0", "a1", "a2"] {
            let versions: Vec<u64> = stream(log, aggregate, 1).iter().map(|e| e.aggregate_version).collect();
            assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>(), "{aggregate}");
            assert_eq!(log.stream_version(aggregate), versions.len() as u64);
        }
    }

    /// A log with events 0..300: a full checkpoint at 100, a delta for 100..200, and 200..300
    /// covered by no file.
    fn full_checkpoint_then_delta_then_tail(dir: &Path) -> (Log, Vec<Appended>) {
        let log = Log::open(dir, small()).unwrap();
        let mut written = append_range(&log, 0..100);
        log.checkpoint().unwrap();
        written.extend(append_range(&log, 100..200));
        log.shared.checkpoint_delta().unwrap();
        written.extend(append_range(&log, 200..300));
        (log, written)
    }

    #[test]
    fn deltas_rebuild_the_index_after_a_crash_and_a_full_checkpoint_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut written) = full_checkpoint_then_delta_then_tail(dir.path());
        log.shared.checkpoint_delta().unwrap();
        written.extend(append_range(&log, 300..330)); // a tail no file covers
        assert_eq!(
            delta::delta_files(dir.path()).unwrap().iter().map(|(first, _)| *first).collect::<Vec<_>>(),
            [100, 200]
        );
        log.crash();

        let log = Log::open(dir.path(), small()).unwrap();
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end: 300, deltas: 2 }, "both deltas were used");
        assert_holds(&log, &written);
        // Ids from a delta are remembered: a retry is idempotent.
        let retry = draft(&format!("a{}", 150 % 3), 150).with_id(written[150].id);
        assert_eq!(log.append_one(&retry).unwrap(), AppendOutcome::AlreadyAppended(vec![written[150]]));
        written.extend(append_range(&log, 330..340));
        assert_eq!(written.last().map(|a| a.position), Some(339));
        log.close().unwrap();
        assert!(delta::delta_files(dir.path()).unwrap().is_empty(), "the closing full checkpoint covers them");

        let log = Log::open(dir.path(), small()).unwrap();
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end: 340, deltas: 0 });
        assert_holds(&log, &written);
    }

    #[test]
    fn every_max_deltas_the_files_merge_into_a_full_checkpoint_without_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small()).unwrap();
        let mut written = Vec::new();
        for round in 0..(MAX_DELTAS as u32 + 3) {
            written.extend(append_range(&log, round * 10..round * 10 + 10));
            log.shared.checkpoint_delta().unwrap();
        }
        // Deltas 1..=16, then a merge of those into index.ckpt, then deltas again.
        let end = written.len() as u64;
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end, deltas: 3 });
        assert!(dir.path().join(CHECKPOINT_FILE).exists());
        assert_eq!(delta::delta_files(dir.path()).unwrap().len(), 3);
        log.crash();
        let log = Log::open(dir.path(), small()).unwrap();
        assert_eq!(
            *log.shared.checkpointed.lock(),
            Checkpointed { end, deltas: 3 },
            "the merged checkpoint and 3 deltas"
        );
        assert_holds(&log, &written);
        let retry = draft(&format!("a{}", 5 % 3), 5).with_id(written[5].id);
        assert_eq!(log.append_one(&retry).unwrap(), AppendOutcome::AlreadyAppended(vec![written[5]]));
    }

    #[test]
    fn a_delta_the_segments_disagree_with_is_dropped_not_the_whole_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (log, written) = full_checkpoint_then_delta_then_tail(dir.path());
        log.crash();
        // A well-formed delta (checksum and rows fine) whose offsets point at the wrong records.
        let mut bogus = DeltaBuilder::new(200);
        for n in 200..300u64 {
            let record = DeltaRecord {
                id: Uuid::now_v7(),
                generated: true,
                kind: EventKind::Domain,
                event_type: "TaskUpdated",
                aggregate_id: "a0",
                aggregate_version: n,
                timestamp_ns: n,
                segment_first: 0,
                offset: SEGMENT_HEADER_BYTES as u32,
                end: SEGMENT_HEADER_BYTES as u64 + 64,
            };
            bogus.push(&record);
        }
        bogus.finish().write(dir.path()).unwrap();

        let log = Log::open(dir.path(), small()).unwrap();
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end: 200, deltas: 1 });
        assert_holds(&log, &written);
        assert!(!dir.path().join(delta::delta_file_name(200)).exists());
    }

    #[test]
    fn a_damaged_delta_ends_the_chain_and_the_records_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small()).unwrap();
        let mut written = append_range(&log, 0..100);
        log.shared.checkpoint_delta().unwrap(); // no full checkpoint yet: the chain starts at 0
        written.extend(append_range(&log, 100..200));
        log.shared.checkpoint_delta().unwrap();
        written.extend(append_range(&log, 200..250));
        log.crash();
        let second = dir.path().join(delta::delta_file_name(100));
        let mut bytes = std::fs::read(&second).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&second, bytes).unwrap();

        let log = Log::open(dir.path(), small()).unwrap();
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end: 100, deltas: 1 });
        assert_holds(&log, &written);
        assert!(!second.exists(), "a delta that can no longer continue a chain is removed");
        // The next delta continues the chain from where it ends.
        log.shared.checkpoint_delta().unwrap();
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end: 250, deltas: 2 });
        log.crash();
        let log = Log::open(dir.path(), small()).unwrap();
        assert_eq!(*log.shared.checkpointed.lock(), Checkpointed { end: 250, deltas: 2 });
        assert_holds(&log, &written);
    }

    #[test]
    fn pages_unmapped_by_a_sync_read_back_the_same_bytes() {
        // Under `Never` a sync unmaps the whole pages it flushed (to spare the writer one TLB
        // shootdown per page); reads of those pages, before and after more appends, and after
        // reopen, see every event intact.
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { segment_bytes: 256 * 1024, ..small() };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let mut expected = Vec::new();
        for round in 0..3u32 {
            for n in 0..200 {
                log.append_one(&draft("a", round * 200 + n)).unwrap();
                expected.push(draft("a", round * 200 + n).data);
            }
            log.sync().unwrap();
            let data: Vec<Bytes> = all(&log, &ReadQuery::default()).into_iter().map(|e| e.data).collect();
            assert_eq!(data, expected, "round {round}");
            assert_eq!(log.verify().unwrap().records, expected.len() as u64);
        }
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        let data: Vec<Bytes> = all(&log, &ReadQuery::default()).into_iter().map(|e| e.data).collect();
        assert_eq!(data, expected);
    }

    #[test]
    fn appends_read_back_across_segments_and_reopen() {
        // Positions and versions are gap-free, and every read path returns the same events after reopen.
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        {
            let log = Log::open(dir.path(), small()).unwrap();
            for n in 0..300 {
                let outcome = log.append_one(&draft(&format!("a{}", n % 3), n)).unwrap();
                written.extend_from_slice(outcome.events());
            }
            assert!(log.shared.view.read().len() > 3, "small segments must have rolled");
        }
        for with_checkpoint in [true, false] {
            if !with_checkpoint {
                std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
            }
            let log = Log::open(dir.path(), small()).unwrap();
            let events = all(&log, &ReadQuery::default());
            assert_eq!(events.len(), 300 + usize::from(!with_checkpoint));
            for (i, (event, appended)) in events.iter().zip(&written).enumerate() {
                assert_eq!(event.position, i as u64);
                assert_eq!(
                    (event.id, event.position, event.aggregate_version),
                    (appended.id, appended.position, appended.aggregate_version)
                );
                assert_eq!(event.aggregate_version, i as u64 / 3 + 1);
                assert_eq!(event.correlation_id, event.id);
            }
            let a1 = stream(&log, "a2", 50);
            assert_eq!(a1.len(), 51);
            assert_eq!(a1[0].aggregate_version, 50);
            assert_eq!(log.stream_version("a2"), 100);
            assert_eq!(log.verify().unwrap().records, 300 + u64::from(!with_checkpoint));
            let appended = log.append_one(&draft("a1", 1)).unwrap();
            assert_eq!(appended.events()[0].position, 300 + u64::from(!with_checkpoint));
        }
    }

    #[test]
    fn type_time_and_kind_filters_use_their_indexes() {
        // Filtered reads return exactly the matching events, and next_position lets a reader continue.
        let log = Log::in_memory(small()).unwrap();
        for n in 0..40u32 {
            let event_type = if n % 4 == 0 { "TaskCreated" } else { "TaskUpdated" };
            log.append_one(&EventDraft::new(event_type, "t", format!("{n}"))).unwrap();
        }
        let query =
            ReadQuery { event_type: Some("TaskCreated".into()), from_position: 5, limit: 3, ..ReadQuery::default() };
        let mut cursor = log.cursor(&query).unwrap();
        let mut positions = Vec::new();
        while let Some(view) = cursor.next() {
            positions.push(view.unwrap().position);
        }
        assert_eq!(positions, vec![8, 12, 16]);
        assert_eq!(cursor.next_position(), 17);

        let middle = all(&log, &ReadQuery { from_position: 20, limit: 1, ..ReadQuery::default() })[0].timestamp_ns;
        let since = all(&log, &ReadQuery { since_ns: Some(middle), ..ReadQuery::default() });
        assert!(since.iter().all(|e| e.timestamp_ns >= middle));
        assert!(since.first().unwrap().position <= 20 && since.last().unwrap().position == 39);
        let later = all(&log, &ReadQuery { since_ns: Some(u64::MAX), ..ReadQuery::default() });
        assert!(later.is_empty());

        let integration = EventDraft { kind: EventKind::Integration, ..EventDraft::new("task.completed", "", "{}") };
        log.append_one(&integration).unwrap();
        let domain_only =
            all(&log, &ReadQuery { kind: Some(EventKind::Domain), from_position: 35, ..ReadQuery::default() });
        assert_eq!(domain_only.len(), 5);
        let summary = log
            .read(&ReadQuery { kind: Some(EventKind::Integration), ..ReadQuery::default() }, &mut |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!((summary.count, summary.next_position), (1, 41));
    }

    #[test]
    fn expected_versions_are_checked_per_draft_and_batches_are_atomic() {
        // A version conflict anywhere in a batch appends nothing and reports the current version.
        let log = Log::in_memory(small()).unwrap();
        log.append_one(&draft("a", 0).expecting(ExpectedVersion::NoStream)).unwrap();
        let conflict = log.append_one(&draft("a", 1).expecting(ExpectedVersion::NoStream)).unwrap_err();
        assert!(matches!(conflict, StoreError::VersionConflict { current: 1, .. }), "{conflict}");
        let batch = [
            draft("a", 1).expecting(ExpectedVersion::Exact(1)),
            draft("b", 2).expecting(ExpectedVersion::NoStream),
            draft("a", 3).expecting(ExpectedVersion::Exact(1)),
        ];
        let error = log.append(&batch).unwrap_err();
        assert!(matches!(error, StoreError::VersionConflict { current: 2, .. }), "{error}");
        assert_eq!(log.bounds(), (0, 1));
        let ok =
            [draft("a", 1).expecting(ExpectedVersion::Exact(1)), draft("a", 3).expecting(ExpectedVersion::Exact(2))];
        let outcome = log.append(&ok).unwrap();
        assert_eq!(outcome.events().iter().map(|a| a.aggregate_version).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn generated_ids_increase_with_position_and_publisher_ids_do_not_disturb_them() {
        // Ids made in one millisecond count up; a far-future publisher id is looked up all the
        // same and does not bend the generated sequence.
        let log = Log::in_memory(small()).unwrap();
        let future = Uuid::from_u128(0xffff_0000_0000_4000_8000_0000_0000_0001);
        log.append(&[draft("a", 0).with_id(future)]).unwrap();
        let mut ids = Vec::new();
        for chunk in 0..50 {
            let drafts: Vec<EventDraft> = (0..10).map(|n| draft("a", chunk * 10 + n)).collect();
            let AppendOutcome::Appended(appended) = log.append(&drafts).unwrap() else { panic!("not appended") };
            ids.extend(appended.iter().map(|a| a.id));
        }
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "generated ids increase");
        assert!(ids.iter().all(|id| id.get_version_num() == 7 && id.get_variant() == uuid::Variant::RFC4122));
        let state = log.shared.state.lock();
        assert_eq!(state.index.ids.ordered_len(), 500);
        assert_eq!(state.index.ids.get(&future).map(|entry| entry.position), Some(0));
        assert_eq!(state.index.ids.get(&ids[499]).map(|entry| entry.position), Some(500));
        assert_eq!(state.index.ids.get(&Uuid::from_u128(ids[0].as_u128() ^ 1 << 70)), None);
    }

    #[test]
    fn ids_make_appends_idempotent_or_conflicting() {
        // Re-sending stored ids returns the originals; partial or mismatched re-sends are conflicts.
        let log = Log::in_memory(small()).unwrap();
        let (x, y, z) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let first = log.append(&[draft("a", 0).with_id(x), draft("a", 1).with_id(y)]).unwrap();
        let retry = log.append(&[draft("a", 0).with_id(x), draft("a", 1).with_id(y)]).unwrap();
        assert_eq!(retry, AppendOutcome::AlreadyAppended(first.events().to_vec()));
        assert_eq!(log.bounds().1, 2);
        let partial = log.append(&[draft("a", 0).with_id(x), draft("a", 2).with_id(z)]).unwrap_err();
        assert!(matches!(&partial, StoreError::DuplicateId { ids } if ids == &vec![x]), "{partial}");
        let elsewhere = log.append_one(&draft("b", 0).with_id(x)).unwrap_err();
        assert!(matches!(elsewhere, StoreError::DuplicateId { .. }));
        let twice = log.append(&[draft("c", 0).with_id(z), draft("c", 1).with_id(z)]).unwrap_err();
        assert!(matches!(&twice, StoreError::DuplicateId { ids } if ids == &vec![z]), "{twice}");
        assert_eq!(log.bounds().1, 2, "nothing was appended by the failed calls");
    }

    #[test]
    fn invalid_and_oversized_input_writes_nothing() {
        // Validation and size errors name the field or limit and leave the log untouched.
        let log = Log::in_memory(small()).unwrap();
        let error = log.append_one(&EventDraft::new("", "a", "{}")).unwrap_err();
        assert!(matches!(&error, StoreError::Invalid(v) if v.field == "type"), "{error}");
        let big = EventDraft::new("T", "a", format!("\"{}\"", "x".repeat(9000)));
        let error = log.append_one(&big).unwrap_err();
        assert!(matches!(error, StoreError::TooLarge { limit, .. } if limit == 8 * 1024 - SEGMENT_HEADER_BYTES));
        assert!(log.append(&[]).is_err());
        assert_eq!(log.bounds(), (0, 0));
        assert_eq!(log.metrics().total_events, 0);
    }

    #[test]
    fn retention_drops_whole_old_segments_and_says_so() {
        // With a byte limit, old segments go; reads from before them fail explicitly, later ones work.
        let dir = tempfile::tempdir().unwrap();
        let config = byte_retention();
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for n in 0..400 {
            log.append_one(&draft("a", n)).unwrap();
            if n % 20 == 19 {
                // Retention deletes only what a checkpoint file covers.
                log.checkpoint_incremental().unwrap();
            }
        }
        let (first, next) = log.bounds();
        assert!(first > 0 && next == 400);
        assert!(log.shared.view.read().len() <= 4, "at most one segment waits for a checkpoint");
        let error = log.cursor(&ReadQuery::default()).err().unwrap();
        assert!(matches!(error, StoreError::BeforeRetention { first_position, .. } if first_position == first));
        let error = log.read_stream("a", 1, 10, &mut |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(error, StoreError::BeforeRetention { .. }));
        assert_eq!(all(&log, &ReadQuery { from_position: first, ..ReadQuery::default() }).len() as u64, 400 - first);
        let by_time = all(&log, &ReadQuery { since_ns: Some(0), ..ReadQuery::default() });
        assert_eq!(by_time.first().map(|e| e.position), Some(first), "a time read starts at the first retained event");
        // Ids are remembered even for deleted events.
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        assert_eq!(log.bounds(), (first, 400));
        assert_eq!(log.stream_version("a"), 400);
        log.verify().unwrap();
    }

    /// Appends to "a" under [`byte_retention`] until retention retires the first segment file;
    /// returns the log, that file's path and bytes, and how many events went in.
    fn retire_the_first_segment(dir: &Path) -> (Log, PathBuf, Vec<u8>, u32) {
        let log = Log::open(dir, byte_retention()).unwrap();
        let oldest = dir.join(SEGMENTS_DIR).join(super::super::segment::segment_file_name(0));
        let (mut n, mut bytes) = (0, Vec::new());
        while log.bounds().0 == 0 && n < 2000 {
            bytes = std::fs::read(&oldest).unwrap();
            log.append_one(&draft("a", n)).unwrap();
            n += 1;
            if n % 20 == 0 {
                log.checkpoint_incremental().unwrap();
            }
        }
        assert!(log.bounds().0 > 0, "retention retired the first segment");
        // The roll that retired it, or the maintenance thread, set `retired_pending` before the
        // view changed; an append that sees it returns only after the deletion.
        log.append_one(&draft("a", n)).unwrap();
        assert!(!oldest.exists(), "deleted by the time an append returns");
        (log, oldest, bytes, n + 1)
    }

    #[test]
    fn a_retired_file_a_crash_kept_is_removed_at_open_when_the_checkpoint_left_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let (log, oldest, bytes, n) = retire_the_first_segment(dir.path());
        let first = log.bounds().0;
        // Close writes a full checkpoint, which lists the retained segments only.
        drop(log);
        // As if a crash came before the unlink reached the disk.
        std::fs::write(&oldest, bytes).unwrap();
        let log = Log::open(dir.path(), byte_retention()).unwrap();
        assert!(!oldest.exists(), "removed at open");
        assert_eq!(log.bounds(), (first, u64::from(n)));
        assert_eq!(log.stream_version("a"), u64::from(n), "the checkpoint was used, not rebuilt");
        log.verify().unwrap();
    }

    #[test]
    fn a_retired_file_a_crash_kept_is_read_again_while_the_checkpoint_lists_it_then_retired_again() {
        let dir = tempfile::tempdir().unwrap();
        let (log, oldest, bytes, mut n) = retire_the_first_segment(dir.path());
        let first = log.bounds().0;
        // A crash before any checkpoint left the segment out: the deltas on disk still list it.
        log.crash();
        std::fs::write(&oldest, bytes).unwrap();
        let log = Log::open(dir.path(), byte_retention()).unwrap();
        assert_eq!(log.bounds().0, 0, "the surviving file is read again");
        let limit = usize::try_from(first).unwrap();
        let back = all(&log, &ReadQuery { limit, ..ReadQuery::default() });
        assert_eq!(back.iter().map(|e| e.position).collect::<Vec<_>>(), (0..first).collect::<Vec<_>>());
        log.verify().unwrap();
        while log.bounds().0 == 0 && n < 4000 {
            log.append_one(&draft("a", n)).unwrap();
            n += 1;
            if n % 20 == 0 {
                log.checkpoint_incremental().unwrap();
            }
        }
        log.append_one(&draft("a", n)).unwrap();
        assert!(log.bounds().0 >= first, "retired again at a later roll");
        assert!(!oldest.exists());
        assert_eq!(log.stream_version("a"), u64::from(n) + 1);
    }

    /// Appends 400 events to "a" (and one to "gone", first) under a retention of three 8 KiB
    /// segments, without explicit checkpoints, until retention has deleted the event of "gone";
    /// then crashes. Returns the results.
    fn append_under_retention_then_crash(dir: &Path, config: &StoreConfig) -> Vec<Appended> {
        let log = Log::open(dir, config.clone()).unwrap();
        let mut written = vec![log.append_one(&draft("gone", 0)).unwrap().events()[0]];
        for n in 0..400 {
            written.push(log.append_one(&draft("a", n)).unwrap().events()[0]);
        }
        // The maintenance thread checkpoints for retention's sake; wait (bounded) for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.bounds().0 == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            log.append_one(&draft("a", 400)).map(|outcome| written.push(outcome.events()[0])).unwrap();
        }
        assert!(log.bounds().0 > 0, "retention deleted the oldest segment");
        log.crash();
        written
    }

    /// Retention of three 8 KiB segments.
    fn byte_retention() -> StoreConfig {
        StoreConfig { retention: super::super::Retention { max_bytes: Some(3 * 8 * 1024), max_age: None }, ..small() }
    }

    /// [`byte_retention`] with checkpoints only when retention asks for one.
    fn retention_config() -> StoreConfig {
        StoreConfig { checkpoint_every_events: u64::MAX, ..byte_retention() }
    }

    #[test]
    fn retention_deletes_only_what_a_checkpoint_file_holds_so_a_crash_keeps_versions_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let config = retention_config();
        let written = append_under_retention_then_crash(dir.path(), &config);
        let log = Log::open(dir.path(), config).unwrap();
        let last = written.len() as u64 - 1;
        assert_eq!(log.bounds().1, last + 1);
        assert_eq!(log.stream_version("a"), last, "versions count the deleted events");
        assert_eq!(log.stream_version("gone"), 1, "a stream whose events were all deleted is remembered");
        let retry = draft("gone", 0).with_id(written[0].id);
        assert_eq!(log.append_one(&retry).unwrap(), AppendOutcome::AlreadyAppended(vec![written[0]]));
        let next = log.append_one(&draft("a", 0).expecting(ExpectedVersion::Exact(last))).unwrap();
        assert_eq!(next.events()[0].aggregate_version, last + 1);
        log.verify().unwrap();
    }

    #[test]
    fn retention_deletes_anyway_when_checkpoints_keep_failing() {
        // A directory where the checkpoint file goes makes every checkpoint fail (as a full
        // disk would); retention must still free space after a few tries.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), retention_config()).unwrap();
        std::fs::create_dir(dir.path().join(CHECKPOINT_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(delta::delta_file_name(0))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        while log.bounds().0 == 0 && Instant::now() < deadline {
            log.append_one(&draft("a", n)).unwrap();
            n += 1;
            if n > 400 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert!(log.bounds().0 > 0, "retention deleted the oldest segment after failed checkpoints");
        assert!(log.shared.retention_checkpoint_failures.load(Ordering::Relaxed) >= RETENTION_CHECKPOINT_TRIES);
        log.crash();
    }

    #[test]
    fn without_checkpoint_files_a_scan_still_continues_stream_versions_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let config = retention_config();
        let written = append_under_retention_then_crash(dir.path(), &config);
        std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).ok();
        for (_, path) in delta::delta_files(dir.path()).unwrap() {
            std::fs::remove_file(path).unwrap();
        }
        let log = Log::open(dir.path(), config).unwrap();
        let last = written.len() as u64 - 1;
        assert_eq!(log.stream_version("a"), last, "the first retained event's version says how many came before");
        let error = log.read_stream("a", 1, 10, &mut |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(error, StoreError::BeforeRetention { .. }), "{error}");
        let first_retained = log.bounds().0;
        let from_retained = written.iter().find(|a| a.position == first_retained).unwrap().aggregate_version;
        let mut versions = Vec::new();
        log.read_stream("a", from_retained, 5, &mut |view| {
            versions.push(view.aggregate_version);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(versions, (from_retained..from_retained + 5).collect::<Vec<_>>());
        let next = log.append_one(&draft("a", 0)).unwrap();
        assert_eq!(next.events()[0].aggregate_version, last + 1);
        log.verify().unwrap();
    }

    #[test]
    fn a_panic_in_a_group_fsync_wakes_its_waiters_to_a_read_only_log() {
        // Proves a syncer that panics leaves no appender asleep: they get the latched failure.
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), StoreConfig { durability: Durability::Always, ..small() }).unwrap());
        log.append_one(&draft("a", 0)).unwrap();
        log.panic_in_next_sync();
        let syncer = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || log.append_one(&draft("a", 1)))
        };
        // The waiter comes while the syncer pauses before its panic, or after it: the same answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log.shared.commit.lock().syncing && log.shared.failure.get().is_none() {
            assert!(std::time::Instant::now() < deadline, "the syncer never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiter = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || sender.send(log.append_one(&draft("b", 0))))
        };
        let answer = receiver.recv_timeout(Duration::from_secs(10)).expect("the waiter was never woken");
        assert!(matches!(&answer, Err(StoreError::ReadOnly { cause }) if cause.contains("panicked")), "{answer:?}");
        assert!(syncer.join().is_err(), "the panic goes on in the syncer's thread");
        waiter.join().unwrap().unwrap();
        assert!(matches!(log.append_one(&draft("c", 0)), Err(StoreError::ReadOnly { .. })));
    }

    #[test]
    fn a_waiter_yields_through_a_short_fsync_but_sleeps_once_it_outlasts_twice_the_average() {
        // A stalled fsync leaves its waiter asleep on the futex word after one spin, not yielding.
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), StoreConfig { durability: Durability::Always, ..small() }).unwrap());
        log.append_one(&draft("a", 0)).unwrap();
        // The first append's flush set the average; 0.1 ms lets the waiter spin 0.2 ms.
        log.shared.commit.lock().fsync_average_ns = 100_000;
        // The next flush stops before its fsync, at the segment's creation, until this goes.
        let stall = log.shared.unsynced_creation.lock();
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let append = |aggregate: &'static str| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || log.append_one(&draft(aggregate, 0)))
        };
        let syncer = append("b");
        wait_for("the syncer never started", &|| log.shared.commit.lock().syncing);
        let waiter = append("c");
        wait_for("the waiter never slept", &|| log.shared.commit.lock().waiting >= 1);
        assert_eq!(log.shared.spins_run_out.load(Ordering::Relaxed), 1, "it spun once, and ran out");
        assert!(!log.shared.spinning.load(Ordering::Acquire), "the spinner gave its turn back");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(log.shared.spins_run_out.load(Ordering::Relaxed), 1, "it sleeps on");
        drop(stall);
        for thread in [syncer, waiter] {
            let outcome = thread.join().unwrap().unwrap();
            assert!(log.shared.durable.load(Ordering::Acquire) > outcome.events()[0].position);
        }
    }

    #[test]
    fn a_spin_ends_with_its_fsync_or_at_its_limit_and_gives_its_turn_back() {
        let log = Log::in_memory(small()).unwrap();
        let shared = &log.shared;
        let epoch = shared.commit_epoch.load(Ordering::Acquire);
        let turn = shared.spin_turn().expect("nobody spins");
        assert!(shared.spin_turn().is_none(), "one spinner at a time");
        assert!(!shared.yield_until_synced(turn, epoch, Duration::from_millis(1)), "no fsync ended");
        let turn = shared.spin_turn().expect("the turn was given back");
        let started = std::time::Instant::now();
        let ended = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(5));
                shared.commit_epoch.fetch_add(1, Ordering::Release);
            });
            shared.yield_until_synced(turn, epoch, Duration::from_secs(10))
        });
        assert!(ended && started.elapsed() < Duration::from_secs(10), "it saw the fsync end");
        assert!(shared.spin_turn().is_some());
    }

    #[test]
    fn a_failed_fsync_latches_the_log_read_only() {
        // After an fsync error the append reports it and every later write is refused.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), StoreConfig { durability: Durability::Always, ..small() }).unwrap();
        log.append_one(&draft("a", 0)).unwrap();
        log.fail_next_syncs();
        let error = log.append_one(&draft("a", 1)).unwrap_err();
        assert!(matches!(&error, StoreError::ReadOnly { cause } if cause.contains("injected")), "{error}");
        assert!(matches!(log.append_one(&draft("a", 2)), Err(StoreError::ReadOnly { .. })));
        assert!(matches!(log.save_snapshot("a", 1, b"s"), Err(StoreError::ReadOnly { .. })));
        assert_eq!(log.bounds().1, 1, "the unacknowledged event never became visible");
    }

    #[test]
    fn a_roll_writes_the_frames_waiting_for_the_group_fsync_so_a_crash_leaves_no_gap() {
        // Under Always, deferred appends wait in memory for the next flush's pwrite. A roll
        // writes them first: a process dying right after the roll leaves the old segment whole
        // and the new one empty, which opens, instead of a gap between the two files.
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { durability: Durability::Always, ..small() };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        // Segment files only: the spare the maintenance thread prepares (`spare.tmp`) is there
        // too once the first segment is half full.
        let segments = || {
            let entries = std::fs::read_dir(dir.path().join(SEGMENTS_DIR)).unwrap();
            entries.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg")).count()
        };
        let mut n = 0;
        while segments() < 2 {
            log.append_deferred_with(std::slice::from_ref(&draft("a", n)), &mut |_, _| Ok(())).unwrap();
            n += 1;
        }
        // Two more rolls within the same (never run) group fsync: each syncs the segments
        // before the one whose frames it writes, so only the newest sealed one can be torn.
        while segments() < 4 {
            log.append_deferred_with(std::slice::from_ref(&draft("a", n)), &mut |_, _| Ok(())).unwrap();
            n += 1;
        }
        let view = Arc::clone(&log.shared.view.read());
        let unsynced: Vec<u64> = view
            .iter()
            .filter(|s| s.synced.load(Ordering::Acquire) < s.written.load(Ordering::Acquire))
            .map(|s| s.first_position)
            .collect();
        assert_eq!(unsynced, [view[2].first_position, view[3].first_position]);
        drop(view);
        log.crash();
        let log = Log::open(dir.path(), config).unwrap();
        // Every event before the roll is there; the one that rolled was only in memory.
        assert_eq!(log.bounds(), (0, u64::from(n) - 1));
        assert_eq!(all(&log, &ReadQuery::default()).len() as u64, u64::from(n) - 1);
    }

    #[test]
    fn a_gather_writes_runs_early_only_once_the_segment_before_theirs_is_synced() {
        // Proves the syncer's early pwrite keeps segments reaching the disk in order.
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { durability: Durability::Always, ..small() };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let deferred = |n: u32| log.append_deferred_with(std::slice::from_ref(&draft("a", n)), &mut |_, _| Ok(()));
        let waiting = || log.shared.state.lock().unwritten.len();
        let mut n = 0;
        while log.shared.view.read().len() < 2 {
            deferred(n).unwrap();
            n += 1;
        }
        // The roll wrote the sealed segment's frames but did not sync them: the new segment's
        // run stays in memory.
        log.shared.write_early().unwrap();
        assert_eq!(waiting(), 1);
        log.shared.sync().unwrap();
        assert_eq!(waiting(), 0);
        for _ in 0..2 {
            deferred(n).unwrap();
            n += 1;
        }
        assert_eq!(waiting(), 1, "one run for both appends");
        log.shared.write_early().unwrap();
        assert_eq!(waiting(), 0);
        let active = Arc::clone(&log.shared.view.read()[1]);
        let (synced, written) = (active.synced.load(Ordering::Acquire), active.written.load(Ordering::Acquire));
        assert!(synced < written, "written early, not synced");
        let bytes = std::fs::read(active.path.as_ref().unwrap()).unwrap();
        assert!(matches!(classify(&bytes[synced..written]), Frame::Complete(_)), "the frames are in the file");
        // The next flush still syncs them.
        log.shared.sync().unwrap();
        assert_eq!(active.synced.load(Ordering::Acquire), written);
        log.crash();
        let log = Log::open(dir.path(), config).unwrap();
        assert_eq!(log.bounds(), (0, u64::from(n)));
    }

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Counter {
        name: String,
        total: u64,
    }

    #[test]
    fn snapshots_newest_wins_and_survive_reopen() {
        // Snapshots are validated zero-copy, the highest version wins, and the helper replays after them.
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), small()).unwrap();
            for n in 0..10 {
                log.append_one(&draft("acc", n)).unwrap();
            }
            assert!(matches!(log.save_snapshot("none", 1, b""), Err(StoreError::StreamNotFound { .. })));
            assert!(matches!(log.save_snapshot("acc", 11, b""), Err(StoreError::VersionConflict { current: 10, .. })));
            let state = |total| rkyv::to_bytes::<rkyv::rancor::Error>(&Counter { name: "acc".into(), total }).unwrap();
            log.save_snapshot("acc", 6, &state(6)).unwrap();
            log.save_snapshot("acc", 4, &state(4)).unwrap();
            log.save_snapshot("acc", 6, &state(66)).unwrap();
            assert_eq!(log.metrics().total_snapshots, 3);
        }
        let log = Log::open(dir.path(), small()).unwrap();
        let mut replayed = Vec::new();
        let (snapshot, summary) = log
            .load_aggregate("acc", &mut |view| {
                replayed.push(view.aggregate_version);
                ControlFlow::Continue(())
            })
            .unwrap();
        let snapshot = snapshot.unwrap();
        assert_eq!(snapshot.version, 6);
        assert_eq!(snapshot.access::<ArchivedCounter>().unwrap().total, 66);
        assert!(snapshot.access::<rkyv::Archived<Vec<Counter>>>().is_err() || snapshot.state().len() < 16);
        assert_eq!(replayed, vec![7, 8, 9, 10]);
        assert_eq!(summary.version, 10);
        assert_eq!(log.metrics().total_snapshots, 3);
    }

    #[test]
    fn the_data_directory_is_guarded() {
        // A second open is refused, and so is a directory holding files Herald did not write.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small()).unwrap();
        assert!(matches!(Log::open(dir.path(), small()), Err(StoreError::Locked { .. })));
        drop(log);
        std::fs::write(dir.path().join("notes.txt"), "hi").unwrap();
        let error = Log::open(dir.path(), small()).err().unwrap();
        assert!(matches!(&error, StoreError::ForeignFile { path, .. } if path.ends_with("notes.txt")), "{error}");
    }

    #[test]
    fn metrics_count_events_bytes_and_latencies() {
        // Metrics move with appends and fsyncs.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), StoreConfig { durability: Durability::Always, ..small() }).unwrap();
        for n in 0..5 {
            log.append_one(&draft("a", n)).unwrap();
        }
        let metrics = log.metrics();
        assert_eq!(metrics.total_events, 5);
        assert!(metrics.storage_bytes > 5 * 96);
        assert_eq!(metrics.append_latency.count, 5);
        assert!(metrics.fsync_latency.count >= 1 && metrics.fsync_latency.count <= 5);
        assert!(metrics.append_latency.p99_ns >= metrics.append_latency.p50_ns);
        // Appends that do not wait for the fsync are recorded apart; the metrics count both.
        for n in 5..8 {
            log.append_deferred_with(std::slice::from_ref(&draft("a", n)), &mut |_, _| Ok(())).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(log.metrics().append_latency.count, 8);
    }
}
