//! Routing keys and AMQP-topic patterns, shared by domain-bus subscriptions, webhook filters and
//! bridge rules (one matcher everywhere, so they can never disagree).
//!
//! - A routing key is dot-separated words of `[a-z0-9_-]`, 1–255 bytes; empty words are allowed
//!   (`a..b` has three words, the middle one empty).
//! - A pattern is the same with two wildcard words: `*` matches exactly one word, `#` zero or
//!   more. `#` may stand anywhere: `a.#.b` matches `a.b` and `a.x.y.b`; `#` alone matches every
//!   key. A word that mixes a wildcard with other characters (`a*`) is refused.
//! - [`routing_key_for_type`] turns an event type into its key: `TaskCreatedEvent` →
//!   `task.created`.
//!
//! [`PatternSet`] compiles many patterns into one trie; matching a key walks the trie once
//! with the set of live nodes (a small NFA), so the cost grows with the key's length and the
//! trie's branching, not with the number of patterns.

use std::collections::HashMap;

/// Longest routing key or pattern, in bytes.
pub const MAX_ROUTING_KEY_BYTES: usize = 255;

/// A routing key or pattern that breaks the rules; the text says which.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{text}`: {reason}")]
pub struct RoutingError {
    pub what: &'static str,
    pub text: String,
    pub reason: String,
}

fn check(what: &'static str, text: &str, wildcards: bool) -> Result<(), RoutingError> {
    let error = |reason: String| RoutingError { what, text: text.to_owned(), reason };
    if text.is_empty() || text.len() > MAX_ROUTING_KEY_BYTES {
        return Err(error(format!("must be 1–{MAX_ROUTING_KEY_BYTES} bytes, got {}", text.len())));
    }
    for word in text.split('.') {
        if wildcards && (word == "*" || word == "#") {
            continue;
        }
        if let Some(bad) = word.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-')) {
            let hint = if matches!(bad, '*' | '#') { " (a wildcard must be a whole word)" } else { "" };
            return Err(error(format!("character `{bad}` in word `{word}`; words are [a-z0-9_-]{hint}")));
        }
    }
    Ok(())
}

/// Checks a routing key.
pub fn validate_routing_key(key: &str) -> Result<(), RoutingError> {
    check("routing key", key, false)
}

/// Checks a pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), RoutingError> {
    check("pattern", pattern, true)
}

/// The spec's type → routing key rule: split CamelCase into words, drop a trailing `Event`,
/// lowercase, join with `.`. Characters outside `[A-Za-z0-9_-]` separate words too, and an
/// uppercase run is one word (`HTTPRequestSent` → `http.request.sent`).
pub fn routing_key_for_type(event_type: &str) -> String {
    let chars: Vec<char> = event_type.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        let previous = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let starts_word = c.is_ascii_uppercase()
            && previous.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if starts_word && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    if words.len() > 1 && words.last().is_some_and(|w| w == "event") {
        words.pop();
    }
    words.join(".")
}

#[derive(Default, Debug)]
struct Node {
    literal: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Whether this node is reached by a `#` edge: it then also consumes any further word.
    is_hash: bool,
    /// Ids of the patterns that end here.
    ends: Vec<usize>,
}

/// Many patterns compiled into one trie; [`PatternSet::matches`] returns the ids of every pattern
/// a key matches.
#[derive(Debug)]
pub struct PatternSet {
    nodes: Vec<Node>,
    patterns: usize,
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet { nodes: vec![Node::default()], patterns: 0 }
    }
}

impl PatternSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pattern; returns its id (ids count up from 0 in insertion order).
    pub fn insert(&mut self, pattern: &str) -> Result<usize, RoutingError> {
        validate_pattern(pattern)?;
        let mut node = 0;
        for word in pattern.split('.') {
            node = match word {
                "*" => self.child(node, |n| &mut n.star),
                "#" => {
                    let next = self.child(node, |n| &mut n.hash);
                    self.nodes[next].is_hash = true;
                    next
                }
                literal => match self.nodes[node].literal.get(literal) {
                    Some(&next) => next,
                    None => {
                        let next = self.push();
                        self.nodes[node].literal.insert(literal.into(), next);
                        next
                    }
                },
            };
        }
        let id = self.patterns;
        self.patterns += 1;
        self.nodes[node].ends.push(id);
        Ok(id)
    }

    fn push(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn child(&mut self, node: usize, slot: fn(&mut Node) -> &mut Option<usize>) -> usize {
        if let Some(next) = *slot(&mut self.nodes[node]) {
            return next;
        }
        let next = self.push();
        *slot(&mut self.nodes[node]) = Some(next);
        next
    }

    /// How many patterns were inserted.
    pub fn len(&self) -> usize {
        self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns == 0
    }

    /// The ids of the patterns `key` matches, ascending, each once.
    pub fn matches(&self, key: &str) -> Vec<usize> {
        let mut live = Vec::new();
        self.add_with_hashes(0, &mut live);
        for word in key.split('.') {
            let mut next = Vec::new();
            for &node in &live {
                let node_ref = &self.nodes[node];
                if let Some(&child) = node_ref.literal.get(word) {
                    self.add_with_hashes(child, &mut next);
                }
                if let Some(child) = node_ref.star {
                    self.add_with_hashes(child, &mut next);
                }
                if node_ref.is_hash {
                    // A `#` node consumes any number of further words by staying live.
                    self.add_with_hashes(node, &mut next);
                }
            }
            live = next;
            if live.is_empty() {
                return Vec::new();
            }
        }
        let mut ids: Vec<usize> = live.iter().flat_map(|&n| self.nodes[n].ends.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Adds `node` and, since `#` may match zero words, every `#` node reachable from it by
    /// `#` edges alone.
    fn add_with_hashes(&self, node: usize, out: &mut Vec<usize>) {
        let mut current = Some(node);
        while let Some(n) = current {
            if out.contains(&n) {
                return;
            }
            out.push(n);
            current = self.nodes[n].hash;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let mut set = PatternSet::new();
        set.insert(pattern).unwrap();
        !set.matches(key).is_empty()
    }

    #[test]
    fn topic_semantics_on_tricky_vectors() {
        // Each row: pattern, key, expected. Includes cases RabbitMQ, kombu and LavinMQ got wrong.
        let table: &[(&str, &str, bool)] = &[
            ("task.*", "task.completed", true),
            ("task.*", "task", false),
            ("task.*", "task.a.b", false),
            ("task.#", "task", true),
            ("task.#", "task.completed", true),
            ("task.#", "task.a.b", true),
            ("#", "anything.at.all", true),
            ("#", "a", true),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y", false),
            ("a.#.b", "a.b.b", true),
            ("a.#.b", "b", false),
            ("#.b", "b", true),
            ("#.b", "a.b.c", false),
            ("#.b.#", "b", true),
            ("#.b.#", "x.b.y.z", true),
            ("#.#", "a", true),
            ("a.#.#", "a", true),
            ("*.#", "a", true),
            ("*.#", "a.b.c", true),
            ("#.*", "a", true),
            ("#.*.*", "a", false),
            ("#.*.*", "a.b", true),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.*", "a", false),
            ("a.*.c", "a..c", true),
            ("a.*.c", "a.c", false),
            ("a..c", "a..c", true),
            ("a..c", "a.c", false),
            ("*", "", true),
            ("a.*", "a.", true),
            ("a.#", "a.", true),
            ("#.a.#.a.#", "a.a", true),
            ("#.a.#.a.#", "a.b.c", false),
            ("x.*.#", "x", false),
            ("x.*.#", "x.y", true),
            ("x.#.*", "x.y", true),
            ("x.#.*", "x", false),
            ("task.created", "task.created", true),
            ("task.created", "task.created.extra", false),
            ("task.created", "task", false),
        ];
        for &(pattern, key, expected) in table {
            assert_eq!(matches(pattern, key), expected, "pattern {pattern:?} against key {key:?}");
        }
    }

    #[test]
    fn one_trie_reports_every_matching_pattern_once() {
        // Shared prefixes and overlapping wildcards report each matching pattern exactly once.
        let mut set = PatternSet::new();
        let ids: Vec<usize> = ["task.*", "task.#", "#", "project.#", "task.completed", "#.completed", "*.*"]
            .iter()
            .map(|p| set.insert(p).unwrap())
            .collect();
        assert_eq!(ids, (0..7).collect::<Vec<_>>());
        assert_eq!(set.matches("task.completed"), vec![0, 1, 2, 4, 5, 6]);
        assert_eq!(set.matches("project.a.completed"), vec![2, 3, 5]);
        assert_eq!(set.matches("task"), vec![1, 2]);
        assert_eq!(set.len(), 7);
    }

    #[test]
    fn bad_keys_and_patterns_are_refused_with_the_reason() {
        // Uppercase, spaces, partial wildcards and length limits are rejected.
        for pattern in ["Task.*", "task.a*", "task.#x", "", "a b", &"a".repeat(256)] {
            assert!(validate_pattern(pattern).is_err(), "{pattern:?}");
        }
        assert!(validate_routing_key("task.*").is_err());
        assert!(validate_routing_key("task.completed").is_ok());
        assert!(validate_routing_key("a..b").is_ok());
        let error = PatternSet::new().insert("task.a*").unwrap_err();
        assert!(error.to_string().contains("whole word"), "{error}");
    }

    #[test]
    fn types_become_routing_keys() {
        // The spec's CamelCase rule, with acronyms, digits and separators.
        for (event_type, key) in [
            ("TaskCreated", "task.created"),
            ("TaskCreatedEvent", "task.created"),
            ("TaskCompleted", "task.completed"),
            ("Event", "event"),
            ("HTTPRequestSent", "http.request.sent"),
            ("UserID2Changed", "user.id2.changed"),
            ("task.created", "task.created"),
            ("Order_Placed", "order_placed"),
            ("projectArchivedEvent", "project.archived"),
        ] {
            assert_eq!(routing_key_for_type(event_type), key, "{event_type}");
        }
    }
}
