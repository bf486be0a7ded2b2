//! The HTTP API of the public contract (`PROTOCOL.md`, "HTTP API"): routes a parsed request to
//! the [`System`] and answers with the spec's status codes and JSON bodies.
//!
//! Sans-IO: [`handle`] takes a request and returns a [`Reply`]; the reactor owns the sockets. An
//! append's reply may have to wait for the fsync the reactor runs once per turn
//! ([`Reply::AfterSync`]); everything else answers at once.
//!
//! Where the spec is silent (documented in `docs/http.md`): an unknown path is 404 `not_found`; a
//! known path with another method is 405 `method_not_allowed` with `allow`; a request that
//! cannot be served because the store failed is 500 `internal_error`.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::http::{Method, Request, Response};
use super::prometheus;
use super::webhooks;
use crate::dispatch::{BusError, PendingDispatch};
use crate::event::time::{format_rfc3339_micros, parse_rfc3339};
use crate::event::{EventDraft, EventKind, ValidationError};
use crate::integration::IntegrationEvent;
use crate::realtime::WsEvent;
use crate::store::{AppendOutcome, EventView, ReadQuery, StoreError};
use crate::system::{System, SystemError};

/// Most events one read returns (`limit` is clamped to it).
pub const MAX_READ_LIMIT: usize = 10_000;
/// Events a read returns without `limit`.
pub const DEFAULT_READ_LIMIT: usize = 100;
/// Events a stream read returns without `limit`.
pub const DEFAULT_STREAM_LIMIT: usize = 1_000;

/// What to send back for one request.
pub enum Reply<'a> {
    /// Send now.
    Now(Response),
    /// Send once the turn's fsync succeeded, then dispatch the events.
    AfterSync(Response, PendingDispatch<'a>),
}

/// Answers one request. `shutting_down`: the server stopped accepting work.
pub fn handle<'a>(system: &'a System, request: &Request, shutting_down: bool) -> Reply<'a> {
    let path = request.path.as_str();
    let method = &request.method;
    if path == "/healthz" {
        return Reply::Now(match method {
            Method::Get | Method::Head if shutting_down => {
                Response::error(503, "shutting_down", "the server is shutting down")
            }
            Method::Get | Method::Head => Response::json(200, br#"{"status":"ok"}"#.to_vec()),
            _ => not_allowed("GET"),
        });
    }
    if shutting_down {
        return Reply::Now(Response::error(503, "shutting_down", "the server is shutting down"));
    }
    if path == "/metrics" {
        return Reply::Now(match method {
            Method::Get | Method::Head => prometheus_response(system),
            _ => not_allowed("GET"),
        });
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Reply::Now(not_found(path));
    };
    if let Some(refusal) = authorize(system, request) {
        return Reply::Now(refusal);
    }
    let is_read = matches!(method, Method::Get | Method::Head);
    match rest {
        "events" => match method {
            Method::Post => append(system, request),
            _ if is_read => Reply::Now(read_events(system, request)),
            _ => Reply::Now(not_allowed("GET, POST")),
        },
        "integration-events" => match method {
            Method::Post => publish_integration(system, request),
            _ => Reply::Now(not_allowed("POST")),
        },
        "webhooks" => Reply::Now(match method {
            Method::Post => webhooks::create(system, request),
            _ if is_read => webhooks::list(system),
            _ => not_allowed("GET, POST"),
        }),
        "broadcast" => Reply::Now(match method {
            Method::Post => broadcast(system, request),
            _ => not_allowed("POST"),
        }),
        "metrics" if is_read => Reply::Now(json_response(200, &system.metrics_json())),
        "metrics" => Reply::Now(not_allowed("GET")),
        _ => {
            if let Some(aggregate_id) = rest.strip_prefix("streams/").filter(|id| !id.is_empty()) {
                return Reply::Now(match method {
                    _ if is_read => read_stream(system, request, aggregate_id),
                    _ => not_allowed("GET"),
                });
            }
            if let Some(aggregate_id) = rest.strip_prefix("snapshots/").filter(|id| !id.is_empty()) {
                return Reply::Now(match method {
                    Method::Put => save_snapshot(system, request, aggregate_id),
                    _ if is_read => load_snapshot(system, aggregate_id),
                    _ => not_allowed("GET, PUT"),
                });
            }
            if let Some(room) = rest.strip_prefix("presence/").filter(|room| !room.is_empty()) {
                return Reply::Now(match method {
                    _ if is_read => presence(system, room),
                    _ => not_allowed("GET"),
                });
            }
            if let Some(rest) = rest.strip_prefix("webhooks/").filter(|id| !id.is_empty()) {
                return Reply::Now(webhooks::route(system, request, rest, is_read));
            }
            Reply::Now(not_found(path))
        }
    }
}

/// 401 unless the request carries one of the configured API keys (none configured: open).
fn authorize(system: &System, request: &Request) -> Option<Response> {
    let keys = &system.config().auth.api_keys;
    if keys.is_empty() {
        return None;
    }
    let given = request.header("authorization").and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(key) if keys.iter().any(|k| constant_time_eq(k.as_bytes(), key.trim().as_bytes())) => None,
        Some(_) => Some(Response::error(401, "unauthorized", "the API key is not valid")),
        None => Some(Response::error(401, "unauthorized", "an API key is required: Authorization: Bearer <key>")),
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Appends

fn append<'a>(system: &'a System, request: &Request) -> Reply<'a> {
    let drafts = match EventDraft::batch_from_json(&request.body) {
        Ok(drafts) => drafts,
        Err(error) => return Reply::Now(invalid_request(&error, None)),
    };
    match system.publish_deferred(drafts) {
        Ok((outcome, pending)) => {
            let status = match outcome {
                AppendOutcome::Appended(_) => 201,
                AppendOutcome::AlreadyAppended(_) => 200,
            };
            let events: Vec<serde_json::Value> = outcome
                .events()
                .iter()
                .map(|event| {
                    json!({"id": event.id, "position": event.position, "aggregate_version": event.aggregate_version})
                })
                .collect();
            Reply::AfterSync(json_response(status, &json!({ "events": events })), pending)
        }
        Err(error) => Reply::Now(bus_error(&error)),
    }
}

fn publish_integration<'a>(system: &'a System, request: &Request) -> Reply<'a> {
    let event = match IntegrationEvent::from_json(&request.body) {
        Ok(event) => event,
        Err(error) => return Reply::Now(invalid_request(&error, None)),
    };
    match system.publish_integration_deferred(event) {
        Ok((outcome, pending)) => {
            let status = match outcome {
                AppendOutcome::Appended(_) => 202,
                AppendOutcome::AlreadyAppended(_) => 200,
            };
            match outcome.events().first() {
                Some(event) => Reply::AfterSync(
                    json_response(status, &json!({"id": event.id, "position": event.position})),
                    pending,
                ),
                None => Reply::Now(Response::error(500, "internal_error", "the store returned no result")),
            }
        }
        Err(SystemError::Bus(error)) => Reply::Now(bus_error(&error)),
        Err(SystemError::Store(error)) => Reply::Now(store_error(&error)),
        Err(other) => Reply::Now(Response::error(500, "internal_error", &other.to_string())),
    }
}

fn broadcast(system: &System, request: &Request) -> Response {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let event = match WsEvent::from_request(&request.body, now) {
        Ok(event) => event,
        Err(error) => return invalid_request(&error, None),
    };
    match system.broadcast(event) {
        Ok((event, delivered)) => {
            let mut body = json!({"id": event.id, "delivered": delivered});
            if let Some(position) = event.position {
                body["position"] = json!(position);
            }
            json_response(202, &body)
        }
        Err(SystemError::Bus(error)) => bus_error(&error),
        Err(SystemError::Store(error)) => store_error(&error),
        Err(other) => Response::error(500, "internal_error", &other.to_string()),
    }
}

fn presence(system: &System, room: &str) -> Response {
    let members: Vec<serde_json::Value> = system
        .realtime()
        .hub()
        .members(room)
        .into_iter()
        .map(|(user, member)| {
            json!({"user_id": user, "connections": member.connections, "joined_at": format_rfc3339_micros(member.joined_ns)})
        })
        .collect();
    json_response(200, &json!({"room": room, "members": members}))
}

// ---------------------------------------------------------------------------------------------
// Reads

fn read_events(system: &System, request: &Request) -> Response {
    let query = match read_query(request) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut body = Vec::with_capacity(256 * query.limit.min(1024));
    body.extend_from_slice(br#"{"events":["#);
    match encode_events(&mut body, |visit| system.store().read(&query, visit)) {
        Ok(summary) => {
            let _ = write!(Tail(&mut body), r#"],"next_position":{}}}"#, summary.next_position);
            Response::json(200, body)
        }
        Err(response) => response,
    }
}

/// Runs `read`, writing each event it visits into `out` as JSON, comma-separated.
fn encode_events<T>(
    out: &mut Vec<u8>,
    read: impl FnOnce(&mut dyn FnMut(EventView<'_>) -> ControlFlow<()>) -> Result<T, StoreError>,
) -> Result<T, Response> {
    let mut first = true;
    let mut failure = None;
    let result = read(&mut |view| {
        if !first {
            out.push(b',');
        }
        first = false;
        if let Err(error) = serde_json::to_writer(&mut *out, &view.json()) {
            failure = Some(error);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some(error) = failure {
        return Err(Response::error(500, "internal_error", &format!("cannot encode an event: {error}")));
    }
    result.map_err(|error| store_error(&error))
}

/// `fmt::Write` into a byte buffer.
struct Tail<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Tail<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

fn read_query(request: &Request) -> Result<ReadQuery, Response> {
    let mut query = ReadQuery { kind: Some(EventKind::Domain), limit: DEFAULT_READ_LIMIT, ..ReadQuery::default() };
    for (name, value) in &request.query {
        match name.as_str() {
            "from_position" => query.from_position = number(name, value)?,
            "limit" => query.limit = limit(value, MAX_READ_LIMIT)?,
            "kind" => {
                query.kind = match value.as_str() {
                    "domain" => Some(EventKind::Domain),
                    "integration" => Some(EventKind::Integration),
                    "websocket" => Some(EventKind::WebSocket),
                    "all" => None,
                    _ => {
                        return Err(bad_parameter(
                            "kind",
                            &format!("`{value}` is not one of domain, integration, websocket, all"),
                        ))
                    }
                }
            }
            "type" => query.event_type = Some(value.clone()),
            "since" => query.since_ns = Some(parse_rfc3339(value).map_err(|error| bad_parameter("since", &error))?),
            _ => {} // unknown parameters are ignored, like unknown fields
        }
    }
    Ok(query)
}

fn read_stream(system: &System, request: &Request, aggregate_id: &str) -> Response {
    let mut from_version = 1;
    let mut max = DEFAULT_STREAM_LIMIT;
    for (name, value) in &request.query {
        let parsed = match name.as_str() {
            "from_version" => number(name, value).map(|v| from_version = v.max(1)),
            "limit" => limit(value, MAX_READ_LIMIT).map(|v| max = v),
            _ => Ok(()),
        };
        if let Err(response) = parsed {
            return response;
        }
    }
    let mut events = Vec::with_capacity(256 * max.min(1024));
    let result = encode_events(&mut events, |visit| system.store().read_stream(aggregate_id, from_version, max, visit));
    match result {
        Ok(summary) if summary.version == 0 => {
            Response::error(404, "not_found", &format!("stream `{aggregate_id}` has no events"))
        }
        Ok(summary) => {
            let mut body = Vec::with_capacity(events.len() + 128);
            body.extend_from_slice(br#"{"aggregate_id":"#);
            if serde_json::to_writer(&mut body, aggregate_id).is_err() {
                return Response::error(500, "internal_error", "cannot encode the aggregate id");
            }
            let _ = write!(Tail(&mut body), r#","version":{},"events":["#, summary.version);
            body.extend_from_slice(&events);
            body.extend_from_slice(b"]}");
            Response::json(200, body)
        }
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

#[derive(Deserialize)]
struct SnapshotJson<'a> {
    version: Option<serde_json::Value>,
    #[serde(borrow)]
    state: Option<&'a RawValue>,
}

fn save_snapshot(system: &System, request: &Request, aggregate_id: &str) -> Response {
    let parsed: SnapshotJson<'_> = match serde_json::from_slice(&request.body) {
        Ok(parsed) => parsed,
        Err(error) => return Response::error(400, "invalid_json", &error.to_string()),
    };
    let Some(version) = parsed.version.as_ref().and_then(serde_json::Value::as_u64).filter(|v| *v > 0) else {
        return bad_field("version", "is required and must be a positive integer");
    };
    let Some(state) = parsed.state else {
        return bad_field("state", "is required");
    };
    match system.store().save_snapshot(aggregate_id, version, state.get().as_bytes()) {
        Ok(()) => Response::empty(204),
        Err(error) => store_error(&error),
    }
}

fn load_snapshot(system: &System, aggregate_id: &str) -> Response {
    match system.store().load_snapshot(aggregate_id) {
        Ok(Some(snapshot)) => {
            // Snapshots saved over HTTP hold JSON; ones saved by an embedder (rkyv, say) do not
            // and cannot be shown as JSON.
            let Some(state) = std::str::from_utf8(snapshot.state())
                .ok()
                .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
            else {
                return Response::error(
                    409,
                    "conflict",
                    &format!("the snapshot of `{aggregate_id}` is binary (saved through the library), not JSON"),
                );
            };
            json_response(
                200,
                &json!({
                    "aggregate_id": snapshot.aggregate_id,
                    "version": snapshot.version,
                    "state": state,
                    "timestamp": format_rfc3339_micros(snapshot.timestamp_ns),
                }),
            )
        }
        Ok(None) => Response::error(404, "not_found", &format!("no snapshot for `{aggregate_id}`")),
        Err(error) => store_error(&error),
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

fn prometheus_response(system: &System) -> Response {
    Response::with_content_type(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        prometheus::encode(system).into_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Errors and helpers

pub(super) fn json_response(status: u16, value: &serde_json::Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::json(status, body),
        Err(error) => Response::error(500, "internal_error", &error.to_string()),
    }
}

pub(super) fn with_extra(status: u16, code: &str, message: &str, extra: serde_json::Value) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let (Some(error), serde_json::Value::Object(extra)) = (error.as_object_mut(), extra) {
        error.extend(extra);
    }
    json_response(status, &json!({ "error": error }))
}

pub(super) fn invalid_request(error: &ValidationError, index: Option<usize>) -> Response {
    let field = match index {
        Some(index) => format!("events[{index}].{}", error.field),
        None => error.field.to_string(),
    };
    let message = format!("{field}: {}", error.reason);
    if error.field == "body" {
        return Response::error(400, "invalid_json", &message);
    }
    with_extra(400, "invalid_request", &message, json!({ "field": field }))
}

pub(super) fn bad_field(field: &str, message: &str) -> Response {
    with_extra(400, "invalid_request", &format!("{field} {message}"), json!({ "field": field }))
}

pub(super) fn bad_parameter(name: &str, message: &str) -> Response {
    with_extra(400, "invalid_request", &format!("query parameter {name}: {message}"), json!({ "parameter": name }))
}

pub(super) fn number(name: &str, value: &str) -> Result<u64, Response> {
    value.parse().map_err(|_| bad_parameter(name, &format!("`{value}` is not a non-negative integer")))
}

/// A `limit`: at least 1, clamped to `max`.
pub(super) fn limit(value: &str, max: usize) -> Result<usize, Response> {
    match value.parse::<u64>() {
        Ok(0) | Err(_) => Err(bad_parameter("limit", &format!("`{value}` is not a positive integer"))),
        Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
    }
}

fn not_found(path: &str) -> Response {
    Response::error(404, "not_found", &format!("no such endpoint: {path}"))
}

pub(super) fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method_not_allowed", &format!("allowed methods: {allow}")).with_header("allow", allow)
}

/// The spec's status and body for a store error.
pub fn store_error(error: &StoreError) -> Response {
    let message = error.to_string();
    match error {
        StoreError::Invalid(error) => invalid_request(error, None),
        StoreError::TooLarge { .. } => Response::error(413, "too_large", &message),
        StoreError::VersionConflict { current, .. } => {
            with_extra(409, "version_conflict", &message, json!({ "current_version": current }))
        }
        StoreError::DuplicateId { ids } => with_extra(409, "duplicate_id", &message, json!({ "ids": ids })),
        StoreError::StreamNotFound { .. } => Response::error(404, "not_found", &message),
        StoreError::BeforeRetention { first_position, .. } => {
            with_extra(410, "gone", &message, json!({ "first_position": first_position }))
        }
        StoreError::Overloaded(_) => Response::error(429, "overloaded", &message),
        _ => Response::error(500, "internal_error", &message),
    }
}

fn bus_error(error: &BusError) -> Response {
    match error {
        BusError::Store(error) => store_error(error),
        BusError::Overloaded(_) => Response::error(429, "overloaded", "the dispatch ring is full; retry later"),
        BusError::ShuttingDown(_) => Response::error(503, "shutting_down", "the server is shutting down"),
        other => Response::error(500, "internal_error", &other.to_string()),
    }
}
