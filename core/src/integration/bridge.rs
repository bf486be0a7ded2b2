//! The domain → integration bridge: `[[bridge.integration]]` rules turn a domain event whose
//! routing key (from its type: `TaskCompleted` → `task.completed`) matches a rule's pattern into
//! an integration event with the rule's version.
//!
//! The system runs the bridge on the drafts of a publish and appends the integration events in
//! the same atomic batch, right after the domain events: both are stored or neither, with no
//! window in which a crash or a full ring could lose the integration event. A bridged domain
//! event needs its id before the append (the integration event's causation id), so
//! [`IntegrationBridge::prepare`] gives one to a matching draft that has none. The integration
//! event's id is derived from the domain event's id and the rule's index (SHA-256, as a UUIDv8),
//! so re-sending a stored domain event is still an idempotent retry. Its `source` is
//! `{"service": metadata.service or "herald", "user_id": metadata.user_id}`, its correlation id
//! the domain event's, its causation id the domain event's id.

use sha2::{Digest, Sha256};

use super::event::IntegrationEvent;
use crate::event::{new_event_id, EventDraft, EventKind, Uuid};
use crate::routing::{routing_key_for_type, validate_routing_key, PatternSet, RoutingError};

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

    /// Gives every domain draft that a rule matches an id (and a correlation id) if it has none,
    /// and returns the integration drafts they become, in draft order.
    pub fn prepare(&self, drafts: &mut [EventDraft], now_ns: u64) -> Vec<EventDraft> {
        let mut bridged = Vec::new();
        for draft in drafts.iter_mut().filter(|d| d.kind == EventKind::Domain) {
            let routing_key = routing_key_for_type(&draft.event_type);
            if validate_routing_key(&routing_key).is_err() {
                continue; // a type with no valid key (no ASCII word, or too long) matches nothing
            }
            let matched = self.patterns.matches(&routing_key);
            if matched.is_empty() {
                continue;
            }
            let id = *draft.id.get_or_insert_with(|| new_event_id(now_ns));
            let correlation = *draft.correlation_id.get_or_insert(id);
            let service = draft.metadata.get("service").map_or("herald", String::as_str);
            let source = match draft.metadata.get("user_id") {
                Some(user) => serde_json::json!({"service": service, "user_id": user}),
                None => serde_json::json!({"service": service}),
            };
            for index in matched {
                let event = IntegrationEvent {
                    id: Some(derived_id(id, index)),
                    routing_key: routing_key.clone(),
                    version: self.rules[index].version.clone(),
                    source: source.to_string(),
                    data: draft.data.clone(),
                    correlation_id: Some(correlation),
                    causation_id: Some(id),
                };
                bridged.push(event.to_draft());
            }
        }
        bridged
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

    #[test]
    fn matching_domain_drafts_become_integration_drafts_with_stable_ids() {
        // TaskCompleted matches `task.*` and gets an id; ProjectArchived matches nothing and is
        // left alone; a given id is kept and the derived id follows from it.
        let bridge = IntegrationBridge::new(vec![Rule { pattern: "task.*".into(), version: "2.0.0".into() }]).unwrap();
        let given = Uuid::now_v7();
        let mut drafts = vec![
            EventDraft::new("TaskCompleted", "t1", r#"{"a":1}"#).with_metadata("user_id", "u1"),
            EventDraft::new("ProjectArchived", "p1", "{}"),
            EventDraft::new("TaskStarted", "t2", "{}").with_id(given),
            EventDraft::new("日本", "t3", "{}"),
        ];
        let bridged = bridge.prepare(&mut drafts, 1_000_000_000);
        assert_eq!(bridged.len(), 2);
        let domain_id = drafts[0].id.expect("a bridged draft gets an id");
        assert_eq!(drafts[0].correlation_id, Some(domain_id));
        assert_eq!(drafts[1].id, None);
        assert_eq!(drafts[2].id, Some(given));
        let first = &bridged[0];
        assert_eq!(first.kind, EventKind::Integration);
        assert_eq!((first.event_type.as_str(), first.metadata["version"].as_str()), ("task.completed", "2.0.0"));
        assert_eq!(first.causation_id, Some(domain_id));
        assert_eq!(first.id, Some(derived_id(domain_id, 0)));
        assert!(first.metadata["source"].contains(r#""user_id":"u1""#));
        assert_eq!(bridged[1].id, Some(derived_id(given, 0)));
        assert_ne!(derived_id(given, 0), derived_id(given, 1));
        assert!(bridged.iter().all(|d| d.validate().is_ok()));
    }
}
