//! The event store benchmark: Herald's [`Log`] against SQLite (rusqlite over the system's libsqlite3, WAL) doing the
//! same unit of work. Figures and the exact setup: `docs/benchmarks.md`.
//!
//! One criterion group, `store`, with ids `<case>/<impl>`:
//!
//! - `append_nofsync`: one writer, one acknowledged append per event, no fsync before the ack
//!   (Herald `Durability::Never`, SQLite `synchronous=OFF`), 1000 events per iteration.
//! - `append_fsync_1w`, `append_fsync_8w`: fsync before every ack (Herald `Durability::Always`,
//!   SQLite `synchronous=FULL`); 1 writer doing 64 events per iteration, or 8 writer threads
//!   doing 64 events each (512 per iteration), each waiting for its ack before the next append;
//!   the threads live for a whole sample, not one iteration.
//!   SQLite's writers each have their own connection (with a busy timeout).
//! - `replay`: read a 1M-event log in position order, touching every field.
//! - `reopen`: open a closed 1M-event log with its index checkpoint, and without it.
//! - `snapshot_load` / `replay_10k`: rebuild one aggregate from its rkyv snapshot, or by replaying
//!   its 10 000 events.
//!
//! The index memory per event is printed (`store/index_bytes`) when the 1M-event log is built.
//!
//! The unit of work on the SQLite side is one transaction per event: `BEGIN IMMEDIATE`, read the
//! aggregate's current version, insert the row with version + 1, `COMMIT` — what Herald's append
//! does under its lock (assign the version atomically with the append, reject a duplicate id).
//!
//! Every store lives in its own temporary directory (under `$TMPDIR`, /tmp by default). The
//! append cases start a fresh store before a sample once the current one holds a million events,
//! for both implementations alike, so neither is measured on an ever-growing store.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use herald_core::event::time::now_ns;
use herald_core::event::{EventDraft, Uuid};
use herald_core::store::{Durability, EventStore, Log, ReadQuery, StoreConfig};
use rkyv::rancor;
use rusqlite::{params, Connection};
use tempfile::TempDir;

/// Bytes of every event's JSON payload.
const PAYLOAD_BYTES: usize = 256;
/// Aggregates the appends rotate over (round-robin, shared by all writer threads).
const AGGREGATES: usize = 1000;
const EVENT_TYPES: [&str; 4] = ["AccountOpened", "FundsDeposited", "FundsWithdrawn", "AccountAnnotated"];
/// Events per iteration of `append_nofsync`.
const NOFSYNC_EVENTS_PER_ITER: u64 = 1000;
/// Events each writer appends per iteration of the fsync cases.
const FSYNC_EVENTS_PER_WRITER: u64 = 64;
/// Writer threads of `append_fsync_8w`.
const WRITERS: usize = 8;
/// A store used by the append cases is replaced before a sample once it holds this many events.
const FRESH_STORE_AFTER: u64 = 1_000_000;
/// Events in the log that `replay` reads and `reopen` opens.
const BIG_LOG_EVENTS: u64 = 1_000_000;
/// Events appended per call while building the big logs (setup only).
const SETUP_BATCH: usize = 1000;
/// The aggregate of the snapshot case, and its number of events.
const SNAPSHOT_AGGREGATE: &str = "account-snapshot";
const SNAPSHOT_STREAM_EVENTS: u64 = 10_000;
/// Other aggregates interleaved with the snapshot aggregate (one event each per round).
const SNAPSHOT_NEIGHBOURS: usize = 9;

/// A 256-byte JSON object.
fn payload() -> Bytes {
    let head = r#"{"amount":1250,"currency":"EUR","account":"DE89370400440532013000","note":""#;
    let tail = r#""}"#;
    let text = format!("{head}{}{tail}", "x".repeat(PAYLOAD_BYTES - head.len() - tail.len()));
    assert_eq!(text.len(), PAYLOAD_BYTES);
    serde_json::from_str::<serde_json::Value>(&text).expect("the payload is JSON");
    Bytes::from(text)
}

/// The events both implementations append: event `n` goes to aggregate `n % AGGREGATES`.
struct Workload {
    drafts: Vec<EventDraft>,
    payload: Bytes,
}

impl Workload {
    fn new() -> Self {
        let payload = payload();
        let drafts = (0..AGGREGATES)
            .map(|a| EventDraft::new(EVENT_TYPES[a % EVENT_TYPES.len()], format!("account-{a:04}"), payload.clone()))
            .collect();
        Workload { drafts, payload }
    }

    fn draft(&self, n: u64) -> &EventDraft {
        &self.drafts[(n % AGGREGATES as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// Herald

fn herald_config(durability: Durability) -> StoreConfig {
    StoreConfig { durability, ..StoreConfig::default() }
}

/// A Herald log in its own temporary directory. Fields drop in order: the log closes before its
/// directory is removed.
struct HeraldStore {
    log: Log,
    next: AtomicU64,
    _dir: TempDir,
}

impl HeraldStore {
    fn new(durability: Durability) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = Log::open(dir.path(), herald_config(durability)).expect("open the log");
        HeraldStore { log, next: AtomicU64::new(0), _dir: dir }
    }

    fn events(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Appends `count` events, one call (one acknowledged append) per event.
    fn append_each(&self, workload: &Workload, count: u64) {
        for n in reserve(&self.next, count) {
            black_box(self.log.append_one(workload.draft(n)).expect("append"));
        }
    }
}

/// The numbers of the next `count` events of a store, taken at once: an atomic read-modify-write
/// per event was harness overhead inside the timing (writer threads of the fsync cases share the
/// counter, and each takes its own run of numbers).
fn reserve(next: &AtomicU64, count: u64) -> std::ops::Range<u64> {
    let first = next.fetch_add(count, Ordering::Relaxed);
    first..first + count
}

/// Waits for the disk work a dropped store left behind (its files' deletion: journal commits,
/// discards on a filesystem mounted with `discard`) with `sync(1)`, so the next sample does not
/// share the machine with it. Setup only, outside the timing, for both implementations alike.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

/// Keeps `slot` holding a store with fewer than [`FRESH_STORE_AFTER`] events.
fn fresh_herald(slot: &mut Option<HeraldStore>, durability: Durability) -> &HeraldStore {
    if slot.as_ref().is_some_and(|s| s.events() >= FRESH_STORE_AFTER) {
        *slot = None;
        settle_disk();
    }
    slot.get_or_insert_with(|| HeraldStore::new(durability))
}

// ---------------------------------------------------------------------------------------------
// SQLite

const SQLITE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE,
        type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        aggregate_version INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS events_stream ON events (aggregate_id, aggregate_version);
    CREATE INDEX IF NOT EXISTS events_type ON events (type, position);
    CREATE INDEX IF NOT EXISTS events_timestamp ON events (timestamp);
";
const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE";
const SQLITE_VERSION: &str = "SELECT COALESCE(MAX(aggregate_version), 0) FROM events WHERE aggregate_id = ?1";
const SQLITE_INSERT: &str =
    "INSERT INTO events (id, type, aggregate_id, aggregate_version, timestamp, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SQLITE_COMMIT: &str = "COMMIT";
const SQLITE_REPLAY: &str =
    "SELECT position, id, type, aggregate_id, aggregate_version, timestamp, data FROM events ORDER BY position";

/// Opens a connection: WAL, the given `synchronous` level, a busy timeout, and a memory map as
/// large as the biggest database here (Herald reads through its map too).
fn sqlite_connection(path: &Path, synchronous: &str) -> Connection {
    let conn = Connection::open(path).expect("open SQLite");
    conn.busy_timeout(Duration::from_secs(60)).expect("busy_timeout");
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).expect("journal_mode");
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    conn.pragma_update(None, "synchronous", synchronous).expect("synchronous");
    let _: i64 = conn.pragma_update_and_check(None, "mmap_size", 1i64 << 30, |row| row.get(0)).expect("mmap_size");
    conn
}

/// An SQLite database in its own temporary directory, with one connection per writer.
struct SqliteStore {
    conns: Vec<Connection>,
    next: AtomicU64,
    _dir: TempDir,
}

impl SqliteStore {
    fn new(synchronous: &str, connections: usize) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("events.db");
        let first = sqlite_connection(&path, synchronous);
        first.execute_batch(SQLITE_SCHEMA).expect("schema");
        let mut conns = vec![first];
        conns.extend((1..connections).map(|_| sqlite_connection(&path, synchronous)));
        SqliteStore { conns, next: AtomicU64::new(0), _dir: dir }
    }

    fn events(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

/// One acknowledged append: one transaction that assigns the aggregate's next version and
/// inserts the event. Returns the position.
fn sqlite_append(conn: &Connection, draft: &EventDraft) -> i64 {
    let append = || -> rusqlite::Result<i64> {
        conn.prepare_cached(SQLITE_BEGIN)?.execute([])?;
        let version: i64 =
            conn.prepare_cached(SQLITE_VERSION)?.query_row([draft.aggregate_id.as_str()], |row| row.get(0))?;
        let id = Uuid::now_v7();
        conn.prepare_cached(SQLITE_INSERT)?.execute(params![
            &id.as_bytes()[..],
            draft.event_type,
            draft.aggregate_id,
            version + 1,
            now_ns() as i64,
            &draft.data[..],
        ])?;
        let position = conn.last_insert_rowid();
        conn.prepare_cached(SQLITE_COMMIT)?.execute([])?;
        Ok(position)
    };
    append().expect("SQLite append")
}

fn sqlite_append_each(conn: &Connection, next: &AtomicU64, workload: &Workload, count: u64) {
    for n in reserve(next, count) {
        black_box(sqlite_append(conn, workload.draft(n)));
    }
}

fn fresh_sqlite<'a>(slot: &'a mut Option<SqliteStore>, synchronous: &str, connections: usize) -> &'a mut SqliteStore {
    if slot.as_ref().is_some_and(|s| s.events() >= FRESH_STORE_AFTER) {
        *slot = None;
        settle_disk();
    }
    slot.get_or_insert_with(|| SqliteStore::new(synchronous, connections))
}

// ---------------------------------------------------------------------------------------------
// Append cases

fn append_nofsync(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    group.sampling_mode(SamplingMode::Auto);
    group.throughput(Throughput::Elements(NOFSYNC_EVENTS_PER_ITER));

    let mut herald = None;
    group.bench_function(BenchmarkId::new("append_nofsync", "herald"), |b| {
        b.iter_custom(|iters| {
            let store = fresh_herald(&mut herald, Durability::Never);
            let start = Instant::now();
            store.append_each(workload, iters * NOFSYNC_EVENTS_PER_ITER);
            start.elapsed()
        })
    });
    drop(herald);

    let mut sqlite = None;
    group.bench_function(BenchmarkId::new("append_nofsync", "sqlite"), |b| {
        b.iter_custom(|iters| {
            let store = fresh_sqlite(&mut sqlite, "OFF", 1);
            let start = Instant::now();
            sqlite_append_each(&store.conns[0], &store.next, workload, iters * NOFSYNC_EVENTS_PER_ITER);
            start.elapsed()
        })
    });
}

/// `writers` threads, each appending [`FSYNC_EVENTS_PER_WRITER`] events per iteration one at a
/// time, waiting for each ack. The threads live for a whole sample (`iters` iterations at once,
/// `iters` × that many events each): spawned per iteration, 8 thread spawns and the drain of 8
/// writers finishing one by one every 512 events were 5–7 % of the 8-writer time and not the
/// store's work (long-lived writers are what a server has). The time runs from before the
/// threads are spawned until the last one has its last ack; both implementations alike.
fn append_fsync(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload, case: &str, writers: usize) {
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(writers as u64 * FSYNC_EVENTS_PER_WRITER));

    let mut herald = None;
    group.bench_function(BenchmarkId::new(case, "herald"), |b| {
        b.iter_custom(|iters| {
            let store = fresh_herald(&mut herald, Durability::Always);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..writers {
                    scope.spawn(|| store.append_each(workload, iters * FSYNC_EVENTS_PER_WRITER));
                }
            });
            start.elapsed()
        })
    });
    if let Some(store) = &herald {
        let fsyncs = store.log.metrics().fsync_latency;
        eprintln!(
            "store/{case}/herald: {} events, {} fsyncs ({:.1} events per fsync, fsync mean {:.2} ms, p99 {:.2} ms)",
            store.events(),
            fsyncs.count,
            store.events() as f64 / fsyncs.count.max(1) as f64,
            fsyncs.mean_ns / 1e6,
            fsyncs.p99_ns as f64 / 1e6
        );
    }
    drop(herald);

    let mut sqlite = None;
    group.bench_function(BenchmarkId::new(case, "sqlite"), |b| {
        b.iter_custom(|iters| {
            let store = fresh_sqlite(&mut sqlite, "FULL", writers);
            let next = &store.next;
            let start = Instant::now();
            std::thread::scope(|scope| {
                for conn in store.conns.iter_mut() {
                    scope.spawn(move || sqlite_append_each(conn, next, workload, iters * FSYNC_EVENTS_PER_WRITER));
                }
            });
            start.elapsed()
        })
    });
}

// ---------------------------------------------------------------------------------------------
// The 1M-event logs: replay and reopen

/// A closed Herald log of [`BIG_LOG_EVENTS`] events with its index checkpoint, and the same
/// events in SQLite. Built once, on first use.
struct BigLogs {
    /// The Herald log opened for `replay` (dropped before `reopen`).
    replay_log: Option<Log>,
    herald: TempDir,
    /// A copy of `herald` without `index.ckpt` (made for `reopen/herald_scan`).
    herald_scan: Option<TempDir>,
    sqlite: Connection,
    _sqlite_dir: TempDir,
}

impl BigLogs {
    fn build(workload: &Workload) -> BigLogs {
        let started = Instant::now();
        let herald = tempfile::tempdir().expect("temporary directory");
        {
            let log = Log::open(herald.path(), herald_config(Durability::Never)).expect("open the log");
            let batch: Vec<EventDraft> = (0..SETUP_BATCH as u64).map(|n| workload.draft(n).clone()).collect();
            for _ in 0..BIG_LOG_EVENTS / SETUP_BATCH as u64 {
                log.append(&batch).expect("append a setup batch");
            }
            assert_eq!(log.bounds(), (0, BIG_LOG_EVENTS));
            let bytes = log.index_bytes();
            eprintln!(
                "store/index_bytes: {bytes} bytes of index for {BIG_LOG_EVENTS} events = {:.1} bytes/event \
                 (as built by appends; {AGGREGATES} aggregates, {} types)",
                bytes as f64 / BIG_LOG_EVENTS as f64,
                EVENT_TYPES.len()
            );
            log.close().expect("close the log (writes the index checkpoint)");
        }
        let log = Log::open(herald.path(), herald_config(Durability::Never)).expect("reopen the log");
        let bytes = log.index_bytes();
        eprintln!(
            "store/index_bytes: {bytes} bytes of index for {BIG_LOG_EVENTS} events = {:.1} bytes/event \
             (as loaded from the checkpoint)",
            bytes as f64 / BIG_LOG_EVENTS as f64
        );
        let segment_bytes: u64 = std::fs::read_dir(herald.path().join("segments"))
            .expect("list segments")
            .map(|entry| entry.expect("segment entry").metadata().expect("segment metadata").len())
            .sum();
        let checkpoint_bytes = std::fs::metadata(herald.path().join("index.ckpt")).expect("index.ckpt").len();
        eprintln!(
            "store/big_log: herald built in {:.1} s: {:.0} MiB of segment files, index.ckpt {:.1} MiB",
            started.elapsed().as_secs_f64(),
            segment_bytes as f64 / (1 << 20) as f64,
            checkpoint_bytes as f64 / (1 << 20) as f64
        );

        let started = Instant::now();
        let sqlite_dir = tempfile::tempdir().expect("temporary directory");
        let sqlite = sqlite_connection(&sqlite_dir.path().join("events.db"), "OFF");
        sqlite.execute_batch(SQLITE_SCHEMA).expect("schema");
        {
            let mut insert = sqlite.prepare(SQLITE_INSERT).expect("prepare insert");
            for chunk in 0..BIG_LOG_EVENTS / SETUP_BATCH as u64 {
                sqlite.execute_batch("BEGIN").expect("begin");
                for i in 0..SETUP_BATCH as u64 {
                    let n = chunk * SETUP_BATCH as u64 + i;
                    let draft = workload.draft(n);
                    let version = n / AGGREGATES as u64 + 1;
                    insert
                        .execute(params![
                            &Uuid::now_v7().as_bytes()[..],
                            draft.event_type,
                            draft.aggregate_id,
                            version as i64,
                            now_ns() as i64,
                            &draft.data[..],
                        ])
                        .expect("insert");
                }
                sqlite.execute_batch("COMMIT").expect("commit");
            }
        }
        let _: (i64, i64, i64) = sqlite
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("checkpoint the WAL");
        let db_bytes = std::fs::metadata(sqlite_dir.path().join("events.db")).expect("events.db").len();
        eprintln!(
            "store/big_log: sqlite built in {:.1} s: events.db {:.0} MiB",
            started.elapsed().as_secs_f64(),
            db_bytes as f64 / (1 << 20) as f64
        );
        BigLogs { replay_log: Some(log), herald, herald_scan: None, sqlite, _sqlite_dir: sqlite_dir }
    }
}

/// Reads the whole log in position order, touching each event's fields as a consumer would.
fn herald_replay(log: &Log) -> u64 {
    let mut cursor = log.cursor(&ReadQuery::default()).expect("cursor");
    let (mut count, mut bytes) = (0u64, 0usize);
    while let Some(view) = cursor.next() {
        let view = view.expect("read");
        black_box((view.id, view.event_type, view.aggregate_id, view.aggregate_version, view.timestamp_ns));
        bytes += view.data.len();
        count += 1;
    }
    black_box(bytes);
    count
}

/// The same read in SQLite: every column, borrowed, the strings checked as UTF-8 (as Herald's
/// decoding does).
fn sqlite_replay(conn: &Connection) -> u64 {
    let read = || -> rusqlite::Result<u64> {
        let mut statement = conn.prepare_cached(SQLITE_REPLAY)?;
        let mut rows = statement.query([])?;
        let (mut count, mut bytes) = (0u64, 0usize);
        while let Some(row) = rows.next()? {
            black_box((
                row.get_ref(0)?.as_i64()?,
                row.get_ref(1)?.as_blob()?,
                row.get_ref(2)?.as_str()?,
                row.get_ref(3)?.as_str()?,
                row.get_ref(4)?.as_i64()?,
                row.get_ref(5)?.as_i64()?,
            ));
            bytes += row.get_ref(6)?.as_blob()?.len();
            count += 1;
        }
        black_box(bytes);
        Ok(count)
    };
    read().expect("SQLite replay")
}

fn copy_dir(from: &Path, to: &Path, skip: &str) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("list directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_name() == skip {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn replay_and_reopen(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    let mut big: Option<BigLogs> = None;

    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BIG_LOG_EVENTS));
    group.bench_function(BenchmarkId::new("replay", "herald"), |b| {
        let big = big.get_or_insert_with(|| BigLogs::build(workload));
        let log = big.replay_log.get_or_insert_with(|| {
            Log::open(big.herald.path(), herald_config(Durability::Never)).expect("open the log")
        });
        b.iter(|| assert_eq!(herald_replay(log), BIG_LOG_EVENTS))
    });
    group.bench_function(BenchmarkId::new("replay", "sqlite"), |b| {
        let big = big.get_or_insert_with(|| BigLogs::build(workload));
        b.iter(|| assert_eq!(sqlite_replay(&big.sqlite), BIG_LOG_EVENTS))
    });

    group.bench_function(BenchmarkId::new("reopen", "herald_checkpoint"), |b| {
        let big = big.get_or_insert_with(|| BigLogs::build(workload));
        big.replay_log = None;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = Log::open(big.herald.path(), herald_config(Durability::Never)).expect("reopen");
                total += start.elapsed();
                assert_eq!(log.bounds(), (0, BIG_LOG_EVENTS));
                drop(log);
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("reopen", "herald_scan"), |b| {
        let big = big.get_or_insert_with(|| BigLogs::build(workload));
        big.replay_log = None;
        let scan = big.herald_scan.get_or_insert_with(|| {
            let copy = tempfile::tempdir().expect("temporary directory");
            copy_dir(big.herald.path(), copy.path(), "index.ckpt");
            copy
        });
        let checkpoint = scan.path().join("index.ckpt");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Closing writes a checkpoint when there is none: remove it before every open.
                match std::fs::remove_file(&checkpoint) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => panic!("remove {}: {error}", checkpoint.display()),
                }
                let start = Instant::now();
                let log = Log::open(scan.path(), herald_config(Durability::Never)).expect("reopen");
                total += start.elapsed();
                assert_eq!(log.bounds(), (0, BIG_LOG_EVENTS));
                drop(log);
            }
            total
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// An aggregate's state, folded from its events and stored as an rkyv archive.
#[derive(rkyv::Archive, rkyv::Serialize, Default)]
struct AccountState {
    aggregate_id: String,
    version: u64,
    last_position: u64,
    last_timestamp_ns: u64,
    last_event_type: String,
    payload_bytes: u64,
    deposits: u64,
    withdrawals: u64,
}

impl AccountState {
    fn apply(&mut self, event: herald_core::store::EventView<'_>) {
        if self.aggregate_id.is_empty() {
            self.aggregate_id.push_str(event.aggregate_id);
        }
        self.version = event.aggregate_version;
        self.last_position = event.position;
        self.last_timestamp_ns = event.timestamp_ns;
        if self.last_event_type != event.event_type {
            self.last_event_type.clear();
            self.last_event_type.push_str(event.event_type);
        }
        self.payload_bytes += event.data.len() as u64;
        match event.event_type {
            "FundsDeposited" => self.deposits += 1,
            "FundsWithdrawn" => self.withdrawals += 1,
            _ => {}
        }
    }
}

fn rebuild_by_replay(log: &Log) -> AccountState {
    let mut state = AccountState::default();
    let summary = log
        .read_stream(SNAPSHOT_AGGREGATE, 1, usize::MAX, &mut |event| {
            state.apply(event);
            ControlFlow::Continue(())
        })
        .expect("read_stream");
    assert_eq!(summary.count as u64, SNAPSHOT_STREAM_EVENTS);
    state
}

/// A log where [`SNAPSHOT_AGGREGATE`] has [`SNAPSHOT_STREAM_EVENTS`] events interleaved with
/// those of [`SNAPSHOT_NEIGHBOURS`] other aggregates, and a snapshot at its last version.
struct SnapshotLog {
    log: Log,
    _dir: TempDir,
}

impl SnapshotLog {
    fn build(workload: &Workload) -> SnapshotLog {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = Log::open(dir.path(), herald_config(Durability::Never)).expect("open the log");
        let round: Vec<EventDraft> = (0..=SNAPSHOT_NEIGHBOURS)
            .map(|i| {
                let aggregate = if i == 0 { SNAPSHOT_AGGREGATE.to_owned() } else { format!("neighbour-{i}") };
                EventDraft::new(EVENT_TYPES[i % EVENT_TYPES.len()], aggregate, workload.payload.clone())
            })
            .collect();
        let batch: Vec<EventDraft> = round.iter().cycle().take(SETUP_BATCH).cloned().collect();
        let rounds_per_batch = (SETUP_BATCH / round.len()) as u64;
        for _ in 0..SNAPSHOT_STREAM_EVENTS / rounds_per_batch {
            log.append(&batch).expect("append a setup batch");
        }
        assert_eq!(log.stream_version(SNAPSHOT_AGGREGATE), SNAPSHOT_STREAM_EVENTS);
        let state = rebuild_by_replay(&log);
        let archive = rkyv::to_bytes::<rancor::Error>(&state).expect("archive the state");
        log.save_snapshot(SNAPSHOT_AGGREGATE, state.version, &archive).expect("save the snapshot");
        eprintln!("store/snapshot: state archive {} bytes at version {}", archive.len(), state.version);
        SnapshotLog { log, _dir: dir }
    }
}

fn snapshot(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    let mut fixture: Option<SnapshotLog> = None;

    group.sampling_mode(SamplingMode::Auto);
    // One aggregate rebuilt per iteration, either way.
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("snapshot_load", "herald"), |b| {
        let log = &fixture.get_or_insert_with(|| SnapshotLog::build(workload)).log;
        b.iter(|| {
            let snapshot = log.load_snapshot(SNAPSHOT_AGGREGATE).expect("load").expect("a snapshot");
            let state = snapshot.access::<ArchivedAccountState>().expect("a valid archive");
            assert_eq!(state.version.to_native(), SNAPSHOT_STREAM_EVENTS);
            black_box((state.last_position.to_native(), state.payload_bytes.to_native(), state.last_event_type.len()));
        })
    });
    group.bench_function(BenchmarkId::new("replay_10k", "herald"), |b| {
        let log = &fixture.get_or_insert_with(|| SnapshotLog::build(workload)).log;
        b.iter(|| {
            let state = rebuild_by_replay(log);
            assert_eq!(state.version, SNAPSHOT_STREAM_EVENTS);
            black_box(state)
        })
    });
}

/// One draft's validation, the first step of every append: Herald's check (names, limits, the
/// payload's JSON syntax) against serde_json's check of the payload alone, which it replaced.
fn validate(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    group.sampling_mode(SamplingMode::Auto);
    group.throughput(Throughput::Elements(1));
    let draft = workload.draft(0);
    group.bench_function(BenchmarkId::new("validate", "herald"), |b| b.iter(|| black_box(draft).validate().is_ok()));
    group.bench_function(BenchmarkId::new("validate", "serde_json"), |b| {
        b.iter(|| serde_json::from_slice::<&serde_json::value::RawValue>(black_box(&workload.payload)).is_ok())
    });
}

// ---------------------------------------------------------------------------------------------

fn store(c: &mut Criterion) {
    let workload = Workload::new();
    let mut group = c.benchmark_group("store");
    validate(&mut group, &workload);
    append_nofsync(&mut group, &workload);
    append_fsync(&mut group, &workload, "append_fsync_1w", 1);
    append_fsync(&mut group, &workload, "append_fsync_8w", WRITERS);
    replay_and_reopen(&mut group, &workload);
    snapshot(&mut group, &workload);
    group.finish();
}

/// Short defaults for a 2-core machine; criterion's command-line options override them.
fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = store
}
criterion_main!(benches);
