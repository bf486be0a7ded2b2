//! The spec's JSON forms: a stored event as every read returns it, and a draft as publishers send it.
//!
//! Field names and order follow `PROTOCOL.md` exactly. `data` is written as the raw JSON the
//! publisher sent (validated at append), never re-encoded.

use bytes::Bytes;
use serde::ser::{Error as _, SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::time::format_rfc3339_micros;
use super::{EventDraft, EventKind, ExpectedVersion, Metadata, Uuid, ValidationError};

/// The spec's JSON shape of a stored event, over borrowed fields. `M` yields metadata pairs.
pub struct EventJson<'a, M> {
    pub kind: EventKind,
    pub id: Uuid,
    pub event_type: &'a str,
    pub aggregate_id: &'a str,
    pub aggregate_version: u64,
    pub position: u64,
    pub timestamp_ns: u64,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub metadata: M,
    pub data: &'a [u8],
}

struct MetadataJson<M>(M);

impl<'a, M: Iterator<Item = (&'a str, &'a str)> + Clone> Serialize for MetadataJson<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.clone() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'a, M: Iterator<Item = (&'a str, &'a str)> + Clone> Serialize for EventJson<'a, M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let data: &RawValue = serde_json::from_slice(self.data).map_err(S::Error::custom)?;
        if self.kind == EventKind::Integration {
            return self.serialize_integration(serializer, data);
        }
        if self.kind == EventKind::WebSocket {
            return self.serialize_websocket(serializer);
        }
        let mut event = serializer.serialize_struct("Event", 11)?;
        event.serialize_field("kind", self.kind.as_str())?;
        event.serialize_field("id", &self.id)?;
        event.serialize_field("type", self.event_type)?;
        event.serialize_field("aggregate_id", self.aggregate_id)?;
        event.serialize_field("aggregate_version", &self.aggregate_version)?;
        event.serialize_field("position", &self.position)?;
        event.serialize_field("timestamp", &format_rfc3339_micros(self.timestamp_ns))?;
        event.serialize_field("correlation_id", &self.correlation_id)?;
        event.serialize_field("causation_id", &self.causation_id)?;
        event.serialize_field("metadata", &MetadataJson(self.metadata.clone()))?;
        event.serialize_field("data", data)?;
        event.end()
    }
}

impl<'a, M: Iterator<Item = (&'a str, &'a str)> + Clone> EventJson<'a, M> {
    /// The spec's integration shape: `{"kind", "id", "position", "timestamp", "routing_key",
    /// "version", "source", "data", "correlation_id", "causation_id"}`, with `version` and
    /// `source` from the record's metadata (see `integration::event`).
    fn serialize_integration<S: Serializer>(&self, serializer: S, data: &RawValue) -> Result<S::Ok, S::Error> {
        let (mut version, mut source) = ("", "{}");
        for (key, value) in self.metadata.clone() {
            match key {
                "version" => version = value,
                "source" => source = value,
                _ => {}
            }
        }
        let source: &RawValue = serde_json::from_str(source).map_err(S::Error::custom)?;
        let mut event = serializer.serialize_struct("IntegrationEvent", 10)?;
        event.serialize_field("kind", self.kind.as_str())?;
        event.serialize_field("id", &self.id)?;
        event.serialize_field("position", &self.position)?;
        event.serialize_field("timestamp", &format_rfc3339_micros(self.timestamp_ns))?;
        event.serialize_field("routing_key", self.event_type)?;
        event.serialize_field("version", version)?;
        event.serialize_field("source", source)?;
        event.serialize_field("data", data)?;
        event.serialize_field("correlation_id", &self.correlation_id)?;
        event.serialize_field("causation_id", &self.causation_id)?;
        event.end()
    }
}

impl<'a, M: Iterator<Item = (&'a str, &'a str)> + Clone> EventJson<'a, M> {
    /// The spec's stored WebSocket shape: the event as it was broadcast (its payload here) plus
    /// `kind`, `position` and `room` (`null` for an event to every connection).
    fn serialize_websocket<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields: Vec<(String, &RawValue)> =
            serde_json::from_slice::<std::collections::BTreeMap<String, &RawValue>>(self.data)
                .map_err(S::Error::custom)?
                .into_iter()
                .collect();
        let room = self.metadata.clone().find(|(key, _)| *key == "room").map(|(_, room)| room);
        let mut event = serializer.serialize_map(Some(fields.len() + 3))?;
        event.serialize_entry("kind", self.kind.as_str())?;
        for (key, value) in fields.iter().filter(|(key, _)| !matches!(key.as_str(), "kind" | "position" | "room")) {
            event.serialize_entry(key, value)?;
        }
        event.serialize_entry("position", &self.position)?;
        event.serialize_entry("room", &room)?;
        event.end()
    }
}

impl<'a, M: Iterator<Item = (&'a str, &'a str)> + Clone> std::fmt::Display for EventJson<'a, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

/// A draft as the HTTP API and the bindings receive it (unknown fields are ignored).
#[derive(Deserialize)]
pub struct DraftJson<'a> {
    #[serde(rename = "type")]
    event_type: Option<String>,
    aggregate_id: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    id: Option<String>,
    #[serde(borrow)]
    expected_version: Option<&'a RawValue>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    metadata: Option<Metadata>,
    /// A batch body's drafts (`{"events": [...]}`), parsed in the same pass.
    #[serde(borrow, default)]
    events: Option<Vec<DraftJson<'a>>>,
}

impl DraftJson<'_> {
    /// Whether none of the draft's fields was present (the body may be something else, such
    /// as a batch).
    pub fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.aggregate_id.is_none()
            && self.data.is_none()
            && self.id.is_none()
            && self.expected_version.is_none()
            && self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.metadata.is_none()
    }

    /// Turns the parsed JSON into a validated draft; errors name the field. `body` is the text
    /// this was parsed from: the payload becomes a slice of it (no copy), marked as checked JSON.
    pub fn into_draft(self, body: &Bytes) -> Result<EventDraft, ValidationError> {
        let required = |field: &str| ValidationError::new(field, "is required");
        let data = self.data.ok_or_else(|| required("data"))?;
        let mut draft = EventDraft::with_json(
            self.event_type.ok_or_else(|| required("type"))?,
            self.aggregate_id.ok_or_else(|| required("aggregate_id"))?,
            slice_of(body, data.get().as_bytes()),
        );
        draft.id = parse_uuid("id", self.id.as_deref())?;
        draft.expected_version = parse_expected_version(self.expected_version)?;
        draft.correlation_id = parse_uuid("correlation_id", self.correlation_id.as_deref())?;
        draft.causation_id = parse_uuid("causation_id", self.causation_id.as_deref())?;
        draft.metadata = self.metadata.unwrap_or_default();
        draft.validate_fields()?;
        Ok(draft)
    }
}

/// `part` as a slice of `body` when it lies inside it (a borrowed `RawValue` does), else a copy.
fn slice_of(body: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    if start <= body.len() && part.len() <= body.len() - start {
        body.slice(start..start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

impl EventDraft {
    /// Parses one draft from the spec's JSON; a syntax error is reported on the field `body`.
    pub fn from_json(json: &[u8]) -> Result<EventDraft, ValidationError> {
        let body = Bytes::copy_from_slice(json);
        let parsed: DraftJson<'_> =
            serde_json::from_slice(&body).map_err(|error| ValidationError::new("body", error.to_string()))?;
        parsed.into_draft(&body)
    }
}

impl EventDraft {
    /// Parses a publish body: one draft, or `{"events": [draft, …]}` (an atomic batch). Text
    /// that is not JSON is an error on the field `body`; JSON of the wrong shape names the
    /// field (found with `serde_path_to_error`, e.g. `events[1].aggregate_id`). The drafts'
    /// payloads are slices of `body`: one allocation for the whole batch.
    pub fn batch_from_json(body: &Bytes) -> Result<Vec<EventDraft>, ValidationError> {
        // One pass with plain serde_json (a batch's drafts are parsed with the body); only a
        // failure is parsed again with `serde_path_to_error`, to name the field.
        // UTF-8 is checked once for the whole body (word at a time for ASCII) rather than per
        // string by the parser; a body that is not UTF-8 is parsed as bytes for its error.
        let parsed = match std::str::from_utf8(body) {
            Ok(text) => serde_json::from_str::<DraftJson<'_>>(text),
            Err(_) => serde_json::from_slice::<DraftJson<'_>>(body),
        };
        let mut parsed = parsed.map_err(|error| named(body, error))?;
        let batch = if parsed.is_empty() { parsed.events.take() } else { None };
        let Some(items) = batch else {
            return Ok(vec![parsed.into_draft(body)?]);
        };
        if items.is_empty() {
            return Err(ValidationError::new("events", "must hold at least one event"));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                item.into_draft(body)
                    .map_err(|e| ValidationError::new(format!("events[{index}].{}", e.field), e.reason))
            })
            .collect()
    }
}

/// The error for a body that failed to parse, naming the field: the body is parsed again with
/// `serde_path_to_error`.
fn named(body: &[u8], error: serde_json::Error) -> ValidationError {
    let mut input = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, DraftJson<'_>>(&mut input) {
        Err(error) => path_error(error),
        // Only what follows the value was wrong (trailing characters).
        Ok(_) => json_error(error, "body"),
    }
}

/// A syntax error is on the field `body` (the caller's "not JSON"); a JSON value of the wrong
/// type is on `field`.
fn json_error(error: serde_json::Error, field: &str) -> ValidationError {
    match error.classify() {
        serde_json::error::Category::Data => ValidationError::new(field, format!("has the wrong shape: {error}")),
        _ => ValidationError::new("body", error.to_string()),
    }
}

/// A shape error at a path inside the body (`events[1].aggregate_id`).
fn path_error(error: serde_path_to_error::Error<serde_json::Error>) -> ValidationError {
    // The whole body of the wrong type is named `request` (as the webhook API names it), since
    // the field `body` means "not JSON".
    let path = error.path().to_string();
    let field = if path == "." { "request".to_string() } else { path };
    json_error(error.into_inner(), &field)
}

/// A field that is present, whatever its value: `null` too is `Some` (serde would make an
/// `Option` of it `None`, and a `null` payload is a valid one).
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(input).map(Some)
}

fn parse_uuid(field: &str, text: Option<&str>) -> Result<Option<Uuid>, ValidationError> {
    text.map(|text| Uuid::try_parse(text).map_err(|_| ValidationError::new(field, format!("`{text}` is not a UUID"))))
        .transpose()
}

fn parse_expected_version(raw: Option<&RawValue>) -> Result<ExpectedVersion, ValidationError> {
    let Some(raw) = raw else { return Ok(ExpectedVersion::Any) };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::String(text)) if text == "any" => Ok(ExpectedVersion::Any),
        Ok(serde_json::Value::Number(number)) => match number.as_u64() {
            Some(0) => Ok(ExpectedVersion::NoStream),
            Some(version) => Ok(ExpectedVersion::Exact(version)),
            None => Err(ValidationError::new("expected_version", "must be a non-negative integer or \"any\"")),
        },
        _ => Err(ValidationError::new("expected_version", "must be a non-negative integer or \"any\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Event;
    use super::*;

    #[test]
    fn an_event_serializes_exactly_as_the_spec() {
        let id = Uuid::parse_str("01937a4e-0000-7000-8000-000000000001").unwrap();
        let mut metadata = Metadata::new();
        metadata.insert("user_id".into(), "user-456".into());
        let event = Event {
            kind: EventKind::Domain,
            id,
            event_type: "TaskCreated".into(),
            aggregate_id: "task-123".into(),
            aggregate_version: 1,
            position: 0,
            timestamp_ns: 1_795_723_200_123_456_000,
            correlation_id: id,
            causation_id: None,
            metadata,
            data: bytes::Bytes::from_static(br#"{"title": "Implement feature X"}"#),
        };
        assert_eq!(
            event.to_json(),
            concat!(
                r#"{"kind":"domain","id":"01937a4e-0000-7000-8000-000000000001","type":"TaskCreated","#,
                r#""aggregate_id":"task-123","aggregate_version":1,"position":0,"#,
                r#""timestamp":"2026-11-26T20:00:00.123456Z","#,
                r#""correlation_id":"01937a4e-0000-7000-8000-000000000001","causation_id":null,"#,
                r#""metadata":{"user_id":"user-456"},"data":{"title": "Implement feature X"}}"#
            )
        );
    }

    #[test]
    fn drafts_parse_with_field_errors() {
        let draft = EventDraft::from_json(
            br#"{"type":"TaskCreated","aggregate_id":"t1","data":{"a":1},"expected_version":0,"extra":true}"#,
        )
        .unwrap();
        assert_eq!(draft.expected_version, ExpectedVersion::NoStream);
        assert_eq!(&draft.data[..], br#"{"a":1}"#);
        let any = EventDraft::from_json(br#"{"type":"T","aggregate_id":"a","data":1,"expected_version":"any"}"#);
        assert_eq!(any.unwrap().expected_version, ExpectedVersion::Any);

        let field_of = |json: &str| EventDraft::from_json(json.as_bytes()).unwrap_err().field;
        assert_eq!(field_of(r#"{"aggregate_id":"a","data":1}"#), "type");
        assert_eq!(field_of(r#"{"type":"T","data":1}"#), "aggregate_id");
        assert_eq!(field_of(r#"{"type":"T","aggregate_id":"a"}"#), "data");
        assert_eq!(field_of(r#"{"type":"T","aggregate_id":"a","data":1,"id":"nope"}"#), "id");
        assert_eq!(field_of(r#"{"type":"T","aggregate_id":"a","data":1,"expected_version":-1}"#), "expected_version");
        assert_eq!(
            field_of(r#"{"type":"T","aggregate_id":"a","data":1,"expected_version":"some"}"#),
            "expected_version"
        );
        assert_eq!(field_of(r#"{"type":"","aggregate_id":"a","data":1}"#), "type");
        assert_eq!(field_of(r#"{"type":"#), "body");
    }

    #[test]
    fn bodies_parse_as_one_draft_or_a_batch_and_null_is_a_payload() {
        let body = Bytes::from_static(br#"{"type":"T","aggregate_id":"a","data":null}"#);
        let one = EventDraft::batch_from_json(&body).unwrap();
        assert_eq!(&one[0].data[..], b"null", "a null payload is present, not missing");
        let batch = Bytes::from_static(
            br#"{"events":[{"type":"A","aggregate_id":"a","data":1},{"type":"B","aggregate_id":"b","data":[2]}]}"#,
        );
        let drafts = EventDraft::batch_from_json(&batch).unwrap();
        assert_eq!(drafts.iter().map(|d| d.event_type.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(drafts.iter().map(|d| &d.data[..]).collect::<Vec<_>>(), [&b"1"[..], b"[2]"]);
        // The payloads are slices of the body, not copies.
        let inside = |data: &Bytes| batch.as_ptr_range().contains(&data.as_ptr());
        assert!(drafts.iter().all(|d| inside(&d.data)));
        let field_of =
            |json: &str| EventDraft::batch_from_json(&Bytes::copy_from_slice(json.as_bytes())).unwrap_err().field;
        assert_eq!(
            field_of(r#"{"events":[{"type":"A","aggregate_id":"a","data":1},{"type":"B","data":2}]}"#),
            "events[1].aggregate_id"
        );
        assert_eq!(field_of(r#"{"events":[{"type":"A","aggregate_id":7,"data":1}]}"#), "events[0].aggregate_id");
        assert_eq!(field_of(r#"{"events":[]}"#), "events");
        assert_eq!(field_of(r#"{"events":[{"type":"A"}]} trailing"#), "body");
        assert_eq!(field_of("5"), "request", "valid JSON of the wrong type is not `body` (not JSON)");
    }
}
