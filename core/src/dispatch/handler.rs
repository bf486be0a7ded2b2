//! Subscriptions: what a handler wants (one type, a routing-key pattern, or everything), how it
//! is run (its group's thread, retries with backoff, panic isolation) and where failures go
//! (the dead-letter sink).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context;
use super::metrics::HandlerMetrics;
use crate::event::{Event, EventKind};
use crate::routing::{routing_key_for_type, validate_pattern, PatternSet};
use crate::store::EventView;

/// What a handler returns; any error type converts with `?`.
pub type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

type HandlerFn = Box<dyn FnMut(&EventView<'_>) -> HandlerResult + Send>;

/// A typed domain event: its type name and its JSON (de)serialization through serde.
pub trait DomainEvent: Serialize + DeserializeOwned + Send + 'static {
    /// The stored `type`, e.g. `TaskCreated`.
    const EVENT_TYPE: &'static str;

    /// The aggregate (stream) the event belongs to.
    fn aggregate_id(&self) -> String;
}

/// Which events a subscription receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Domain events of exactly this type.
    Type(String),
    /// Domain events whose routing key (from the type, see [`routing_key_for_type`]) matches
    /// this AMQP topic pattern.
    Pattern(String),
    /// Every record of every kind (domain, integration, WebSocket); the handler reads `kind`.
    All,
}

/// A handler with its filter and options; register it with the bus builder.
pub struct Subscription {
    pub(crate) name: String,
    pub(crate) filter: Filter,
    pub(crate) group: String,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) durable: bool,
    pub(crate) run: HandlerFn,
}

impl Subscription {
    fn new(name: impl Into<String>, filter: Filter, run: HandlerFn) -> Self {
        Subscription {
            name: name.into(),
            filter,
            group: "default".into(),
            max_retries: 3,
            backoff: Duration::from_millis(10),
            durable: false,
            run,
        }
    }

    /// A typed handler for events of `E::EVENT_TYPE`; the payload is deserialized for it.
    pub fn typed<E: DomainEvent>(
        name: impl Into<String>,
        mut handle: impl FnMut(E, &EventView<'_>) -> HandlerResult + Send + 'static,
    ) -> Self {
        let run: HandlerFn = Box::new(move |view| {
            let event: E = serde_json::from_slice(view.data)?;
            handle(event, view)
        });
        Subscription::new(name, Filter::Type(E::EVENT_TYPE.into()), run)
    }

    /// A handler for events of one type, over the zero-copy view.
    pub fn of_type(
        name: impl Into<String>,
        event_type: impl Into<String>,
        handle: impl FnMut(&EventView<'_>) -> HandlerResult + Send + 'static,
    ) -> Self {
        Subscription::new(name, Filter::Type(event_type.into()), Box::new(handle))
    }

    /// A handler for every event whose routing key matches `pattern` (`task.*`, `#.completed`).
    pub fn pattern(
        name: impl Into<String>,
        pattern: impl Into<String>,
        handle: impl FnMut(&EventView<'_>) -> HandlerResult + Send + 'static,
    ) -> Self {
        Subscription::new(name, Filter::Pattern(pattern.into()), Box::new(handle))
    }

    /// A handler for every event.
    pub fn all(name: impl Into<String>, handle: impl FnMut(&EventView<'_>) -> HandlerResult + Send + 'static) -> Self {
        Subscription::new(name, Filter::All, Box::new(handle))
    }

    /// Runs in this handler group (one consumer thread per group; default `default`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Retries a failed event this many times (default 3) before dead-lettering it.
    pub fn retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The first retry's delay; each later one doubles it, capped at 30 s (default 10 ms).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checkpoints its position under its name; after a restart it catches up from the store,
    /// then goes live (see [`super::EventBus`]).
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(format!("handler name `{}` must be 1–128 bytes", self.name));
        }
        if self.durable && !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(format!("durable handler name `{}` may only use [A-Za-z0-9._-]", self.name));
        }
        if let Filter::Pattern(pattern) = &self.filter {
            validate_pattern(pattern).map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

/// An event a handler gave up on, with why.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub handler: String,
    pub event: Event,
    pub error: String,
    pub attempts: u32,
}

/// Where dead letters go. The default keeps the last 10,000 in memory ([`super::EventBus::dead_letters`]).
pub type DeadLetterSink = Arc<dyn Fn(DeadLetter) + Send + Sync>;

/// The handlers of one group, with their filters compiled into one pattern trie.
pub(crate) struct Group {
    pub name: String,
    pub handlers: Vec<Registered>,
    patterns: PatternSet,
    /// Per pattern id in `patterns`, the handler it belongs to.
    pattern_owner: Vec<usize>,
}

pub(crate) struct Registered {
    pub subscription: Subscription,
    pub metrics: Arc<HandlerMetrics>,
}

impl Group {
    pub fn new(name: String, subscriptions: Vec<(Subscription, Arc<HandlerMetrics>)>) -> Self {
        let mut patterns = PatternSet::new();
        let mut pattern_owner = Vec::new();
        let handlers: Vec<Registered> =
            subscriptions.into_iter().map(|(subscription, metrics)| Registered { subscription, metrics }).collect();
        for (index, handler) in handlers.iter().enumerate() {
            if let Filter::Pattern(pattern) = &handler.subscription.filter {
                // Checked when the subscription was registered.
                if patterns.insert(pattern).is_ok() {
                    pattern_owner.push(index);
                }
            }
        }
        Group { name, handlers, patterns, pattern_owner }
    }

    /// Fills `chosen` with the indexes of the handlers that want `view`, in registration order
    /// (a buffer the caller reuses, so dispatch does not allocate per event).
    pub fn interested(&self, view: &EventView<'_>, chosen: &mut Vec<usize>) {
        chosen.clear();
        let domain = view.kind == EventKind::Domain;
        if domain && !self.patterns.is_empty() {
            let key = routing_key_for_type(view.event_type);
            chosen.extend(self.patterns.matches(&key).into_iter().map(|id| self.pattern_owner[id]));
        }
        for (index, handler) in self.handlers.iter().enumerate() {
            match &handler.subscription.filter {
                Filter::Type(event_type) if domain && event_type == view.event_type => chosen.push(index),
                Filter::All => chosen.push(index),
                _ => {}
            }
        }
        chosen.sort_unstable();
    }
}

/// Runs one handler on one event: retries with exponential backoff, a panic counted as an error,
/// the event dead-lettered when the attempts run out. Never unwinds into the caller.
pub(crate) fn run_isolated(handler: &mut Registered, view: &EventView<'_>, dead_letters: &DeadLetterSink) {
    let subscription = &mut handler.subscription;
    let attempts = subscription.max_retries.saturating_add(1);
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            handler.metrics.retried();
            let exponent = (attempt - 2).min(16);
            let delay = subscription.backoff.saturating_mul(1 << exponent).min(Duration::from_secs(30));
            std::thread::sleep(delay);
        }
        let started = Instant::now();
        let outcome = context::with_cause(view.id, view.correlation_id, || {
            catch_unwind(AssertUnwindSafe(|| (subscription.run)(view)))
        });
        match outcome {
            Ok(Ok(())) => {
                handler.metrics.handled(started.elapsed());
                return;
            }
            Ok(Err(error)) => last_error = error.to_string(),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                last_error = format!("panicked: {message}");
            }
        }
        handler.metrics.failed();
    }
    handler.metrics.dead_lettered();
    dead_letters(DeadLetter {
        handler: subscription.name.clone(),
        event: view.to_event(),
        error: last_error,
        attempts,
    });
}
