//! The domain → integration bridge: `[[bridge.integration]]` rules turn a domain event whose
//! routing key (from its type: `TaskCompleted` → `task.completed`) matches a rule's pattern into
//! an integration event with the rule's version.
//!
//! The integration event's id is derived from the domain event's id and the rule's index
//! (SHA-256, as a UUIDv8), so bridging the same domain event again — a durable handler replaying
//! its last batch after a crash — appends nothing new: the store answers "already appended".
//! Its `source` is `{"service": metadata.service or "herald", "user_id": metadata.user_id}`,
//! its correlation id the domain event's, its causation id the domain event's id.

use sha2::{Digest, Sha256};

use super::event::IntegrationEvent;
use crate::event::{EventKind, Uuid};
use crate::routing::{routing_key_for_type, PatternSet, RoutingError};
use crate::store::EventView;

/// One rule: a pattern over the derived routing key, and the version to publish with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub version: String,
}

/// The compiled rules.
#[derive(Debug)]
pub struct IntegrationBridge {
    rules: Vec<Rule>,
    patterns: PatternSet,
}

impl IntegrationBridge {
    /// Compiles `rules`; a bad pattern is refused.
    pub fn new(rules: Vec<Rule>) -> Result<Self, RoutingError> {
        let mut patterns = PatternSet::new();
        for rule in &rules {
            patterns.insert(&rule.pattern)?;
        }
        Ok(IntegrationBridge { rules, patterns })
    }

    /// The integration events one domain event becomes (none for other kinds or no match).
    pub fn translate(&self, view: &EventView<'_>) -> Vec<IntegrationEvent> {
        if view.kind != EventKind::Domain {
            return Vec::new();
        }
        let routing_key = routing_key_for_type(view.event_type);
        let matched = self.patterns.matches(&routing_key);
        if matched.is_empty() {
            return Vec::new();
        }
        let (mut service, mut user_id) = ("herald", None);
        for (key, value) in view.metadata() {
            match key {
                "service" => service = value,
                "user_id" => user_id = Some(value),
                _ => {}
            }
        }
        let source = match user_id {
            Some(user) => serde_json::json!({"service": service, "user_id": user}),
            None => serde_json::json!({"service": service}),
        };
        matched
            .into_iter()
            .map(|index| IntegrationEvent {
                id: Some(derived_id(view.id, index)),
                routing_key: routing_key.clone(),
                version: self.rules[index].version.clone(),
                source: source.to_string(),
                data: bytes::Bytes::copy_from_slice(view.data),
                correlation_id: Some(view.correlation_id),
                causation_id: Some(view.id),
            })
            .collect()
    }
}

/// The id of the integration event rule `rule` makes from domain event `id`.
pub fn derived_id(id: Uuid, rule: usize) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"herald.bridge.integration");
    hash.update(id.as_bytes());
    hash.update((rule as u64).to_le_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventDraft;
    use crate::store::{EventStore, Log, ReadQuery, StoreConfig};

    #[test]
    fn matching_domain_events_become_integration_events_with_stable_ids() {
        // TaskCompleted matches `task.*`; ProjectArchived matches nothing; ids are derived.
        let bridge = IntegrationBridge::new(vec![Rule { pattern: "task.*".into(), version: "2.0.0".into() }]).unwrap();
        let log = Log::in_memory(StoreConfig::default()).unwrap();
        log.append(&[
            EventDraft::new("TaskCompleted", "t1", r#"{"a":1}"#).with_metadata("user_id", "u1"),
            EventDraft::new("ProjectArchived", "p1", "{}"),
        ])
        .unwrap();
        let mut out = Vec::new();
        log.read(&ReadQuery::default(), &mut |view| {
            out.push((view.id, bridge.translate(&view)));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        let (domain_id, events) = &out[0];
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!((event.routing_key.as_str(), event.version.as_str()), ("task.completed", "2.0.0"));
        assert_eq!(event.causation_id, Some(*domain_id));
        assert_eq!(event.id, Some(derived_id(*domain_id, 0)));
        assert_ne!(derived_id(*domain_id, 0), derived_id(*domain_id, 1));
        assert!(event.source.contains(r#""user_id":"u1""#));
        assert_eq!(event.validate(), Ok(()));
        assert!(out[1].1.is_empty());
    }
}
