//! Dispatch: committed events go from the log to handlers through a lock-free ring.
//!
//! - [`ring`]: the Disruptor-style ring (claim, publish, consume, dependency barriers, wait
//!   strategies, backpressure).
//! - [`EventBus`]: the domain event bus on top of the store and the ring: typed events, handlers
//!   by type, pattern or everything, handler groups, error isolation with retries and dead
//!   letters, causation, durable handlers, synchronous mode, metrics, graceful shutdown.
//!
//! The protocol and its correctness argument are in `docs/dispatch.md`.

mod bus;
mod checkpoint;
pub(crate) mod context;
mod handler;
mod metrics;
pub mod ring;
mod slots;
mod sync;

pub use bus::{Backpressure, BusBuilder, BusConfig, BusError, EventBus, PendingDispatch};
pub use context::with_cause;
pub use handler::{DeadLetter, DeadLetterSink, DomainEvent, Filter, HandlerResult, Subscription};
pub use metrics::{BusMetrics, HandlerStats};

pub use ring::{
    Claim, ClaimError, Consumer, ConsumerId, Producer, PublishError, RingBuilder, SoloProducer, Wait, WaitStrategy,
};
