//! WebSocket events: the [`WsEvent`], auth ([`auth`]), the [`hub::Hub`] (rooms, presence,
//! per-connection priority queues, fan-out) and the bridge rules that turn domain and
//! integration events into WebSocket events ([`bridge`]).
//!
//! The hub sits behind one lock in [`Realtime`]. The server's reactor thread owns the sockets: it
//! feeds client frames to the hub and drains the hub's queues into the sockets. Other threads
//! (a publisher whose events a bridge turns into WebSocket events) fan out under the lock and
//! wake the reactor through its `mio::Waker`.

pub mod auth;
pub mod bridge;
pub mod event;
pub mod frame;
pub mod hub;
pub mod queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};

pub use event::{Priority, Target, WsEvent};
pub use hub::{Hub, HubCounters};

use crate::metrics::LatencySummary;

/// Counters and gauges for both metrics endpoints.
#[derive(Clone, Debug, Default)]
pub struct RealtimeMetrics {
    pub connections: u64,
    pub counters: HubCounters,
    /// Bridge rules skipped because their room template named a missing field.
    pub bridge_skipped: u64,
    /// Persistent WebSocket events appended to the log.
    pub persisted: u64,
    pub fanout_latency: LatencySummary,
}

/// The realtime part of a system (see the module docs).
pub struct Realtime {
    hub: Mutex<Hub>,
    waker: OnceLock<Arc<mio::Waker>>,
    /// The reactor's thread: its own fan-outs need no wake-up (it drains after the turn).
    reactor: OnceLock<std::thread::ThreadId>,
    pub(crate) bridge_skipped: AtomicU64,
    /// Persistent WebSocket events appended to the log.
    pub(crate) persisted: AtomicU64,
}

impl Realtime {
    pub fn new(send_queue_frames: usize, history_size: usize) -> Self {
        Realtime {
            hub: Mutex::new(Hub::new(send_queue_frames, history_size)),
            waker: OnceLock::new(),
            reactor: OnceLock::new(),
            bridge_skipped: AtomicU64::new(0),
            persisted: AtomicU64::new(0),
        }
    }

    /// The hub, locked.
    pub fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock()
    }

    /// Called by the reactor that drains the queues: fan-outs from other threads wake it.
    pub fn set_waker(&self, waker: Arc<mio::Waker>) {
        let _ = self.waker.set(waker);
    }

    /// Called on the reactor's thread when it starts serving.
    pub fn set_reactor_thread(&self) {
        let _ = self.reactor.set(std::thread::current().id());
    }

    /// Fans `events` out and wakes the reactor (unless this is the reactor's thread); returns how many connections each was queued on.
    pub fn fan_out(&self, events: &[WsEvent]) -> Vec<usize> {
        if events.is_empty() {
            return Vec::new();
        }
        let delivered = {
            let mut hub = self.hub.lock();
            events.iter().map(|event| hub.fan_out(event)).collect()
        };
        let on_reactor = self.reactor.get() == Some(&std::thread::current().id());
        if let (Some(waker), false) = (self.waker.get(), on_reactor) {
            // A failed wake only delays the frames to the reactor's next tick.
            let _ = waker.wake();
        }
        delivered
    }

    pub fn metrics(&self) -> RealtimeMetrics {
        let hub = self.hub.lock();
        RealtimeMetrics {
            connections: hub.connections() as u64,
            counters: hub.counters.clone(),
            bridge_skipped: self.bridge_skipped.load(Ordering::Relaxed),
            persisted: self.persisted.load(Ordering::Relaxed),
            fanout_latency: LatencySummary::of(&hub.fanout_latency),
        }
    }
}
