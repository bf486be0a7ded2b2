//! Recovery of a damaged data directory: torn tails (of the log and of `snapshots.dat`), bit
//! flips, damaged checkpoints, foreign files and a second open.
//!
//! Every test builds a small log (8 KiB segments, so a few dozen events span several segment
//! files), closes it, damages a copy of its directory the way a crash or a bad disk would, and
//! reopens the copy. Everything about event `n` (id, type, aggregate, metadata, payload) derives
//! from `n`, so a read-back can be compared byte for byte with what was appended.
//!
//! On-disk facts used here (see `core/src/store/segment.rs` and `record.rs`): segment files are
//! `segments/<first position, 20 digits>.seg`; the records start after a 64-byte header; a frame is
//! `body_len u32 LE | crc32c u32 | body`, and a zero `body_len` ends the data.

use std::fs;
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

use herald_core::event::{EventDraft, EventKind, Uuid};
use herald_core::store::{AppendOutcome, Appended, Durability, EventStore, Log, ReadQuery, StoreConfig, StoreError};
use tempfile::TempDir;

const SEGMENT_BYTES: usize = 8 * 1024;
const SEGMENT_HEADER_BYTES: usize = 64;
const FRAME_HEADER_BYTES: usize = 8;
const ID_BASE: u128 = 0x4845_5241_4c44_0000_0000_0000_0000_0000;

/// Returns `Err(message)` from the enclosing function unless the condition holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

fn config() -> StoreConfig {
    StoreConfig { segment_bytes: SEGMENT_BYTES, durability: Durability::Never, ..StoreConfig::default() }
}

fn id_of(n: u64) -> Uuid {
    Uuid::from_u128(ID_BASE + u128::from(n))
}

fn number_of(id: Uuid) -> Option<u64> {
    id.as_u128().checked_sub(ID_BASE).and_then(|n| u64::try_from(n).ok())
}

fn aggregate_of(n: u64) -> String {
    format!("account-{}", n % 4)
}

/// Event `n`: its size varies from a few dozen bytes to about 1.7 KB.
fn draft(n: u64) -> EventDraft {
    const PAD: [usize; 10] = [37, 410, 5, 1210, 260, 96, 730, 18, 1550, 333];
    let pad_len = PAD[(n % 10) as usize] + n as usize % 7;
    let pad: String = (0..pad_len).map(|i| char::from(b'a' + ((n as usize + i) % 26) as u8)).collect();
    let event_type = ["Opened", "Deposited", "Withdrawn"][(n % 3) as usize];
    let mut draft =
        EventDraft::new(event_type, aggregate_of(n), format!(r#"{{"n":{n},"pad":"{pad}"}}"#)).with_id(id_of(n));
    if n.is_multiple_of(2) {
        draft = draft.with_metadata("source", format!("test-{n}"));
    }
    draft
}

fn append(log: &Log, numbers: &[u64]) -> Vec<Appended> {
    let drafts: Vec<EventDraft> = numbers.iter().map(|&n| draft(n)).collect();
    match log.append(&drafts) {
        Ok(AppendOutcome::Appended(appended)) => appended,
        other => panic!("appending events {numbers:?}: {other:?}"),
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config()).unwrap_or_else(|error| panic!("opening {}: {error}", dir.display()))
}

fn open_error(dir: &Path) -> StoreError {
    match Log::open(dir, config()) {
        Ok(log) => panic!("opening {} succeeded, expected an error; bounds {:?}", dir.display(), log.bounds()),
        Err(error) => error,
    }
}

fn close(log: Log) {
    log.close().unwrap_or_else(|error| panic!("closing the log: {error}"));
}

/// Appends events `0..count` one at a time into a new log in `dir` and closes it.
fn build_log(dir: &Path, count: u64) -> Vec<Appended> {
    let log = open(dir);
    let appended: Vec<Appended> = (0..count).flat_map(|n| append(&log, &[n])).collect();
    close(log);
    assert_acknowledged_in_order(&appended);
    appended
}

/// Checks acknowledgements against the model: positions 0, 1, 2… and per-aggregate versions 1, 2, 3….
fn assert_acknowledged_in_order(appended: &[Appended]) {
    for (i, a) in appended.iter().enumerate() {
        let n = number_of(a.id).unwrap_or_else(|| panic!("acknowledged an unknown id {}", a.id));
        let wanted = Appended { id: a.id, position: i as u64, aggregate_version: next_version(&appended[..i], n) };
        assert_eq!(*a, wanted, "acknowledgement {i}");
    }
}

/// Checks that the log holds exactly `expected` (positions `0..len`), each event byte for byte.
fn check_events(log: &Log, expected: &[Appended]) -> Result<(), String> {
    let bounds = log.bounds();
    ensure!(bounds == (0, expected.len() as u64), "bounds {bounds:?}, expected (0, {})", expected.len());
    let mut seen = Vec::new();
    let mut mismatch = None;
    let summary = log
        .read(&ReadQuery::default(), &mut |view| {
            let problem = match number_of(view.id) {
                None => Some(format!("unknown id {}", view.id)),
                Some(n) => {
                    let draft = draft(n);
                    let metadata: Vec<(&str, &str)> = view.metadata().collect();
                    let wanted: Vec<(&str, &str)> =
                        draft.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    (view.kind != EventKind::Domain
                        || view.event_type != draft.event_type
                        || view.aggregate_id != draft.aggregate_id
                        || view.data != &draft.data[..]
                        || metadata != wanted)
                        .then(|| format!("event {n} does not read back as written: {}", view.json()))
                }
            };
            if let Some(problem) = problem {
                mismatch = Some(format!("position {}: {problem}", view.position));
                return ControlFlow::Break(());
            }
            seen.push(Appended { id: view.id, position: view.position, aggregate_version: view.aggregate_version });
            ControlFlow::Continue(())
        })
        .map_err(|error| format!("reading the log: {error}"))?;
    if let Some(mismatch) = mismatch {
        return Err(mismatch);
    }
    ensure!(summary.count == expected.len(), "read {} events, expected {}", summary.count, expected.len());
    for (got, want) in seen.iter().zip(expected) {
        ensure!(got == want, "read {got:?}, expected {want:?}");
    }
    for n in 0..4 {
        let aggregate = aggregate_of(n);
        let versions =
            expected.iter().filter(|a| number_of(a.id).map(aggregate_of).as_ref() == Some(&aggregate)).count();
        let current = log.stream_version(&aggregate);
        ensure!(current == versions as u64, "stream {aggregate} is at version {current}, expected {versions}");
    }
    let report = log.verify().map_err(|error| format!("verify: {error}"))?;
    ensure!(
        report.records == expected.len() as u64 && report.next_position == expected.len() as u64,
        "verify walked {report:?}, expected {} records",
        expected.len()
    );
    Ok(())
}

fn assert_events(log: &Log, expected: &[Appended]) {
    if let Err(problem) = check_events(log, expected) {
        panic!("{problem}");
    }
}

/// The segment files of a data directory, in position order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let segments = dir.join("segments");
    let mut files: Vec<PathBuf> = fs::read_dir(&segments)
        .unwrap_or_else(|error| panic!("listing {}: {error}", segments.display()))
        .map(|entry| entry.unwrap_or_else(|error| panic!("listing {}: {error}", segments.display())).path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no segment file in {}", segments.display());
    files
}

/// The first position a segment file holds, from its name.
fn first_position(segment: &Path) -> u64 {
    let name = segment.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    name.strip_suffix(".seg")
        .filter(|digits| digits.len() == 20)
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("{} is not named <20 digits>.seg", segment.display()))
}

/// The byte ranges of the frames in a segment file (header and body, without the padding), walked
/// from the header on.
fn frames(segment: &Path) -> Vec<Range<usize>> {
    let bytes = fs::read(segment).unwrap_or_else(|error| panic!("reading {}: {error}", segment.display()));
    let mut frames = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + FRAME_HEADER_BYTES <= bytes.len() {
        let body_len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if body_len == 0 {
            break;
        }
        let end = at + FRAME_HEADER_BYTES + body_len;
        assert!(end <= bytes.len(), "frame at {at} of {} runs past the file", segment.display());
        frames.push(at..end);
        // Frames start 8-aligned; the padding after a body is not part of its range.
        at = end.div_ceil(8) * 8;
    }
    frames
}

/// Where each of a log's `count` records lies: (segment file name, frame range), by position.
fn record_locations(dir: &Path, count: u64) -> Vec<(PathBuf, Range<usize>)> {
    let mut locations = Vec::new();
    for segment in segment_files(dir) {
        assert_eq!(first_position(&segment), locations.len() as u64, "segment {} starts elsewhere", segment.display());
        let name = PathBuf::from(segment.file_name().unwrap_or_default());
        locations.extend(frames(&segment).into_iter().map(|frame| (name.clone(), frame)));
    }
    assert_eq!(locations.len() as u64, count, "records found in the segment files of {}", dir.display());
    locations
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|error| panic!("creating {}: {error}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|error| panic!("listing {}: {error}", from.display())) {
        let entry = entry.unwrap_or_else(|error| panic!("listing {}: {error}", from.display()));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|error| panic!("copying {} to {}: {error}", entry.path().display(), target.display()));
        }
    }
}

/// A fresh copy of the data directory `original`.
fn copy_of(original: &Path) -> TempDir {
    let copy = tempfile::tempdir().expect("a temporary directory");
    copy_dir(original, copy.path());
    copy
}

fn flip_bit(file: &Path, offset: usize, bit: u8) {
    let mut bytes = fs::read(file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    assert!(offset < bytes.len(), "offset {offset} is past the end of {}", file.display());
    bytes[offset] ^= 1 << bit;
    fs::write(file, bytes).unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
}

fn truncate(file: &Path, length: usize) {
    let handle = fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap_or_else(|error| panic!("opening {}: {error}", file.display()));
    handle.set_len(length as u64).unwrap_or_else(|error| panic!("truncating {}: {error}", file.display()));
}

fn remove_checkpoint(dir: &Path) {
    let path = dir.join("index.ckpt");
    fs::remove_file(&path).unwrap_or_else(|error| panic!("removing {}: {error}", path.display()));
}

/// The aggregate version event `n` gets when appended after `earlier`.
fn next_version(earlier: &[Appended], n: u64) -> u64 {
    let aggregate = aggregate_of(n);
    1 + earlier.iter().filter(|a| number_of(a.id).map(aggregate_of).as_ref() == Some(&aggregate)).count() as u64
}

/// The event appended after recovery to check the log takes appends again (number 500, never
/// appended before), and the acknowledgement it must get after `intact`.
fn redo_after(intact: &[Appended]) -> (u64, [Appended; 1]) {
    let extra = 500;
    (
        extra,
        [Appended { id: id_of(extra), position: intact.len() as u64, aggregate_version: next_version(intact, extra) }],
    )
}

/// Where a recovered log's records must end: the last segment (relative to the data directory)
/// and the offset after the last intact record. Recovery zeroes everything after it.
struct Tail {
    segment: PathBuf,
    end: usize,
}

/// Reopens a damaged copy that should hold exactly `intact`, checks the torn bytes were zeroed,
/// then appends `redo` (which must land right after `intact`, as `redo_expected`) and checks that
/// everything survives another reopen.
fn recover_and_redo(
    dir: &Path,
    intact: &[Appended],
    tail: &Tail,
    redo: &[u64],
    redo_expected: &[Appended],
) -> Result<(), String> {
    let log = Log::open(dir, config()).map_err(|error| format!("open: {error}"))?;
    check_events(&log, intact).map_err(|problem| format!("after reopening: {problem}"))?;
    let file = dir.join(&tail.segment);
    let bytes = fs::read(&file).map_err(|error| format!("reading {}: {error}", file.display()))?;
    ensure!(bytes.len() == SEGMENT_BYTES, "{} is {} bytes, not its capacity", file.display(), bytes.len());
    let dirty = bytes[tail.end..].iter().position(|&b| b != 0).map(|at| at + tail.end);
    ensure!(
        dirty.is_none(),
        "{} keeps torn bytes after the recovered end {}: byte {dirty:?}",
        file.display(),
        tail.end
    );
    let drafts: Vec<EventDraft> = redo.iter().map(|&n| draft(n)).collect();
    let appended = log.append(&drafts).map_err(|error| format!("append after recovery: {error}"))?;
    ensure!(
        appended == AppendOutcome::Appended(redo_expected.to_vec()),
        "append after recovery gave {appended:?}, expected {redo_expected:?}"
    );
    log.close().map_err(|error| format!("close: {error}"))?;
    let log = Log::open(dir, config()).map_err(|error| format!("second open: {error}"))?;
    let all: Vec<Appended> = intact.iter().chain(redo_expected).copied().collect();
    check_events(&log, &all).map_err(|problem| format!("after the second reopen: {problem}"))?;
    log.close().map_err(|error| format!("second close: {error}"))
}

/// The first few failure lines of a sweep, for its report.
fn first_lines(failures: &[String]) -> String {
    failures.iter().take(6).cloned().collect::<Vec<_>>().join("\n")
}

/// Cuts the last segment of a copy of `original` at each offset and checks recovery to `intact`
/// (whose last record ends at `end`), collecting the failures so a report shows every offset that
/// does not recover.
fn check_cuts(original: &Path, cuts: &[usize], keep_checkpoint: bool, intact: &[Appended], end: usize) {
    let last = segment_files(original).pop().unwrap_or_default();
    let tail = Tail { segment: PathBuf::from("segments").join(last.file_name().unwrap_or_default()), end };
    let (extra, redo) = redo_after(intact);
    let mut failures = Vec::new();
    for &cut in cuts {
        let copy = copy_of(original);
        truncate(&copy.path().join(&tail.segment), cut);
        if !keep_checkpoint {
            remove_checkpoint(copy.path());
        }
        if let Err(problem) = recover_and_redo(copy.path(), intact, &tail, &[extra], &redo) {
            failures.push(format!("cut at byte {cut}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cuts of {} (checkpoint kept: {keep_checkpoint}) did not recover to the {} earlier events; first \
         failures:\n{}",
        failures.len(),
        cuts.len(),
        tail.segment.display(),
        intact.len(),
        first_lines(&failures)
    );
}

#[test]
fn a_torn_last_record_is_truncated_at_every_cut() {
    // Proves that cutting the last segment anywhere inside its last record loses that record only.
    let original = tempfile::tempdir().expect("a temporary directory");
    let count = 20;
    let appended = build_log(original.path(), count);
    let locations = record_locations(original.path(), count);
    assert!(segment_files(original.path()).len() >= 2, "the log should span several segments");
    let (_, last) = &locations[count as usize - 1];
    let cuts: Vec<usize> = last.clone().collect();
    check_cuts(original.path(), &cuts, false, &appended[..count as usize - 1], last.start);
}

#[test]
fn a_torn_last_record_is_truncated_despite_a_stale_checkpoint() {
    // Proves that a checkpoint covering the torn record is detected as stale and recovery still truncates.
    let original = tempfile::tempdir().expect("a temporary directory");
    let count = 20;
    let appended = build_log(original.path(), count);
    assert!(original.path().join("index.ckpt").exists(), "close writes a checkpoint");
    let locations = record_locations(original.path(), count);
    let (_, last) = &locations[count as usize - 1];
    let cuts =
        [last.start, last.start + 1, last.start + 3, last.start + 4, last.start + 8, last.start + 60, last.end - 1];
    check_cuts(original.path(), &cuts, true, &appended[..count as usize - 1], last.start);
}

/// A log of three segments or more, seen as if its last segment's records never reached the
/// disk.
struct FreshSegmentLog {
    /// The records before the last segment.
    records: Vec<Appended>,
    /// The segment before the last and the last, relative to the data directory.
    sealed: PathBuf,
    last: PathBuf,
    /// The frame of the sealed segment's last record.
    torn: Range<usize>,
}

fn log_ending_in_a_fresh_segment(dir: &Path) -> FreshSegmentLog {
    let appended = build_log(dir, 60);
    let files = segment_files(dir);
    assert!(files.len() >= 3, "the log should span three segments or more");
    let relative = |file: &Path| PathBuf::from("segments").join(file.file_name().unwrap_or_default());
    let (sealed, last) = (&files[files.len() - 2], &files[files.len() - 1]);
    FreshSegmentLog {
        records: appended[..first_position(last) as usize].to_vec(),
        sealed: relative(sealed),
        last: relative(last),
        torn: frames(sealed).pop().expect("the sealed segment holds records"),
    }
}

/// Erases every record of a segment file, keeping its header: a segment whose records never
/// reached the disk.
fn erase_records(segment: &Path) {
    let mut bytes = fs::read(segment).unwrap_or_else(|error| panic!("reading {}: {error}", segment.display()));
    bytes[SEGMENT_HEADER_BYTES..].fill(0);
    fs::write(segment, bytes).unwrap_or_else(|error| panic!("writing {}: {error}", segment.display()));
}

#[test]
fn a_torn_tail_across_a_roll_is_truncated_and_the_empty_segment_after_it_removed() {
    // A crash right after a roll, before the sealed segment's tail reached the disk, leaves that
    // segment torn and the new one without a record. Proves the torn record goes, the empty
    // segment file goes, and appends continue in the sealed segment, for every cut.
    let original = tempfile::tempdir().expect("a temporary directory");
    let FreshSegmentLog { records, sealed: sealed_name, last: last_name, torn } =
        log_ending_in_a_fresh_segment(original.path());
    let intact = &records[..records.len() - 1];
    let (extra, redo) = redo_after(intact);
    let tail = Tail { segment: sealed_name.clone(), end: torn.start };
    let mut failures = Vec::new();
    for cut in torn.clone() {
        let copy = copy_of(original.path());
        erase_records(&copy.path().join(&last_name));
        truncate(&copy.path().join(&sealed_name), cut);
        remove_checkpoint(copy.path());
        if let Err(problem) = recover_and_redo(copy.path(), intact, &tail, &[extra], &redo) {
            failures.push(format!("cut at byte {cut}: {problem}"));
        } else if copy.path().join(&last_name).exists() {
            failures.push(format!("cut at byte {cut}: the empty segment {} is still there", last_name.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cuts failed:\n{}", failures.len(), torn.len(), first_lines(&failures));

    // Whole: nothing is lost and the empty segment stays the last one.
    let copy = copy_of(original.path());
    erase_records(&copy.path().join(&last_name));
    let log = open(copy.path());
    assert_events(&log, &records);
    close(log);
    assert!(copy.path().join(&last_name).exists());
}

#[test]
fn a_torn_sealed_segment_followed_by_records_is_still_corruption() {
    // Proves the exception above covers a segment without a record only: a tear with records
    // after it is reported at the torn record, and nothing is removed.
    let original = tempfile::tempdir().expect("a temporary directory");
    let FreshSegmentLog { records, sealed: sealed_name, last: last_name, torn } =
        log_ending_in_a_fresh_segment(original.path());
    let copy = copy_of(original.path());
    truncate(&copy.path().join(&sealed_name), torn.start + 4);
    remove_checkpoint(copy.path());
    let error = open_error(copy.path());
    let position = records.len() as u64 - 1;
    assert!(
        matches!(&error, StoreError::Corruption { file, position: Some(at), .. }
            if file.ends_with(&sealed_name) && *at == position),
        "expected corruption in {} at position {position}, got {error}",
        sealed_name.display()
    );
    assert!(copy.path().join(&last_name).exists(), "a segment with records is never removed");
}

/// A log of 16 single events, then a batch of three as the last write, all in its last segment.
struct BatchLog {
    dir: TempDir,
    before: Vec<Appended>,
    batch: [u64; 3],
    batch_appended: Vec<Appended>,
    /// The last segment (relative to the data directory) and the batch's three frames in it.
    segment: PathBuf,
    frames: Vec<Range<usize>>,
}

fn build_batch_log() -> BatchLog {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let count = 16;
    let before = build_log(dir.path(), count);
    assert!(segment_files(dir.path()).len() >= 2, "the log should span several segments");
    let batch = [100, 101, 105];
    let log = open(dir.path());
    let batch_appended = append(&log, &batch);
    close(log);
    let locations = record_locations(dir.path(), count + 3);
    let (segment, _) = &locations[count as usize];
    let last = segment_files(dir.path()).pop().unwrap_or_default();
    assert_eq!(last.file_name(), Some(segment.as_os_str()), "the batch is in the last segment");
    let in_batch = &locations[count as usize..];
    assert!(in_batch.iter().all(|(s, _)| s == segment), "a batch lies in one segment: {in_batch:?}");
    let frames = in_batch.iter().map(|(_, frame)| frame.clone()).collect();
    assert_acknowledged_in_order(&before.iter().chain(&batch_appended).copied().collect::<Vec<_>>());
    let segment = PathBuf::from("segments").join(segment);
    BatchLog { dir, before, batch, batch_appended, segment, frames }
}

#[test]
fn a_torn_batch_disappears_whole() {
    // Proves that a batch whose third record is torn is dropped entirely, and its ids can be appended again.
    let log = build_batch_log();
    let tail = Tail { segment: log.segment.clone(), end: log.frames[0].start };
    let mut failures = Vec::new();
    for cut in log.frames[2].clone() {
        let copy = copy_of(log.dir.path());
        truncate(&copy.path().join(&log.segment), cut);
        remove_checkpoint(copy.path());
        if let Err(problem) = recover_and_redo(copy.path(), &log.before, &tail, &log.batch, &log.batch_appended) {
            failures.push(format!("cut at byte {cut}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cuts inside the batch's third record did not recover to the {} events before it; first \
         failures:\n{}",
        failures.len(),
        log.frames[2].len(),
        log.before.len(),
        first_lines(&failures)
    );
}

/// A disk writes whole 512-byte sectors; a power loss during an fsync may leave any of them
/// unwritten, and an unwritten sector of a (zero-filled or preallocated) segment reads as zeros.
const SECTOR_BYTES: usize = 512;

/// Zeroes the part of `region` that lies in each of the chosen sectors: sector `i` of `sectors`
/// is chosen when bit `i` of `lost` is set.
fn lose_sectors(file: &Path, region: &Range<usize>, sectors: &[Range<usize>], lost: u32) {
    let mut bytes = fs::read(file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    for (i, sector) in sectors.iter().enumerate() {
        if lost & (1 << i) != 0 {
            bytes[sector.start.max(region.start)..sector.end.min(region.end)].fill(0);
        }
    }
    fs::write(file, bytes).unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
}

/// The sectors `region` overlaps.
fn sectors_of(region: &Range<usize>) -> Vec<Range<usize>> {
    let first = region.start / SECTOR_BYTES;
    let last = (region.end - 1) / SECTOR_BYTES;
    (first..=last).map(|sector| sector * SECTOR_BYTES..(sector + 1) * SECTOR_BYTES).collect()
}

/// Recovers copies of `original` whose `region` of the last segment lost each nonempty set of
/// its sectors; every one must hold exactly `intact` afterwards. Returns how many sets it tried.
fn check_lost_sectors(original: &Path, region: &Range<usize>, intact: &[Appended], redo: (&[u64], &[Appended])) -> u32 {
    let last = segment_files(original).pop().unwrap_or_default();
    let segment = PathBuf::from("segments").join(last.file_name().unwrap_or_default());
    let tail = Tail { segment: segment.clone(), end: region.start };
    let sectors = sectors_of(region);
    let sets = (1u32 << sectors.len()) - 1;
    let mut failures = Vec::new();
    for lost in 1..=sets {
        let copy = copy_of(original);
        lose_sectors(&copy.path().join(&segment), region, &sectors, lost);
        remove_checkpoint(copy.path());
        if let Err(problem) = recover_and_redo(copy.path(), intact, &tail, redo.0, redo.1) {
            failures.push(format!("sectors {lost:#b} of {sectors:?} lost: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sets} sets of lost sectors did not recover to the {} earlier events; first failures:\n{}",
        failures.len(),
        intact.len(),
        first_lines(&failures)
    );
    sets
}

#[test]
fn sectors_a_power_loss_left_unwritten_in_the_last_write_are_a_torn_tail() {
    // Proves that a torn write in a preallocated file (the length reached the disk, a later sector
    // of the record did not, so the record is complete by its length but zero in places) is cut
    // off as a torn tail, for every set of lost sectors, not reported as corruption; while a
    // flipped bit in that same last record still is corruption.
    let original = tempfile::tempdir().expect("a temporary directory");
    // Event 18 is the largest of `draft` (about 1.7 KB): it spans four or five sectors.
    let count = 19;
    let appended = build_log(original.path(), count);
    let locations = record_locations(original.path(), count);
    let (last_segment, frame) = locations[count as usize - 1].clone();
    assert!(sectors_of(&frame).len() >= 4, "the last record spans several sectors: {frame:?}");
    let intact = &appended[..count as usize - 1];
    let (extra, redo) = redo_after(intact);
    let sets = check_lost_sectors(original.path(), &frame, intact, (&[extra], &redo));
    assert!(sets >= 15);

    // Its length's bits too: a longer length stretches the frame over the zeros after the log.
    let length_flips = (0..32).map(|bit| (frame.start + bit / 8, (bit % 8) as u8));
    for (offset, bit) in body_flips(&frame).into_iter().chain(length_flips) {
        let copy = copy_of(original.path());
        remove_checkpoint(copy.path());
        let file = copy.path().join("segments").join(&last_segment);
        flip_bit(&file, offset, bit);
        let error = open_error(copy.path());
        let what = format!("bit {bit} of byte {offset} of the last record flipped");
        assert_corruption_at(&error, &file, count - 1, &what);
    }

    // A batch as the last write: it goes whole, whichever of its sectors were lost.
    let log = build_batch_log();
    let region = log.frames[0].start..log.frames[2].end;
    check_lost_sectors(log.dir.path(), &region, &log.before, (&log.batch, &log.batch_appended));
}

#[test]
fn records_whose_length_was_never_stored_are_dropped_with_their_batch() {
    // Proves that a batch the writer did not finish (a record still without its length) is dropped whole.
    // The writer stores a record's length last, so this is what a crash in the middle of a batch leaves;
    // the unpublished records' other bytes stay behind, and recovery must zero them.
    let log = build_batch_log();
    let tail = Tail { segment: log.segment.clone(), end: log.frames[0].start };
    let all: Vec<Appended> = log.before.iter().chain(&log.batch_appended).copied().collect();
    for unpublished in [&[2][..], &[1, 2], &[0, 1, 2]] {
        for keep_checkpoint in [false, true] {
            let copy = copy_of(log.dir.path());
            let file = copy.path().join(&log.segment);
            let mut bytes = fs::read(&file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
            for &record in unpublished {
                bytes[log.frames[record].start..log.frames[record].start + 4].fill(0);
            }
            fs::write(&file, bytes).unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
            if !keep_checkpoint {
                remove_checkpoint(copy.path());
            }
            if let Err(problem) = recover_and_redo(copy.path(), &log.before, &tail, &log.batch, &log.batch_appended) {
                panic!(
                    "batch records {unpublished:?} without a length (checkpoint kept: {keep_checkpoint}): {problem}"
                );
            }
        }
    }
    // The original, untouched, still holds the whole batch.
    let reopened = open(log.dir.path());
    assert_events(&reopened, &all);
    close(reopened);
}

/// Byte offsets inside a frame to flip a bit at: the checksum, the position, the id, the kind,
/// the middle and the last byte of the body.
fn body_flips(frame: &Range<usize>) -> Vec<(usize, u8)> {
    let body = frame.start + FRAME_HEADER_BYTES;
    vec![
        (frame.start + 5, 3),
        (body, 0),
        (body + 30, 7),
        (body + 72, 1),
        (frame.start + frame.len() / 2, 4),
        (frame.end - 1, 6),
    ]
}

/// A record in the middle of the first segment and one in the middle of the last segment.
fn middle_records(locations: &[(PathBuf, Range<usize>)]) -> Vec<usize> {
    let first = &locations[0].0;
    let in_first = locations.iter().filter(|(segment, _)| segment == first).count();
    let last = &locations[locations.len() - 1].0;
    let in_last = locations.iter().filter(|(segment, _)| segment == last).count();
    assert!(
        first != last && in_first >= 3 && in_last >= 3,
        "need two segments of three records or more: {locations:?}"
    );
    vec![in_first / 2, locations.len() - 1 - in_last / 2]
}

fn assert_corruption_at(error: &StoreError, file: &Path, position: u64, what: &str) {
    match error {
        StoreError::Corruption { file: named, position: at, .. } if named == file && *at == Some(position) => {}
        other => panic!("{what}: expected corruption in {} at position {position}, got {other:?}", file.display()),
    }
}

#[test]
fn a_flipped_bit_in_a_record_fails_open_without_a_checkpoint() {
    // Proves that without a checkpoint, open reports a damaged record by segment file and position.
    let original = tempfile::tempdir().expect("a temporary directory");
    let count = 30;
    build_log(original.path(), count);
    remove_checkpoint(original.path());
    let locations = record_locations(original.path(), count);
    for position in middle_records(&locations) {
        let (segment, frame) = &locations[position];
        for (offset, bit) in body_flips(frame) {
            let copy = copy_of(original.path());
            let file = copy.path().join("segments").join(segment);
            flip_bit(&file, offset, bit);
            let error = open_error(copy.path());
            assert_corruption_at(&error, &file, position as u64, &format!("bit {bit} of byte {offset} flipped"));
        }
    }
}

#[test]
fn a_flipped_bit_in_a_record_is_found_by_verify_with_a_checkpoint() {
    // Proves that when the checkpoint lets open skip the scan, verify and reads report the damaged record.
    let original = tempfile::tempdir().expect("a temporary directory");
    let count = 30;
    let appended = build_log(original.path(), count);
    let locations = record_locations(original.path(), count);
    for position in middle_records(&locations) {
        let (segment, frame) = &locations[position];
        for (offset, bit) in body_flips(frame) {
            let what = format!("record {position}, bit {bit} of byte {offset} flipped");
            let copy = copy_of(original.path());
            let file = copy.path().join("segments").join(segment);
            flip_bit(&file, offset, bit);
            let log = Log::open(copy.path(), config()).unwrap_or_else(|error| panic!("{what}: open: {error}"));
            assert_eq!(log.bounds(), (0, count), "{what}: the checkpoint still covers every record");
            match log.verify() {
                Ok(report) => panic!("{what}: verify passed: {report:?}"),
                Err(error) => assert_corruption_at(&error, &file, position as u64, &what),
            }
            // A read stops at the damaged record with the same error, after the intact ones.
            let mut read = Vec::new();
            let error = match log.read(&ReadQuery::default(), &mut |view| {
                read.push(view.id);
                ControlFlow::Continue(())
            }) {
                Ok(summary) => panic!("{what}: the read passed: {summary:?}"),
                Err(error) => error,
            };
            assert_corruption_at(&error, &file, position as u64, &format!("{what}, read"));
            let before: Vec<Uuid> = appended[..position].iter().map(|a| a.id).collect();
            assert_eq!(read, before, "{what}: the events before the damaged one read back");
            close(log);
        }
    }
}

#[test]
fn a_flipped_bit_in_a_record_length_is_reported_not_truncated() {
    // Proves that a damaged length field of a record followed by intact records is reported, never cut off.
    let original = tempfile::tempdir().expect("a temporary directory");
    let count = 30;
    let appended = build_log(original.path(), count);
    remove_checkpoint(original.path());
    let locations = record_locations(original.path(), count);
    let mut failures = Vec::new();
    for position in middle_records(&locations) {
        let (segment, frame) = &locations[position];
        for bit in 0..32 {
            let copy = copy_of(original.path());
            let file = copy.path().join("segments").join(segment);
            flip_bit(&file, frame.start + bit / 8, (bit % 8) as u8);
            let what = format!("record {position} in {}, bit {bit} of body_len flipped", segment.display());
            match Log::open(copy.path(), config()) {
                Err(StoreError::Corruption { position: Some(at), .. }) if at == position as u64 => {}
                Err(other) => failures.push(format!("{what}: expected corruption at position {position}, got {other}")),
                Ok(log) => {
                    let bounds = log.bounds();
                    drop(log);
                    let left = frames(&file).len();
                    failures.push(format!(
                        "{what}: open succeeded with bounds {bounds:?} of {} acknowledged events; {} now holds {left} \
                         records",
                        appended.len(),
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 64 length flips were not reported; first ones:\n{}",
        failures.len(),
        first_lines(&failures)
    );
}

#[test]
fn a_flipped_bit_in_a_segment_header_fails_open_naming_the_file() {
    // Proves that a damaged segment header (first or last segment) makes open fail naming that file.
    let original = tempfile::tempdir().expect("a temporary directory");
    build_log(original.path(), 30);
    let segments = segment_files(original.path());
    let chosen = [&segments[0], &segments[segments.len() - 1]];
    for segment in chosen {
        let name = segment.file_name().unwrap_or_default();
        for (offset, bit) in [(0, 1), (9, 0), (17, 5), (26, 2), (40, 7), (61, 3)] {
            for keep_checkpoint in [false, true] {
                let copy = copy_of(original.path());
                if !keep_checkpoint {
                    remove_checkpoint(copy.path());
                }
                let file = copy.path().join("segments").join(name);
                flip_bit(&file, offset, bit);
                match open_error(copy.path()) {
                    StoreError::Corruption { file: named, .. } if named == file => {}
                    other => panic!(
                        "header byte {offset} of {} flipped (checkpoint kept: {keep_checkpoint}): expected \
                         corruption naming it, got {other:?}",
                        file.display()
                    ),
                }
            }
        }
    }
}

#[test]
fn a_last_segment_whose_creation_never_reached_the_disk_recovers_its_records() {
    // A roll syncs the new segment's header and name after it (off the append path), so an OS
    // crash can leave the last segment with an all-zero header. Open writes the header back and
    // keeps every record that did reach the disk; a sealed segment's zero header stays an error.
    let original = tempfile::tempdir().expect("a temporary directory");
    let appended = build_log(original.path(), 30);
    let segments = segment_files(original.path());
    assert!(segments.len() >= 3, "the log spans several segments");
    for keep_checkpoint in [false, true] {
        let copy = copy_of(original.path());
        if !keep_checkpoint {
            remove_checkpoint(copy.path());
        }
        let last = copy.path().join("segments").join(segments[segments.len() - 1].file_name().unwrap_or_default());
        let mut bytes = fs::read(&last).expect("read the last segment");
        bytes[..SEGMENT_HEADER_BYTES].fill(0);
        fs::write(&last, &bytes).expect("write the last segment");
        let log = open(copy.path());
        assert_events(&log, &appended);
        let more = append(&log, &[30, 31]);
        assert_eq!(more[0].position, 30);
        close(log);
        assert_eq!(fs::read(&last).expect("read the last segment")[..8], *b"HERALDSG", "the header is back");

        let sealed = copy.path().join("segments").join(segments[0].file_name().unwrap_or_default());
        let mut bytes = fs::read(&sealed).expect("read the first segment");
        bytes[..SEGMENT_HEADER_BYTES].fill(0);
        fs::write(&sealed, &bytes).expect("write the first segment");
        match open_error(copy.path()) {
            StoreError::Corruption { file, .. } if file == sealed => {}
            other => panic!("a sealed segment without a header: expected corruption naming it, got {other:?}"),
        }
    }
}

#[test]
fn foreign_files_are_refused_by_name() {
    // Proves that a stray file in the data directory or in segments/ fails open naming it, and removing it heals.
    let original = tempfile::tempdir().expect("a temporary directory");
    let appended = build_log(original.path(), 5);
    let strays = [
        "notes.txt",
        "index.ckpt.bak",
        "segments/junk.seg",
        "segments/00000000000000000007.seg.old",
        "segments/42.seg",
    ];
    for stray in strays {
        let copy = copy_of(original.path());
        let path = copy.path().join(stray);
        fs::write(&path, b"not Herald's").unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        match open_error(copy.path()) {
            StoreError::ForeignFile { path: named, .. } if named == path => {}
            other => panic!("stray {stray}: expected a foreign file error naming it, got {other:?}"),
        }
        fs::remove_file(&path).unwrap_or_else(|error| panic!("removing {}: {error}", path.display()));
        let log = open(copy.path());
        assert_events(&log, &appended);
        close(log);
    }
}

#[test]
fn leftover_temporary_files_are_removed() {
    // Proves that an unfinished segment or checkpoint a crash left behind is deleted at open, not refused.
    let original = tempfile::tempdir().expect("a temporary directory");
    let appended = build_log(original.path(), 5);
    let leftovers = ["index.ckpt.tmp", "segments/00000000000000000005.seg.tmp"];
    for leftover in leftovers {
        let path = original.path().join(leftover);
        fs::write(&path, b"half written").unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }
    let log = open(original.path());
    assert_events(&log, &appended);
    for leftover in leftovers {
        assert!(!original.path().join(leftover).exists(), "{leftover} is still there");
    }
    close(log);
}

#[test]
fn a_second_open_of_an_open_directory_is_locked() {
    // Proves that the directory lock refuses a second open while the first is open, and only then.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = open(dir.path());
    let appended = append(&log, &[0, 1]);
    match open_error(dir.path()) {
        StoreError::Locked { path } if path == dir.path() => {}
        other => panic!("expected the directory to be locked, got {other:?}"),
    }
    // The refused open did not disturb the open log.
    assert_events(&log, &appended);
    close(log);
    let log = open(dir.path());
    assert_events(&log, &appended);
    close(log);
}

#[test]
fn a_damaged_checkpoint_is_rebuilt_from_the_records() {
    // Proves that a flipped byte anywhere important in index.ckpt makes open rebuild, losing nothing.
    let original = tempfile::tempdir().expect("a temporary directory");
    let count = 30;
    let appended = build_log(original.path(), count);
    let checkpoint_len = fs::metadata(original.path().join("index.ckpt")).map(|m| m.len() as usize).unwrap_or(0);
    assert!(checkpoint_len > 64, "close wrote a checkpoint ({checkpoint_len} bytes)");
    // Magic, format, checksum, payload length, the first payload byte, the middle, the last byte.
    for offset in [0, 8, 12, 16, 32, checkpoint_len / 2, checkpoint_len - 1] {
        let copy = copy_of(original.path());
        let checkpoint = copy.path().join("index.ckpt");
        flip_bit(&checkpoint, offset, 2);
        let log = Log::open(copy.path(), config())
            .unwrap_or_else(|error| panic!("checkpoint byte {offset} flipped: open failed: {error}"));
        if let Err(problem) = check_events(&log, &appended) {
            panic!("checkpoint byte {offset} flipped: {problem}");
        }
        let more = append(&log, &[count]);
        assert_eq!(
            more,
            vec![Appended { id: id_of(count), position: count, aggregate_version: next_version(&appended, count) }],
            "checkpoint byte {offset} flipped: the next append"
        );
        // A duplicate id is still recognized: the id index was rebuilt.
        match log.append(&[draft(3)]) {
            Ok(AppendOutcome::AlreadyAppended(original)) => assert_eq!(original, vec![appended[3]]),
            other => panic!("checkpoint byte {offset} flipped: re-appending event 3 gave {other:?}"),
        }
        close(log);
    }
}

const SNAPSHOT_AGGREGATE: &str = "account-1";

/// A log whose `account-1` stream has snapshots at versions 1, 2 and 3 (state `state(v)`).
fn build_snapshots(dir: &Path) -> Vec<Appended> {
    let log = open(dir);
    let appended: Vec<Appended> = (0..16).flat_map(|n| append(&log, &[n])).collect();
    assert!(log.stream_version(SNAPSHOT_AGGREGATE) >= 3);
    for version in 1..=3 {
        log.save_snapshot(SNAPSHOT_AGGREGATE, version, &snapshot_state(version))
            .unwrap_or_else(|error| panic!("saving snapshot {version}: {error}"));
    }
    close(log);
    appended
}

fn snapshot_state(version: u64) -> Vec<u8> {
    (0..40 + version * 13).map(|i| (i * 31 + version * 7) as u8).collect()
}

/// Byte ranges of the frames of `snapshots.dat` (`frame_len u32` first).
fn snapshot_frames(file: &Path) -> Vec<Range<usize>> {
    let bytes = fs::read(file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        assert!(len >= 40 && at + len <= bytes.len(), "bad frame at {at} of {}", file.display());
        frames.push(at..at + len);
        at += len;
    }
    frames
}

fn check_snapshot(log: &Log, version: u64, what: &str) {
    match log.load_snapshot(SNAPSHOT_AGGREGATE) {
        Ok(Some(snapshot)) => {
            assert_eq!(snapshot.version, version, "{what}: snapshot version");
            assert_eq!(snapshot.aggregate_id, SNAPSHOT_AGGREGATE, "{what}");
            assert_eq!(snapshot.state(), &snapshot_state(version)[..], "{what}: snapshot state");
        }
        other => panic!("{what}: loading the snapshot gave {other:?}"),
    }
}

#[test]
fn a_torn_snapshot_is_dropped_and_the_previous_one_loads() {
    // Proves that cutting snapshots.dat anywhere inside its last frame falls back to the snapshot before it.
    let original = tempfile::tempdir().expect("a temporary directory");
    let appended = build_snapshots(original.path());
    let frames = snapshot_frames(&original.path().join("snapshots.dat"));
    assert_eq!(frames.len(), 3, "three snapshots saved");
    for cut in frames[2].clone() {
        let what = format!("snapshots.dat cut at {cut}");
        let copy = copy_of(original.path());
        let file = copy.path().join("snapshots.dat");
        truncate(&file, cut);
        let log = Log::open(copy.path(), config()).unwrap_or_else(|error| panic!("{what}: open: {error}"));
        check_snapshot(&log, 2, &what);
        assert_events(&log, &appended);
        // A snapshot saved after the cut follows the intact frames and survives a reopen.
        log.save_snapshot(SNAPSHOT_AGGREGATE, 3, &snapshot_state(3))
            .unwrap_or_else(|error| panic!("{what}: saving again: {error}"));
        close(log);
        let log = Log::open(copy.path(), config()).unwrap_or_else(|error| panic!("{what}: second open: {error}"));
        check_snapshot(&log, 3, &format!("{what}, saved again"));
        close(log);
    }
}

#[test]
fn a_flipped_bit_in_a_snapshot_length_is_reported_not_truncated() {
    // Proves that a damaged length of a snapshot frame followed by intact frames is reported, never cut off.
    let original = tempfile::tempdir().expect("a temporary directory");
    build_snapshots(original.path());
    let frames = snapshot_frames(&original.path().join("snapshots.dat"));
    let mut failures = Vec::new();
    for frame in &frames[..2] {
        for bit in 0..32 {
            let copy = copy_of(original.path());
            let file = copy.path().join("snapshots.dat");
            flip_bit(&file, frame.start + bit / 8, (bit % 8) as u8);
            let what = format!("bit {bit} of the length of the frame at {} flipped", frame.start);
            match Log::open(copy.path(), config()) {
                Err(StoreError::Corruption { file: named, .. }) if named == file => {}
                Err(other) => failures.push(format!("{what}: expected corruption naming snapshots.dat, got {other}")),
                Ok(log) => {
                    let loaded = log.load_snapshot(SNAPSHOT_AGGREGATE).map(|s| s.map(|s| s.version));
                    drop(log);
                    let left = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                    failures.push(format!(
                        "{what}: open succeeded, the newest snapshot is now {loaded:?} and snapshots.dat was cut to \
                         {left} bytes"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 64 length flips were not reported; first ones:\n{}",
        failures.len(),
        first_lines(&failures)
    );
}

#[test]
fn a_flipped_bit_in_a_snapshot_frame_is_reported() {
    // Proves that a bit flip in a complete snapshot frame's checked bytes makes open report snapshots.dat.
    let original = tempfile::tempdir().expect("a temporary directory");
    build_snapshots(original.path());
    let frames = snapshot_frames(&original.path().join("snapshots.dat"));
    // Every bit after the length field, in the first and in the last frame.
    for frame in [&frames[0], &frames[2]] {
        for offset in frame.start + 4..frame.end {
            for bit in 0..8 {
                let copy = copy_of(original.path());
                let file = copy.path().join("snapshots.dat");
                flip_bit(&file, offset, bit);
                match open_error(copy.path()) {
                    StoreError::Corruption { file: named, offset: at, .. }
                        if named == file && at == frame.start as u64 => {}
                    other => panic!(
                        "bit {bit} of snapshots.dat byte {offset} flipped: expected corruption naming it at offset \
                         {}, got {other:?}",
                        frame.start
                    ),
                }
            }
        }
    }
}
