//! The network front: HTTP/1.1 on one mio reactor thread, serving the API of `PROTOCOL.md` from
//! a [`System`].
//!
//! - [`http`]: sans-IO request parsing (httparse) and response writing, with bounds.
//! - `api`: routes requests to the system; status codes and error bodies per the spec.
//! - `prometheus`: `GET /metrics`.
//! - `reactor`: the event loop: non-blocking sockets, keep-alive and pipelining, idle and
//!   slow-request timeouts, one fsync per turn for every append of the turn, graceful shutdown.
//!
//! One thread owns every socket. Appends do not block it on the disk one by one: each is written
//! without waiting (see `EventStore::append_deferred_with`), and at the end of the turn one fsync
//! covers them all before any of their responses is sent (group commit, as Redis does with
//! `appendfsync always`). [`ServerHandle::shutdown`] (the binary calls it on SIGINT and SIGTERM)
//! wakes the reactor through a `mio::Waker`: it stops accepting, answers 503 to new requests,
//! finishes writing what it owes within `server.shutdown_timeout_ms`, and returns; the caller then
//! shuts the system down (drain dispatch, fsync).

pub mod http;

mod api;
mod prometheus;
mod reactor;
mod webhooks;
mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::system::System;

/// The server's errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    /// The event loop failed (an OS error from epoll).
    #[error("event loop: {0}")]
    Reactor(std::io::Error),
}

/// A bound server; [`Server::run`] serves until [`ServerHandle::shutdown`].
pub struct Server {
    reactor: reactor::Reactor,
}

/// Stops a running server from another thread (or a signal handler thread).
#[derive(Clone)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
}

impl ServerHandle {
    /// Asks the server to shut down gracefully; returns at once.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        // A failed wake only delays the shutdown until the reactor's next timeout tick.
        let _ = self.waker.wake();
    }
}

impl Server {
    /// Binds `system.config().server.listen`.
    pub fn bind(system: Arc<System>) -> Result<Server, ServerError> {
        Ok(Server { reactor: reactor::Reactor::bind(system)? })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.reactor.local_addr()
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.reactor.handle()
    }

    /// Serves until shut down; returns once every connection is answered and closed (or the
    /// shutdown timeout passed).
    pub fn run(self) -> Result<(), ServerError> {
        self.reactor.run()
    }
}
