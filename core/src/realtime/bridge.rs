//! `[[bridge.websocket]]` rules: a domain or integration event whose routing key matches a
//! rule's pattern becomes a WebSocket event to the room its template names.
//!
//! A template is text with `{field}` placeholders over the event: `id`, `type`, `routing_key`,
//! `aggregate_id`, `metadata.<key>`, `data.<path>` (dots walk into objects; strings, numbers
//! and booleans fill in), and for integration events `source.<key>` and `version`. A placeholder
//! naming a missing field skips the rule for that event (counted). The WebSocket event's id is
//! derived from the source event's id and the rule's index (SHA-256, UUIDv8), so re-sending the
//! source event is still an idempotent retry; its `type` is the routing key's first word, its
//! `event` the routing key, its `data` the source event's data, its `source` `{"user_id"}` when
//! the event names a user (`metadata.user_id`, or the integration source's `user_id`), which
//! `exclude_source` then excludes.

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::event::{Priority, Target, WsEvent};
use crate::event::time::format_rfc3339_micros;
use crate::event::{EventDraft, EventKind, Uuid};
use crate::routing::{routing_key_for_type, PatternSet, RoutingError};

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub from: EventKind,
    pub pattern: String,
    pub room: String,
    pub exclude_source: bool,
    pub priority: Priority,
    pub persistent: bool,
}

/// The compiled rules.
#[derive(Debug)]
pub struct WsBridge {
    rules: Vec<Rule>,
    domain: PatternSet,
    domain_rules: Vec<usize>,
    integration: PatternSet,
    integration_rules: Vec<usize>,
}

/// What one draft became: events, and how many rules were skipped for a missing field.
pub struct Translated {
    pub events: Vec<WsEvent>,
    pub skipped: u64,
}

impl WsBridge {
    pub fn new(rules: Vec<Rule>) -> Result<Self, RoutingError> {
        let (mut domain, mut integration) = (PatternSet::new(), PatternSet::new());
        let (mut domain_rules, mut integration_rules) = (Vec::new(), Vec::new());
        for (index, rule) in rules.iter().enumerate() {
            if rule.from == EventKind::Integration {
                integration.insert(&rule.pattern)?;
                integration_rules.push(index);
            } else {
                domain.insert(&rule.pattern)?;
                domain_rules.push(index);
            }
        }
        Ok(WsBridge { rules, domain, domain_rules, integration, integration_rules })
    }

    /// Whether some rule matches `draft` (which then needs an id before it is translated).
    pub fn matches(&self, draft: &EventDraft) -> bool {
        match draft.kind {
            EventKind::Domain => {
                !self.domain.is_empty() && !self.domain.matches(&routing_key_for_type(&draft.event_type)).is_empty()
            }
            EventKind::Integration => !self.integration.matches(&draft.event_type).is_empty(),
            EventKind::WebSocket => false,
        }
    }

    /// The WebSocket events `draft` (with its id set) becomes.
    pub fn translate(&self, draft: &EventDraft, now_ns: u64) -> Translated {
        let mut out = Translated { events: Vec::new(), skipped: 0 };
        let Some(id) = draft.id else { return out };
        let (routing_key, matched) = match draft.kind {
            EventKind::Domain => {
                let key = routing_key_for_type(&draft.event_type);
                let matched: Vec<usize> = self.domain.matches(&key).into_iter().map(|i| self.domain_rules[i]).collect();
                (key, matched)
            }
            EventKind::Integration => {
                let matched: Vec<usize> = self
                    .integration
                    .matches(&draft.event_type)
                    .into_iter()
                    .map(|i| self.integration_rules[i])
                    .collect();
                (draft.event_type.clone(), matched)
            }
            EventKind::WebSocket => return out,
        };
        if matched.is_empty() {
            return out;
        }
        let fields = Fields::new(draft, id, &routing_key);
        for index in matched {
            let rule = &self.rules[index];
            let Some(room) = fields.render(&rule.room) else {
                out.skipped += 1;
                continue;
            };
            let Some((kind, room_id)) = room.split_once(':').filter(|(k, i)| !k.is_empty() && !i.is_empty()) else {
                out.skipped += 1;
                continue;
            };
            let user = fields.user();
            let source = match &user {
                Some(user) => serde_json::json!({"user_id": user}).to_string(),
                None => "{}".to_owned(),
            };
            let exclude_users = match (&user, rule.exclude_source) {
                (Some(user), true) => vec![user.clone()],
                _ => Vec::new(),
            };
            let (Ok(data), Ok(source)) = (
                RawValue::from_string(String::from_utf8_lossy(&draft.data).into_owned()),
                RawValue::from_string(source),
            ) else {
                out.skipped += 1;
                continue;
            };
            let event = WsEvent {
                id: derived_id(id, index).to_string(),
                kind: routing_key.split('.').next().unwrap_or(&routing_key).to_owned(),
                event: routing_key.clone(),
                data,
                timestamp: format_rfc3339_micros(now_ns),
                source,
                target: Target { kind: kind.to_owned(), id: Some(room_id.to_owned()), exclude_users },
                priority: rule.priority,
                persistent: rule.persistent,
                position: None,
            };
            if event.validate().is_ok() {
                out.events.push(event);
            } else {
                out.skipped += 1;
            }
        }
        out
    }
}

/// The id of the WebSocket event rule `rule` makes from event `id`.
pub fn derived_id(id: Uuid, rule: usize) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"herald.bridge.websocket");
    hash.update(id.as_bytes());
    hash.update((rule as u64).to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.finalize()[..16]);
    Uuid::new_v8(bytes)
}

/// A draft's fields, for templates.
struct Fields<'a> {
    draft: &'a EventDraft,
    id: Uuid,
    routing_key: &'a str,
    data: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
}

impl<'a> Fields<'a> {
    fn new(draft: &'a EventDraft, id: Uuid, routing_key: &'a str) -> Self {
        let data = serde_json::from_slice(&draft.data).ok();
        let source = draft.metadata.get("source").and_then(|s| serde_json::from_str(s).ok());
        Fields { draft, id, routing_key, data, source }
    }

    fn user(&self) -> Option<String> {
        match self.draft.kind {
            EventKind::Integration => self.source.as_ref()?.get("user_id")?.as_str().map(str::to_owned),
            _ => self.draft.metadata.get("user_id").cloned(),
        }
    }

    fn field(&self, name: &str) -> Option<String> {
        let scalar = |value: &serde_json::Value| match value {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            serde_json::Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        };
        let walk = |root: &serde_json::Value, path: &str| {
            path.split('.').try_fold(root, |value, key| value.get(key)).and_then(scalar)
        };
        let integration = self.draft.kind == EventKind::Integration;
        match name {
            "id" => Some(self.id.to_string()),
            "type" => Some(self.draft.event_type.clone()),
            "routing_key" => Some(self.routing_key.to_owned()),
            "aggregate_id" if !integration => Some(self.draft.aggregate_id.clone()),
            "version" if integration => self.draft.metadata.get("version").cloned(),
            _ => {
                if let Some(path) = name.strip_prefix("data.") {
                    walk(self.data.as_ref()?, path)
                } else if let Some(path) = name.strip_prefix("source.").filter(|_| integration) {
                    walk(self.source.as_ref()?, path)
                } else if let Some(key) = name.strip_prefix("metadata.").filter(|_| !integration) {
                    self.draft.metadata.get(key).cloned()
                } else {
                    None
                }
            }
        }
        .filter(|value| !value.is_empty())
    }

    /// The template with every placeholder filled, or `None` if one names a missing field.
    fn render(&self, template: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}')? + open;
            out.push_str(&self.field(&rest[open + 1..close])?);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: EventKind, pattern: &str, room: &str) -> Rule {
        Rule {
            from,
            pattern: pattern.into(),
            room: room.into(),
            exclude_source: true,
            priority: Priority::High,
            persistent: true,
        }
    }

    #[test]
    fn a_domain_event_becomes_a_room_event_excluding_its_user() {
        // The template fills from metadata; the source user is excluded; a missing field skips.
        let bridge = WsBridge::new(vec![rule(EventKind::Domain, "task.#", "project:{metadata.project_id}")]).unwrap();
        let draft = EventDraft::new("TaskUpdated", "t1", r#"{"x":1}"#)
            .with_id(Uuid::now_v7())
            .with_metadata("project_id", "p1")
            .with_metadata("user_id", "u2");
        let out = bridge.translate(&draft, 1_000);
        assert_eq!(out.events.len(), 1);
        let event = &out.events[0];
        assert_eq!(event.room().as_deref(), Some("project:p1"));
        assert_eq!((event.kind.as_str(), event.event.as_str()), ("task", "task.updated"));
        assert_eq!(event.target.exclude_users, vec!["u2".to_string()]);
        assert_eq!(event.id, derived_id(draft.id.unwrap(), 0).to_string());
        let without = EventDraft::new("TaskUpdated", "t1", "{}").with_id(Uuid::now_v7());
        let out = bridge.translate(&without, 1_000);
        assert_eq!((out.events.len(), out.skipped), (0, 1));
    }

    #[test]
    fn an_integration_event_fills_from_data_and_source() {
        // `data.<path>` walks objects; the integration source names the user.
        let bridge = WsBridge::new(vec![rule(EventKind::Integration, "order.*", "team:{data.order.team}")]).unwrap();
        let mut integration =
            crate::integration::IntegrationEvent::new("order.paid", "1", "shop", r#"{"order":{"team":7}}"#);
        integration.source = r#"{"service":"shop","user_id":"u5"}"#.into();
        integration.id = Some(Uuid::now_v7());
        let out = bridge.translate(&integration.to_draft(), 1_000);
        assert_eq!(out.events[0].room().as_deref(), Some("team:7"));
        assert_eq!(out.events[0].source_user().as_deref(), Some("u5"));
        let domain = EventDraft::new("OrderPaid", "o1", "{}").with_id(Uuid::now_v7());
        assert!(bridge.translate(&domain, 1_000).events.is_empty(), "integration rules ignore domain events");
    }
}
