//! Model-based property test of the event store: random sequences of appends, reopens, reads and
//! snapshots run against the real [`Log`] (on disk with reopens, and in memory) and against a
//! small in-memory model of the spec, and every outcome and every read must agree.
//!
//! The model implements the spec's rules directly: positions gap-free from 0 over all kinds,
//! `aggregate_version` gap-free per aggregate (domain events only), `expected_version` checked per
//! draft in order with earlier drafts of the batch counted, batches all or nothing, idempotency
//! (checked before expected versions), and snapshots (highest version wins, the last among equals).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::Path;

use herald_core::event::{EventDraft, EventKind, ExpectedVersion, Metadata, Uuid};
use herald_core::store::{
    AppendOutcome, Appended, Durability, EventStore, EventView, Log, ReadQuery, StoreConfig, StoreError,
};
use proptest::prelude::*;

/// Small segments, so that a few dozen events roll over to new segment files.
const SEGMENT_BYTES: usize = 8 * 1024;
/// The segment header (segment.rs); a batch must fit in `SEGMENT_BYTES - SEGMENT_HEADER_BYTES`.
const SEGMENT_HEADER_BYTES: usize = 64;
/// A record's frame header plus the fixed part of its body (record.rs).
const RECORD_FIXED_BYTES: usize = 8 + 96;

const AGGREGATES: [&str; 4] = ["a0", "a1", "a2", "a3"];
const TYPES: [&str; 3] = ["Created", "Renamed", "Closed"];
const METADATA_KEYS: [&str; 2] = ["user_id", "tenant"];
const METADATA_VALUES: [&str; 3] = ["u1", "u2", ""];
/// Fixed event ids, few enough that duplicates happen often.
const ID_POOL: usize = 24;

fn pool_id(i: usize) -> Uuid {
    Uuid::from_u128(0x1d00_0000_0000_4000_8000_0000_0000_0000 + i as u128 + 1)
}

/// Correlation and causation ids.
fn link_id(i: usize) -> Uuid {
    Uuid::from_u128(0xc0de_0000_0000_4000_8000_0000_0000_0000 + i as u128 + 1)
}

fn config() -> StoreConfig {
    StoreConfig { segment_bytes: SEGMENT_BYTES, durability: Durability::Never, ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// How big a draft's payload is.
#[derive(Clone, Copy, Debug)]
enum Size {
    /// A short padding.
    Pad(usize),
    /// Padded so that this draft's frame is `segment limit + delta` bytes: 0 fills a whole
    /// segment exactly, a positive delta does not fit in any segment.
    Fill(i64),
}

/// A draft's expected version.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Fixed(ExpectedVersion),
    /// `Exact(v + delta)` where `v` is the model's version of the stream, counting the earlier
    /// drafts of the batch (so most of these hold, and a few are just off).
    Current(i64),
}

#[derive(Clone, Debug)]
struct DraftSpec {
    kind: EventKind,
    id: Option<usize>,
    event_type: usize,
    /// `None`: no aggregate (non-domain kinds only).
    aggregate: Option<usize>,
    expected: Expect,
    correlation: Option<usize>,
    causation: Option<usize>,
    metadata: Vec<(usize, usize)>,
    size: Size,
}

/// What happens to the index checkpoint while the log is closed.
#[derive(Clone, Copy, Debug)]
enum Meanwhile {
    Nothing,
    /// Delete it: recovery rescans every record.
    Delete,
    /// Put back the one an earlier explicit `checkpoint()` wrote, as after a crash that lost the
    /// later checkpoints: recovery takes what it covers and scans the rest.
    RestoreOlder,
}

/// Which timestamp a read's `since_ns` is.
#[derive(Clone, Copy, Debug)]
enum Since {
    Zero,
    /// The timestamp of the event at this position (modulo the log's length).
    AtEvent(usize),
    /// One nanosecond after it.
    AfterEvent(usize),
    Max,
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<DraftSpec>),
    /// Send an earlier append's drafts again, with the ids the store assigned (an idempotent
    /// retry when it was appended, else whatever the drafts meet now).
    Retry(usize),
    /// Close (drop, or `close()`) and reopen the on-disk log, optionally writing a checkpoint
    /// first, and doing something to the index checkpoint while the log is closed.
    Reopen {
        checkpoint: bool,
        close: bool,
        meanwhile: Meanwhile,
    },
    Read {
        from_position: u64,
        kind: Option<EventKind>,
        event_type: Option<usize>,
        since: Option<Since>,
        limit: Option<usize>,
    },
    ReadStream {
        aggregate: usize,
        from_version: u64,
        limit: Option<usize>,
    },
    SaveSnapshot {
        aggregate: usize,
        version: u64,
    },
    LoadAggregate {
        aggregate: usize,
    },
}

fn kind_strategy() -> impl Strategy<Value = EventKind> {
    prop_oneof![6 => Just(EventKind::Domain), 2 => Just(EventKind::Integration), 2 => Just(EventKind::WebSocket)]
}

fn expected_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        10 => Just(Expect::Fixed(ExpectedVersion::Any)),
        1 => Just(Expect::Fixed(ExpectedVersion::NoStream)),
        1 => (0u64..4).prop_map(|v| Expect::Fixed(ExpectedVersion::Exact(v))),
        10 => prop_oneof![8 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)].prop_map(Expect::Current),
    ]
}

fn size_strategy() -> impl Strategy<Value = Size> {
    prop_oneof![
        30 => (0usize..40).prop_map(Size::Pad),
        10 => (200usize..1500).prop_map(Size::Pad),
        1 => (-2i64..=1).prop_map(Size::Fill),
    ]
}

fn draft_strategy() -> impl Strategy<Value = DraftSpec> {
    (
        kind_strategy(),
        prop::option::weighted(0.3, 0..ID_POOL),
        0..TYPES.len(),
        (0..AGGREGATES.len(), any::<bool>()),
        (expected_strategy(), prop::bool::weighted(0.05)),
        prop::option::weighted(0.2, 0..2usize),
        prop::option::weighted(0.2, 0..2usize),
        prop::collection::vec((0..METADATA_KEYS.len(), 0..METADATA_VALUES.len()), 0..3),
        size_strategy(),
    )
        .prop_map(
            |(
                kind,
                id,
                event_type,
                (aggregate, keep_aggregate),
                (expected, keep_expected),
                correlation,
                causation,
                metadata,
                size,
            )| {
                let domain = kind == EventKind::Domain;
                DraftSpec {
                    kind,
                    id,
                    event_type,
                    // Domain events need an aggregate; the other kinds may go without one.
                    aggregate: (domain || keep_aggregate).then_some(aggregate),
                    // Other kinds with an expected version are invalid: keep a few of those.
                    expected: if domain || keep_expected { expected } else { Expect::Fixed(ExpectedVersion::Any) },
                    correlation,
                    causation,
                    metadata,
                    size,
                }
            },
        )
}

fn from_position_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 3 => 0u64..40, 1 => 0u64..300]
}

fn since_strategy() -> impl Strategy<Value = Since> {
    prop_oneof![
        Just(Since::Zero),
        (0usize..1000).prop_map(Since::AtEvent),
        (0usize..1000).prop_map(Since::AfterEvent),
        Just(Since::Max),
    ]
}

fn op_strategy(reopen: bool) -> BoxedStrategy<Op> {
    let append = prop::collection::vec(draft_strategy(), 1..=4).prop_map(Op::Append);
    let retry = (0usize..100).prop_map(Op::Retry);
    let read = (
        from_position_strategy(),
        prop::option::weighted(0.3, kind_strategy()),
        prop::option::weighted(0.5, 0..TYPES.len()),
        prop::option::weighted(0.15, since_strategy()),
        prop::option::weighted(0.4, 1usize..=5),
    )
        .prop_map(|(from_position, kind, event_type, since, limit)| Op::Read {
            from_position,
            kind,
            event_type,
            since,
            limit,
        });
    let read_stream = (0..AGGREGATES.len(), 0u64..8, prop::option::weighted(0.3, 1usize..=4))
        .prop_map(|(aggregate, from_version, limit)| Op::ReadStream { aggregate, from_version, limit });
    let snapshot =
        (0..AGGREGATES.len(), 1u64..7).prop_map(|(aggregate, version)| Op::SaveSnapshot { aggregate, version });
    let load = (0..AGGREGATES.len()).prop_map(|aggregate| Op::LoadAggregate { aggregate });
    let meanwhile = prop_oneof![
        4 => Just(Meanwhile::Nothing),
        1 => Just(Meanwhile::Delete),
        2 => Just(Meanwhile::RestoreOlder),
    ];
    let reopen_op = (any::<bool>(), any::<bool>(), meanwhile).prop_map(|(checkpoint, close, meanwhile)| Op::Reopen {
        checkpoint,
        close,
        meanwhile,
    });
    if reopen {
        prop_oneof![12 => append, 3 => retry, 5 => read, 2 => read_stream, 2 => snapshot, 1 => load, 2 => reopen_op]
            .boxed()
    } else {
        prop_oneof![12 => append, 3 => retry, 5 => read, 2 => read_stream, 2 => snapshot, 1 => load].boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Building drafts
// ---------------------------------------------------------------------------------------------

fn metadata_bytes(metadata: &Metadata) -> usize {
    metadata.iter().map(|(k, v)| 6 + k.len() + v.len()).sum()
}

/// The bytes a draft's record takes (record.rs: frame header, fixed body, the fields, then zero
/// padding to a multiple of 8).
fn frame_len(draft: &EventDraft) -> usize {
    let unpadded = RECORD_FIXED_BYTES
        + draft.event_type.len()
        + draft.aggregate_id.len()
        + metadata_bytes(&draft.metadata)
        + draft.data.len();
    unpadded.div_ceil(8) * 8
}

/// Builds the draft; `serial` makes every payload distinct, and `current` is the stream's version
/// counting the batch's earlier drafts (for [`Expect::Current`]).
fn build_draft(spec: &DraftSpec, serial: u64, current: u64) -> EventDraft {
    let metadata: Metadata =
        spec.metadata.iter().map(|&(k, v)| (METADATA_KEYS[k].to_owned(), METADATA_VALUES[v].to_owned())).collect();
    let event_type = TYPES[spec.event_type];
    let aggregate_id = spec.aggregate.map_or("", |a| AGGREGATES[a]);
    let prefix = format!(r#"{{"n":{serial},"pad":""#);
    let pad = match spec.size {
        Size::Pad(pad) => pad,
        Size::Fill(delta) => {
            let limit = (SEGMENT_BYTES - SEGMENT_HEADER_BYTES) as i64;
            let fixed = RECORD_FIXED_BYTES + event_type.len() + aggregate_id.len() + metadata_bytes(&metadata);
            (limit + delta - (fixed + prefix.len() + 2) as i64) as usize
        }
    };
    let data = format!("{prefix}{}\"}}", "x".repeat(pad));
    let mut draft = EventDraft::new(event_type, aggregate_id, data);
    draft.kind = spec.kind;
    draft.id = spec.id.map(pool_id);
    draft.expected_version = match spec.expected {
        Expect::Fixed(expected) => expected,
        Expect::Current(delta) => ExpectedVersion::Exact((current as i64 + delta).max(0) as u64),
    };
    draft.correlation_id = spec.correlation.map(link_id);
    draft.causation_id = spec.causation.map(link_id);
    draft.metadata = metadata;
    if let Size::Fill(delta) = spec.size {
        let unpadded = ((SEGMENT_BYTES - SEGMENT_HEADER_BYTES) as i64 + delta) as usize;
        assert_eq!(frame_len(&draft), unpadded.div_ceil(8) * 8);
    }
    draft
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// An event as the store must hand it back (timestamps are learned from the store).
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    position: u64,
    id: Uuid,
    kind: EventKind,
    event_type: String,
    aggregate_id: String,
    aggregate_version: u64,
    timestamp_ns: u64,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    metadata: Vec<(String, String)>,
    data: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    /// Compact: failures print whole logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = String::from_utf8_lossy(&self.data);
        let data = match data.find("xxxx") {
            Some(at) => format!("{}…({} bytes)", &data[..at], self.data.len()),
            None => data.into_owned(),
        };
        write!(
            f,
            "#{} {:?} {} {:?} v{} id={} t={} corr={} cause={:?} meta={:?} data={data}",
            self.position,
            self.kind,
            self.event_type,
            self.aggregate_id,
            self.aggregate_version,
            self.id,
            self.timestamp_ns,
            self.correlation_id,
            self.causation_id,
            self.metadata,
        )
    }
}

impl Seen {
    fn of(view: &EventView<'_>) -> Seen {
        Seen {
            position: view.position,
            id: view.id,
            kind: view.kind,
            event_type: view.event_type.to_owned(),
            aggregate_id: view.aggregate_id.to_owned(),
            aggregate_version: view.aggregate_version,
            timestamp_ns: view.timestamp_ns,
            correlation_id: view.correlation_id,
            causation_id: view.causation_id,
            metadata: view.metadata().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            data: view.data.to_vec(),
        }
    }
}

#[derive(Default)]
struct Model {
    events: Vec<Seen>,
    /// Aggregate → positions of its domain events, in version order.
    streams: BTreeMap<String, Vec<u64>>,
    /// Event id → position.
    ids: BTreeMap<Uuid, u64>,
    /// Aggregate → (version, state) of the snapshot a load must return.
    snapshots: BTreeMap<String, (u64, Vec<u8>)>,
}

/// What the spec says an append must do.
#[derive(Debug)]
enum Prediction {
    Appended { versions: Vec<u64> },
    AlreadyAppended(Vec<Appended>),
    Invalid,
    DuplicateId(Vec<Uuid>),
    VersionConflict { aggregate_id: String, expected: ExpectedVersion, current: u64 },
    TooLarge { bytes: usize },
}

impl Model {
    fn next_position(&self) -> u64 {
        self.events.len() as u64
    }

    fn stream_version(&self, aggregate_id: &str) -> u64 {
        self.streams.get(aggregate_id).map_or(0, |s| s.len() as u64)
    }

    fn predict(&self, drafts: &[EventDraft]) -> Prediction {
        // Validation: an expected version applies to domain events only.
        if drafts.iter().any(|d| d.kind != EventKind::Domain && d.expected_version != ExpectedVersion::Any) {
            return Prediction::Invalid;
        }
        // Idempotency, before expected versions. A draft without an id gets a fresh one.
        let mut stored = BTreeSet::new();
        let mut repeated = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut original = Vec::new();
        let mut all_same = true;
        for draft in drafts {
            let Some(id) = draft.id else { continue };
            if !seen.insert(id) {
                repeated.insert(id);
            }
            if let Some(&position) = self.ids.get(&id) {
                stored.insert(id);
                let event = &self.events[position as usize];
                if event.kind != draft.kind
                    || event.event_type != draft.event_type
                    || event.aggregate_id != draft.aggregate_id
                {
                    all_same = false;
                }
                original.push(Appended { id, position, aggregate_version: event.aggregate_version });
            }
        }
        if !stored.is_empty() || !repeated.is_empty() {
            if repeated.is_empty() && all_same && original.len() == drafts.len() {
                return Prediction::AlreadyAppended(original);
            }
            return Prediction::DuplicateId(stored.union(&repeated).copied().collect());
        }
        // Expected versions, per draft in order, counting the batch's earlier drafts.
        let mut in_batch: BTreeMap<&str, u64> = BTreeMap::new();
        let mut versions = Vec::new();
        for draft in drafts {
            if draft.kind != EventKind::Domain {
                versions.push(0);
                continue;
            }
            let aggregate = draft.aggregate_id.as_str();
            let current = in_batch.get(aggregate).copied().unwrap_or_else(|| self.stream_version(aggregate));
            if !draft.expected_version.allows(current) {
                return Prediction::VersionConflict {
                    aggregate_id: draft.aggregate_id.clone(),
                    expected: draft.expected_version,
                    current,
                };
            }
            in_batch.insert(aggregate, current + 1);
            versions.push(current + 1);
        }
        // The batch must fit in one segment.
        let bytes: usize = drafts.iter().map(frame_len).sum();
        if bytes > SEGMENT_BYTES - SEGMENT_HEADER_BYTES {
            return Prediction::TooLarge { bytes };
        }
        Prediction::Appended { versions }
    }

    fn push(&mut self, event: Seen) {
        assert_eq!(event.position, self.next_position());
        if event.kind == EventKind::Domain {
            self.streams.entry(event.aggregate_id.clone()).or_default().push(event.position);
        }
        assert!(self.ids.insert(event.id, event.position).is_none(), "id {} stored twice", event.id);
        self.events.push(event);
    }

    fn matches(&self, query: &ReadQuery, event: &Seen) -> bool {
        event.position >= query.from_position
            && query.kind.is_none_or(|k| k == event.kind)
            && query.event_type.as_deref().is_none_or(|t| t == event.event_type)
            && query.since_ns.is_none_or(|t| event.timestamp_ns >= t)
    }
}

// ---------------------------------------------------------------------------------------------
// Running and checking
// ---------------------------------------------------------------------------------------------

fn read_collect(log: &Log, query: &ReadQuery) -> (Vec<Seen>, u64) {
    let mut seen = Vec::new();
    let summary = log
        .read(query, &mut |view| {
            seen.push(Seen::of(&view));
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("read {query:?}: {e}"));
    assert_eq!(summary.count, seen.len(), "read {query:?}: summary count");
    (seen, summary.next_position)
}

fn cursor_collect(log: &Log, query: &ReadQuery) -> Vec<Seen> {
    let mut cursor = log.cursor(query).unwrap_or_else(|e| panic!("cursor {query:?}: {e}"));
    let mut seen = Vec::new();
    while let Some(view) = cursor.next() {
        seen.push(Seen::of(&view.unwrap_or_else(|e| panic!("cursor {query:?}: {e}"))));
    }
    seen
}

/// Checks a read against the model: the first page (the limit), the cursor, and that reading on
/// from each `next_position` visits exactly the remaining matches, never rescanning or skipping.
fn check_read(log: &Log, model: &Model, query: &ReadQuery) {
    let all: Vec<&Seen> = model.events.iter().filter(|e| model.matches(query, e)).collect();
    let first_page: Vec<Seen> = all.iter().take(query.limit).map(|e| (*e).clone()).collect();
    let (page, mut next) = read_collect(log, query);
    assert_eq!(page, first_page, "read {query:?}");
    assert_eq!(cursor_collect(log, query), first_page, "cursor {query:?}");

    let mut visited = page;
    let mut last_page_len = visited.len();
    let mut rounds = 0;
    while last_page_len > 0 {
        rounds += 1;
        assert!(rounds <= all.len() + 1, "read {query:?}: paging does not end");
        let last = visited.last().map_or(0, |e| e.position);
        assert!(next > last, "read {query:?}: next_position {next} does not pass position {last}");
        let on = ReadQuery { from_position: next, ..query.clone() };
        let (page, after) = read_collect(log, &on);
        last_page_len = page.len();
        visited.extend(page);
        next = after;
    }
    let all: Vec<Seen> = all.into_iter().cloned().collect();
    assert_eq!(visited, all, "paging {query:?} from each next_position");
}

fn check_stream(log: &Log, model: &Model, aggregate_id: &str, from_version: u64, limit: usize) {
    let positions = model.streams.get(aggregate_id).cloned().unwrap_or_default();
    let version = positions.len() as u64;
    let want: Vec<Seen> = positions
        .iter()
        .skip(from_version.max(1) as usize - 1)
        .take(limit)
        .map(|&p| model.events[p as usize].clone())
        .collect();
    let mut seen = Vec::new();
    let summary = log
        .read_stream(aggregate_id, from_version, limit, &mut |view| {
            seen.push(Seen::of(&view));
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("read_stream {aggregate_id} from {from_version}: {e}"));
    assert_eq!(seen, want, "read_stream {aggregate_id} from {from_version} limit {limit}");
    assert_eq!((summary.count, summary.version), (want.len(), version), "read_stream {aggregate_id} summary");
    assert_eq!(log.stream_version(aggregate_id), version, "stream_version {aggregate_id}");

    let (mut cursor, cursor_version) = log.stream_cursor(aggregate_id, from_version, limit).unwrap();
    let mut seen = Vec::new();
    while let Some(view) = cursor.next() {
        seen.push(Seen::of(&view.unwrap()));
    }
    assert_eq!((seen, cursor_version), (want, version), "stream_cursor {aggregate_id} from {from_version}");
}

fn check_snapshot(log: &Log, model: &Model, aggregate_id: &str) {
    let loaded = log.load_snapshot(aggregate_id).unwrap();
    let loaded = loaded.map(|s| {
        assert_eq!(s.aggregate_id, aggregate_id);
        (s.version, s.state().to_vec())
    });
    assert_eq!(loaded.as_ref(), model.snapshots.get(aggregate_id), "load_snapshot {aggregate_id}");
}

/// Everything the store holds must match the model.
fn check_everything(log: &Log, model: &Model) {
    let total = model.next_position();
    assert_eq!(log.bounds(), (0, total), "bounds");
    assert_eq!(log.metrics().total_events, total, "metrics total_events");
    check_read(log, model, &ReadQuery::default());
    for event_type in TYPES {
        check_read(log, model, &ReadQuery { event_type: Some(event_type.into()), ..ReadQuery::default() });
    }
    for aggregate_id in AGGREGATES {
        check_stream(log, model, aggregate_id, 1, usize::MAX);
        check_snapshot(log, model, aggregate_id);
    }
    let report = log.verify().unwrap_or_else(|e| panic!("verify: {e}"));
    assert_eq!((report.records, report.first_position, report.next_position), (total, 0, total), "verify {report:?}");
}

fn build_batch(model: &Model, specs: &[DraftSpec], serial: &mut u64) -> Vec<EventDraft> {
    let mut in_batch: BTreeMap<&str, u64> = BTreeMap::new();
    let mut drafts = Vec::new();
    for spec in specs {
        *serial += 1;
        let aggregate = spec.aggregate.map_or("", |a| AGGREGATES[a]);
        let current = in_batch.get(aggregate).copied().unwrap_or_else(|| model.stream_version(aggregate));
        if spec.kind == EventKind::Domain {
            in_batch.insert(aggregate, current + 1);
        }
        drafts.push(build_draft(spec, *serial, current));
    }
    drafts
}

/// Appends `drafts` to the log and the model, checking the outcome; returns the drafts as a
/// client would retry them (with the ids the store assigned).
fn apply_append(log: &Log, model: &mut Model, drafts: &[EventDraft]) -> Vec<EventDraft> {
    let mut retry = drafts.to_vec();
    let prediction = model.predict(drafts);
    let result = log.append(drafts);
    let start = model.next_position();
    match (&prediction, result) {
        (Prediction::Appended { versions }, Ok(AppendOutcome::Appended(results))) => {
            assert_eq!(results.len(), drafts.len(), "results of {drafts:?}");
            for (i, (draft, result)) in drafts.iter().zip(&results).enumerate() {
                assert_eq!(result.position, start + i as u64, "position of draft {i}");
                assert_eq!(result.aggregate_version, versions[i], "version of draft {i}");
                match draft.id {
                    Some(id) => assert_eq!(result.id, id),
                    None => {
                        assert_eq!(result.id.get_version_num(), 7, "generated id {}", result.id);
                        assert!(!model.ids.contains_key(&result.id), "generated id {} reused", result.id);
                    }
                }
            }
            // Read the new events back; the model learns their timestamps from this read.
            let query = ReadQuery { from_position: start, limit: drafts.len(), ..ReadQuery::default() };
            let (read, _) = read_collect(log, &query);
            assert_eq!(read.len(), drafts.len(), "reading back {results:?}");
            for ((draft, result), stored) in drafts.iter().zip(&results).zip(read) {
                let expected = Seen {
                    position: result.position,
                    id: result.id,
                    kind: draft.kind,
                    event_type: draft.event_type.clone(),
                    aggregate_id: draft.aggregate_id.clone(),
                    aggregate_version: result.aggregate_version,
                    timestamp_ns: stored.timestamp_ns,
                    correlation_id: draft.correlation_id.unwrap_or(result.id),
                    causation_id: draft.causation_id,
                    metadata: draft.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    data: draft.data.to_vec(),
                };
                assert_eq!(stored, expected, "reading back position {}", result.position);
                let previous = model.events.last().map_or(0, |e| e.timestamp_ns);
                assert!(stored.timestamp_ns >= previous, "timestamp decreases at position {}", result.position);
                model.push(stored);
            }
            for (draft, result) in retry.iter_mut().zip(&results) {
                draft.id = Some(result.id);
            }
        }
        (Prediction::AlreadyAppended(original), Ok(AppendOutcome::AlreadyAppended(results))) => {
            assert_eq!(&results, original, "idempotent retry of {drafts:?}");
        }
        (Prediction::Invalid, Err(StoreError::Invalid(error))) => {
            assert_eq!(error.field, "expected_version", "{error}");
        }
        (Prediction::DuplicateId(ids), Err(StoreError::DuplicateId { ids: got })) => {
            assert_eq!(&got, ids, "duplicate ids of {drafts:?}");
        }
        (
            Prediction::VersionConflict { aggregate_id, expected, current },
            Err(StoreError::VersionConflict {
                aggregate_id: got_aggregate,
                expected: got_expected,
                current: got_current,
            }),
        ) => {
            assert_eq!(
                (&got_aggregate, got_expected, got_current),
                (aggregate_id, *expected, *current),
                "version conflict of {drafts:?}"
            );
        }
        (Prediction::TooLarge { bytes }, Err(StoreError::TooLarge { bytes: got, limit })) => {
            assert_eq!((got, limit), (*bytes, SEGMENT_BYTES - SEGMENT_HEADER_BYTES));
        }
        (prediction, result) => {
            panic!("append of {drafts:?}:\n  the model predicts {prediction:?}\n  the store returned {result:?}")
        }
    }
    // A failed append (or a retry) writes nothing.
    assert_eq!(log.bounds(), (0, model.next_position()), "bounds after append");
    retry
}

fn apply_read(log: &Log, model: &Model, op: &Op) {
    let Op::Read { from_position, kind, event_type, since, limit } = op else { unreachable!() };
    let timestamp_at = |i: usize| model.events.get(i % model.events.len().max(1)).map_or(0, |e| e.timestamp_ns);
    let since_ns = since.map(|since| match since {
        Since::Zero => 0,
        Since::AtEvent(i) => timestamp_at(i),
        Since::AfterEvent(i) => timestamp_at(i) + 1,
        Since::Max => u64::MAX,
    });
    let query = ReadQuery {
        from_position: *from_position,
        kind: *kind,
        event_type: event_type.map(|t| TYPES[t].to_owned()),
        since_ns,
        limit: limit.unwrap_or(usize::MAX),
    };
    check_read(log, model, &query);
}

fn apply_save_snapshot(log: &Log, model: &mut Model, aggregate_id: &str, version: u64, serial: u64) {
    let state = format!("state of {aggregate_id} at {version} #{serial}").into_bytes();
    let current = model.stream_version(aggregate_id);
    let result = log.save_snapshot(aggregate_id, version, &state);
    if current == 0 {
        assert!(
            matches!(&result, Err(StoreError::StreamNotFound { aggregate_id: a }) if a == aggregate_id),
            "snapshot of missing stream {aggregate_id}: {result:?}"
        );
    } else if version > current {
        assert!(
            matches!(&result, Err(StoreError::VersionConflict { current: c, .. }) if *c == current),
            "snapshot of {aggregate_id} at {version} beyond {current}: {result:?}"
        );
    } else {
        result.unwrap_or_else(|e| panic!("snapshot of {aggregate_id} at {version}: {e}"));
        // The highest version wins, the last written among equals.
        if model.snapshots.get(aggregate_id).is_none_or(|(v, _)| *v <= version) {
            model.snapshots.insert(aggregate_id.to_owned(), (version, state));
        }
    }
    check_snapshot(log, model, aggregate_id);
}

fn apply_load_aggregate(log: &Log, model: &Model, aggregate_id: &str) {
    let mut seen = Vec::new();
    let (snapshot, summary) = log
        .load_aggregate(aggregate_id, &mut |view| {
            seen.push(Seen::of(&view));
            ControlFlow::Continue(())
        })
        .unwrap();
    let snapshot = snapshot.map(|s| (s.version, s.state().to_vec()));
    assert_eq!(snapshot.as_ref(), model.snapshots.get(aggregate_id), "load_aggregate {aggregate_id} snapshot");
    let after = snapshot.map_or(0, |(v, _)| v) as usize;
    let positions = model.streams.get(aggregate_id).cloned().unwrap_or_default();
    let want: Vec<Seen> = positions.iter().skip(after).map(|&p| model.events[p as usize].clone()).collect();
    assert_eq!(seen, want, "load_aggregate {aggregate_id} events");
    assert_eq!((summary.count, summary.version), (want.len(), positions.len() as u64));
}

/// Closes and reopens the log. `older` holds the checkpoint file of the last explicit
/// `checkpoint()` call.
fn reopen(
    log: Log,
    dir: &Path,
    checkpoint: bool,
    close: bool,
    meanwhile: Meanwhile,
    older: &mut Option<Vec<u8>>,
) -> Log {
    // The directory is locked while the log is open.
    let second = Log::open(dir, config());
    assert!(matches!(second, Err(StoreError::Locked { .. })), "second open: {:?}", second.err());
    let path = dir.join("index.ckpt");
    if checkpoint {
        log.checkpoint().unwrap();
        *older = Some(std::fs::read(&path).unwrap());
    }
    if close {
        log.close().unwrap();
    } else {
        drop(log);
    }
    match meanwhile {
        Meanwhile::Nothing => {}
        Meanwhile::Delete => {
            if path.exists() {
                std::fs::remove_file(&path).unwrap();
            }
        }
        Meanwhile::RestoreOlder => {
            if let Some(bytes) = older {
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    Log::open(dir, config()).unwrap_or_else(|e| panic!("reopen: {e}"))
}

/// Runs `ops` against a fresh log (on disk or in memory) and the model, checking as it goes.
fn run(ops: &[Op], on_disk: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = if on_disk { Log::open(dir.path(), config()).unwrap() } else { Log::in_memory(config()).unwrap() };
    let mut model = Model::default();
    let mut serial = 0u64;
    let mut sent: Vec<Vec<EventDraft>> = Vec::new();
    let mut older_checkpoint = None;
    for op in ops {
        match op {
            Op::Append(specs) => {
                let drafts = build_batch(&model, specs, &mut serial);
                sent.push(apply_append(&log, &mut model, &drafts));
            }
            Op::Retry(i) => {
                if !sent.is_empty() {
                    let drafts = sent[i % sent.len()].clone();
                    let retry = apply_append(&log, &mut model, &drafts);
                    sent.push(retry);
                }
            }
            Op::Reopen { checkpoint, close, meanwhile } => {
                assert!(on_disk, "reopen of the in-memory store");
                log = reopen(log, dir.path(), *checkpoint, *close, *meanwhile, &mut older_checkpoint);
                check_everything(&log, &model);
            }
            Op::Read { .. } => apply_read(&log, &model, op),
            Op::ReadStream { aggregate, from_version, limit } => {
                check_stream(&log, &model, AGGREGATES[*aggregate], *from_version, limit.unwrap_or(usize::MAX))
            }
            Op::SaveSnapshot { aggregate, version } => {
                serial += 1;
                apply_save_snapshot(&log, &mut model, AGGREGATES[*aggregate], *version, serial)
            }
            Op::LoadAggregate { aggregate } => apply_load_aggregate(&log, &model, AGGREGATES[*aggregate]),
        }
    }
    check_everything(&log, &model);
    if on_disk {
        // One last reopen: everything survives a close.
        let log = reopen(log, dir.path(), false, false, Meanwhile::Nothing, &mut older_checkpoint);
        check_everything(&log, &model);
    }
}

fn proptest_config() -> ProptestConfig {
    // PROPTEST_CASES=n runs more cases.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(proptest_config())]

    // The on-disk log (small segments, reopens with and without a checkpoint) behaves as the model.
    #[test]
    fn on_disk_log_matches_the_model(ops in prop::collection::vec(op_strategy(true), 1..48)) {
        run(&ops, true);
    }

    // The in-memory log behaves as the model.
    #[test]
    fn in_memory_log_matches_the_model(ops in prop::collection::vec(op_strategy(false), 1..48)) {
        run(&ops, false);
    }
}

#[test]
fn a_type_and_kind_read_with_a_limit_skips_no_match() {
    // A read filtered by type and kind with a limit returns the first matches and pages on to the rest.
    let log = Log::in_memory(config()).unwrap();
    let mut integration = EventDraft::new("Closed", "", "{}");
    integration.kind = EventKind::Integration;
    log.append(&[integration, EventDraft::new("Closed", "a0", "{}"), EventDraft::new("Closed", "a0", "{}")]).unwrap();
    let query = ReadQuery {
        event_type: Some("Closed".into()),
        kind: Some(EventKind::Domain),
        limit: 1,
        ..ReadQuery::default()
    };
    let (page, next) = read_collect(&log, &query);
    let positions: Vec<u64> = page.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1], "first page of {query:?} (next_position {next})");
    assert!(next <= 2, "next_position {next} skips the match at position 2");
}
