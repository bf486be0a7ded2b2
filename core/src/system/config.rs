//! Herald's configuration: the settings a server runs with, where they come from, and the checks
//! they must pass before anything starts.
//!
//! # What this module owns
//! - [`Config`] and one section struct per TOML table (`server`, `auth`, `store`, `dispatch`,
//!   `webhooks`, `websocket`, `bridge`). Every section is `deny_unknown_fields`, so a misspelt key
//!   is an error that names the key and its table, never a silently ignored setting.
//! - The three [`Preset`]s and their defaults ([`Config::preset`]).
//! - Loading with precedence ([`Config::load`], [`Config::resolve`]).
//! - The invariants [`Config::validate`] guarantees.
//!
//! It owns no I/O (the caller reads the file) and no engine types: the integrator turns the
//! sections into `StoreConfig`, `BusConfig` and friends. `docs/config.md` is the user-facing
//! contract: every key, its default and which presets change it.
//!
//! # Precedence
//! The preset gives defaults, the config file overrides them, command-line flags override both.
//! Only the keys present in the file change anything: a file holding just `[store] fsync = "always"`
//! keeps every other value of the chosen preset. Arrays (the bridge rules, `auth.api_keys`) are
//! replaced whole, not appended to. The preset itself is chosen by `--preset` when it is given,
//! else by a top-level `preset = "…"` key in the file, else it is `development`.
//!
//! # Invariants after `validate` returns `Ok`
//! - `server.listen` parses as a socket address (`IP:port`, IPv6 in brackets; no host names);
//!   `server.data_dir` is not empty unless `store.in_memory`.
//! - Every limit is a bound that lets work proceed: `server.max_body_bytes`,
//!   `server.max_header_bytes` and `websocket.max_frame_bytes` are ≥ 1024; counts of connections,
//!   workers, queue slots and in-flight requests are ≥ 1; timeouts and intervals are ≥ 1 ms.
//! - `store.segment_bytes` is a multiple of 4096 in `4096..=MAX_SEGMENT_BYTES` (record offsets in
//!   a segment are 32-bit); `store.fsync_interval_ms` ≥ 1 when `store.fsync = "interval"`;
//!   retention limits, when set, are ≥ 1.
//! - `dispatch.ring_capacity` is a power of two ≥ 2 and `1 <= dispatch.batch_size <= ring_capacity`.
//! - `webhooks.retry_delay_ms <= webhooks.max_retry_delay_ms`;
//!   `websocket.ping_interval_ms < websocket.idle_timeout_ms` (a ping must come before an idle
//!   client is closed).
//! - API keys are non-empty visible ASCII (they travel in `Authorization: Bearer <key>`); a
//!   `jwt_secret`, when set, is not empty.
//! - Bridge rules: every `match` is a valid routing pattern (dot-separated words of `[a-z0-9_-]`,
//!   or the whole-word wildcards `*` and `#`, 1–255 bytes), every `version` is non-empty, every
//!   `room` is a well-formed template (`{field.path}` placeholders, no stray braces).
//! - Under the production preset, `auth.api_keys` is non-empty and `auth.jwt_secret` is set; the
//!   error names whichever is missing (both when both are).
//!
//! # Failure modes
//! [`ConfigError::Parse`]: the file is not TOML, or a key is unknown, or a value has the wrong
//! type; the message names the key path (``in `server` ``) and the line when known.
//! [`ConfigError::Invalid`]: the file parsed but a value breaks an invariant; `key` is the dotted
//! path of the offending setting (`store.segment_bytes`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Segment sizes are whole pages.
pub const SEGMENT_ALIGN_BYTES: u64 = 4096;
/// The largest segment (record offsets inside a segment are 32-bit), a multiple of 4096.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64 / SEGMENT_ALIGN_BYTES * SEGMENT_ALIGN_BYTES;
/// The smallest request body, header block and WebSocket frame limit accepted: below this even a
/// small valid request would be refused.
pub const MIN_MESSAGE_BYTES: usize = 1024;
/// The longest routing pattern, as for routing keys.
pub const MAX_PATTERN_BYTES: usize = 255;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML, has an unknown key or a value of the wrong type. The message
    /// names the key path and, when known, the line and column.
    #[error("cannot read the config: {message}")]
    Parse { message: String },
    /// A setting breaks a rule; `key` is its dotted path, such as `store.segment_bytes`.
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// A named set of defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Local work: no fsync, private webhook targets allowed, no auth. The CLI's default.
    #[default]
    Development,
    /// fsync before every acknowledgement (group commit), public webhook targets only; refuses to
    /// start without `auth.api_keys` and `auth.jwt_secret`.
    Production,
    /// Tests: in-memory store, synchronous dispatch, no fsync, private webhook targets allowed.
    Testing,
}

impl Preset {
    /// Every preset, in the order the docs list them.
    pub const ALL: [Preset; 3] = [Preset::Development, Preset::Production, Preset::Testing];

    /// The name used in `--preset` and in the file's `preset` key.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Development => "development",
            Preset::Production => "production",
            Preset::Testing => "testing",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|preset| preset.as_str() == name).ok_or_else(|| {
            invalid("preset", format!("unknown preset `{name}`; expected one of: development, production, testing"))
        })
    }
}

/// The whole configuration. Build it with [`Config::preset`], [`Config::load`] or
/// [`Config::resolve`]; deserializing it directly fills missing keys from the development preset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The preset the defaults came from; decides the production checks in [`Config::validate`].
    pub preset: Preset,
    pub server: ServerSection,
    pub auth: AuthSection,
    pub store: StoreSection,
    pub dispatch: DispatchSection,
    pub webhooks: WebhooksSection,
    pub websocket: WebSocketSection,
    pub bridge: BridgeSection,
}

impl Default for Config {
    /// The development preset, as for a `herald serve` with no flags.
    fn default() -> Self {
        Config::preset(Preset::Development)
    }
}

/// `[server]`: the HTTP listener and its limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on, `IP:port`.
    pub listen: String,
    /// Where the event log, snapshots and webhook state live.
    pub data_dir: PathBuf,
    /// Largest request body; larger ones get 413 `too_large`.
    pub max_body_bytes: usize,
    /// Largest request line plus headers.
    pub max_header_bytes: usize,
    /// Most open connections (HTTP and WebSocket together); more wait in the accept backlog.
    pub max_connections: usize,
    /// Close a keep-alive connection idle this long.
    pub idle_timeout_ms: u64,
    /// Close a connection whose request is not fully received this long after it began.
    pub request_timeout_ms: u64,
    /// On SIGINT/SIGTERM, wait at most this long for queues to drain before exiting.
    pub shutdown_timeout_ms: u64,
    /// Least severe log level written.
    pub log_level: LogLevel,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:7700".to_owned(),
            data_dir: PathBuf::from("./herald-data"),
            max_body_bytes: MIB,
            max_header_bytes: 16 * KIB,
            max_connections: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 10_000,
            shutdown_timeout_ms: 10_000,
            log_level: LogLevel::Info,
        }
    }
}

/// `server.log_level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `[auth]`: who may call the API. Its `Debug` hides the secrets, so a logged config leaks none.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Keys accepted in `Authorization: Bearer <key>` on `/v1/*` (but `/v1/ws`). Empty: no auth.
    pub api_keys: Vec<String>,
    /// HS256 secret for WebSocket JWTs. Unset: `?user_id=` names the user (development only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = format!("[{} redacted]", self.api_keys.len());
        let secret = self.jwt_secret.as_ref().map(|_| "redacted");
        f.debug_struct("AuthSection").field("api_keys", &format_args!("{keys}")).field("jwt_secret", &secret).finish()
    }
}

/// `[store]`: the event log on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Keep the log in memory only (lost on exit); `data_dir` and fsync are then unused.
    pub in_memory: bool,
    /// When an append is acknowledged relative to the disk.
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the background fsync period.
    pub fsync_interval_ms: u64,
    /// Size of each segment file, header included; a multiple of 4096.
    pub segment_bytes: u64,
    /// Write an index checkpoint file (a delta, or every 16th a full one) after this many events
    /// (it shortens recovery).
    pub checkpoint_every_events: u64,
    /// Which whole old segments to delete.
    pub retention: RetentionSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            in_memory: false,
            fsync: FsyncPolicy::Never,
            fsync_interval_ms: 100,
            segment_bytes: 64 * 1024 * 1024,
            checkpoint_every_events: 1_000_000,
            retention: RetentionSection::default(),
        }
    }
}

/// `store.fsync`: when an append is acknowledged relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Acknowledge after fsync; concurrent appends share one fsync (group commit). Loses nothing.
    Always,
    /// Acknowledge from the page cache, fsync every `fsync_interval_ms`: a machine crash can lose
    /// up to one interval of acknowledged events; a process crash loses nothing.
    Interval,
    /// Acknowledge from the page cache, fsync on close only: a machine crash can lose everything
    /// since the kernel last wrote back; a process crash loses nothing.
    Never,
}

/// `[store.retention]`: both unset keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Delete a sealed segment once its newest event is older than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Delete the oldest sealed segments while the segment files exceed this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// `[dispatch]`: the domain event bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSection {
    /// Ring slots, a power of two; also the largest atomic batch a publish may carry.
    pub ring_capacity: usize,
    /// Most events a handler group takes from the ring at once.
    pub batch_size: usize,
    /// How handler threads wait for events.
    pub wait: WaitMode,
    /// What a publish does when the ring is full.
    pub backpressure: BackpressureMode,
    /// With `backpressure = "block"`: wait this long for room, then answer 429 `overloaded`.
    pub block_timeout_ms: u64,
    /// Run handlers on the publisher's thread, without ring or threads.
    pub synchronous: bool,
    /// Retries of a failing handler before its event is dead-lettered (attempts = 1 + retries).
    pub handler_retries: u32,
    /// First retry delay; it doubles on each retry.
    pub retry_backoff_ms: u64,
    /// Dead letters kept in memory (the oldest is dropped beyond this).
    pub dead_letter_capacity: usize,
}

impl Default for DispatchSection {
    fn default() -> Self {
        DispatchSection {
            ring_capacity: 65_536,
            batch_size: 256,
            wait: WaitMode::Blocking,
            backpressure: BackpressureMode::Block,
            block_timeout_ms: 1_000,
            synchronous: false,
            handler_retries: 3,
            retry_backoff_ms: 10,
            dead_letter_capacity: 10_000,
        }
    }
}

/// `dispatch.wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Spin: lowest latency, burns a core while idle.
    BusySpin,
    /// Spin briefly, then yield the CPU between checks.
    Yield,
    /// Spin briefly, then park until woken: no CPU while idle.
    Blocking,
}

/// `dispatch.backpressure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackpressureMode {
    /// Wait up to `block_timeout_ms` for room, then refuse.
    Block,
    /// Refuse at once.
    Reject,
}

/// `[webhooks]`: delivery of integration events (Standard Webhooks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Retries after the first attempt (attempts in all = 1 + this).
    pub retry_attempts: u32,
    /// Delay before the first retry; the n-th waits `retry_delay_ms × 2^(n-1)` ± 20%.
    pub retry_delay_ms: u64,
    /// Cap on any retry delay, `Retry-After` included.
    pub max_retry_delay_ms: u64,
    /// An attempt without a 2xx answer within this long fails.
    pub timeout_ms: u64,
    /// Delivery workers (concurrent attempts across all endpoints).
    pub workers: usize,
    /// Allow URLs resolving to loopback, private or link-local addresses.
    pub allow_private_networks: bool,
    /// Most concurrent attempts to one endpoint.
    pub max_in_flight_per_endpoint: usize,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            retry_attempts: 10,
            retry_delay_ms: 5_000,
            max_retry_delay_ms: 7_200_000,
            timeout_ms: 15_000,
            workers: 4,
            allow_private_networks: true,
            max_in_flight_per_endpoint: 4,
        }
    }
}

/// `[websocket]`: the `/v1/ws` gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSection {
    /// Largest client frame; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Frames queued per connection; beyond it `low` is dropped, then the connection closed (1013).
    pub send_queue_frames: usize,
    /// The server pings every this long.
    pub ping_interval_ms: u64,
    /// A connection silent this long is closed with 1001.
    pub idle_timeout_ms: u64,
    /// Persistent events one `subscribe` with `since` replays at most; further back answers
    /// `recovered: false` (like Centrifugo's `history_size`).
    pub history_size: usize,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        WebSocketSection {
            max_frame_bytes: 64 * KIB,
            send_queue_frames: 1024,
            ping_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            history_size: 10_000,
        }
    }
}

/// `[bridge]`: rules that turn domain events into integration and WebSocket events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeSection {
    /// `[[bridge.integration]]`: domain → integration.
    pub integration: Vec<IntegrationRule>,
    /// `[[bridge.websocket]]`: domain or integration → WebSocket.
    pub websocket: Vec<WebSocketRule>,
}

/// One `[[bridge.integration]]` rule: a domain event whose routing key (derived from its type,
/// `TaskCompleted` → `task.completed`) matches `match` is published as an integration event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationRule {
    /// Routing pattern (`task.*`, `project.#`); the TOML key is `match`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The integration event's `version`.
    #[serde(default = "default_rule_version")]
    pub version: String,
}

fn default_rule_version() -> String {
    "1.0.0".to_owned()
}

/// One `[[bridge.websocket]]` rule: an event from `from` whose routing key matches `match` is
/// broadcast to the room that `room` names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketRule {
    /// Which events the rule reads; required.
    pub from: RuleSource,
    /// Routing pattern; the TOML key is `match`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Room template, such as `project:{metadata.project_id}`; a placeholder naming a missing
    /// field skips the rule for that event.
    pub room: String,
    /// Exclude the event's own user (`metadata.user_id` or `source.user_id`).
    #[serde(default)]
    pub exclude_source: bool,
    /// Priority of the WebSocket event.
    #[serde(default)]
    pub priority: RulePriority,
    /// Store the WebSocket event so it can be replayed.
    #[serde(default)]
    pub persistent: bool,
}

/// `bridge.websocket.from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    Domain,
    Integration,
}

/// `bridge.websocket.priority`, the WebSocket event priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RulePriority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

/// What the command line may set: each `Some` beats both the preset and the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CliOverrides {
    /// `--preset`.
    pub preset: Option<Preset>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// The defaults of `preset`, before any file or flag.
    #[must_use]
    pub fn preset(preset: Preset) -> Config {
        let mut config = Config {
            preset,
            server: ServerSection::default(),
            auth: AuthSection::default(),
            store: StoreSection::default(),
            dispatch: DispatchSection::default(),
            webhooks: WebhooksSection::default(),
            websocket: WebSocketSection::default(),
            bridge: BridgeSection::default(),
        };
        // The section defaults are the development values; the other presets change a few.
        match preset {
            Preset::Development => {}
            Preset::Production => {
                config.store.fsync = FsyncPolicy::Always;
                config.webhooks.allow_private_networks = false;
            }
            Preset::Testing => {
                config.store.in_memory = true;
                config.store.fsync = FsyncPolicy::Never;
                config.dispatch.synchronous = true;
            }
        }
        config
    }

    /// Loads a configuration: the defaults of the preset, overridden by the keys present in
    /// `toml_text`. The preset is `cli_preset` when given, else the file's top-level `preset`
    /// key, else development. Does not validate: apply the remaining flags first, then call
    /// [`Config::validate`] (or use [`Config::resolve`], which does all three).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] when the text is not TOML, holds an unknown key or a value of the
    /// wrong type (including an unknown `preset` name).
    pub fn load(cli_preset: Option<Preset>, toml_text: Option<&str>) -> Result<Config, ConfigError> {
        let Some(text) = toml_text else {
            return Ok(Config::preset(cli_preset.unwrap_or_default()));
        };
        let mut file: toml::Table =
            toml::from_str(text).map_err(|error| parse_error(error.message(), error.span(), text))?;
        check_shape(text, &file)?;
        let file_preset = match file.remove("preset") {
            Some(value) => Some(Preset::deserialize(value).map_err(|error| one_line_error(&error))?),
            None => None,
        };
        let preset = cli_preset.or(file_preset).unwrap_or_default();

        let mut merged = match toml::Value::try_from(Config::preset(preset)) {
            Ok(toml::Value::Table(table)) => table,
            Ok(_) => return Err(ConfigError::Parse { message: "the preset did not serialize to a table".to_owned() }),
            Err(error) => return Err(ConfigError::Parse { message: format!("cannot serialize the preset: {error}") }),
        };
        merge_tables(&mut merged, file);
        let mut config = Config::deserialize(toml::Value::Table(merged)).map_err(|error| one_line_error(&error))?;
        config.preset = preset;
        Ok(config)
    }

    /// Applies the command-line flags other than `--preset`; they beat the preset and the file.
    pub fn apply_overrides(&mut self, overrides: &CliOverrides) {
        if let Some(listen) = &overrides.listen {
            self.server.listen.clone_from(listen);
        }
        if let Some(data_dir) = &overrides.data_dir {
            self.server.data_dir.clone_from(data_dir);
        }
    }

    /// The whole startup path: [`Config::load`] with `overrides.preset`, then
    /// [`Config::apply_overrides`], then [`Config::validate`].
    ///
    /// # Errors
    /// Those of [`Config::load`] and [`Config::validate`].
    pub fn resolve(overrides: &CliOverrides, toml_text: Option<&str>) -> Result<Config, ConfigError> {
        let mut config = Config::load(overrides.preset, toml_text)?;
        config.apply_overrides(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants listed in the module docs; the first broken one is returned, except
    /// that the production auth check reports every missing setting at once.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_auth()?;
        self.validate_store()?;
        self.validate_dispatch()?;
        self.validate_webhooks()?;
        self.validate_websocket()?;
        self.validate_bridge()?;
        self.validate_production()
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if let Err(error) = server.listen.parse::<SocketAddr>() {
            return Err(invalid(
                "server.listen",
                format!("`{}` is not a socket address such as 127.0.0.1:7700 or [::1]:7700 ({error})", server.listen),
            ));
        }
        if !self.store.in_memory && server.data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty (or set store.in_memory = true)"));
        }
        at_least("server.max_body_bytes", server.max_body_bytes, MIN_MESSAGE_BYTES)?;
        at_least("server.max_header_bytes", server.max_header_bytes, MIN_MESSAGE_BYTES)?;
        at_least("server.max_connections", server.max_connections, 1)?;
        at_least("server.idle_timeout_ms", server.idle_timeout_ms, 1)?;
        at_least("server.request_timeout_ms", server.request_timeout_ms, 1)?;
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        for (index, key) in self.auth.api_keys.iter().enumerate() {
            if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(invalid(
                    format!("auth.api_keys[{index}]"),
                    "an API key must be non-empty visible ASCII without spaces (it is sent as `Bearer <key>`)",
                ));
            }
        }
        if self.auth.jwt_secret.as_deref() == Some("") {
            return Err(invalid("auth.jwt_secret", "must not be empty; remove the key to disable JWT auth"));
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        if !(SEGMENT_ALIGN_BYTES..=MAX_SEGMENT_BYTES).contains(&store.segment_bytes)
            || !store.segment_bytes.is_multiple_of(SEGMENT_ALIGN_BYTES)
        {
            return Err(invalid(
                "store.segment_bytes",
                format!(
                    "must be a multiple of {SEGMENT_ALIGN_BYTES} in {SEGMENT_ALIGN_BYTES}..={MAX_SEGMENT_BYTES}, got {}",
                    store.segment_bytes
                ),
            ));
        }
        if store.fsync == FsyncPolicy::Interval && store.fsync_interval_ms == 0 {
            return Err(invalid("store.fsync_interval_ms", "must be at least 1 when store.fsync = \"interval\""));
        }
        at_least("store.checkpoint_every_events", store.checkpoint_every_events, 1)?;
        if store.retention.max_age_ms == Some(0) {
            return Err(invalid(
                "store.retention.max_age_ms",
                "must be at least 1; leave it out to keep events forever",
            ));
        }
        if store.retention.max_bytes == Some(0) {
            return Err(invalid("store.retention.max_bytes", "must be at least 1; leave it out for no size limit"));
        }
        Ok(())
    }

    fn validate_dispatch(&self) -> Result<(), ConfigError> {
        let dispatch = &self.dispatch;
        if dispatch.ring_capacity < 2 || !dispatch.ring_capacity.is_power_of_two() {
            return Err(invalid(
                "dispatch.ring_capacity",
                format!("must be a power of two, at least 2, got {}", dispatch.ring_capacity),
            ));
        }
        if dispatch.batch_size == 0 || dispatch.batch_size > dispatch.ring_capacity {
            return Err(invalid(
                "dispatch.batch_size",
                format!(
                    "must be in 1..={} (dispatch.ring_capacity), got {}",
                    dispatch.ring_capacity, dispatch.batch_size
                ),
            ));
        }
        at_least("dispatch.dead_letter_capacity", dispatch.dead_letter_capacity, 1)?;
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let webhooks = &self.webhooks;
        at_least("webhooks.retry_delay_ms", webhooks.retry_delay_ms, 1)?;
        if webhooks.retry_delay_ms > webhooks.max_retry_delay_ms {
            return Err(invalid(
                "webhooks.max_retry_delay_ms",
                format!(
                    "must be at least webhooks.retry_delay_ms ({}), got {}",
                    webhooks.retry_delay_ms, webhooks.max_retry_delay_ms
                ),
            ));
        }
        at_least("webhooks.timeout_ms", webhooks.timeout_ms, 1)?;
        at_least("webhooks.workers", webhooks.workers, 1)?;
        at_least("webhooks.max_in_flight_per_endpoint", webhooks.max_in_flight_per_endpoint, 1)?;
        Ok(())
    }

    fn validate_websocket(&self) -> Result<(), ConfigError> {
        let websocket = &self.websocket;
        at_least("websocket.max_frame_bytes", websocket.max_frame_bytes, MIN_MESSAGE_BYTES)?;
        at_least("websocket.send_queue_frames", websocket.send_queue_frames, 1)?;
        at_least("websocket.history_size", websocket.history_size, 1)?;
        at_least("websocket.ping_interval_ms", websocket.ping_interval_ms, 1)?;
        if websocket.idle_timeout_ms <= websocket.ping_interval_ms {
            return Err(invalid(
                "websocket.idle_timeout_ms",
                format!(
                    "must be greater than websocket.ping_interval_ms ({}), got {}",
                    websocket.ping_interval_ms, websocket.idle_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    fn validate_bridge(&self) -> Result<(), ConfigError> {
        for (index, rule) in self.bridge.integration.iter().enumerate() {
            let key = |field: &str| format!("bridge.integration[{index}].{field}");
            check_pattern(&rule.pattern).map_err(|message| invalid(key("match"), message))?;
            if rule.version.is_empty() {
                return Err(invalid(key("version"), "must not be empty"));
            }
        }
        for (index, rule) in self.bridge.websocket.iter().enumerate() {
            let key = |field: &str| format!("bridge.websocket[{index}].{field}");
            check_pattern(&rule.pattern).map_err(|message| invalid(key("match"), message))?;
            check_room_template(&rule.room).map_err(|message| invalid(key("room"), message))?;
        }
        Ok(())
    }

    fn validate_production(&self) -> Result<(), ConfigError> {
        if self.preset != Preset::Production {
            return Ok(());
        }
        let no_keys = self.auth.api_keys.is_empty();
        let no_secret = self.auth.jwt_secret.is_none();
        let refused = "the production preset refuses to start without";
        match (no_keys, no_secret) {
            (false, false) => Ok(()),
            (true, false) => Err(invalid("auth.api_keys", format!("{refused} API keys: auth.api_keys is missing"))),
            (false, true) => {
                Err(invalid("auth.jwt_secret", format!("{refused} a JWT secret: auth.jwt_secret is missing")))
            }
            (true, true) => Err(invalid(
                "auth.api_keys, auth.jwt_secret",
                format!("{refused} API keys and a JWT secret: auth.api_keys and auth.jwt_secret are both missing"),
            )),
        }
    }
}

fn at_least<T: PartialOrd + fmt::Display + Copy>(key: &str, value: T, minimum: T) -> Result<(), ConfigError> {
    if value < minimum {
        return Err(invalid(key, format!("must be at least {minimum}, got {value}")));
    }
    Ok(())
}

/// The routing pattern rules of `routing.rs`, repeated so this module stands alone: 1–255 bytes,
/// dot-separated words of `[a-z0-9_-]` (empty words allowed), `*` and `#` only as whole words.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("a routing pattern must be 1–{MAX_PATTERN_BYTES} bytes, got {}", pattern.len()));
    }
    for word in pattern.split('.') {
        if word == "*" || word == "#" {
            continue;
        }
        if let Some(bad) = word.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-')) {
            let hint = if matches!(bad, '*' | '#') { " (a wildcard must be a whole word)" } else { "" };
            return Err(format!(
                "`{pattern}`: character `{bad}` in word `{word}`; words are [a-z0-9_-], `*` or `#`{hint}"
            ));
        }
    }
    Ok(())
}

/// A room template is literal text with `{field.path}` placeholders; braces appear only around a
/// non-empty path of `[A-Za-z0-9_.-]`.
fn check_room_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("a room template must not be empty".to_owned());
    }
    let mut placeholder: Option<String> = None;
    for c in template.chars() {
        match (&mut placeholder, c) {
            (None, '{') => placeholder = Some(String::new()),
            (None, '}') => return Err(format!("`{template}`: `}}` without a matching `{{`")),
            (None, _) => {}
            (Some(path), '}') => {
                if path.is_empty() {
                    return Err(format!("`{template}`: empty placeholder `{{}}`"));
                }
                placeholder = None;
            }
            (Some(path), c) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => path.push(c),
            (Some(_), c) => {
                return Err(format!("`{template}`: character `{c}` inside a placeholder; use `{{field.path}}`"));
            }
        }
    }
    if placeholder.is_some() {
        return Err(format!("`{template}`: `{{` without a matching `}}`"));
    }
    Ok(())
}

/// Rejects unknown keys and wrong types in the file alone, before any merge, so the error can
/// name the key path (from deserializing the parsed table) and the line (from the text parser).
fn check_shape(text: &str, file: &toml::Table) -> Result<(), ConfigError> {
    let by_path = Config::deserialize(toml::Value::Table(file.clone())).err();
    let by_text = toml::from_str::<Config>(text).err();
    match (by_path, by_text) {
        (None, None) => Ok(()),
        (Some(error), by_text) => {
            let mut message = one_line(&error.to_string());
            // The two passes can meet different errors first (a table's keys are visited in
            // another order than the text's); add the line only when they agree.
            if let Some(located) = by_text.filter(|located| message.starts_with(located.message())) {
                message.push_str(&location(located.span(), text));
            }
            Err(ConfigError::Parse { message })
        }
        (None, Some(error)) => Err(parse_error(error.message(), error.span(), text)),
    }
}

/// Every key of `overlay` replaces the same key of `base`, except that two tables merge key by key.
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge_tables(base_table, overlay_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn parse_error(message: &str, span: Option<std::ops::Range<usize>>, text: &str) -> ConfigError {
    ConfigError::Parse { message: format!("{}{}", one_line(message), location(span, text)) }
}

fn one_line_error(error: &toml::de::Error) -> ConfigError {
    ConfigError::Parse { message: one_line(&error.to_string()) }
}

/// toml puts the key path on its own line (``in `server` ``); keep messages on one line for logs.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ")
}

fn location(span: Option<std::ops::Range<usize>>, text: &str) -> String {
    let Some(span) = span else { return String::new() };
    let Some(before) = text.get(..span.start) else { return String::new() };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |tail| tail.chars().count()) + 1;
    format!(" (line {line}, column {column})")
}

/// The complete example `herald.toml` of `docs/config.md` (a test keeps the two identical).
pub const EXAMPLE_CONFIG: &str = r#"# herald.toml: every setting, at its default unless the comment says otherwise.
preset = "production"            # --preset on the command line wins over this

[server]
listen = "0.0.0.0:7700"          # default 127.0.0.1:7700
data_dir = "/var/lib/herald"     # default ./herald-data
max_body_bytes = 1048576         # 1 MiB
max_header_bytes = 16384         # 16 KiB
max_connections = 10000
idle_timeout_ms = 60000
request_timeout_ms = 10000
shutdown_timeout_ms = 10000
log_level = "info"               # off | error | warn | info | debug | trace

[auth]
api_keys = ["hk_live_4f9c2e7a1b"]             # empty: no auth (refused by production)
jwt_secret = "change-me-to-32-random-bytes-or-more"   # unset: no JWT (refused by production)

[store]
in_memory = false
fsync = "always"                 # always | interval | never (production: always)
fsync_interval_ms = 100          # used by fsync = "interval"
segment_bytes = 67108864         # 64 MiB, a multiple of 4096
checkpoint_every_events = 1000000

[store.retention]                # both unset: keep everything
max_age_ms = 2592000000          # 30 days
max_bytes = 107374182400         # 100 GiB

[dispatch]
ring_capacity = 65536            # a power of two
batch_size = 256
wait = "blocking"                # busy_spin | yield | blocking
backpressure = "block"           # block | reject
block_timeout_ms = 1000
synchronous = false
handler_retries = 3
retry_backoff_ms = 10
dead_letter_capacity = 10000

[webhooks]
retry_attempts = 10
retry_delay_ms = 5000
max_retry_delay_ms = 7200000
timeout_ms = 15000
workers = 4
allow_private_networks = false   # development and testing: true
max_in_flight_per_endpoint = 4

[websocket]
max_frame_bytes = 65536          # 64 KiB
send_queue_frames = 1024
ping_interval_ms = 25000
idle_timeout_ms = 60000
history_size = 10000             # events one `subscribe` with `since` replays at most

[[bridge.integration]]           # domain -> integration
match = "task.*"                 # on the routing key of the type: TaskCompleted -> task.completed
version = "1.0.0"

[[bridge.integration]]
match = "project.#"

[[bridge.websocket]]             # domain or integration -> WebSocket
from = "domain"
match = "task.#"
room = "project:{metadata.project_id}"
exclude_source = true
priority = "normal"
persistent = true

[[bridge.websocket]]
from = "integration"
match = "billing.invoice.*"
room = "user:{source.user_id}"
priority = "high"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_message(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Parse { message }) => message,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    fn invalid_key(config: &Config) -> (String, String) {
        match config.validate() {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    fn production_with_auth() -> Config {
        let mut config = Config::preset(Preset::Production);
        config.auth.api_keys = vec!["key-1".to_owned()];
        config.auth.jwt_secret = Some("secret".to_owned());
        config
    }

    #[test]
    fn development_preset_has_the_documented_defaults() {
        // The development preset is the CLI default and carries every documented default.
        let config = Config::preset(Preset::Development);
        assert_eq!(config, Config::default());
        assert_eq!(config.preset, Preset::Development);
        assert_eq!(config.server.listen, "127.0.0.1:7700");
        assert_eq!(config.server.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(config.server.max_body_bytes, 1024 * 1024);
        assert_eq!(config.server.max_header_bytes, 16 * 1024);
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.server.idle_timeout_ms, 60_000);
        assert_eq!(config.server.request_timeout_ms, 10_000);
        assert_eq!(config.server.shutdown_timeout_ms, 10_000);
        assert_eq!(config.server.log_level, LogLevel::Info);
        assert!(config.auth.api_keys.is_empty());
        assert_eq!(config.auth.jwt_secret, None);
        assert!(!config.store.in_memory);
        assert_eq!(config.store.fsync, FsyncPolicy::Never);
        assert_eq!(config.store.fsync_interval_ms, 100);
        assert_eq!(config.store.segment_bytes, 64 * 1024 * 1024);
        assert_eq!(config.store.checkpoint_every_events, 1_000_000);
        assert_eq!(config.store.retention, RetentionSection { max_age_ms: None, max_bytes: None });
        assert_eq!(config.dispatch.ring_capacity, 65_536);
        assert_eq!(config.dispatch.batch_size, 256);
        assert_eq!(config.dispatch.wait, WaitMode::Blocking);
        assert_eq!(config.dispatch.backpressure, BackpressureMode::Block);
        assert_eq!(config.dispatch.block_timeout_ms, 1_000);
        assert!(!config.dispatch.synchronous);
        assert_eq!(config.dispatch.handler_retries, 3);
        assert_eq!(config.dispatch.retry_backoff_ms, 10);
        assert_eq!(config.dispatch.dead_letter_capacity, 10_000);
        assert_eq!(config.webhooks.retry_attempts, 10);
        assert_eq!(config.webhooks.retry_delay_ms, 5_000);
        assert_eq!(config.webhooks.max_retry_delay_ms, 7_200_000);
        assert_eq!(config.webhooks.timeout_ms, 15_000);
        assert_eq!(config.webhooks.workers, 4);
        assert!(config.webhooks.allow_private_networks);
        assert_eq!(config.webhooks.max_in_flight_per_endpoint, 4);
        assert_eq!(config.websocket.max_frame_bytes, 65_536);
        assert_eq!(config.websocket.send_queue_frames, 1024);
        assert_eq!(config.websocket.ping_interval_ms, 25_000);
        assert_eq!(config.websocket.idle_timeout_ms, 60_000);
        assert!(config.bridge.integration.is_empty() && config.bridge.websocket.is_empty());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn production_and_testing_presets_change_only_their_settings() {
        // Each preset differs from development in exactly the documented settings.
        let mut expected = Config::preset(Preset::Development);
        expected.preset = Preset::Production;
        expected.store.fsync = FsyncPolicy::Always;
        expected.webhooks.allow_private_networks = false;
        assert_eq!(Config::preset(Preset::Production), expected);

        let mut expected = Config::preset(Preset::Development);
        expected.preset = Preset::Testing;
        expected.store.in_memory = true;
        expected.store.fsync = FsyncPolicy::Never;
        expected.dispatch.synchronous = true;
        assert_eq!(Config::preset(Preset::Testing), expected);
        assert_eq!(Config::preset(Preset::Testing).validate(), Ok(()));
    }

    #[test]
    fn preset_names_parse_and_a_wrong_one_lists_the_valid_names() {
        // `--preset` accepts the three names and explains a wrong one.
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.as_str());
        }
        let error = "prod".parse::<Preset>().expect_err("unknown preset");
        let text = error.to_string();
        assert!(text.contains("`prod`") && text.contains("development, production, testing"), "{text}");
    }

    #[test]
    fn no_file_gives_the_preset() {
        // Without a file the result is the preset's defaults (development when none is named).
        assert_eq!(Config::load(None, None), Ok(Config::preset(Preset::Development)));
        assert_eq!(Config::load(Some(Preset::Testing), None), Ok(Config::preset(Preset::Testing)));
        assert_eq!(Config::load(Some(Preset::Testing), Some("")), Ok(Config::preset(Preset::Testing)));
    }

    #[test]
    fn file_overrides_only_the_keys_it_sets() {
        // A file key beats the preset; every key the file leaves out keeps the preset's value.
        let text = "[store]\nfsync = \"interval\"\nfsync_interval_ms = 5\n[webhooks]\nworkers = 8\n";
        let config = Config::load(Some(Preset::Production), Some(text)).expect("loads");
        let mut expected = Config::preset(Preset::Production);
        expected.store.fsync = FsyncPolicy::Interval;
        expected.store.fsync_interval_ms = 5;
        expected.webhooks.workers = 8;
        assert_eq!(config, expected);

        let config = Config::load(Some(Preset::Testing), Some("[server]\nlisten = \"127.0.0.1:0\"\n")).expect("loads");
        assert!(config.store.in_memory && config.dispatch.synchronous);
        assert_eq!(config.server.listen, "127.0.0.1:0");

        let config = Config::load(None, Some("[store.retention]\nmax_bytes = 4096\n")).expect("loads");
        assert_eq!(config.store.retention, RetentionSection { max_age_ms: None, max_bytes: Some(4096) });
        assert_eq!(config.store.segment_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn file_can_pick_the_preset_but_the_flag_wins() {
        // `preset = "…"` in the file applies when no `--preset` is given; `--preset` beats it.
        let text = "preset = \"production\"\n[dispatch]\nbatch_size = 64\n";
        let from_file = Config::load(None, Some(text)).expect("loads");
        assert_eq!(from_file.preset, Preset::Production);
        assert_eq!(from_file.store.fsync, FsyncPolicy::Always);
        assert_eq!(from_file.dispatch.batch_size, 64);

        let from_flag = Config::load(Some(Preset::Testing), Some(text)).expect("loads");
        assert_eq!(from_flag.preset, Preset::Testing);
        assert!(from_flag.store.in_memory);
        assert_eq!(from_flag.dispatch.batch_size, 64);

        let message = parse_message(Config::load(None, Some("preset = \"prod\"\n")));
        assert!(message.contains("prod") && message.contains("production") && message.contains("line 1"), "{message}");
    }

    #[test]
    fn flags_beat_file_and_preset() {
        // --listen and --data override the file; resolve also validates.
        let text = "[server]\nlisten = \"0.0.0.0:9000\"\ndata_dir = \"/from/file\"\n";
        let overrides = CliOverrides {
            preset: Some(Preset::Development),
            listen: Some("127.0.0.1:7800".to_owned()),
            data_dir: Some(PathBuf::from("/from/flag")),
        };
        let config = Config::resolve(&overrides, Some(text)).expect("resolves");
        assert_eq!(config.server.listen, "127.0.0.1:7800");
        assert_eq!(config.server.data_dir, PathBuf::from("/from/flag"));

        let only_listen = CliOverrides { listen: Some("[::1]:7701".to_owned()), ..CliOverrides::default() };
        let config = Config::resolve(&only_listen, Some(text)).expect("resolves");
        assert_eq!(config.server.listen, "[::1]:7701");
        assert_eq!(config.server.data_dir, PathBuf::from("/from/file"));

        let bad_listen = CliOverrides { listen: Some("localhost".to_owned()), ..CliOverrides::default() };
        let error = Config::resolve(&bad_listen, None).expect_err("refused");
        assert!(matches!(error, ConfigError::Invalid { ref key, .. } if key == "server.listen"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused_with_key_and_section() {
        // A misspelt key in any table is an error naming the key and the table it sits in.
        let cases = [
            ("[server]\nlisten = \"127.0.0.1:1\"\nbogus_key = 1\n", "`server`", 3),
            ("[auth]\nbogus_key = 1\n", "`auth`", 2),
            ("[store]\nbogus_key = 1\n", "`store`", 2),
            ("[store.retention]\nbogus_key = 1\n", "`store.retention`", 2),
            ("[dispatch]\nbogus_key = 1\n", "`dispatch`", 2),
            ("[webhooks]\nbogus_key = 1\n", "`webhooks`", 2),
            ("[websocket]\nbogus_key = 1\n", "`websocket`", 2),
            ("[bridge]\nbogus_key = 1\n", "`bridge`", 2),
            ("[[bridge.integration]]\nmatch = \"a.*\"\nbogus_key = 1\n", "`bridge.integration`", 3),
            (
                "[[bridge.websocket]]\nfrom = \"domain\"\nmatch = \"a\"\nroom = \"r:1\"\nbogus_key = 1\n",
                "`bridge.websocket`",
                5,
            ),
        ];
        for (text, section, line) in cases {
            let message = parse_message(Config::load(None, Some(text)));
            assert!(message.contains("unknown field `bogus_key`"), "{message}");
            assert!(message.contains(&format!("in {section}")), "{message}");
            assert!(message.contains(&format!("line {line},")), "{message}");
        }
        let message = parse_message(Config::load(None, Some("bogus_section = 1\n")));
        assert!(message.contains("unknown field `bogus_section`"), "{message}");
        let message = parse_message(Config::load(None, Some("[serverr]\nlisten = \"x\"\n")));
        assert!(message.contains("`serverr`"), "{message}");
    }

    #[test]
    fn wrong_types_are_refused_with_the_key_path() {
        // A value of the wrong type or an unknown enum name is named by its dotted key path.
        let cases = [
            ("[server]\nmax_body_bytes = \"big\"\n", "server.max_body_bytes"),
            ("[server]\nmax_connections = -1\n", "server.max_connections"),
            ("[server]\nlog_level = \"loud\"\n", "server.log_level"),
            ("[store]\nfsync = \"sometimes\"\n", "store.fsync"),
            ("[store]\nin_memory = \"yes\"\n", "store.in_memory"),
            ("[dispatch]\nwait = \"spin\"\n", "dispatch.wait"),
            ("[auth]\napi_keys = \"one\"\n", "auth.api_keys"),
            ("[webhooks]\nallow_private_networks = 1\n", "webhooks.allow_private_networks"),
            ("[websocket]\nping_interval_ms = 2.5\n", "websocket.ping_interval_ms"),
            ("server = 5\n", "server"),
        ];
        for (text, key) in cases {
            let message = parse_message(Config::load(Some(Preset::Production), Some(text)));
            assert!(message.contains(&format!("in `{key}`")), "{key}: {message}");
            assert!(message.contains("line "), "{key}: {message}");
        }
        let message = parse_message(Config::load(None, Some("[store]\nfsync = \"sometimes\"\n")));
        assert!(message.contains("`always`, `interval`, `never`"), "{message}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        // Broken TOML is a parse error with its line and column.
        let message = parse_message(Config::load(None, Some("[server]\nlisten = \n")));
        assert!(message.contains("line 2"), "{message}");
        let message = parse_message(Config::load(None, Some("[server\n")));
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn production_refuses_missing_auth_and_names_what_is_missing() {
        // The production preset names exactly the missing auth settings.
        let mut config = production_with_auth();
        assert_eq!(config.validate(), Ok(()));

        config.auth.api_keys.clear();
        let (key, message) = invalid_key(&config);
        assert_eq!(key, "auth.api_keys");
        assert!(message.contains("auth.api_keys is missing") && !message.contains("jwt_secret"), "{message}");

        let mut config = production_with_auth();
        config.auth.jwt_secret = None;
        let (key, message) = invalid_key(&config);
        assert_eq!(key, "auth.jwt_secret");
        assert!(message.contains("auth.jwt_secret is missing") && !message.contains("api_keys"), "{message}");

        let (key, message) = invalid_key(&Config::preset(Preset::Production));
        assert_eq!(key, "auth.api_keys, auth.jwt_secret");
        assert!(message.contains("auth.api_keys and auth.jwt_secret are both missing"), "{message}");

        // The other presets run without auth; a file that supplies it satisfies production.
        assert_eq!(Config::preset(Preset::Development).validate(), Ok(()));
        let text = "[auth]\napi_keys = [\"k1\"]\njwt_secret = \"s\"\n";
        assert!(Config::resolve(&CliOverrides { preset: Some(Preset::Production), ..Default::default() }, Some(text))
            .is_ok());
    }

    #[test]
    fn interval_fsync_needs_a_positive_interval() {
        // fsync = "interval" takes the default 100 ms when unset and refuses 0.
        let config = Config::load(None, Some("[store]\nfsync = \"interval\"\n")).expect("loads");
        assert_eq!((config.store.fsync, config.store.fsync_interval_ms), (FsyncPolicy::Interval, 100));
        assert_eq!(config.validate(), Ok(()));

        let config = Config::load(None, Some("[store]\nfsync = \"interval\"\nfsync_interval_ms = 0\n")).expect("loads");
        assert_eq!(invalid_key(&config).0, "store.fsync_interval_ms");
        // Without the interval policy the value is unused and 0 is harmless.
        let config = Config::load(None, Some("[store]\nfsync_interval_ms = 0\n")).expect("loads");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn validate_names_each_broken_limit() {
        // Each invariant of the module docs is enforced and reported under its key.
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 24] = [
            ("server.listen", |c| c.server.listen = "localhost:7700".to_owned()),
            ("server.data_dir", |c| c.server.data_dir = PathBuf::new()),
            ("server.max_body_bytes", |c| c.server.max_body_bytes = 1023),
            ("server.max_header_bytes", |c| c.server.max_header_bytes = 10),
            ("server.max_connections", |c| c.server.max_connections = 0),
            ("server.request_timeout_ms", |c| c.server.request_timeout_ms = 0),
            ("auth.api_keys[1]", |c| c.auth.api_keys = vec!["ok".to_owned(), "has space".to_owned()]),
            ("auth.jwt_secret", |c| c.auth.jwt_secret = Some(String::new())),
            ("store.segment_bytes", |c| c.store.segment_bytes = 4097),
            ("store.segment_bytes", |c| c.store.segment_bytes = 0),
            ("store.segment_bytes", |c| c.store.segment_bytes = MAX_SEGMENT_BYTES + 4096),
            ("store.retention.max_age_ms", |c| c.store.retention.max_age_ms = Some(0)),
            ("store.retention.max_bytes", |c| c.store.retention.max_bytes = Some(0)),
            ("dispatch.ring_capacity", |c| c.dispatch.ring_capacity = 1000),
            ("dispatch.ring_capacity", |c| c.dispatch.ring_capacity = 1),
            ("dispatch.batch_size", |c| c.dispatch.batch_size = 0),
            ("dispatch.batch_size", |c| c.dispatch.batch_size = 65_537),
            ("dispatch.dead_letter_capacity", |c| c.dispatch.dead_letter_capacity = 0),
            ("webhooks.max_retry_delay_ms", |c| c.webhooks.max_retry_delay_ms = 10),
            ("webhooks.workers", |c| c.webhooks.workers = 0),
            ("webhooks.max_in_flight_per_endpoint", |c| c.webhooks.max_in_flight_per_endpoint = 0),
            ("websocket.max_frame_bytes", |c| c.websocket.max_frame_bytes = 100),
            ("websocket.send_queue_frames", |c| c.websocket.send_queue_frames = 0),
            ("websocket.idle_timeout_ms", |c| c.websocket.idle_timeout_ms = 25_000),
        ];
        for (expected_key, breaker) in cases {
            let mut config = Config::default();
            breaker(&mut config);
            assert_eq!(invalid_key(&config).0, expected_key);
        }
        // The smallest legal values pass.
        let mut config = Config::default();
        config.store.segment_bytes = 4096;
        config.dispatch.ring_capacity = 2;
        config.dispatch.batch_size = 2;
        config.server.max_body_bytes = 1024;
        config.server.listen = "[::1]:0".to_owned();
        assert_eq!(config.validate(), Ok(()));
        // An in-memory store needs no data directory.
        let mut config = Config::preset(Preset::Testing);
        config.server.data_dir = PathBuf::new();
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bridge_rules_parse_with_match_and_defaults() {
        // `match` fills the pattern; optional rule keys take their documented defaults.
        let text = "[[bridge.integration]]\nmatch = \"task.*\"\n\n[[bridge.websocket]]\nfrom = \"integration\"\n\
                    match = \"task.#\"\nroom = \"project:{data.project_id}\"\n";
        let config = Config::load(None, Some(text)).expect("loads");
        assert_eq!(
            config.bridge.integration,
            vec![IntegrationRule { pattern: "task.*".into(), version: "1.0.0".into() }]
        );
        assert_eq!(
            config.bridge.websocket,
            vec![WebSocketRule {
                from: RuleSource::Integration,
                pattern: "task.#".into(),
                room: "project:{data.project_id}".into(),
                exclude_source: false,
                priority: RulePriority::Normal,
                persistent: false,
            }]
        );
        assert_eq!(config.validate(), Ok(()));

        // The spec's own example.
        let spec = r#"
[[bridge.integration]]          # domain → integration
match = "task.*"                # on the routing key derived from the type: TaskCompleted → task.completed
version = "1.0.0"

[[bridge.websocket]]            # domain or integration → WebSocket
from = "domain"                 # or "integration"
match = "task.#"
room = "project:{metadata.project_id}"   # template over event fields
exclude_source = true           # exclude metadata.user_id / source.user_id
priority = "normal"
persistent = true
"#;
        let config = Config::load(None, Some(spec)).expect("loads");
        assert_eq!(config.validate(), Ok(()));
        let rule = &config.bridge.websocket[0];
        assert!(rule.exclude_source && rule.persistent && rule.from == RuleSource::Domain);

        // Required keys are named when absent.
        let message = parse_message(Config::load(None, Some("[[bridge.integration]]\nversion = \"2\"\n")));
        assert!(message.contains("missing field `match`") && message.contains("bridge.integration"), "{message}");
        let message = parse_message(Config::load(None, Some("[[bridge.websocket]]\nmatch = \"a\"\nroom = \"r\"\n")));
        assert!(message.contains("missing field `from`"), "{message}");
        let message = parse_message(Config::load(
            None,
            Some("[[bridge.websocket]]\nfrom = \"domain\"\nmatch = \"a\"\nroom = \"r\"\npriority = \"urgent\"\n"),
        ));
        assert!(message.contains("urgent") && message.contains("`critical`"), "{message}");
    }

    #[test]
    fn bridge_patterns_and_rooms_are_checked() {
        // Empty or malformed patterns and room templates are refused under their rule's key.
        let rule = |pattern: &str, room: &str| WebSocketRule {
            from: RuleSource::Domain,
            pattern: pattern.to_owned(),
            room: room.to_owned(),
            exclude_source: false,
            priority: RulePriority::Low,
            persistent: false,
        };
        let mut config = Config::default();
        config.bridge.integration.push(IntegrationRule { pattern: String::new(), version: "1".into() });
        assert_eq!(invalid_key(&config).0, "bridge.integration[0].match");
        config.bridge.integration[0].pattern = "task.*".into();
        config.bridge.integration[0].version = String::new();
        assert_eq!(invalid_key(&config).0, "bridge.integration[0].version");
        config.bridge.integration.clear();

        for (pattern, room, key) in [
            ("", "r:1", "bridge.websocket[1].match"),
            ("task*", "r:1", "bridge.websocket[1].match"),
            ("Task.created", "r:1", "bridge.websocket[1].match"),
            (&"a".repeat(256), "r:1", "bridge.websocket[1].match"),
            ("task.#", "", "bridge.websocket[1].room"),
            ("task.#", "project:{metadata.project_id", "bridge.websocket[1].room"),
            ("task.#", "project:}", "bridge.websocket[1].room"),
            ("task.#", "project:{}", "bridge.websocket[1].room"),
            ("task.#", "project:{a {b}}", "bridge.websocket[1].room"),
        ] {
            config.bridge.websocket = vec![rule("#", "all:x"), rule(pattern, room)];
            assert_eq!(invalid_key(&config).0, key, "{pattern:?} {room:?}");
        }
        for pattern in ["#", "*", "a.#.b", "task.*", "a..b", "x-y_z.1"] {
            config.bridge.websocket = vec![rule(pattern, "{data.room}")];
            assert_eq!(config.validate(), Ok(()), "{pattern}");
        }
    }

    #[test]
    fn example_config_parses_validates_and_round_trips() {
        // The documented example is complete and valid, and a config written out reloads equal.
        let config = Config::load(None, Some(EXAMPLE_CONFIG)).expect("loads");
        assert_eq!(config.preset, Preset::Production);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.server.listen, "0.0.0.0:7700");
        assert_eq!(config.store.retention.max_bytes, Some(107_374_182_400));
        assert_eq!(config.bridge.integration.len(), 2);
        assert_eq!(config.bridge.websocket[1].priority, RulePriority::High);

        // Every key is in the example: writing the loaded config out gives the same key set.
        let written = toml::to_string(&config).expect("serializes");
        let example_table: toml::Table = toml::from_str(EXAMPLE_CONFIG).expect("parses");
        let written_table: toml::Table = toml::from_str(&written).expect("parses");
        assert_eq!(keys(&example_table, ""), keys(&written_table, ""));
        assert_eq!(Config::load(None, Some(&written)), Ok(config));

        let development = Config::preset(Preset::Development);
        let written = toml::to_string(&development).expect("serializes");
        assert_eq!(Config::load(None, Some(&written)), Ok(development));
    }

    fn keys(table: &toml::Table, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => out.extend(keys(inner, &format!("{path}."))),
                toml::Value::Array(items) => {
                    for item in items {
                        if let toml::Value::Table(inner) = item {
                            out.extend(keys(inner, &format!("{path}[].")));
                        }
                    }
                    out.push(path);
                }
                _ => out.push(path),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn docs_hold_the_same_example() {
        // docs/config.md shows exactly EXAMPLE_CONFIG, so the documented file is the tested one.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
        let doc = std::fs::read_to_string(&path).expect("docs/config.md is readable");
        let start_marker = "<!-- example-config:start -->\n```toml\n";
        let start = doc.find(start_marker).expect("start marker") + start_marker.len();
        let end = start + doc[start..].find("```\n<!-- example-config:end -->").expect("end marker");
        assert_eq!(&doc[start..end], EXAMPLE_CONFIG);
    }

    #[test]
    fn debug_output_hides_secrets() {
        // Logging a config must not leak API keys or the JWT secret.
        let config = production_with_auth();
        let shown = format!("{config:?}");
        assert!(!shown.contains("key-1") && !shown.contains("\"secret\""), "{shown}");
        assert!(shown.contains("[1 redacted]") && shown.contains("Some(\"redacted\")"), "{shown}");
    }
}
