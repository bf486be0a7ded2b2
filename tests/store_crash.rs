//! Crash test with real processes: a child process appends to a log with `Durability::Always`
//! and reports every acknowledged append on stdout; the parent SIGKILLs it at a random moment,
//! reopens the log and checks that nothing acknowledged was lost or changed.
//!
//! The test binary is its own child: when `HERALD_CRASH_CHILD=<dir>` is set, the test below runs
//! the child role instead (the parent starts it with `--exact <test> --nocapture`). Everything
//! about an event (type, aggregate, metadata, payload) derives from its id, which encodes the
//! child run and a per-run counter, so the parent can check the exact bytes of every event in the
//! log, acknowledged or not. `HERALD_CRASH_CYCLES` overrides the number of kill cycles (50).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use herald_core::event::{EventDraft, EventKind, Uuid};
use herald_core::store::{AppendOutcome, Durability, EventStore, Log, ReadQuery, StoreConfig};

const TEST_NAME: &str = "acknowledged_events_survive_sigkill";
const CHILD_ENV: &str = "HERALD_CRASH_CHILD";
const RUN_ENV: &str = "HERALD_CRASH_RUN";
const CYCLES_ENV: &str = "HERALD_CRASH_CYCLES";
const DEFAULT_CYCLES: u64 = 50;
/// The longest the parent waits for the acknowledgements it wants from one child.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A child left running (its parent gone) stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);
/// The child writes an index checkpoint (a delta or a full one) every this many appends, so kills
/// also land in those.
const CHECKPOINT_EVERY_APPENDS: u64 = 40;
const AGGREGATES: u64 = 5;
const ID_TAG: u128 = 0x6372_6173_6800_0000;
const SIGKILL: i32 = 9;

fn config() -> StoreConfig {
    StoreConfig { segment_bytes: 256 * 1024, durability: Durability::Always, ..StoreConfig::default() }
}

/// xorshift64: the test's only source of randomness, seeded per cycle and per child run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The sizes of child run `run`'s appends, in order: half single events, half batches of 2–5.
fn batch_sizes(run: u64) -> impl Iterator<Item = u64> {
    let mut rng = Rng::new(run ^ 0xBA7C_4E55);
    std::iter::repeat_with(move || if rng.below(2) == 0 { 1 } else { 2 + rng.below(4) })
}

fn id_of(run: u64, k: u64) -> Uuid {
    Uuid::from_u128((ID_TAG << 64) | (u128::from(run) << 40) | u128::from(k))
}

/// `(run, k)` of an id [`id_of`] made.
fn run_and_counter(id: Uuid) -> Option<(u64, u64)> {
    let value = id.as_u128();
    let low = value as u64;
    ((value >> 64) == ID_TAG).then_some((low >> 40, low & ((1 << 40) - 1)))
}

/// A well-mixed hash of `(run, k)` (splitmix64's finalizer).
fn mix(run: u64, k: u64) -> u64 {
    let mut z = (run << 40 | k).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn aggregate_of(run: u64, k: u64) -> String {
    format!("order-{}", mix(run, k) % AGGREGATES)
}

/// The k-th event of child run `run`; its payload is 30 to 730 bytes.
fn draft(run: u64, k: u64) -> EventDraft {
    let hash = mix(run, k);
    let pad_len = (hash >> 16) % 700;
    let pad: String = (0..pad_len).map(|i| char::from(b'a' + ((hash + i) % 26) as u8)).collect();
    let event_type = ["OrderPlaced", "OrderPaid", "OrderShipped", "NoteAdded"][((hash >> 8) % 4) as usize];
    let data = format!(r#"{{"run":{run},"k":{k},"pad":"{pad}"}}"#);
    let draft = EventDraft::new(event_type, aggregate_of(run, k), data).with_id(id_of(run, k));
    if (hash >> 40).is_multiple_of(3) {
        draft.with_metadata("run", run.to_string())
    } else {
        draft
    }
}

/// One acknowledged event as the child reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    id: Uuid,
    position: u64,
    aggregate_version: u64,
}

/// Parses `ACK id/position/version ...` (one triple per event of the append).
fn parse_ack_line(line: &str) -> Option<Vec<Ack>> {
    let rest = line.strip_prefix("ACK ")?;
    rest.split(' ')
        .map(|triple| {
            let mut fields = triple.split('/');
            let id = Uuid::parse_str(fields.next()?).ok()?;
            let position = fields.next()?.parse().ok()?;
            let aggregate_version = fields.next()?.parse().ok()?;
            fields.next().is_none().then_some(Ack { id, position, aggregate_version })
        })
        .collect()
}

/// The child role: appends run `run`'s events until killed, printing each acknowledgement.
fn run_child(dir: &Path, run: u64) -> ! {
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    // Starts on a fresh line: the test harness may have printed "test name ... " before.
    let say = |out: &mut std::io::StdoutLock<'_>, line: &str| {
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(2); // the parent is gone
        }
    };
    say(&mut out, "\nOPENING");
    let log = Log::open(dir, config()).unwrap_or_else(|error| panic!("child run {run}: open: {error}"));
    say(&mut out, "OPENED");
    let mut k = 0;
    for (appends, size) in (1..).zip(batch_sizes(run)) {
        if started.elapsed() > CHILD_LIFETIME {
            std::process::exit(3);
        }
        let drafts: Vec<EventDraft> = (k..k + size).map(|k| draft(run, k)).collect();
        let appended = match log.append(&drafts) {
            Ok(AppendOutcome::Appended(appended)) => appended,
            other => panic!("child run {run}: appending events {k}..{}: {other:?}", k + size),
        };
        let mut line = String::from("ACK");
        for a in &appended {
            let _ = write!(line, " {}/{}/{}", a.id, a.position, a.aggregate_version);
        }
        say(&mut out, &line);
        k += size;
        if appends % CHECKPOINT_EVERY_APPENDS == 0 {
            // Mostly index deltas (every 16 of them the log merges its files into a full
            // checkpoint; the chain goes on across children), now and then a full checkpoint from
            // the index, so kills land in all three.
            let checkpoint = if appends % (20 * CHECKPOINT_EVERY_APPENDS) == 0 {
                log.checkpoint()
            } else {
                log.checkpoint_incremental()
            };
            checkpoint.unwrap_or_else(|error| panic!("child run {run}: checkpoint: {error}"));
        }
    }
    unreachable!("batch_sizes never ends")
}

/// What the parent knows about the log: every event a reopen has shown (by position), and every
/// acknowledgement any child has reported.
#[derive(Default)]
struct Model {
    known: Vec<Ack>,
    acked: Vec<Ack>,
    recovered_unacked: usize,
    /// The draft of each known event (by position), derived from its id once, not every cycle.
    drafts: Vec<EventDraft>,
}

impl Model {
    /// Reopens the log after a kill and checks it against everything known, then learns it.
    fn check(&mut self, dir: &Path, cycle: u64) {
        let log =
            Log::open(dir, config()).unwrap_or_else(|error| panic!("cycle {cycle}: reopen after the kill: {error}"));
        let (first, next) = log.bounds();
        assert_eq!(first, 0, "cycle {cycle}: nothing is ever deleted");

        // Every record, in position order, is an event some child wrote, byte for byte.
        let mut events: Vec<Ack> = Vec::with_capacity(next as usize);
        let mut aggregates: Vec<String> = Vec::with_capacity(next as usize);
        let mut fresh: Vec<EventDraft> = Vec::new();
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut run_ends: Vec<(u64, u64)> = Vec::new(); // (run, events of it), in log order
        let mut problem = None;
        let summary = log
            .read(&ReadQuery::default(), &mut |view| {
                let position = events.len() as u64;
                let Some((run, k)) = run_and_counter(view.id) else {
                    problem = Some(format!("position {}: id {} is not one a child wrote", view.position, view.id));
                    return ControlFlow::Break(());
                };
                let built;
                let draft = match self.drafts.get(position as usize) {
                    Some(cached) if cached.id == Some(view.id) => cached,
                    _ => {
                        built = draft(run, k);
                        &built
                    }
                };
                let version = versions.entry(draft.aggregate_id.clone()).or_insert(0);
                *version += 1;
                let metadata: Vec<(&str, &str)> = view.metadata().collect();
                let wanted: Vec<(&str, &str)> = draft.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let in_run_order = match run_ends.last_mut() {
                    Some((last_run, count)) if *last_run == run => {
                        *count += 1;
                        k + 1 == *count
                    }
                    Some((last_run, _)) if *last_run > run => false,
                    _ => {
                        run_ends.push((run, 1));
                        k == 0
                    }
                };
                if view.position != position
                    || view.aggregate_version != *version
                    || view.kind != EventKind::Domain
                    || view.event_type != draft.event_type
                    || view.aggregate_id != draft.aggregate_id
                    || view.data != &draft.data[..]
                    || metadata != wanted
                    || !in_run_order
                {
                    problem = Some(format!(
                        "position {position} (run {run}, event {k}, expected version {version}, in run order: \
                         {in_run_order}) reads back as {}",
                        view.json()
                    ));
                    return ControlFlow::Break(());
                }
                events.push(Ack { id: view.id, position, aggregate_version: view.aggregate_version });
                aggregates.push(draft.aggregate_id.clone());
                if position as usize >= self.drafts.len() {
                    fresh.push(draft.clone());
                }
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|error| panic!("cycle {cycle}: reading the log: {error}"));
        if let Some(problem) = problem {
            panic!("cycle {cycle}: {problem}");
        }
        assert_eq!(summary.count as u64, next, "cycle {cycle}: events read vs the log's next position");
        assert_eq!(summary.next_position, next, "cycle {cycle}: the read's next position");

        // Batches are atomic: each run's events end where one of its appends ended.
        for &(run, count) in &run_ends {
            let mut end = 0;
            let boundary = batch_sizes(run).map(|size| {
                end += size;
                end
            });
            let reached = boundary.take_while(|&end| end <= count).last().unwrap_or(0);
            assert_eq!(reached, count, "cycle {cycle}: run {run} left {count} events, cutting through an append");
        }

        // Nothing seen before changed or vanished, and every acknowledged event is in place.
        assert!(
            events.len() >= self.known.len(),
            "cycle {cycle}: the log shrank from {} to {} events",
            self.known.len(),
            events.len()
        );
        for (position, known) in self.known.iter().enumerate() {
            assert_eq!(events[position], *known, "cycle {cycle}: position {position} changed since an earlier reopen");
        }
        for ack in &self.acked {
            let stored = events.get(ack.position as usize);
            assert_eq!(stored, Some(ack), "cycle {cycle}: an acknowledged event is not where it was acknowledged");
        }
        let acked_now = self.acked.iter().filter(|a| a.position >= self.known.len() as u64).count();
        self.recovered_unacked += events.len() - self.known.len() - acked_now;

        // The streams and the verifier agree with the records.
        for (aggregate, version) in &versions {
            assert_eq!(log.stream_version(aggregate), *version, "cycle {cycle}: version of stream {aggregate}");
            let mut expected = events.iter().zip(&aggregates).filter(|(_, a)| *a == aggregate).map(|(e, _)| e);
            let mut mismatch = None;
            log.read_stream(aggregate, 1, usize::MAX, &mut |view| {
                let wanted = expected.next();
                if wanted.map(|w| (w.id, w.aggregate_version)) != Some((view.id, view.aggregate_version)) {
                    mismatch =
                        Some(format!("stream read gave {} v{}, expected {wanted:?}", view.id, view.aggregate_version));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|error| panic!("cycle {cycle}: reading stream {aggregate}: {error}"));
            assert_eq!(mismatch, None, "cycle {cycle}: stream {aggregate}");
            assert_eq!(expected.next(), None, "cycle {cycle}: stream {aggregate} read stopped early");
        }
        let report = log.verify().unwrap_or_else(|error| panic!("cycle {cycle}: verify: {error}"));
        assert_eq!((report.records, report.next_position), (next, next), "cycle {cycle}: verify report {report:?}");
        log.close().unwrap_or_else(|error| panic!("cycle {cycle}: closing: {error}"));
        self.known = events;
        self.drafts.extend(fresh);
    }
}

/// Starts a child on `dir`, waits for `target` acknowledged appends (0: until it starts opening
/// the log), then SIGKILLs it. Returns every acknowledgement it printed before it died.
fn run_and_kill(exe: &Path, dir: &Path, scratch: &Path, run: u64, target: usize) -> Vec<Ack> {
    let stderr_path = scratch.join(format!("child-{run}.stderr"));
    let stderr = std::fs::File::create(&stderr_path)
        .unwrap_or_else(|error| panic!("creating {}: {error}", stderr_path.display()));
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(RUN_ENV, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|error| panic!("run {run}: starting the child {}: {error}", exe.display()));
    let stdout = child.stdout.take().unwrap_or_else(|| unreachable!("stdout is piped"));
    let (sender, receiver) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                // Only whole lines count: the kill may cut the last one short.
                Ok(_) if line.ends_with('\n') => {
                    line.pop();
                    if sender.send(line).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });

    let child_stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let mut acks = Vec::new();
    let mut appends = 0;
    let deadline = Instant::now() + CYCLE_TIMEOUT;
    let handle = |line: &str, acks: &mut Vec<Ack>, appends: &mut usize| -> bool {
        if let Some(events) = parse_ack_line(line) {
            acks.extend(events);
            *appends += 1;
        } else {
            assert!(!line.starts_with("ACK"), "run {run}: unreadable acknowledgement {line:?}");
        }
        line == "OPENING"
    };
    loop {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let opening = handle(&line, &mut acks, &mut appends);
                if (target == 0 && opening) || (target > 0 && appends >= target) {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "run {run}: no {target} acknowledgements within {CYCLE_TIMEOUT:?} (got {appends}); stderr:\n{}",
                    child_stderr()
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!(
                    "run {run}: the child stopped by itself after {appends} appends ({status:?}); stderr:\n{}",
                    child_stderr()
                );
            }
        }
    }
    child.kill().unwrap_or_else(|error| panic!("run {run}: killing the child: {error}"));
    let status = child.wait().unwrap_or_else(|error| panic!("run {run}: waiting for the child: {error}"));
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "run {run}: the child died of something else ({status}); stderr:\n{}",
        child_stderr()
    );
    reader.join().unwrap_or_else(|_| panic!("run {run}: the stdout reader panicked"));
    // Acknowledgements printed between the one we waited for and the kill count too.
    for line in receiver.try_iter() {
        handle(&line, &mut acks, &mut appends);
    }
    acks
}

#[test]
fn acknowledged_events_survive_sigkill() {
    // Proves that with Durability::Always no acknowledged event is lost or changed by SIGKILL at any moment.
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let run = std::env::var(RUN_ENV).ok().and_then(|run| run.parse().ok());
        run_child(Path::new(&dir), run.unwrap_or_else(|| panic!("{RUN_ENV} must be set for the child")));
    }
    let cycles = match std::env::var(CYCLES_ENV) {
        Ok(value) => value.parse().unwrap_or_else(|error| panic!("{CYCLES_ENV}={value}: {error}")),
        Err(_) => DEFAULT_CYCLES,
    };
    let exe = std::env::current_exe().expect("the test binary's path");
    let data = tempfile::tempdir().expect("a temporary data directory");
    let scratch = tempfile::tempdir().expect("a temporary directory for the children's stderr");
    let started = Instant::now();
    let mut model = Model::default();
    for cycle in 0..cycles {
        let mut rng = Rng::new(cycle);
        // One cycle in ten kills the child while it opens (recovers) the log.
        let target = if rng.below(10) == 0 { 0 } else { 1 + rng.below(300) as usize };
        if rng.below(8) == 0 {
            // Sometimes the child must recover without any checkpoint file.
            for entry in std::fs::read_dir(data.path()).expect("the data directory").flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "index.ckpt" || name.ends_with(".delta") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let acks = run_and_kill(&exe, data.path(), scratch.path(), cycle, target);
        model.acked.extend(acks);
        model.check(data.path(), cycle);
    }
    let segments = std::fs::read_dir(data.path().join("segments")).map(|d| d.count()).unwrap_or(0);
    eprintln!(
        "{cycles} kills in {:?}: {} events acknowledged, {} recovered without an acknowledgement, {} in the log, \
         {segments} segment files",
        started.elapsed(),
        model.acked.len(),
        model.recovered_unacked,
        model.known.len()
    );
    assert!(
        cycles == 0 || model.acked.len() as u64 >= cycles / 2,
        "only {} events were acknowledged in {cycles} cycles",
        model.acked.len()
    );
    assert!(cycles < 20 || segments >= 2, "the log should have rolled to several segments ({segments})");
}
