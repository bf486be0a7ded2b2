//! Snapshots: save an aggregate's state at a version; load the newest as a handle whose bytes
//! stay valid until `herald_snapshot_free`.

use std::ffi::c_char;

use herald_core::store::Snapshot;

use crate::args;
use crate::status::{guard, herald_status, Failure};
use crate::system::herald_system;

/// A loaded snapshot.
#[allow(non_camel_case_types)]
pub struct herald_snapshot {
    snapshot: Snapshot,
}

/// A snapshot's contents, borrowed from its handle.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct herald_snapshot_view {
    /// The stream version the state reflects.
    pub aggregate_version: u64,
    /// Unix nanoseconds when it was saved.
    pub timestamp_ns: u64,
    /// The state bytes as saved (16-byte aligned, so an rkyv archive can be read in place).
    pub state: *const u8,
    pub state_len: usize,
}

/// Saves `state` as the aggregate's snapshot at `aggregate_version`. The stream must exist
/// (`HERALD_NOT_FOUND`) and be at that version or later (`HERALD_VERSION_CONFLICT`).
///
/// # Safety
/// `system` a live handle; `aggregate_id` and `state` valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn herald_snapshot_save(
    system: *const herald_system,
    aggregate_id: *const c_char,
    aggregate_id_len: usize,
    aggregate_version: u64,
    state: *const u8,
    state_len: usize,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the handle and both buffers.
        let system = unsafe { args::borrow(system, "system") }?;
        let aggregate_id = unsafe { args::text(aggregate_id, aggregate_id_len, "aggregate_id") }?;
        let state = unsafe { args::bytes(state, state_len, "state") }?;
        Ok(system.system.store().save_snapshot(aggregate_id, aggregate_version, state)?)
    })
}

/// Loads the aggregate's newest snapshot into a new handle; `HERALD_NOT_FOUND` if it has none.
///
/// # Safety
/// `system` a live handle; `aggregate_id` valid for its length; `snapshot_out` valid for one
/// write.
#[no_mangle]
pub unsafe extern "C" fn herald_snapshot_load(
    system: *const herald_system,
    aggregate_id: *const c_char,
    aggregate_id_len: usize,
    snapshot_out: *mut *mut herald_snapshot,
) -> herald_status {
    guard(|| {
        let out = args::out(snapshot_out, "snapshot_out")?;
        // SAFETY: the caller vouches for the handle and the text.
        let system = unsafe { args::borrow(system, "system") }?;
        let aggregate_id = unsafe { args::text(aggregate_id, aggregate_id_len, "aggregate_id") }?;
        let snapshot = system.system.store().load_snapshot(aggregate_id)?.ok_or_else(|| {
            Failure::new(herald_status::HERALD_NOT_FOUND, format!("aggregate `{aggregate_id}` has no snapshot"))
        })?;
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(Box::into_raw(Box::new(herald_snapshot { snapshot }))) };
        Ok(())
    })
}

/// The snapshot's version and state, valid until `herald_snapshot_free`.
///
/// # Safety
/// `snapshot` a live handle; `view_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_snapshot_get(
    snapshot: *const herald_snapshot,
    view_out: *mut herald_snapshot_view,
) -> herald_status {
    guard(|| {
        let out = args::out(view_out, "view_out")?;
        // SAFETY: the caller vouches for the handle.
        let snapshot = &unsafe { args::borrow(snapshot, "snapshot") }?.snapshot;
        let state = snapshot.state();
        let view = herald_snapshot_view {
            aggregate_version: snapshot.version,
            timestamp_ns: snapshot.timestamp_ns,
            state: state.as_ptr(),
            state_len: state.len(),
        };
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(view) };
        Ok(())
    })
}

/// Frees a snapshot. NULL is a no-op.
///
/// # Safety
/// `snapshot` NULL or a live handle, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn herald_snapshot_free(snapshot: *mut herald_snapshot) {
    guard(|| {
        if !snapshot.is_null() {
            // SAFETY: the caller hands back a live handle.
            drop(unsafe { Box::from_raw(snapshot) });
        }
        Ok(())
    });
}
