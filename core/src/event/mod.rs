//! The event envelope: what a publisher hands in ([`EventDraft`]) and what the store hands back
//! ([`Event`], or a zero-copy [`crate::store::EventView`]).
//!
//! Owns the spec's limits and their validation: a draft that passes [`EventDraft::validate`] can
//! be encoded into a log record without any further check failing. Every error names the field
//! and the limit it broke. Ids are UUIDs; a draft without an id gets a UUIDv7 at append time, so
//! ids sort by creation time.

mod id;
pub(crate) mod json;
mod json_check;
pub mod time;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
pub use uuid::Uuid;

pub use id::new_event_id;
pub use json::{DraftJson, EventJson};
pub(crate) use json_check::{check_json, NotJson};

/// Bytes allowed in `type` (1..=256) and in `aggregate_id` (1..=256, domain events).
pub const MAX_NAME_BYTES: usize = 256;
/// Bytes allowed in `data`, the JSON payload (the spec's request body limit).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
/// Bytes allowed in one metadata key.
pub const MAX_METADATA_KEY_BYTES: usize = 256;
/// Bytes allowed in all metadata together (keys and values, as encoded).
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// What kind of record an event is; every kind shares the log's one position sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// A business fact about one aggregate (`TaskCreated` on `task-123`).
    Domain = 1,
    /// A routing-keyed event that leaves the process.
    Integration = 2,
    /// A persistent real-time event kept for replay.
    WebSocket = 3,
}

impl EventKind {
    /// The spec's name: `domain`, `integration` or `websocket`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Domain => "domain",
            EventKind::Integration => "integration",
            EventKind::WebSocket => "websocket",
        }
    }

    /// The kind stored under this byte, if any.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(EventKind::Domain),
            2 => Some(EventKind::Integration),
            3 => Some(EventKind::WebSocket),
            _ => None,
        }
    }

    /// Parses the spec's name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "domain" => Some(EventKind::Domain),
            "integration" => Some(EventKind::Integration),
            "websocket" => Some(EventKind::WebSocket),
            _ => None,
        }
    }
}

/// The optimistic-concurrency condition an append puts on its aggregate's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No condition.
    #[default]
    Any,
    /// The stream must not exist yet (the spec's `expected_version: 0`).
    NoStream,
    /// The stream must be at exactly this version; `Exact(0)` means the same as `NoStream`.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `current` (0 = none) satisfies this condition.
    pub fn allows(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(version) => current == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("0 (no stream)"),
            ExpectedVersion::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// Event metadata: string keys to string values, kept sorted so the JSON form is stable.
pub type Metadata = BTreeMap<String, String>;

/// An input that breaks a limit or a rule, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct ValidationError {
    /// The offending field as the spec names it (`type`, `aggregate_id`, `metadata.user_id`…).
    pub field: String,
    /// What is wrong, with the limit where one applies.
    pub reason: String,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError { field: field.into(), reason: reason.into() }
    }
}

/// An event as a publisher hands it to the store, before it has a position.
#[derive(Clone, Debug, PartialEq)]
pub struct EventDraft {
    /// The record kind; [`EventKind::Domain`] unless a bridge or gateway says otherwise.
    pub kind: EventKind,
    /// The event id; a UUIDv7 is generated at append when `None`. Re-sending a stored id is an
    /// idempotent retry.
    pub id: Option<Uuid>,
    /// The event type, e.g. `TaskCreated` (1–256 bytes).
    pub event_type: String,
    /// The aggregate (stream) this event belongs to (1–256 bytes for domain events).
    pub aggregate_id: String,
    /// The condition on the aggregate's version, checked atomically with the append.
    pub expected_version: ExpectedVersion,
    /// Groups the events of one workflow; defaults to the event's own id.
    pub correlation_id: Option<Uuid>,
    /// The event that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// String → string annotations (user, tenant…).
    pub metadata: Metadata,
    /// The payload: one JSON value, as UTF-8 bytes.
    pub data: Bytes,
    /// Set by the constructors that made or parsed `data` as JSON, so the store need not parse
    /// it again. Not public: a draft a user builds is always checked, and a `data` replaced after
    /// the check is checked again (see [`CheckedJson`]).
    pub(crate) checked: CheckedJson,
}

/// A handle on payload bytes already known to be one JSON value. It holds those bytes, so no
/// other allocation can take their address while it lives: a `data` replaced after the check
/// has another address (or the same immutable bytes) and is checked again.
#[derive(Clone, Default)]
pub(crate) struct CheckedJson(Option<Bytes>);

impl CheckedJson {
    pub(crate) fn of(data: &Bytes) -> CheckedJson {
        CheckedJson(Some(data.clone()))
    }

    fn covers(&self, data: &Bytes) -> bool {
        self.0.as_ref().is_some_and(|checked| checked.as_ptr() == data.as_ptr() && checked.len() == data.len())
    }
}

/// A cache, not part of the draft's value.
impl PartialEq for CheckedJson {
    fn eq(&self, _: &CheckedJson) -> bool {
        true
    }
}

impl fmt::Debug for CheckedJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "checked" } else { "unchecked" })
    }
}

impl EventDraft {
    /// A domain event draft with the given type, aggregate and JSON payload.
    pub fn new(event_type: impl Into<String>, aggregate_id: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventDraft {
            kind: EventKind::Domain,
            id: None,
            event_type: event_type.into(),
            aggregate_id: aggregate_id.into(),
            expected_version: ExpectedVersion::Any,
            correlation_id: None,
            causation_id: None,
            metadata: Metadata::new(),
            data: data.into(),
            checked: CheckedJson::default(),
        }
    }

    /// A draft whose payload is known to be one JSON value (Herald serialized or parsed it):
    /// the store does not parse it again.
    pub(crate) fn with_json(event_type: impl Into<String>, aggregate_id: impl Into<String>, data: Bytes) -> Self {
        let checked = CheckedJson::of(&data);
        EventDraft { checked, ..EventDraft::new(event_type, aggregate_id, data) }
    }

    /// Sets the id (builder style).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the expected version (builder style).
    pub fn expecting(mut self, expected: ExpectedVersion) -> Self {
        self.expected_version = expected;
        self
    }

    /// Adds one metadata entry (builder style).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks every limit of the spec; `Ok` means the draft can be stored as it is.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_fields()?;
        if !self.checked.covers(&self.data) {
            check_json(&self.data).map_err(data_not_json)?;
        }
        Ok(())
    }

    /// Every check of [`EventDraft::validate`] but the payload's JSON syntax: for a parser
    /// that took `data` from a JSON value it already checked.
    pub(crate) fn validate_fields(&self) -> Result<(), ValidationError> {
        check_name("type", &self.event_type)?;
        if self.kind == EventKind::Domain || !self.aggregate_id.is_empty() {
            check_name("aggregate_id", &self.aggregate_id)?;
        }
        for (field, id) in
            [("id", self.id), ("correlation_id", self.correlation_id), ("causation_id", self.causation_id)]
        {
            if id == Some(Uuid::nil()) {
                return Err(ValidationError::new(field, "must not be the nil UUID"));
            }
        }
        let mut metadata_bytes = 0usize;
        for (key, value) in &self.metadata {
            if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES {
                return Err(ValidationError::new(
                    format!("metadata.{key}"),
                    format!("keys must be 1–{MAX_METADATA_KEY_BYTES} bytes, got {}", key.len()),
                ));
            }
            metadata_bytes += 6 + key.len() + value.len();
        }
        if metadata_bytes > MAX_METADATA_BYTES {
            return Err(ValidationError::new(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes encoded, got {metadata_bytes}"),
            ));
        }
        if self.data.len() > MAX_DATA_BYTES {
            return Err(ValidationError::new(
                "data",
                format!("must be at most {MAX_DATA_BYTES} bytes, got {}", self.data.len()),
            ));
        }
        Ok(())
    }
}

/// The error for a `data` that is not one JSON value.
#[cold]
pub(crate) fn data_not_json(error: NotJson) -> ValidationError {
    ValidationError::new("data", format!("must be one JSON value in UTF-8 (invalid at byte {})", error.offset))
}

/// Whether every byte is printable ASCII (0x20..=0x7E), as most names are: eight bytes per step,
/// the last step overlapping the one before. The compiler's vectorized byte loop took 7–14 ns
/// for a 14-byte name (it runs twice per append); this takes about 2.
fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // A byte's high bit ends up set when it is below 0x20 (b - 0x20 borrows; a borrow only
    // follows such a byte), 0x7F or above (b + 1 reaches 0x80; a carry only follows 0xFF,
    // whose own high bit is set), or above 0x9F (b - 0x20 keeps the bit).
    let printable = |word: u64| (word.wrapping_sub(0x20 * ONES) | word.wrapping_add(ONES) | word) & HIGH == 0;
    let word_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
    if bytes.len() < 8 {
        return bytes.iter().all(|&byte| (0x20..0x7F).contains(&byte));
    }
    let mut at = 0;
    while at + 8 < bytes.len() {
        if !printable(word_at(at)) {
            return false;
        }
        at += 8;
    }
    printable(word_at(bytes.len() - 8))
}

fn check_name(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(ValidationError::new(field, format!("must be 1–{MAX_NAME_BYTES} bytes, got {}", value.len())));
    }
    // Control characters (Unicode `Cc`) are C0 and DEL, which are single bytes, and C1
    // (U+0080–U+009F), which UTF-8 encodes as 0xC2 0x80..=0x9F: a byte scan finds them all.
    let bytes = value.as_bytes();
    if printable_ascii(bytes) {
        return Ok(());
    }
    let c1 = |at: usize| bytes[at] == 0xC2 && bytes.get(at + 1).is_some_and(|next| (0x80..=0x9F).contains(next));
    if bytes.iter().enumerate().any(|(at, &byte)| byte < 0x20 || byte == 0x7F || (byte == 0xC2 && c1(at))) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// A stored event, owned. Reads hand out [`crate::store::EventView`]s; this is their owned copy.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The record kind.
    pub kind: EventKind,
    /// The event id.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The aggregate (stream) id; empty for kinds without one.
    pub aggregate_id: String,
    /// 1-based, gap-free per aggregate (0 for kinds without an aggregate).
    pub aggregate_version: u64,
    /// 0-based, gap-free, one total order over all kinds.
    pub position: u64,
    /// Unix nanoseconds at append; never decreases along positions.
    pub timestamp_ns: u64,
    /// The workflow id; the event's own id unless the publisher gave one.
    pub correlation_id: Uuid,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// String → string annotations.
    pub metadata: Metadata,
    /// The JSON payload.
    pub data: Bytes,
}

impl Event {
    /// The spec's JSON form of this event.
    pub fn to_json(&self) -> String {
        let json = EventJson {
            kind: self.kind,
            id: self.id,
            event_type: &self.event_type,
            aggregate_id: &self.aggregate_id,
            aggregate_version: self.aggregate_version,
            position: self.position,
            timestamp_ns: self.timestamp_ns,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            data: &self.data,
        };
        json.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_agrees_with_the_byte_by_byte_rule_at_every_length_and_place() {
        let slow = |bytes: &[u8]| bytes.iter().all(|&byte| (0x20..0x7F).contains(&byte));
        for len in 0..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(printable_ascii(&bytes), slow(&bytes), "byte {byte:#x} at {at} of {len}");
                    // The same byte next to the lowest and highest printable ones.
                    bytes.iter_mut().enumerate().filter(|(i, _)| *i != at).for_each(|(i, b)| *b = [0x20, 0x7E][i % 2]);
                    assert_eq!(printable_ascii(&bytes), slow(&bytes), "byte {byte:#x} at {at} of {len}, edges");
                }
            }
        }
    }

    #[test]
    fn a_valid_draft_passes() {
        let draft = EventDraft::new("TaskCreated", "task-1", r#"{"title":"x"}"#).with_metadata("user_id", "u1");
        assert_eq!(draft.validate(), Ok(()));
    }

    #[test]
    fn a_payload_replaced_after_its_check_is_checked_again() {
        let mut draft = EventDraft::with_json("TaskCreated", "task-1", Bytes::from_static(b"{}"));
        assert_eq!(draft.validate(), Ok(()));
        draft.data = Bytes::from_static(b"{not json");
        assert_eq!(draft.validate().map_err(|e| e.field), Err("data".to_owned()));
        let mut unchecked = EventDraft::new("TaskCreated", "task-1", "[1,");
        unchecked.data = Bytes::from_static(b"[1,");
        assert_eq!(unchecked.validate().map_err(|e| e.field), Err("data".to_owned()));
    }

    #[test]
    fn each_limit_names_its_field() {
        let base = EventDraft::new("TaskCreated", "task-1", "{}");
        let cases: Vec<(EventDraft, &str)> = vec![
            (EventDraft { event_type: String::new(), ..base.clone() }, "type"),
            (EventDraft { event_type: "t".repeat(257), ..base.clone() }, "type"),
            (EventDraft { aggregate_id: String::new(), ..base.clone() }, "aggregate_id"),
            (EventDraft { aggregate_id: "a".repeat(257), ..base.clone() }, "aggregate_id"),
            (EventDraft { aggregate_id: "a\nb".into(), ..base.clone() }, "aggregate_id"),
            (EventDraft { data: Bytes::from_static(b"{not json"), ..base.clone() }, "data"),
            (EventDraft { data: Bytes::from_static(b"1 2"), ..base.clone() }, "data"),
            (EventDraft { data: Bytes::from(vec![b' '; MAX_DATA_BYTES + 1]), ..base.clone() }, "data"),
            (base.clone().with_id(Uuid::nil()), "id"),
            (base.clone().with_metadata("", "v"), "metadata."),
            (base.clone().with_metadata("k", "v".repeat(MAX_METADATA_BYTES)), "metadata"),
        ];
        for (draft, field) in cases {
            let error = draft.validate().expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
        let at_limit = EventDraft { event_type: "t".repeat(256), aggregate_id: "a".repeat(256), ..base };
        assert_eq!(at_limit.validate(), Ok(()));
    }

    #[test]
    fn names_refuse_every_control_character_and_nothing_else() {
        // The byte scan agrees with `char::is_control` over the whole C0, DEL, C1 range and
        // around it, alone and inside other text.
        for code in (0u32..0x300).chain([0x2028, 0xFEFF, 0x1F600]) {
            let Some(c) = char::from_u32(code) else { continue };
            for name in [c.to_string(), format!("a{c}é"), format!("名{c}")] {
                assert_eq!(check_name("type", &name).is_err(), c.is_control(), "U+{code:04X} in {name:?}");
            }
        }
    }

    #[test]
    fn expected_version_rules() {
        assert!(ExpectedVersion::Any.allows(7));
        assert!(ExpectedVersion::NoStream.allows(0));
        assert!(!ExpectedVersion::NoStream.allows(1));
        assert!(ExpectedVersion::Exact(0).allows(0));
        assert!(ExpectedVersion::Exact(3).allows(3));
        assert!(!ExpectedVersion::Exact(3).allows(2));
    }
}
