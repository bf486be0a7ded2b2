//! The integration event: a versioned, routing-keyed fact that leaves the process
//! (`task.completed`, version `1.0.0`, from service `tasks`).
//!
//! In the log it is a record of kind [`EventKind::Integration`] whose `type` is the routing key,
//! whose metadata holds `version` and `source` (the source object as JSON text), and whose
//! aggregate is empty. [`IntegrationEvent::to_draft`] and [`Stored::from_view`] are the two halves
//! of that mapping; reads render it in the spec's shape (`event::json`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{
    check_json, data_not_json, EventDraft, EventKind, ExpectedVersion, Metadata, Uuid, ValidationError, MAX_DATA_BYTES,
};
use crate::routing::validate_routing_key;
use crate::store::EventView;

/// Metadata key holding the version.
pub const VERSION_KEY: &str = "version";
/// Metadata key holding the source object as JSON text.
pub const SOURCE_KEY: &str = "source";
/// Bytes allowed in `version`.
pub const MAX_VERSION_BYTES: usize = 64;
/// Bytes allowed in the source object, as JSON.
pub const MAX_SOURCE_BYTES: usize = 4096;

/// An integration event as a publisher hands it in.
#[derive(Clone, Debug, PartialEq)]
pub struct IntegrationEvent {
    /// The event id and the webhook message id; a UUIDv7 is generated when `None`.
    pub id: Option<Uuid>,
    /// Dot-separated words of `[a-z0-9_-]`, 1–255 bytes.
    pub routing_key: String,
    /// The schema version of `data`, e.g. `1.0.0`.
    pub version: String,
    /// The source object as JSON: `{"service": …, "user_id"?: …}`, more fields allowed.
    pub source: String,
    /// The payload: one JSON value.
    pub data: Bytes,
    /// The workflow id (defaults to the event's own id).
    pub correlation_id: Option<Uuid>,
    /// The event that caused this one (a bridged domain event, say).
    pub causation_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct Json<'a> {
    id: Option<String>,
    routing_key: Option<String>,
    version: Option<String>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "crate::event::json::present")]
    data: Option<&'a RawValue>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

#[derive(Deserialize)]
struct SourceJson {
    service: Option<serde_json::Value>,
    user_id: Option<serde_json::Value>,
}

impl IntegrationEvent {
    /// An event with the given routing key, version, source service and JSON payload.
    pub fn new(
        routing_key: impl Into<String>,
        version: impl Into<String>,
        service: &str,
        data: impl Into<Bytes>,
    ) -> Self {
        IntegrationEvent {
            id: None,
            routing_key: routing_key.into(),
            version: version.into(),
            source: serde_json::json!({ "service": service }).to_string(),
            data: data.into(),
            correlation_id: None,
            causation_id: None,
        }
    }

    /// Parses the spec's request body (`POST /v1/integration-events`); errors name the field.
    /// Text that is not JSON is reported on the field `body`.
    pub fn from_json(body: &[u8]) -> Result<IntegrationEvent, ValidationError> {
        let parsed: Json<'_> =
            serde_json::from_slice(body).map_err(|error| ValidationError::new("body", error.to_string()))?;
        let required = |field: &str| ValidationError::new(field, "is required");
        let uuid = |field: &str, text: Option<String>| {
            text.map(|text| {
                Uuid::try_parse(&text).map_err(|_| ValidationError::new(field, format!("`{text}` is not a UUID")))
            })
            .transpose()
        };
        let event = IntegrationEvent {
            id: uuid("id", parsed.id)?,
            routing_key: parsed.routing_key.ok_or_else(|| required("routing_key"))?,
            version: parsed.version.ok_or_else(|| required("version"))?,
            source: parsed.source.ok_or_else(|| required("source"))?.get().to_owned(),
            data: Bytes::copy_from_slice(parsed.data.ok_or_else(|| required("data"))?.get().as_bytes()),
            correlation_id: uuid("correlation_id", parsed.correlation_id)?,
            causation_id: uuid("causation_id", parsed.causation_id)?,
        };
        event.validate()?;
        Ok(event)
    }

    /// Checks every rule: routing key, version, source shape, payload.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_routing_key(&self.routing_key).map_err(|error| ValidationError::new("routing_key", error.reason))?;
        if self.version.is_empty() || self.version.len() > MAX_VERSION_BYTES {
            return Err(ValidationError::new(
                "version",
                format!("must be 1–{MAX_VERSION_BYTES} bytes, got {}", self.version.len()),
            ));
        }
        if self.source.len() > MAX_SOURCE_BYTES {
            return Err(ValidationError::new("source", format!("must be at most {MAX_SOURCE_BYTES} bytes of JSON")));
        }
        let source: SourceJson = serde_json::from_str(&self.source)
            .map_err(|_| ValidationError::new("source", "must be an object with a `service` string"))?;
        match source.service {
            Some(serde_json::Value::String(service)) if !service.is_empty() && service.len() <= 256 => {}
            Some(_) => return Err(ValidationError::new("source.service", "must be a string of 1–256 bytes")),
            None => return Err(ValidationError::new("source.service", "is required")),
        }
        if source.user_id.as_ref().is_some_and(|user| !user.is_string() && !user.is_null()) {
            return Err(ValidationError::new("source.user_id", "must be a string"));
        }
        if self.data.len() > MAX_DATA_BYTES {
            return Err(ValidationError::new("data", format!("must be at most {MAX_DATA_BYTES} bytes")));
        }
        check_json(&self.data).map_err(data_not_json)?;
        Ok(())
    }

    /// The log record for this event (validate first).
    pub fn to_draft(&self) -> EventDraft {
        let mut metadata = Metadata::new();
        metadata.insert(VERSION_KEY.into(), self.version.clone());
        metadata.insert(SOURCE_KEY.into(), self.source.clone());
        EventDraft {
            kind: EventKind::Integration,
            id: self.id,
            event_type: self.routing_key.clone(),
            aggregate_id: String::new(),
            expected_version: ExpectedVersion::Any,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata,
            data: self.data.clone(),
            checked: Default::default(),
        }
    }
}

/// A stored integration event's fields, borrowed from a log view.
pub struct Stored<'a> {
    pub id: Uuid,
    pub position: u64,
    pub timestamp_ns: u64,
    pub routing_key: &'a str,
    pub version: &'a str,
    /// JSON text of the source object (`{}` if the record has none).
    pub source: &'a str,
    pub data: &'a [u8],
}

impl<'a> Stored<'a> {
    /// The integration event in `view`, or `None` for records of other kinds.
    pub fn from_view(view: &EventView<'a>) -> Option<Stored<'a>> {
        if view.kind != EventKind::Integration {
            return None;
        }
        let mut version = "";
        let mut source = "{}";
        for (key, value) in view.metadata() {
            match key {
                VERSION_KEY => version = value,
                SOURCE_KEY => source = value,
                _ => {}
            }
        }
        Some(Stored {
            id: view.id,
            position: view.position,
            timestamp_ns: view.timestamp_ns,
            routing_key: view.event_type,
            version,
            source,
            data: view.data,
        })
    }

    /// The webhook body of the spec: `{"id", "type", "version", "timestamp", "source", "data"}`.
    pub fn webhook_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        let source: &RawValue = serde_json::from_str(self.source)?;
        let data: &RawValue = serde_json::from_slice(self.data)?;
        serde_json::to_vec(&serde_json::json!({
            "id": self.id,
            "type": self.routing_key,
            "version": self.version,
            "timestamp": crate::event::time::format_rfc3339_micros(self.timestamp_ns),
            "source": source,
            "data": data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_parses_and_each_rule_names_its_field() {
        // A full body parses; each broken field is reported by name.
        let event = IntegrationEvent::from_json(
            br#"{"routing_key":"task.completed","version":"1.0.0","source":{"service":"tasks","user_id":"u1"},"data":{"a":1},"extra":0}"#,
        )
        .unwrap();
        assert_eq!(event.routing_key, "task.completed");
        assert_eq!(&event.data[..], br#"{"a":1}"#);
        let field_of = |json: &str| IntegrationEvent::from_json(json.as_bytes()).unwrap_err().field;
        let ok = r#""version":"1","source":{"service":"s"},"data":1"#;
        assert_eq!(field_of(&format!(r#"{{"routing_key":"Task.Done",{ok}}}"#)), "routing_key");
        assert_eq!(field_of(&format!(r#"{{"routing_key":"",{ok}}}"#)), "routing_key");
        assert_eq!(field_of(&format!(r#"{{{ok}}}"#)), "routing_key");
        assert_eq!(field_of(r#"{"routing_key":"a","version":"1","source":{},"data":1}"#), "source.service");
        assert_eq!(field_of(r#"{"routing_key":"a","version":"1","source":"s","data":1}"#), "source");
        assert_eq!(field_of(r#"{"routing_key":"a","version":"","source":{"service":"s"},"data":1}"#), "version");
        assert_eq!(field_of(r#"{"routing_key":"a","version":"1","source":{"service":"s"}}"#), "data");
        assert_eq!(field_of(&format!(r#"{{"routing_key":"a",{ok},"id":"x"}}"#)), "id");
        assert_eq!(field_of("{"), "body");
    }

    #[test]
    fn a_draft_round_trips_through_the_log_record() {
        // to_draft and Stored::from_view agree, and the webhook body has the spec's fields.
        let mut event = IntegrationEvent::new("task.completed", "2.0.0", "tasks", r#"{"task_id":"t1"}"#);
        event.id = Some(Uuid::now_v7());
        let log = crate::store::Log::in_memory(crate::store::StoreConfig::default()).unwrap();
        use crate::store::EventStore;
        log.append(&[event.to_draft()]).unwrap();
        let mut body = None;
        log.read(&crate::store::ReadQuery::default(), &mut |view| {
            let stored = Stored::from_view(&view).unwrap();
            assert_eq!((stored.routing_key, stored.version), ("task.completed", "2.0.0"));
            body = Some(stored.webhook_body().unwrap());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body["type"], "task.completed");
        assert_eq!(body["source"]["service"], "tasks");
        assert_eq!(body["data"]["task_id"], "t1");
        assert_eq!(body["id"], event.id.unwrap().to_string());
    }
}
