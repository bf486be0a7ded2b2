//! The WebSocket event of the spec: what `POST /v1/broadcast` and the bridges send to rooms.
//!
//! `{"id", "type", "event", "data", "timestamp", "source", "target", "priority", "persistent",
//! "position"}`. A target `{type: K, id: I}` is room `K:I`; `{type: "all"}` is every connection
//! (room `None`). A persistent event is stored as a log record of kind `websocket` whose `type`
//! is its room (or `all`), so one room's history is an indexed read, and whose payload is the
//! event's JSON without `position`; reads add `kind`, `position` and `room` back.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::time::format_rfc3339_micros;
use crate::event::{
    new_event_id, CheckedJson, EventDraft, EventKind, ExpectedVersion, Metadata, ValidationError, MAX_DATA_BYTES,
};

/// The stored `type` of a persistent event sent to every connection.
pub const ALL_ROOMS_TYPE: &str = "all";
/// Longest room name (`kind:id`).
pub const MAX_ROOM_BYTES: usize = 256;

/// Delivery priority: among queued live events a higher one overtakes a lower one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// Where an event goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub exclude_users: Vec<String>,
}

impl Target {
    /// The room (`kind:id`), or `None` for every connection.
    pub fn room(&self) -> Option<String> {
        match (self.kind.as_str(), &self.id) {
            ("all", _) => None,
            (kind, Some(id)) => Some(format!("{kind}:{id}")),
            (kind, None) => Some(kind.to_owned()),
        }
    }
}

/// A WebSocket event, validated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WsEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: String,
    pub data: Box<RawValue>,
    pub timestamp: String,
    #[serde(default = "empty_object")]
    pub source: Box<RawValue>,
    pub target: Target,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!("`{{}}` is JSON"))
}

/// The request body: like [`WsEvent`] with `id`, `timestamp`, `source` optional.
#[derive(Deserialize)]
struct Request {
    id: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    event: Option<String>,
    data: Option<Box<RawValue>>,
    timestamp: Option<String>,
    source: Option<Box<RawValue>>,
    target: Option<serde_json::Value>,
    priority: Option<serde_json::Value>,
    persistent: Option<serde_json::Value>,
}

impl WsEvent {
    /// Parses and validates a broadcast request (`POST /v1/broadcast`); fills `id` (a UUIDv7)
    /// and `timestamp` (now) when absent. Errors name the field; unparsable text is `body`.
    pub fn from_request(body: &[u8], now_ns: u64) -> Result<WsEvent, ValidationError> {
        let mut input = serde_json::Deserializer::from_slice(body);
        let request: Request = serde_path_to_error::deserialize(&mut input).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data if path != "." => ValidationError::new(path, inner.to_string()),
                serde_json::error::Category::Data => ValidationError::new("request", inner.to_string()),
                _ => ValidationError::new("body", inner.to_string()),
            }
        })?;
        input.end().map_err(|error| ValidationError::new("body", error.to_string()))?;
        let required = |field: &str| ValidationError::new(field, "is required");
        let id = match request.id {
            None | Some(serde_json::Value::Null) => new_event_id(now_ns).to_string(),
            Some(serde_json::Value::String(id)) if !id.is_empty() && id.len() <= 256 => id,
            Some(_) => return Err(ValidationError::new("id", "must be a string of 1–256 bytes")),
        };
        let target: Target = match request.target {
            Some(value) => serde_json::from_value(value).map_err(|error| {
                ValidationError::new("target", format!("must be {{type, id?, exclude_users?}}: {error}"))
            })?,
            None => return Err(required("target")),
        };
        let priority = match request.priority {
            None | Some(serde_json::Value::Null) => Priority::Normal,
            Some(value) => serde_json::from_value(value)
                .map_err(|_| ValidationError::new("priority", "must be one of low, normal, high, critical"))?,
        };
        let persistent = match request.persistent {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(flag)) => flag,
            Some(_) => return Err(ValidationError::new("persistent", "must be true or false")),
        };
        let event = WsEvent {
            id,
            kind: request.kind.ok_or_else(|| required("type"))?,
            event: request.event.ok_or_else(|| required("event"))?,
            data: request.data.ok_or_else(|| required("data"))?,
            timestamp: request.timestamp.unwrap_or_else(|| format_rfc3339_micros(now_ns)),
            source: request.source.unwrap_or_else(empty_object),
            target,
            priority,
            persistent,
            position: None,
        };
        event.validate()?;
        Ok(event)
    }

    /// Checks the fields' rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, value) in [("type", &self.kind), ("event", &self.event)] {
            if value.is_empty() || value.len() > 256 {
                return Err(ValidationError::new(field, "must be 1–256 bytes"));
            }
        }
        if !self.source.get().trim_start().starts_with('{') {
            return Err(ValidationError::new("source", "must be an object"));
        }
        if self.data.get().len() > MAX_DATA_BYTES {
            return Err(ValidationError::new("data", format!("must be at most {MAX_DATA_BYTES} bytes")));
        }
        if crate::event::time::parse_rfc3339(&self.timestamp).is_err() {
            return Err(ValidationError::new("timestamp", "must be an RFC 3339 time"));
        }
        let target = &self.target;
        if target.kind != "all" {
            let id = target.id.as_deref().unwrap_or("");
            if target.kind.is_empty() || target.kind.contains(':') || id.is_empty() {
                return Err(ValidationError::new("target", "needs a `type` (no `:`) and an `id`, or `type: \"all\"`"));
            }
            if target.kind.len() + 1 + id.len() > MAX_ROOM_BYTES {
                return Err(ValidationError::new("target", format!("the room may be at most {MAX_ROOM_BYTES} bytes")));
            }
        }
        if target.exclude_users.len() > 1_000 {
            return Err(ValidationError::new("target.exclude_users", "may list at most 1,000 users"));
        }
        Ok(())
    }

    /// The room, or `None` for every connection.
    pub fn room(&self) -> Option<String> {
        self.target.room()
    }

    /// The log record of a persistent event (its JSON without `position`).
    pub fn to_draft(&self) -> EventDraft {
        let mut stored = self.clone();
        stored.position = None;
        let json = serde_json::to_vec(&stored).unwrap_or_else(|_| unreachable!("an event always serializes"));
        let room = self.room();
        let mut metadata = Metadata::new();
        if let Some(room) = &room {
            metadata.insert("room".into(), room.clone());
        }
        let data = Bytes::from(json);
        EventDraft {
            kind: EventKind::WebSocket,
            id: None,
            event_type: room.unwrap_or_else(|| ALL_ROOMS_TYPE.to_owned()),
            aggregate_id: String::new(),
            expected_version: ExpectedVersion::Any,
            correlation_id: None,
            causation_id: None,
            metadata,
            // Serialized here: one JSON value.
            checked: CheckedJson::of(&data),
            data,
        }
    }

    /// The event as stored in a log record's payload, with its position.
    pub fn from_stored(data: &[u8], position: u64) -> Option<WsEvent> {
        let mut event: WsEvent = serde_json::from_slice(data).ok()?;
        event.position = Some(position);
        Some(event)
    }

    /// The `{"op":"event","room","event"}` frame text for this event (encoded once, shared by
    /// every recipient).
    pub fn frame_text(&self) -> String {
        let room = self.room();
        serde_json::json!({"op": "event", "room": room, "event": self}).to_string()
    }

    /// The user named in `source.user_id`, if any.
    pub fn source_user(&self) -> Option<String> {
        let source: serde_json::Value = serde_json::from_str(self.source.get()).ok()?;
        source.get("user_id")?.as_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_request_parses_with_defaults_and_names_bad_fields() {
        // id and timestamp are filled; priority defaults to normal; each bad field is named.
        let body = br#"{"type":"task","event":"task.updated","data":{"a":1},"target":{"type":"project","id":"p1","exclude_users":["u2"]}}"#;
        let event = WsEvent::from_request(body, 1_800_000_000_000_000_000).unwrap();
        assert_eq!(event.room().as_deref(), Some("project:p1"));
        assert_eq!((event.priority, event.persistent), (Priority::Normal, false));
        assert!(!event.id.is_empty() && event.timestamp.ends_with('Z'));
        let field = |json: &str| WsEvent::from_request(json.as_bytes(), 0).unwrap_err().field;
        assert_eq!(field(r#"{"event":"e","data":1,"target":{"type":"all"}}"#), "type");
        assert_eq!(field(r#"{"type":"t","data":1,"target":{"type":"all"}}"#), "event");
        assert_eq!(field(r#"{"type":"t","event":"e","target":{"type":"all"}}"#), "data");
        assert_eq!(field(r#"{"type":"t","event":"e","data":1}"#), "target");
        assert_eq!(field(r#"{"type":"t","event":"e","data":1,"target":{"type":"project"}}"#), "target");
        assert_eq!(
            field(r#"{"type":"t","event":"e","data":1,"target":{"type":"all"},"priority":"urgent"}"#),
            "priority"
        );
        assert_eq!(field(r#"{"type":"t","event":"e","data":1,"target":{"type":"all"},"persistent":1}"#), "persistent");
        assert_eq!(field("{"), "body");
    }

    #[test]
    fn a_stored_event_round_trips_and_frames_once() {
        // The record's payload reads back as the same event with its position.
        let body = br#"{"id":"e1","type":"task","event":"task.updated","data":{"a":1},"target":{"type":"all"},"persistent":true,"source":{"user_id":"u1"}}"#;
        let event = WsEvent::from_request(body, 1_000).unwrap();
        let draft = event.to_draft();
        assert_eq!((draft.kind, draft.event_type.as_str()), (EventKind::WebSocket, "all"));
        let back = WsEvent::from_stored(&draft.data, 7).unwrap();
        assert_eq!(back.position, Some(7));
        assert_eq!(back.source_user().as_deref(), Some("u1"));
        let frame: serde_json::Value = serde_json::from_str(&back.frame_text()).unwrap();
        assert_eq!(frame["room"], serde_json::Value::Null);
        assert_eq!(frame["event"]["position"], 7);
        assert_eq!(frame["event"]["data"]["a"], 1);
    }
}
