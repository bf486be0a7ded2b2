//! The unified system: one store, the domain event bus on it, the webhook service for
//! integration events with the domain → integration bridge, and (as it lands) the realtime
//! part, built from a preset or a config file ([`config`]).
//!
//! A [`System`] owns its parts and their threads; [`System::shutdown`] stops accepting, drains
//! dispatch and makes every appended event durable. Nothing here does I/O on sockets: the server
//! (`crate::server`) adapts it to HTTP, the C ABI to C.
//!
//! Building:
//! - [`SystemBuilder::development`], [`SystemBuilder::production`], [`SystemBuilder::testing`]
//!   start from a preset; [`SystemBuilder::config_toml`] applies a config file over it; the
//!   setters apply single settings over both (the command line's precedence).
//! - [`SystemBuilder::build`] validates the whole configuration first (production refuses to
//!   start without `auth.api_keys` and `auth.jwt_secret`), then opens the store.

pub mod config;
pub mod tail;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::dispatch::{Backpressure, BusConfig, BusError, BusMetrics, EventBus, PendingDispatch, WaitStrategy};
use crate::event::EventDraft;
use crate::event::EventKind;
use crate::integration::bridge::{IntegrationBridge, Rule};
use crate::integration::{IntegrationError, IntegrationEvent, RetryPolicy, WebhookConfig, WebhookMetrics, Webhooks};
use crate::realtime::bridge::{Rule as WsRule, WsBridge};
use crate::realtime::{Priority, Realtime, RealtimeMetrics, WsEvent};
use crate::store::{AppendOutcome, Durability, EventStore, Log, Retention, StoreConfig, StoreError, StoreMetrics};
use config::{BackpressureMode, Config, ConfigError, FsyncPolicy, Preset, WaitMode};
use config::{RulePriority, RuleSource};
use tail::{Appends, Start, Tail};

/// The system layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The configuration is invalid; the error names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened (or failed later).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus could not be started, or refused a publish.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The webhook service could not be started or refused a request.
    #[error(transparent)]
    Integration(#[from] IntegrationError),
}

/// Builds a [`System`] from a preset, a config file and single settings, in that precedence.
#[derive(Clone, Debug)]
pub struct SystemBuilder {
    preset: Preset,
    file: Option<String>,
    overrides: Vec<Override>,
}

#[derive(Clone, Debug)]
enum Override {
    DataDir(PathBuf),
    Listen(String),
}

impl SystemBuilder {
    /// The development preset: fsync never, private webhook targets allowed, no auth.
    pub fn development() -> Self {
        Self::preset(Preset::Development)
    }

    /// The production preset: fsync always (group commit); needs `auth.api_keys` and
    /// `auth.jwt_secret`.
    pub fn production() -> Self {
        Self::preset(Preset::Production)
    }

    /// The testing preset: in-memory store, handlers run on the publisher's thread.
    pub fn testing() -> Self {
        Self::preset(Preset::Testing)
    }

    /// Starts from `preset`.
    pub fn preset(preset: Preset) -> Self {
        SystemBuilder { preset, file: None, overrides: Vec::new() }
    }

    /// A config file's text (TOML), applied over the preset.
    pub fn config_toml(mut self, text: impl Into<String>) -> Self {
        self.file = Some(text.into());
        self
    }

    /// The data directory (`server.data_dir`), over the preset and the file.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.overrides.push(Override::DataDir(dir.into()));
        self
    }

    /// The listen address (`server.listen`), over the preset and the file.
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.overrides.push(Override::Listen(address.into()));
        self
    }

    /// The effective, validated configuration.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(Some(self.preset), self.file.as_deref())?;
        for setting in &self.overrides {
            match setting {
                Override::DataDir(dir) => config.server.data_dir = dir.clone(),
                Override::Listen(address) => config.server.listen = address.clone(),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Validates the configuration, opens the store and starts the bus.
    pub fn build(self) -> Result<System, SystemError> {
        System::from_config(self.config()?)
    }
}

/// The running engine (see the module docs).
pub struct System {
    config: Config,
    store: Arc<dyn EventStore>,
    bus: EventBus,
    webhooks: Webhooks,
    /// The `[[bridge.integration]]` rules, when there are any.
    bridge: Option<IntegrationBridge>,
    /// The `[[bridge.websocket]]` rules, when there are any.
    ws_bridge: Option<WsBridge>,
    realtime: Realtime,
    /// Integration events were appended without being routed yet (see [`System::after_sync`]).
    unrouted: AtomicBool,
    /// Bridged WebSocket events of deferred appends, fanned out by [`System::after_sync`].
    unsent: parking_lot::Mutex<Vec<WsEvent>>,
    /// Wakes [`Tail`]s after appends.
    appends: Arc<Appends>,
    started: Instant,
}

impl System {
    /// Opens the store, the webhook service and the bus as `config` says (which must be
    /// validated).
    pub fn from_config(config: Config) -> Result<System, SystemError> {
        let store_config = store_config(&config);
        let in_memory = config.store.in_memory;
        let store: Arc<dyn EventStore> = if in_memory {
            Arc::new(Log::in_memory(store_config)?)
        } else {
            Arc::new(Log::open(&config.server.data_dir, store_config)?)
        };
        let webhooks_dir = (!in_memory).then(|| config.server.data_dir.join("webhooks"));
        let webhooks = Webhooks::start(
            webhook_config(&config, store.syncs_before_ack()),
            Arc::clone(&store),
            webhooks_dir.as_deref(),
        )?;
        let bridge = integration_bridge(&config)?;
        let ws_bridge = websocket_bridge(&config)?;
        let realtime = Realtime::new(config.websocket.send_queue_frames, config.websocket.history_size);
        let bus = EventBus::builder(Arc::clone(&store), bus_config(&config)).build()?;
        Ok(System {
            config,
            store,
            bus,
            webhooks,
            bridge,
            ws_bridge,
            realtime,
            unrouted: AtomicBool::new(false),
            unsent: parking_lot::Mutex::new(Vec::new()),
            appends: Arc::new(Appends::default()),
            started: Instant::now(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The domain event bus.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Time since it started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Publishes drafts (append, then dispatch), acknowledged per the durability setting. The
    /// bridges run on them: the integration and persistent WebSocket events they become are
    /// appended in the same atomic batch, integration events are routed to webhooks and
    /// WebSocket events fanned out; the outcome lists the drafts' own events.
    pub fn publish(&self, drafts: Vec<EventDraft>) -> Result<AppendOutcome, BusError> {
        let (drafts, batch) = self.bridged(drafts);
        let outcome = self.bus.publish_batch(drafts)?;
        self.appends.notify();
        self.after_append(&batch, &outcome, false);
        Ok(truncated(outcome, batch.own))
    }

    /// Publishes drafts without waiting for an fsync; see [`EventBus::publish_batch_deferred`].
    /// The caller calls [`System::sync_pending`] before acknowledging, then dispatches and calls
    /// [`System::after_sync`] (which routes and fans out what the bridges made).
    pub fn publish_deferred(&self, drafts: Vec<EventDraft>) -> Result<(AppendOutcome, PendingDispatch<'_>), BusError> {
        let (drafts, batch) = self.bridged(drafts);
        let (outcome, pending) = self.bus.publish_batch_deferred(drafts)?;
        self.after_append(&batch, &outcome, true);
        Ok((truncated(outcome, batch.own), pending))
    }

    /// The drafts with what the bridges make of them.
    fn bridged(&self, mut drafts: Vec<EventDraft>) -> (Vec<EventDraft>, Batch) {
        let own = drafts.len();
        let integration = |drafts: &[EventDraft]| drafts.iter().filter(|d| d.kind == EventKind::Integration).count();
        if self.bridge.is_none() && self.ws_bridge.is_none() {
            let integration = integration(&drafts);
            return (drafts, Batch { own, integration, ws: Vec::new() });
        }
        drafts.iter_mut().for_each(crate::dispatch::context::apply);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        if let Some(bridge) = &self.bridge {
            let bridged = bridge.prepare(&mut drafts, now);
            drafts.extend(bridged);
        }
        let mut ws = Vec::new();
        if let Some(ws_bridge) = &self.ws_bridge {
            let mut stored = Vec::new();
            for draft in drafts.iter_mut() {
                if !ws_bridge.matches(draft) {
                    continue;
                }
                let id = *draft.id.get_or_insert_with(|| crate::event::new_event_id(now));
                draft.correlation_id.get_or_insert(id);
                let translated = ws_bridge.translate(draft, now);
                self.realtime.bridge_skipped.fetch_add(translated.skipped, Ordering::Relaxed);
                for event in translated.events {
                    if event.persistent {
                        stored.push(event);
                    } else {
                        ws.push((event, None));
                    }
                }
            }
            for event in stored {
                let mut draft = event.to_draft();
                draft.id = uuid::Uuid::try_parse(&event.id).ok();
                ws.push((event, Some(drafts.len())));
                drafts.push(draft);
            }
        }
        let integration = integration(&drafts);
        (drafts, Batch { own, integration, ws })
    }

    /// Routes a batch's integration events and fans out its WebSocket events (now, or after
    /// the sync when `deferred`).
    fn after_append(&self, batch: &Batch, outcome: &AppendOutcome, deferred: bool) {
        let AppendOutcome::Appended(events) = outcome else { return };
        if batch.integration > 0 {
            self.webhooks.note_published(batch.integration as u64);
            if deferred {
                self.unrouted.store(true, Ordering::Release);
            } else {
                self.route_now();
            }
        }
        if batch.ws.is_empty() {
            return;
        }
        let persisted = batch.ws.iter().filter(|(_, index)| index.is_some()).count();
        self.realtime.persisted.fetch_add(persisted as u64, Ordering::Relaxed);
        let ready: Vec<WsEvent> = batch
            .ws
            .iter()
            .map(|(event, index)| {
                let mut event = event.clone();
                event.position = index.and_then(|i| events.get(i)).map(|appended| appended.position);
                event
            })
            .collect();
        if deferred {
            self.unsent.lock().extend(ready);
        } else {
            self.realtime.fan_out(&ready);
        }
    }

    /// Makes deferred publishes durable when the durability setting asks for an fsync before
    /// the acknowledgement (a no-op otherwise).
    pub fn sync_pending(&self) -> Result<(), StoreError> {
        if self.store.syncs_before_ack() {
            self.store.sync()
        } else {
            Ok(())
        }
    }

    /// The webhook service.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Publishes an integration event: appends it (durable per the durability setting), then
    /// routes it to the matching webhook endpoints' outbox (and the WebSocket bridge's rooms).
    /// Re-publishing a stored id appends nothing and answers the original position.
    pub fn publish_integration(&self, event: IntegrationEvent) -> Result<AppendOutcome, SystemError> {
        event.validate().map_err(|error| SystemError::Store(StoreError::Invalid(error)))?;
        Ok(self.publish(vec![event.to_draft()])?)
    }

    /// [`System::publish_integration`] for the server's group commit: the caller calls
    /// [`System::sync_pending`], dispatches, then [`System::after_sync`] (which routes) before
    /// answering.
    pub fn publish_integration_deferred(
        &self,
        event: IntegrationEvent,
    ) -> Result<(AppendOutcome, PendingDispatch<'_>), SystemError> {
        event.validate().map_err(|error| SystemError::Store(StoreError::Invalid(error)))?;
        Ok(self.publish_deferred(vec![event.to_draft()])?)
    }

    /// Broadcasts a WebSocket event: a persistent one is appended first (durable per the
    /// durability setting) and carries its position; then it is queued on every connection it
    /// targets. Returns the event (with its position) and how many connections it was queued on.
    pub fn broadcast(&self, mut event: WsEvent) -> Result<(WsEvent, usize), SystemError> {
        event.validate().map_err(|error| SystemError::Store(StoreError::Invalid(error)))?;
        if event.persistent {
            let mut draft = event.to_draft();
            draft.id = uuid::Uuid::try_parse(&event.id).ok();
            let outcome = self.bus.publish_batch(vec![draft])?;
            event.position = outcome.events().first().map(|appended| appended.position);
            if let AppendOutcome::AlreadyAppended(_) = outcome {
                // A retry of a stored broadcast: it was fanned out when it was stored.
                return Ok((event, 0));
            }
            self.realtime.persisted.fetch_add(1, Ordering::Relaxed);
            self.appends.notify();
        }
        let delivered = self.realtime.fan_out(std::slice::from_ref(&event));
        Ok((event, delivered.first().copied().unwrap_or(0)))
    }

    /// A pull subscription over the committed log from `start`: every kind with `pattern`
    /// `None`, else the domain events whose routing key matches the AMQP pattern.
    pub fn tail(&self, pattern: Option<&str>, start: Start) -> Result<Tail, SystemError> {
        Ok(Tail::new(Arc::clone(&self.store), Arc::clone(&self.appends), pattern, start)?)
    }

    /// The realtime part: the hub of WebSocket connections.
    pub fn realtime(&self) -> &Realtime {
        &self.realtime
    }

    /// WebSocket counters and gauges.
    pub fn realtime_metrics(&self) -> RealtimeMetrics {
        self.realtime.metrics()
    }

    /// Work due once deferred appends are durable: routes integration events appended since,
    /// and fans out the WebSocket events the bridges made of them.
    pub fn after_sync(&self) {
        self.appends.notify();
        if self.unrouted.swap(false, Ordering::AcqRel) {
            self.route_now();
        }
        let unsent = std::mem::take(&mut *self.unsent.lock());
        self.realtime.fan_out(&unsent);
    }

    /// Routes now; if that fails (the journal could not be written), the scheduler retries.
    fn route_now(&self) {
        if let Err(error) = self.webhooks.route() {
            eprintln!("herald: webhook routing deferred: {error}");
            self.webhooks.route_later();
        }
    }

    /// Webhook counters and latency.
    pub fn webhook_metrics(&self) -> WebhookMetrics {
        self.webhooks.metrics()
    }

    /// Domain-bus counters.
    pub fn bus_metrics(&self) -> BusMetrics {
        self.bus.metrics()
    }

    /// Store counters and latencies.
    pub fn store_metrics(&self) -> StoreMetrics {
        self.store.metrics()
    }

    /// The metrics in the spec's JSON shape (`GET /v1/metrics`), with the webhook retry and
    /// pending counts added.
    pub fn metrics_json(&self) -> serde_json::Value {
        let bus = self.bus_metrics();
        let store = self.store_metrics();
        let webhooks = self.webhook_metrics();
        let realtime = self.realtime_metrics();
        json!({
            "domain_events": {
                "published": bus.published.saturating_sub(webhooks.published + realtime.persisted),
                "handled": bus.handled,
                "failed": bus.failed,
                "average_handling_time_ms": bus.average_handling_time_ms,
            },
            "integration_events": {
                "published": webhooks.published,
                "webhooks_delivered": webhooks.delivered,
                "webhooks_failed": webhooks.failed,
                "webhooks_retried": webhooks.retried,
                "webhooks_pending": webhooks.pending,
            },
            "websocket_events": {
                "broadcast": realtime.counters.broadcast,
                "delivered": realtime.counters.delivered,
                "connections": realtime.connections,
            },
            "event_store": {
                "total_events": store.total_events,
                "total_snapshots": store.total_snapshots,
                "storage_size": store.storage_bytes,
            },
        })
    }

    /// Stops accepting publishes, lets dispatch drain within `timeout`, stops webhook delivery
    /// with its state journaled, and makes everything appended durable. Returns whether
    /// dispatch drained in time.
    pub fn shutdown(&self, timeout: Duration) -> Result<bool, SystemError> {
        let drained = self.bus.shutdown(timeout);
        self.webhooks.shutdown(timeout)?;
        self.store.sync()?;
        Ok(drained)
    }
}

fn store_config(config: &Config) -> StoreConfig {
    let store = &config.store;
    StoreConfig {
        segment_bytes: store.segment_bytes as usize,
        durability: match store.fsync {
            FsyncPolicy::Always => Durability::Always,
            FsyncPolicy::Interval => Durability::Interval(Duration::from_millis(store.fsync_interval_ms)),
            FsyncPolicy::Never => Durability::Never,
        },
        retention: Retention {
            max_age: store.retention.max_age_ms.map(Duration::from_millis),
            max_bytes: store.retention.max_bytes,
        },
        checkpoint_every_events: store.checkpoint_every_events,
    }
}

fn webhook_config(config: &Config, sync_routing: bool) -> WebhookConfig {
    let webhooks = &config.webhooks;
    WebhookConfig {
        retry: RetryPolicy {
            retry_attempts: webhooks.retry_attempts,
            retry_delay: Duration::from_millis(webhooks.retry_delay_ms),
            max_retry_delay: Duration::from_millis(webhooks.max_retry_delay_ms),
        },
        timeout: Duration::from_millis(webhooks.timeout_ms),
        workers: webhooks.workers,
        allow_private_networks: webhooks.allow_private_networks,
        max_in_flight_per_endpoint: webhooks.max_in_flight_per_endpoint,
        sync_routing,
    }
}

/// The `[[bridge.integration]]` rules, compiled (none: `None`).
fn integration_bridge(config: &Config) -> Result<Option<IntegrationBridge>, SystemError> {
    if config.bridge.integration.is_empty() {
        return Ok(None);
    }
    let rules = config
        .bridge
        .integration
        .iter()
        .map(|rule| Rule { pattern: rule.pattern.clone(), version: rule.version.clone() })
        .collect();
    let bridge = IntegrationBridge::new(rules).map_err(|error| BusError::Config(error.to_string()))?;
    Ok(Some(bridge))
}

/// The `[[bridge.websocket]]` rules, compiled (none: `None`).
fn websocket_bridge(config: &Config) -> Result<Option<WsBridge>, SystemError> {
    if config.bridge.websocket.is_empty() {
        return Ok(None);
    }
    let rules = config
        .bridge
        .websocket
        .iter()
        .map(|rule| WsRule {
            from: match rule.from {
                RuleSource::Domain => EventKind::Domain,
                RuleSource::Integration => EventKind::Integration,
            },
            pattern: rule.pattern.clone(),
            room: rule.room.clone(),
            exclude_source: rule.exclude_source,
            priority: match rule.priority {
                RulePriority::Low => Priority::Low,
                RulePriority::Normal => Priority::Normal,
                RulePriority::High => Priority::High,
                RulePriority::Critical => Priority::Critical,
            },
            persistent: rule.persistent,
        })
        .collect();
    let bridge = WsBridge::new(rules).map_err(|error| BusError::Config(error.to_string()))?;
    Ok(Some(bridge))
}

/// What a publish's drafts are after the bridges (the drafts themselves go to the bus): the
/// caller's come first (`own` of them), then the integration and persistent WebSocket events they
/// became; `integration` counts the integration events among all; `ws` holds the WebSocket events
/// to fan out, each with the index of its draft when it is persistent.
struct Batch {
    own: usize,
    integration: usize,
    ws: Vec<(WsEvent, Option<usize>)>,
}

/// `outcome` with only its first `own` results (the drafts the caller gave).
fn truncated(outcome: AppendOutcome, own: usize) -> AppendOutcome {
    match outcome {
        AppendOutcome::Appended(mut events) => {
            events.truncate(own);
            AppendOutcome::Appended(events)
        }
        AppendOutcome::AlreadyAppended(mut events) => {
            events.truncate(own);
            AppendOutcome::AlreadyAppended(events)
        }
    }
}

fn bus_config(config: &Config) -> BusConfig {
    let dispatch = &config.dispatch;
    BusConfig {
        ring_capacity: dispatch.ring_capacity,
        batch_size: dispatch.batch_size,
        wait: match dispatch.wait {
            WaitMode::BusySpin => WaitStrategy::BusySpin,
            WaitMode::Yield => WaitStrategy::Yield,
            WaitMode::Blocking => WaitStrategy::Blocking,
        },
        backpressure: match dispatch.backpressure {
            BackpressureMode::Block => Backpressure::Block(Duration::from_millis(dispatch.block_timeout_ms)),
            BackpressureMode::Reject => Backpressure::Reject,
        },
        synchronous: dispatch.synchronous,
        // Durable handlers are registered by embedders, who choose where their positions live.
        checkpoint_dir: None,
        dead_letter_capacity: dispatch.dead_letter_capacity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventDraft;

    #[test]
    fn the_testing_preset_runs_in_memory_and_publishes() {
        // The testing preset needs no directory and dispatches on the publisher's thread.
        let system = SystemBuilder::testing().build().unwrap();
        let outcome = system.publish(vec![EventDraft::new("TaskCreated", "task-1", "{}")]).unwrap();
        assert_eq!(outcome.events()[0].position, 0);
        assert_eq!(system.metrics_json()["event_store"]["total_events"], 1);
        assert_eq!(system.metrics_json()["domain_events"]["published"], 1);
        assert!(system.shutdown(Duration::from_secs(1)).unwrap());
    }

    #[test]
    fn production_refuses_to_start_without_auth_and_a_file_can_supply_it() {
        // The refusal names what is missing; the config file fills it in.
        let error = SystemBuilder::production().config().unwrap_err().to_string();
        assert!(error.contains("auth.api_keys") && error.contains("auth.jwt_secret"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let file = "[auth]\napi_keys = [\"k1\"]\njwt_secret = \"s3cret\"\n";
        let config = SystemBuilder::production().config_toml(file).data_dir(dir.path()).config().unwrap();
        assert_eq!(config.store.fsync, config::FsyncPolicy::Always);
        assert_eq!(config.server.data_dir, dir.path());
        let system = System::from_config(config).unwrap();
        assert!(system.store().syncs_before_ack());
    }

    #[test]
    fn bridged_integration_events_are_appended_with_their_domain_event_and_stay_idempotent() {
        // One atomic append holds the domain event and its integration event; the outcome lists
        // only the domain event; re-sending the same id appends nothing.
        let file = "[[bridge.integration]]\nmatch = \"task.*\"\nversion = \"2.0.0\"\n";
        let system = SystemBuilder::testing().config_toml(file).build().unwrap();
        let id = crate::event::Uuid::now_v7();
        let draft = EventDraft::new("TaskCompleted", "t1", r#"{"n":1}"#).with_id(id);
        let outcome = system.publish(vec![draft.clone(), EventDraft::new("ProjectArchived", "p1", "{}")]).unwrap();
        assert!(matches!(outcome, AppendOutcome::Appended(_)));
        assert_eq!(outcome.events().len(), 2, "only the given drafts are listed");
        let again = system.publish(vec![draft]).unwrap();
        assert!(matches!(again, AppendOutcome::AlreadyAppended(_)));
        let mut records = Vec::new();
        system
            .store()
            .read(&crate::store::ReadQuery::default(), &mut |view| {
                records.push((view.kind, view.event_type.to_string(), view.causation_id));
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        use crate::event::EventKind::{Domain, Integration};
        assert_eq!(
            records,
            vec![
                (Domain, "TaskCompleted".to_string(), None),
                (Domain, "ProjectArchived".to_string(), None),
                (Integration, "task.completed".to_string(), Some(id)),
            ]
        );
        let metrics = system.metrics_json();
        assert_eq!(metrics["integration_events"]["published"], 1);
        assert_eq!(metrics["domain_events"]["published"], 2);
    }

    #[test]
    fn deferred_publishes_dispatch_only_after_the_sync() {
        // Under fsync always, a deferred publish is invisible until synced, then dispatched.
        let dir = tempfile::tempdir().unwrap();
        let file = "[store]\nfsync = \"always\"\n";
        let system = SystemBuilder::development().config_toml(file).data_dir(dir.path()).build().unwrap();
        let (outcome, pending) = system.publish_deferred(vec![EventDraft::new("TaskCreated", "t", "{}")]).unwrap();
        assert_eq!(outcome.events().len(), 1);
        assert_eq!(system.store().bounds(), (0, 0), "written, not yet readable");
        let visible = |system: &System| {
            let query = crate::store::ReadQuery::default();
            system.store().read(&query, &mut |_| std::ops::ControlFlow::Continue(())).unwrap().count
        };
        assert_eq!(visible(&system), 0, "not visible before the fsync");
        system.sync_pending().unwrap();
        pending.dispatch();
        let seen = visible(&system);
        assert_eq!(seen, 1);
        assert_eq!(system.store().bounds(), (0, 1));
    }
}
