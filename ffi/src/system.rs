//! The system handle and the calls on it: open and close, publish (domain events as structs or
//! as the spec's JSON, integration events, WebSocket broadcasts), stream versions, webhook
//! endpoints and metrics.
//!
//! A `herald_system` may be used from many threads at once; `herald_system_free` must be the
//! last call on it. Readers, snapshots and subscriptions made from it stay valid after it is
//! freed (they share the store), though a subscription then sees no new events.

use std::ffi::c_char;
use std::time::Duration;

use herald_core::event::{EventDraft, ValidationError};
use herald_core::integration::{EndpointDraft, IntegrationEvent};
use herald_core::realtime::WsEvent;
use herald_core::store::AppendOutcome;
use herald_core::system::config::{Config, Preset};
use herald_core::system::System;

use crate::args;
use crate::buffer::herald_buffer;
use crate::event::{herald_appended, herald_draft};
use crate::status::{guard, herald_status, Failure};

/// A running Herald system: store, domain bus, webhook service and realtime hub.
#[allow(non_camel_case_types)]
pub struct herald_system {
    pub(crate) system: System,
}

/// The outcome of a broadcast.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct herald_broadcast_result {
    /// Whether the event was persistent (stored): then `position` is its log position.
    pub persisted: bool,
    pub position: u64,
    /// How many connections it was queued on.
    pub delivered: u64,
}

/// How long `herald_system_free` lets dispatch drain.
const FREE_TIMEOUT: Duration = Duration::from_secs(5);

fn invalid(error: ValidationError) -> Failure {
    Failure::invalid(error.to_string())
}

/// Writes the first `capacity` per-event results to `out` (nothing when it is NULL).
///
/// # Safety
/// `out` NULL or valid for `capacity` writes.
unsafe fn write_results(outcome: &AppendOutcome, out: *mut herald_appended, capacity: usize) {
    if out.is_null() {
        return;
    }
    let already = matches!(outcome, AppendOutcome::AlreadyAppended(_));
    for (i, event) in outcome.events().iter().take(capacity).enumerate() {
        // SAFETY: the caller vouches for `capacity` writable results.
        unsafe { out.add(i).write(herald_appended::new(event, already)) };
    }
}

/// Opens a system from a preset name (`development`, `production` or `testing`; NULL: the
/// config's `preset`, else `development`) and a TOML config (NULL: none), as `herald serve`
/// does. `testing` keeps the store in memory; the others open `server.data_dir`.
///
/// On success `*system_out` is a new handle for `herald_system_free`.
///
/// # Safety
/// Non-NULL pointers must be valid for their lengths; `system_out` for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_system_new(
    preset: *const c_char,
    preset_len: usize,
    config_toml: *const c_char,
    config_toml_len: usize,
    system_out: *mut *mut herald_system,
) -> herald_status {
    guard(|| {
        let out = args::out(system_out, "system_out")?;
        // SAFETY: the caller vouches for both buffers.
        let preset = unsafe { args::optional_text(preset, preset_len, "preset") }?;
        let toml = unsafe { args::optional_text(config_toml, config_toml_len, "config_toml") }?;
        let preset = preset
            .map(|name| name.parse::<Preset>())
            .transpose()
            .map_err(|error| Failure::new(herald_status::HERALD_INVALID_CONFIG, error.to_string()))?;
        let config = Config::load(preset, toml)
            .map_err(|error| Failure::new(herald_status::HERALD_INVALID_CONFIG, error.to_string()))?;
        config.validate().map_err(|error| Failure::new(herald_status::HERALD_INVALID_CONFIG, error.to_string()))?;
        let system = System::from_config(config)?;
        // SAFETY: `out` was checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(Box::into_raw(Box::new(herald_system { system }))) };
        Ok(())
    })
}

/// Shuts the system down (as `herald_system_shutdown` with 5 s) and frees it. NULL is a no-op.
///
/// # Safety
/// `system` must be NULL or a handle from `herald_system_new` not freed yet, and no other
/// thread may use it during or after this call.
#[no_mangle]
pub unsafe extern "C" fn herald_system_free(system: *mut herald_system) {
    guard(|| {
        if !system.is_null() {
            // SAFETY: the caller hands back a live handle from `herald_system_new`.
            let handle = unsafe { Box::from_raw(system) };
            let _ = handle.system.shutdown(FREE_TIMEOUT);
        }
        Ok(())
    });
}

/// Stops accepting publishes (later ones fail with `HERALD_SHUTTING_DOWN`), lets dispatch
/// drain for up to `timeout_ms`, stops webhook delivery with its state journaled, and makes
/// everything appended durable. `*drained_out` (if not NULL) says whether dispatch drained in
/// time. Reads keep working until `herald_system_free`.
///
/// # Safety
/// `system` must be NULL or a live handle; `drained_out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_system_shutdown(
    system: *const herald_system,
    timeout_ms: u64,
    drained_out: *mut bool,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle.
        let system = unsafe { args::borrow(system, "system") }?;
        let drained = system.system.shutdown(Duration::from_millis(timeout_ms))?;
        if !drained_out.is_null() {
            // SAFETY: non-NULL, and the caller vouches it is writable.
            unsafe { drained_out.write(drained) };
        }
        Ok(())
    })
}

/// Publishes one domain event (append, then dispatch; durable per `store.fsync` before it
/// returns). `*appended_out` (if not NULL) receives where it landed.
///
/// # Safety
/// `system` a live handle; `draft` NULL or a valid draft whose pointers are valid for their
/// lengths; `appended_out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_publish(
    system: *const herald_system,
    draft: *const herald_draft,
    appended_out: *mut herald_appended,
) -> herald_status {
    if draft.is_null() {
        return guard(|| Err(Failure::null("draft")));
    }
    // SAFETY: forwarded contract; one draft is a batch of one.
    unsafe { herald_publish_batch(system, draft, 1, appended_out) }
}

/// Publishes `count` domain events atomically: all are stored and dispatched, or none.
/// `appended_out` (if not NULL) must have room for `count` results, written in draft order.
/// `count` 0 is `HERALD_INVALID_ARGUMENT`.
///
/// # Safety
/// `system` a live handle; `drafts` NULL or valid for `count` drafts (each as in
/// `herald_publish`); `appended_out` NULL or valid for `count` writes.
#[no_mangle]
pub unsafe extern "C" fn herald_publish_batch(
    system: *const herald_system,
    drafts: *const herald_draft,
    count: usize,
    appended_out: *mut herald_appended,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle and the array.
        let system = unsafe { args::borrow(system, "system") }?;
        if drafts.is_null() {
            return Err(Failure::null("drafts"));
        }
        if count == 0 {
            return Err(Failure::invalid("count must be at least 1"));
        }
        if count > isize::MAX as usize / std::mem::size_of::<herald_draft>() {
            return Err(Failure::invalid(format!("count of {count} drafts is larger than any array")));
        }
        // SAFETY: non-NULL, the size fits `isize`, and the caller vouches for `count` drafts.
        let drafts = unsafe { std::slice::from_raw_parts(drafts, count) };
        // SAFETY: the caller vouches for every draft's pointers.
        let drafts = unsafe { herald_draft::to_drafts(drafts) }?;
        let outcome = system.system.publish(drafts)?;
        // SAFETY: the caller vouches `appended_out` is NULL or has room for `count` results.
        unsafe { write_results(&outcome, appended_out, count) };
        Ok(())
    })
}

/// Publishes domain events given as the spec's JSON (`POST /v1/events`): one event object, or
/// `{"events": [...]}` for an atomic batch. The first `appended_capacity` results are written
/// to `appended_out` (NULL with capacity 0 writes none); `*count_out` (if not NULL) receives
/// how many events were published.
///
/// # Safety
/// `system` a live handle; `json` valid for `json_len` bytes; `appended_out` NULL or valid for
/// `appended_capacity` writes; `count_out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_publish_json(
    system: *const herald_system,
    json: *const u8,
    json_len: usize,
    appended_out: *mut herald_appended,
    appended_capacity: usize,
    count_out: *mut usize,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle and the buffer.
        let system = unsafe { args::borrow(system, "system") }?;
        let json = unsafe { args::bytes(json, json_len, "json") }?;
        // One copy of the body: the drafts' payloads are slices of it.
        let drafts = EventDraft::batch_from_json(&bytes::Bytes::copy_from_slice(json)).map_err(invalid)?;
        let outcome = system.system.publish(drafts)?;
        // SAFETY: the caller vouches `appended_out` is NULL or has room for `appended_capacity`.
        unsafe { write_results(&outcome, appended_out, appended_capacity) };
        if !count_out.is_null() {
            // SAFETY: non-NULL, and the caller vouches it is writable.
            unsafe { count_out.write(outcome.events().len()) };
        }
        Ok(())
    })
}

/// Publishes an integration event given as the spec's JSON (`POST /v1/integration-events`):
/// stored, then routed to every webhook endpoint whose filter matches its routing key.
/// `*appended_out` (if not NULL) receives its id and position.
///
/// # Safety
/// `system` a live handle; `json` valid for `json_len` bytes; `appended_out` NULL or valid
/// for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_publish_integration_json(
    system: *const herald_system,
    json: *const u8,
    json_len: usize,
    appended_out: *mut herald_appended,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle and the buffer.
        let system = unsafe { args::borrow(system, "system") }?;
        let json = unsafe { args::bytes(json, json_len, "json") }?;
        let event = IntegrationEvent::from_json(json).map_err(invalid)?;
        let outcome = system.system.publish_integration(event)?;
        // SAFETY: the caller vouches `appended_out` is NULL or valid for one write.
        unsafe { write_results(&outcome, appended_out, 1) };
        Ok(())
    })
}

/// Broadcasts a WebSocket event given as the spec's JSON (`POST /v1/broadcast`): a persistent
/// one is stored first (for replay with `since`), then it is queued on every connection it
/// targets. `*result_out` (if not NULL) receives the outcome. The result holds no id: Herald
/// makes a UUIDv7 when the body has none, so a caller that needs it passes its own `id`.
///
/// # Safety
/// `system` a live handle; `json` valid for `json_len` bytes; `result_out` NULL or valid for
/// one write.
#[no_mangle]
pub unsafe extern "C" fn herald_broadcast_json(
    system: *const herald_system,
    json: *const u8,
    json_len: usize,
    result_out: *mut herald_broadcast_result,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle and the buffer.
        let system = unsafe { args::borrow(system, "system") }?;
        let json = unsafe { args::bytes(json, json_len, "json") }?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let event = WsEvent::from_request(json, now).map_err(invalid)?;
        let (event, delivered) = system.system.broadcast(event)?;
        if !result_out.is_null() {
            let result = herald_broadcast_result {
                persisted: event.position.is_some(),
                position: event.position.unwrap_or(0),
                delivered: delivered as u64,
            };
            // SAFETY: non-NULL, and the caller vouches it is writable.
            unsafe { result_out.write(result) };
        }
        Ok(())
    })
}

/// The aggregate's current version (0: no such stream).
///
/// # Safety
/// `system` a live handle; `aggregate_id` valid for its length; `version_out` valid for one
/// write.
#[no_mangle]
pub unsafe extern "C" fn herald_stream_version(
    system: *const herald_system,
    aggregate_id: *const c_char,
    aggregate_id_len: usize,
    version_out: *mut u64,
) -> herald_status {
    guard(|| {
        let out = args::out(version_out, "version_out")?;
        // SAFETY: the caller vouches for the handle and the text.
        let system = unsafe { args::borrow(system, "system") }?;
        let aggregate_id = unsafe { args::text(aggregate_id, aggregate_id_len, "aggregate_id") }?;
        let version = system.system.store().stream_version(aggregate_id);
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(version) };
        Ok(())
    })
}

/// The metrics as JSON in the shape of `GET /v1/metrics` (`domain_events`,
/// `integration_events`, `websocket_events`, `event_store`), in a new buffer.
///
/// # Safety
/// `system` a live handle; `buffer_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_metrics_json(
    system: *const herald_system,
    buffer_out: *mut *mut herald_buffer,
) -> herald_status {
    guard(|| {
        let out = args::out(buffer_out, "buffer_out")?;
        // SAFETY: the caller vouches for the handle.
        let system = unsafe { args::borrow(system, "system") }?;
        let json = system.system.metrics_json().to_string();
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(herald_buffer::boxed(json.into_bytes())) };
        Ok(())
    })
}

/// Registers a webhook endpoint given as the spec's JSON (`POST /v1/webhooks`: `url`,
/// `filter` (an array of AMQP patterns), optional `description` and `secret`). The new endpoint (with its `id`
/// and signing `secret`) is written as JSON to a new buffer.
///
/// # Safety
/// `system` a live handle; `json` valid for `json_len` bytes; `buffer_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_webhook_create_json(
    system: *const herald_system,
    json: *const u8,
    json_len: usize,
    buffer_out: *mut *mut herald_buffer,
) -> herald_status {
    guard(|| {
        let out = args::out(buffer_out, "buffer_out")?;
        // SAFETY: the caller vouches for the handle and the buffer.
        let system = unsafe { args::borrow(system, "system") }?;
        let json = unsafe { args::bytes(json, json_len, "json") }?;
        let draft: EndpointDraft =
            serde_json::from_slice(json).map_err(|error| Failure::invalid(format!("webhook: {error}")))?;
        let endpoint = system.system.webhooks().create(draft)?;
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(herald_buffer::boxed(endpoint.to_json().to_string().into_bytes())) };
        Ok(())
    })
}

/// The registered webhook endpoints as `{"webhooks": [...]}` in a new buffer.
///
/// # Safety
/// `system` a live handle; `buffer_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_webhook_list_json(
    system: *const herald_system,
    buffer_out: *mut *mut herald_buffer,
) -> herald_status {
    guard(|| {
        let out = args::out(buffer_out, "buffer_out")?;
        // SAFETY: the caller vouches for the handle.
        let system = unsafe { args::borrow(system, "system") }?;
        let endpoints: Vec<serde_json::Value> = system.system.webhooks().list().iter().map(|e| e.to_json()).collect();
        let json = serde_json::json!({ "webhooks": endpoints }).to_string();
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(herald_buffer::boxed(json.into_bytes())) };
        Ok(())
    })
}

/// Removes a webhook endpoint and drops its pending deliveries (`HERALD_NOT_FOUND` if there is
/// no such id).
///
/// # Safety
/// `system` a live handle; `id` valid for `id_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_webhook_delete(
    system: *const herald_system,
    id: *const c_char,
    id_len: usize,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle and the text.
        let system = unsafe { args::borrow(system, "system") }?;
        let id = unsafe { args::text(id, id_len, "id") }?;
        Ok(system.system.webhooks().delete(id)?)
    })
}
