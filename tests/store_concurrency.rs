//! Concurrency tests of the event store: many appenders on one `Arc<Log>` (with group commit,
//! without fsync, and in memory), optimistic writers racing on one aggregate, and readers running
//! while writers append.
//!
//! Every event a writer appends has an id that names the writer and its sequence number, and its
//! payload, type and aggregate follow from those two numbers, so any event read back can be
//! checked on its own.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use herald_core::event::{EventDraft, ExpectedVersion, Uuid};
use herald_core::store::{
    AppendOutcome, Appended, Durability, EventStore, EventView, Log, ReadQuery, StoreConfig, StoreError,
};

const WRITERS: usize = 4;
const EVENTS_PER_WRITER: usize = 2_000;
const AGGREGATES: usize = 8;
const TYPES: [&str; 3] = ["Created", "Updated", "Closed"];

/// The id of writer `writer`'s `n`-th event.
fn event_id(writer: usize, n: usize) -> Uuid {
    Uuid::from_u128(((writer as u128 + 1) << 64) | n as u128)
}

/// The writer and sequence number an id of [`event_id`] stands for.
fn decode_id(id: Uuid) -> (usize, usize) {
    let value = id.as_u128();
    let writer = (value >> 64) as usize;
    assert!(writer >= 1, "id {id} was not made by event_id");
    (writer - 1, (value & u128::from(u64::MAX)) as usize)
}

fn aggregate_of(writer: usize, n: usize) -> String {
    format!("agg-{}", (writer * 5 + n * 3) % AGGREGATES)
}

fn type_of(n: usize) -> &'static str {
    TYPES[n % TYPES.len()]
}

fn data_of(writer: usize, n: usize) -> String {
    format!(r#"{{"writer":{writer},"n":{n},"pad":"{}"}}"#, "p".repeat(n % 60))
}

fn draft(writer: usize, n: usize) -> EventDraft {
    EventDraft::new(type_of(n), aggregate_of(writer, n), data_of(writer, n)).with_id(event_id(writer, n))
}

/// Batch sizes a writer cycles through: mostly single events, some batches.
const BATCH_SIZES: [usize; 6] = [1, 3, 1, 2, 1, 4];

/// An event as read back, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Read {
    position: u64,
    id: Uuid,
    event_type: String,
    aggregate_id: String,
    aggregate_version: u64,
    timestamp_ns: u64,
    data: Vec<u8>,
}

impl Read {
    fn of(view: &EventView<'_>) -> Read {
        Read {
            position: view.position,
            id: view.id,
            event_type: view.event_type.to_owned(),
            aggregate_id: view.aggregate_id.to_owned(),
            aggregate_version: view.aggregate_version,
            timestamp_ns: view.timestamp_ns,
            data: view.data.to_vec(),
        }
    }

    /// Checks that the event is whole and is what its id says: type, aggregate and payload (which
    /// must parse as JSON and name the same writer and number).
    fn check_untorn(&self) {
        let (writer, n) = decode_id(self.id);
        let data = std::str::from_utf8(&self.data).unwrap_or_else(|e| panic!("position {}: {e}", self.position));
        let json: serde_json::Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("position {}: data {data:?}: {e}", self.position));
        assert_eq!(json["writer"], writer, "position {}: {data}", self.position);
        assert_eq!(json["n"], n, "position {}: {data}", self.position);
        assert_eq!(data, data_of(writer, n), "position {}", self.position);
        assert_eq!(self.event_type, type_of(n), "position {}", self.position);
        assert_eq!(self.aggregate_id, aggregate_of(writer, n), "position {}", self.position);
    }
}

fn read_all(log: &Log, query: &ReadQuery) -> Vec<Read> {
    let mut events = Vec::new();
    log.read(query, &mut |view| {
        events.push(Read::of(&view));
        ControlFlow::Continue(())
    })
    .unwrap_or_else(|e| panic!("read {query:?}: {e}"));
    events
}

fn read_cursor(log: &Log, query: &ReadQuery) -> Vec<Read> {
    let mut cursor = log.cursor(query).unwrap_or_else(|e| panic!("cursor {query:?}: {e}"));
    let mut events = Vec::new();
    while let Some(view) = cursor.next() {
        events.push(Read::of(&view.unwrap_or_else(|e| panic!("cursor {query:?}: {e}"))));
    }
    events
}

fn read_stream(log: &Log, aggregate_id: &str) -> (Vec<Read>, u64) {
    let mut events = Vec::new();
    let summary = log
        .read_stream(aggregate_id, 1, usize::MAX, &mut |view| {
            events.push(Read::of(&view));
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("read_stream {aggregate_id}: {e}"));
    assert_eq!(summary.count, events.len());
    (events, summary.version)
}

/// Checks that `events`, a read from position `from`, is gap-free and whole: positions
/// `from, from + 1, …` in order, every event untorn.
fn check_prefix(events: &[Read], from: u64, what: &str) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position, from + i as u64, "{what}: position {i} of the read");
        event.check_untorn();
    }
}

/// Checks that per-aggregate versions in a gap-free prefix of the log are 1, 2, … in position order.
fn check_versions(events: &[Read], what: &str) {
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        let version = versions.entry(&event.aggregate_id).or_default();
        *version += 1;
        assert_eq!(event.aggregate_version, *version, "{what}: version at position {}", event.position);
    }
}

/// Runs `WRITERS` threads, each appending `EVENTS_PER_WRITER` events in batches; returns each
/// writer's acknowledged batches.
fn append_concurrently(log: &Arc<Log>) -> Vec<Vec<Vec<Appended>>> {
    let start = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = Arc::clone(log);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut acked = Vec::new();
                let mut n = 0;
                let mut batch = 0;
                while n < EVENTS_PER_WRITER {
                    let size = BATCH_SIZES[batch % BATCH_SIZES.len()].min(EVENTS_PER_WRITER - n);
                    let drafts: Vec<EventDraft> = (n..n + size).map(|i| draft(writer, i)).collect();
                    match log.append(&drafts) {
                        Ok(AppendOutcome::Appended(results)) => acked.push(results),
                        other => panic!("writer {writer}, events {n}..{}: {other:?}", n + size),
                    }
                    n += size;
                    batch += 1;
                }
                acked
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("writer panicked")).collect()
}

/// Checks the log after [`append_concurrently`]: gap-free, every acknowledgement at its position,
/// batches contiguous, each writer's events in its order, per-aggregate versions gap-free.
fn check_after_appends(log: &Log, acked: &[Vec<Vec<Appended>>]) -> Vec<Read> {
    let total = (WRITERS * EVENTS_PER_WRITER) as u64;
    assert_eq!(log.bounds(), (0, total));
    let events = read_all(log, &ReadQuery::default());
    assert_eq!(events.len() as u64, total, "events read");
    check_prefix(&events, 0, "read after the writers");
    for pair in events.windows(2) {
        assert!(pair[0].timestamp_ns <= pair[1].timestamp_ns, "timestamp decreases at position {}", pair[1].position);
    }

    // The acknowledgements cover every position exactly once, and each reads back as acked.
    let mut acked_at: Vec<Option<Appended>> = vec![None; total as usize];
    for (writer, batches) in acked.iter().enumerate() {
        let mut n = 0;
        let mut last_position = None;
        for batch in batches {
            for (i, result) in batch.iter().enumerate() {
                assert_eq!(result.id, event_id(writer, n), "writer {writer} ack {n}");
                // A batch is contiguous; a writer's events are in its order.
                if i > 0 {
                    assert_eq!(Some(result.position), last_position.map(|p| p + 1), "writer {writer} batch at {n}");
                } else {
                    assert!(last_position.is_none_or(|p| result.position > p), "writer {writer} order at {n}");
                }
                last_position = Some(result.position);
                let slot = acked_at.get_mut(result.position as usize).unwrap_or_else(|| panic!("ack {result:?}"));
                assert!(slot.is_none(), "position {} acknowledged twice: {slot:?} and {result:?}", result.position);
                *slot = Some(*result);
                let event = &events[result.position as usize];
                assert_eq!((event.id, event.aggregate_version), (result.id, result.aggregate_version), "{result:?}");
                n += 1;
            }
        }
        assert_eq!(n, EVENTS_PER_WRITER, "writer {writer} acknowledgements");
    }
    assert!(acked_at.iter().all(Option::is_some), "every position is acknowledged");

    // Per aggregate: versions 1..=n in position order, and the stream read agrees.
    check_versions(&events, "read after the writers");
    for a in 0..AGGREGATES {
        let aggregate_id = format!("agg-{a}");
        let expected: Vec<Read> = events.iter().filter(|e| e.aggregate_id == aggregate_id).cloned().collect();
        let (stream, version) = read_stream(log, &aggregate_id);
        assert_eq!(version, expected.len() as u64, "{aggregate_id} version");
        assert_eq!(log.stream_version(&aggregate_id), version, "{aggregate_id} stream_version");
        assert!(stream == expected, "{aggregate_id}: the stream read disagrees with the log");
    }
    let report = log.verify().unwrap_or_else(|e| panic!("verify: {e}"));
    assert_eq!((report.records, report.next_position), (total, total));
    events
}

fn disk_config(durability: Durability) -> StoreConfig {
    // Small segments, so that the writers roll over to new segments many times.
    StoreConfig { segment_bytes: 64 * 1024, durability, ..Default::default() }
}

fn concurrent_appends_on_disk(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), disk_config(durability)).unwrap());
    let acked = append_concurrently(&log);
    let events = check_after_appends(&log, &acked);
    drop(Arc::into_inner(log).expect("writers are done"));
    let reopened = Log::open(dir.path(), disk_config(durability)).unwrap();
    assert!(read_all(&reopened, &ReadQuery::default()) == events, "the log differs after a reopen");
}

#[test]
fn concurrent_appends_with_group_commit_are_gap_free() {
    // Four writers under Durability::Always (group commit): gap-free, every ack at its position.
    concurrent_appends_on_disk(Durability::Always);
}

#[test]
fn concurrent_appends_without_fsync_are_gap_free() {
    // Four writers under Durability::Never: gap-free, every ack at its position.
    concurrent_appends_on_disk(Durability::Never);
}

#[test]
fn concurrent_appends_in_memory_are_gap_free() {
    // Four writers on the in-memory log: gap-free, every ack at its position.
    let log = Arc::new(Log::in_memory(StoreConfig { segment_bytes: 64 * 1024, ..Default::default() }).unwrap());
    let acked = append_concurrently(&log);
    check_after_appends(&log, &acked);
}

/// Four threads append 200 events each to one aggregate with `Exact(stream_version)`, retrying
/// on conflicts; then the stream must be at 800, gap-free, each writer's events in its order.
fn optimistic_writers(log: &Arc<Log>) {
    const EACH: usize = 200;
    const HOT: &str = "hot";
    let start = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = Arc::clone(log);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut n = 0;
                while n < EACH {
                    let version = log.stream_version(HOT);
                    let draft = EventDraft::new("Bumped", HOT, data_of(writer, n))
                        .with_id(event_id(writer, n))
                        .expecting(ExpectedVersion::Exact(version));
                    match log.append_one(&draft) {
                        Ok(AppendOutcome::Appended(results)) => {
                            assert_eq!(results[0].aggregate_version, version + 1, "writer {writer} event {n}");
                            n += 1;
                        }
                        Err(StoreError::VersionConflict { current, .. }) => {
                            assert_ne!(current, version, "a conflict names the current version");
                            thread::yield_now();
                        }
                        other => panic!("writer {writer} event {n}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("writer panicked");
    }

    let total = (WRITERS * EACH) as u64;
    assert_eq!(log.stream_version(HOT), total);
    // Conflicting appends wrote nothing: the log holds exactly the successful ones.
    assert_eq!(log.bounds(), (0, total));
    let (stream, version) = read_stream(log, HOT);
    assert_eq!(version, total);
    let mut next_n = [0usize; WRITERS];
    for (i, event) in stream.iter().enumerate() {
        assert_eq!(event.aggregate_version, i as u64 + 1, "stream gap at {i}");
        assert_eq!(event.position, i as u64, "position of version {}", i + 1);
        let (writer, n) = decode_id(event.id);
        assert_eq!(n, next_n[writer], "writer {writer}'s events out of order");
        assert_eq!(event.data, data_of(writer, n).into_bytes());
        next_n[writer] += 1;
    }
    assert_eq!(next_n, [EACH; WRITERS]);
}

#[test]
fn optimistic_writers_in_memory_serialize_on_one_aggregate() {
    // Read-version-then-append-Exact writers on one aggregate end at version 800, gap-free.
    let log = Arc::new(Log::in_memory(StoreConfig::default()).unwrap());
    optimistic_writers(&log);
}

#[test]
fn optimistic_writers_with_group_commit_serialize_on_one_aggregate() {
    // The same on disk under Durability::Always, where stream_version lags the unsynced tail.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), disk_config(Durability::Always)).unwrap());
    optimistic_writers(&log);
}

/// Writers append while a reader reads (the whole log, the log's tail through a cursor, and
/// streams), checking that every read sees a gap-free prefix, in order, of untorn events.
fn read_while_writing(log: Arc<Log>) {
    const READ_WRITERS: usize = 3;
    const EACH: usize = 1_500;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let log = Arc::clone(&log);
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut seen = 0u64;
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) || rounds < 3 {
                rounds += 1;
                // The whole log: a gap-free prefix, never shorter than before.
                let events = read_all(&log, &ReadQuery::default());
                check_prefix(&events, 0, "read");
                check_versions(&events, "read");
                assert!(events.len() as u64 >= seen, "the log shrank from {seen} to {}", events.len());
                seen = events.len() as u64;
                // The tail, through a cursor, many times per full read.
                for _ in 0..20 {
                    let (_, end) = log.bounds();
                    let from = end.saturating_sub(5);
                    let tail = read_cursor(&log, &ReadQuery { from_position: from, ..ReadQuery::default() });
                    check_prefix(&tail, from, "cursor at the tail");
                    assert!(tail.len() >= (end - from) as usize, "the cursor missed visible events");
                }
                // One stream: versions 1..=n, in position order.
                let aggregate_id = format!("agg-{}", rounds % AGGREGATES as u64);
                let (stream, version) = read_stream(&log, &aggregate_id);
                assert_eq!(stream.len() as u64, version, "{aggregate_id}");
                for (i, event) in stream.iter().enumerate() {
                    assert_eq!(event.aggregate_version, i as u64 + 1, "{aggregate_id} version {i}");
                    assert!(i == 0 || event.position > stream[i - 1].position, "{aggregate_id} order");
                    event.check_untorn();
                }
            }
            rounds
        })
    };
    let writers: Vec<_> = (0..READ_WRITERS)
        .map(|writer| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut n = 0;
                let mut batch = 0;
                while n < EACH {
                    let size = BATCH_SIZES[batch % BATCH_SIZES.len()].min(EACH - n);
                    let drafts: Vec<EventDraft> = (n..n + size).map(|i| draft(writer, i)).collect();
                    log.append(&drafts).unwrap_or_else(|e| panic!("writer {writer} at {n}: {e}"));
                    n += size;
                    batch += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer panicked");
    }
    done.store(true, Ordering::Release);
    reader.join().expect("reader panicked");
    let events = read_all(&log, &ReadQuery::default());
    assert_eq!(events.len(), READ_WRITERS * EACH);
    check_prefix(&events, 0, "final read");
}

#[test]
fn readers_see_gap_free_untorn_prefixes_in_memory() {
    // A reader racing writers on the in-memory log (4 KiB segments) only sees whole prefixes.
    read_while_writing(Arc::new(Log::in_memory(StoreConfig { segment_bytes: 4096, ..Default::default() }).unwrap()));
}

#[test]
fn readers_see_gap_free_untorn_prefixes_with_group_commit() {
    // The same on disk under Durability::Always, where visibility waits for the group fsync.
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { segment_bytes: 16 * 1024, durability: Durability::Always, ..Default::default() };
    read_while_writing(Arc::new(Log::open(dir.path(), config).unwrap()));
}

#[test]
fn tail_reads_never_fail_while_segments_roll() {
    // Cursors and stream reads at the tail, made while writers roll 4 KiB segments, never error.
    let log = Arc::new(Log::in_memory(StoreConfig { segment_bytes: 4096, ..Default::default() }).unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let log = Arc::clone(&log);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Acquire) {
                    reads += 1;
                    let failure = if reader == 0 {
                        // The last event, through a cursor.
                        let from = log.bounds().1.saturating_sub(1);
                        match log.cursor(&ReadQuery { from_position: from, ..ReadQuery::default() }) {
                            Err(error) => Some(format!("cursor from {from}: {error}")),
                            Ok(mut cursor) => std::iter::from_fn(|| cursor.next().map(|r| r.err()))
                                .flatten()
                                .next()
                                .map(|error| format!("cursor from {from}: {error}")),
                        }
                    } else {
                        // The last two events of the stream.
                        let from = log.stream_version("tail").saturating_sub(1);
                        log.read_stream("tail", from, usize::MAX, &mut |_| ControlFlow::Continue(()))
                            .err()
                            .map(|error| format!("read_stream from version {from}: {error}"))
                    };
                    if let Some(failure) = failure {
                        stop.store(true, Ordering::Release);
                        return Err(format!("after {reads} reads: {failure}"));
                    }
                }
                Ok(reads)
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let log = Arc::clone(&log);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                // About three events per segment: a roll every few appends.
                let mut n = 0;
                while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                    let data = format!(r#"{{"writer":{writer},"n":{n},"pad":"{}"}}"#, "p".repeat(1200));
                    log.append_one(&EventDraft::new("Padded", "tail", data)).unwrap();
                    n += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer panicked");
    }
    stop.store(true, Ordering::Release);
    for reader in readers {
        if let Err(failure) = reader.join().expect("reader panicked") {
            panic!("a read at the tail failed while segments rolled, {failure}");
        }
    }
}

#[test]
fn idempotent_retries_under_group_commit_ack_only_durable_events() {
    // Under Durability::Always an idempotent retry is acknowledged only once the original is durable and visible.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), disk_config(Durability::Always)).unwrap());
    for round in 0..30 {
        let start = Arc::new(Barrier::new(2));
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let log = Arc::clone(&log);
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    let drafts = [draft(0, 2 * round), draft(0, 2 * round + 1)];
                    start.wait();
                    let outcome = log.append(&drafts).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    // Acknowledged means durable and readable at its position, whichever sender won.
                    let visible = log.bounds().1;
                    let last = outcome.events()[1].position;
                    let read = read_all(&log, &ReadQuery { from_position: last, limit: 1, ..ReadQuery::default() });
                    let found = read.first().map(|e| e.id);
                    assert!(
                        visible > last && found == Some(drafts[1].id.unwrap()),
                        "round {round}: {outcome:?} acknowledged position {last}, but the visible (durable) end \
                         is {visible} and reading it finds {found:?}"
                    );
                    matches!(outcome, AppendOutcome::AlreadyAppended(_))
                })
            })
            .collect();
        let retries = senders.into_iter().map(|s| s.join().expect("sender panicked")).filter(|&r| r).count();
        assert_eq!(retries, 1, "round {round}: exactly one sender is the idempotent retry");
    }
}
