//! Herald's engine: one store and one dispatch path for domain, integration and WebSocket events.
//!
//! The architecture is "append, then dispatch" (see `DESIGN.md`): every event is first appended
//! to the [`store`], which assigns its position; only committed events go further.
//!
//! - [`event`]: the event envelope, its ids, limits, validation and JSON form.
//! - [`store`]: the append-only log, its indexes, snapshots, recovery and retention.
//! - [`routing`]: routing keys and AMQP-topic patterns, one matcher for every subscriber.
//! - [`dispatch`]: the lock-free ring and the domain event bus.
//! - [`integration`]: integration events, webhook endpoints, the durable outbox and delivery.
//! - [`realtime`]: WebSocket events, auth, rooms, presence, priority queues and fan-out.
//! - [`system`]: the unified system (store, dispatch, webhooks, bridges), presets and config.
//! - [`server`]: the HTTP front on a mio reactor; the `herald` binary serves it.
#![deny(unsafe_code)]

pub mod dispatch;
pub mod event;
pub mod integration;
pub mod metrics;
pub mod realtime;
pub mod routing;
pub mod server;
pub mod store;
pub mod system;
