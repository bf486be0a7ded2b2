//! The event structs of the ABI: drafts going in, appended results and borrowed event views
//! coming out, and their conversions to and from the engine's types.
//!
//! A [`herald_event`] borrows from the handle that filled it (a reader or a subscription): its
//! pointers stay valid until the next call on that handle or its free. Nothing in it is to be
//! freed by the caller.

use std::ffi::c_char;

use herald_core::event::{Event, EventDraft, EventKind, ExpectedVersion, Metadata, Uuid};
use herald_core::store::Appended;

use crate::args;
use crate::status::Failure;

/// A UUID as its 16 bytes in RFC 9562 (network) order.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct herald_uuid {
    pub bytes: [u8; 16],
}

impl From<Uuid> for herald_uuid {
    fn from(id: Uuid) -> herald_uuid {
        herald_uuid { bytes: *id.as_bytes() }
    }
}

/// `herald_draft.expect`: no condition on the aggregate's version.
pub const HERALD_EXPECT_ANY: u32 = 0;
/// `herald_draft.expect`: the aggregate must not exist yet.
pub const HERALD_EXPECT_NO_STREAM: u32 = 1;
/// `herald_draft.expect`: the aggregate must be at exactly `expected_version`.
pub const HERALD_EXPECT_EXACT: u32 = 2;

/// `herald_event.kind`: a domain event.
pub const HERALD_KIND_DOMAIN: u32 = 1;
/// `herald_event.kind`: an integration event.
pub const HERALD_KIND_INTEGRATION: u32 = 2;
/// `herald_event.kind`: a persistent WebSocket event.
pub const HERALD_KIND_WEBSOCKET: u32 = 3;

/// A domain event to publish. Strings are UTF-8 with explicit lengths (no NUL needed).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct herald_draft {
    /// The event type, e.g. `TaskCreated` (1–256 bytes). Required.
    pub event_type: *const c_char,
    pub event_type_len: usize,
    /// The aggregate (stream) id (1–256 bytes). Required.
    pub aggregate_id: *const c_char,
    pub aggregate_id_len: usize,
    /// The payload: one JSON value in UTF-8. Required.
    pub data: *const u8,
    pub data_len: usize,
    /// A JSON object of string values, or NULL for none.
    pub metadata_json: *const u8,
    pub metadata_json_len: usize,
    /// The event id, or NULL to generate a UUIDv7. Re-publishing a stored id is an idempotent
    /// retry.
    pub id: *const herald_uuid,
    /// The workflow id, or NULL (the event's own id, or the handled event's inside a callback).
    pub correlation_id: *const herald_uuid,
    /// The causing event, or NULL (the handled event's id inside a callback).
    pub causation_id: *const herald_uuid,
    /// One of `HERALD_EXPECT_ANY`, `HERALD_EXPECT_NO_STREAM`, `HERALD_EXPECT_EXACT`.
    pub expect: u32,
    /// The version `HERALD_EXPECT_EXACT` requires (ignored otherwise).
    pub expected_version: u64,
}

impl herald_draft {
    /// The engine's drafts for `drafts` (validated later, by the store). Their payloads are
    /// copied into one buffer and sliced from it: one allocation per call, not one per draft.
    ///
    /// # Safety
    /// Every non-NULL pointer of every draft must be valid for its length (one `herald_uuid`
    /// for ids).
    #[inline]
    pub unsafe fn to_drafts(drafts: &[herald_draft]) -> Result<Vec<EventDraft>, Failure> {
        if let [draft] = drafts {
            // SAFETY: forwarded contract.
            let converted = unsafe { draft.convert(bytes::Bytes::copy_from_slice) };
            return Ok(vec![converted.map_err(|failure| named(failure, 1, 0))?]);
        }
        // First every draft's pointers, lengths and names, in the order a conversion checks
        // them, so the failure reported is the one the first bad draft has; then one buffer.
        let mut total = 0usize;
        for (i, draft) in drafts.iter().enumerate() {
            // SAFETY: forwarded contract.
            let payload = unsafe { draft.check() }.map_err(|failure| named(failure, drafts.len(), i))?;
            total = total.saturating_add(payload.len());
        }
        if total > isize::MAX as usize {
            return Err(Failure::invalid("the drafts' payloads together are larger than any buffer"));
        }
        let mut buffer = Vec::with_capacity(total);
        for draft in drafts {
            // SAFETY: forwarded contract (checked in the first pass).
            buffer.extend_from_slice(unsafe { draft.payload() }?);
        }
        let mut rest = bytes::Bytes::from(buffer);
        let mut owned = Vec::with_capacity(drafts.len());
        for (i, draft) in drafts.iter().enumerate() {
            // The last draft takes what is left; the others share the buffer. (`min`: a caller
            // that changed a length during the call gets wrong bytes, not a panic.)
            let last = i + 1 == drafts.len();
            let take = |payload: &[u8]| {
                if last {
                    std::mem::take(&mut rest)
                } else {
                    rest.split_to(payload.len().min(rest.len()))
                }
            };
            // SAFETY: forwarded contract.
            owned.push(unsafe { draft.convert(take) }.map_err(|failure| named(failure, drafts.len(), i))?);
        }
        Ok(owned)
    }

    /// The checks [`herald_draft::convert`] makes before it allocates; returns the payload.
    ///
    /// # Safety
    /// As [`herald_draft::to_drafts`].
    #[inline]
    unsafe fn check(&self) -> Result<&[u8], Failure> {
        // SAFETY (all three reads): the caller vouches for each pointer and its length.
        unsafe { args::text(self.event_type, self.event_type_len, "event_type") }?;
        unsafe { args::text(self.aggregate_id, self.aggregate_id_len, "aggregate_id") }?;
        unsafe { self.payload() }
    }

    /// # Safety
    /// As [`herald_draft::to_drafts`].
    #[inline]
    unsafe fn payload(&self) -> Result<&[u8], Failure> {
        // SAFETY: the caller vouches for the pointer and its length.
        unsafe { args::bytes(self.data, self.data_len, "data") }
    }

    /// The draft, with `data` made from the payload's bytes.
    ///
    /// # Safety
    /// As [`herald_draft::to_drafts`].
    #[inline]
    unsafe fn convert(&self, data: impl FnOnce(&[u8]) -> bytes::Bytes) -> Result<EventDraft, Failure> {
        // SAFETY (all four reads): the caller vouches for each pointer and its length.
        let event_type = unsafe { args::text(self.event_type, self.event_type_len, "event_type") }?;
        let aggregate_id = unsafe { args::text(self.aggregate_id, self.aggregate_id_len, "aggregate_id") }?;
        let payload = unsafe { self.payload() }?;
        let metadata = unsafe { args::optional_bytes(self.metadata_json, self.metadata_json_len, "metadata_json") }?;
        let mut draft = EventDraft::new(event_type, aggregate_id, data(payload));
        if let Some(metadata) = metadata {
            draft.metadata = serde_json::from_slice::<Metadata>(metadata).map_err(|error| {
                Failure::invalid(format!("`metadata_json` must be a JSON object of strings: {error}"))
            })?;
        }
        // SAFETY: the caller vouches that non-NULL id pointers point to a `herald_uuid`.
        let id = |ptr: *const herald_uuid| unsafe { ptr.as_ref() }.map(|id| Uuid::from_bytes(id.bytes));
        draft.id = id(self.id);
        draft.correlation_id = id(self.correlation_id);
        draft.causation_id = id(self.causation_id);
        draft.expected_version = match self.expect {
            HERALD_EXPECT_ANY => ExpectedVersion::Any,
            HERALD_EXPECT_NO_STREAM => ExpectedVersion::NoStream,
            HERALD_EXPECT_EXACT => ExpectedVersion::Exact(self.expected_version),
            other => return Err(Failure::invalid(format!("`expect` has unknown value {other}"))),
        };
        Ok(draft)
    }
}

/// A failure about draft `index` of `count`, named as the caller passed it (formatted only on
/// failure: naming eagerly was a fifth of a batch's cost).
fn named(mut failure: Failure, count: usize, index: usize) -> Failure {
    let owner = if count > 1 { format!("drafts[{index}]") } else { "draft".to_owned() };
    failure.message = format!("{owner}: {}", failure.message);
    failure
}

/// Where a published event landed.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct herald_appended {
    pub id: herald_uuid,
    /// Its log position (0-based, gap-free over all kinds).
    pub position: u64,
    /// Its version within the aggregate (1-based; 0 for kinds without an aggregate).
    pub aggregate_version: u64,
    /// True when the id was stored already (an idempotent retry): nothing was appended and these
    /// are the original results.
    pub already_appended: bool,
}

impl herald_appended {
    pub fn new(appended: &Appended, already_appended: bool) -> herald_appended {
        herald_appended {
            id: appended.id.into(),
            position: appended.position,
            aggregate_version: appended.aggregate_version,
            already_appended,
        }
    }
}

/// A stored event, borrowed from the handle that filled it (see the module docs).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct herald_event {
    /// One of `HERALD_KIND_DOMAIN`, `HERALD_KIND_INTEGRATION`, `HERALD_KIND_WEBSOCKET`.
    pub kind: u32,
    pub id: herald_uuid,
    /// UTF-8, not NUL-terminated.
    pub event_type: *const c_char,
    pub event_type_len: usize,
    /// UTF-8, not NUL-terminated; empty for kinds without an aggregate.
    pub aggregate_id: *const c_char,
    pub aggregate_id_len: usize,
    pub aggregate_version: u64,
    pub position: u64,
    /// Unix nanoseconds at append.
    pub timestamp_ns: u64,
    pub correlation_id: herald_uuid,
    /// Whether `causation_id` is set.
    pub has_causation_id: bool,
    pub causation_id: herald_uuid,
    /// The metadata as a JSON object of strings.
    pub metadata_json: *const u8,
    pub metadata_json_len: usize,
    /// The JSON payload.
    pub data: *const u8,
    pub data_len: usize,
}

/// An owned event with its metadata rendered, so a [`herald_event`] can borrow from it.
pub struct Held {
    event: Event,
    metadata_json: String,
}

impl Held {
    pub fn new(event: Event) -> Held {
        let metadata_json = serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".to_owned());
        Held { event, metadata_json }
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The view; valid while `self` is neither moved nor dropped.
    pub fn view(&self) -> herald_event {
        let event = &self.event;
        herald_event {
            kind: match event.kind {
                EventKind::Domain => HERALD_KIND_DOMAIN,
                EventKind::Integration => HERALD_KIND_INTEGRATION,
                EventKind::WebSocket => HERALD_KIND_WEBSOCKET,
            },
            id: event.id.into(),
            event_type: event.event_type.as_ptr().cast(),
            event_type_len: event.event_type.len(),
            aggregate_id: event.aggregate_id.as_ptr().cast(),
            aggregate_id_len: event.aggregate_id.len(),
            aggregate_version: event.aggregate_version,
            position: event.position,
            timestamp_ns: event.timestamp_ns,
            correlation_id: event.correlation_id.into(),
            has_causation_id: event.causation_id.is_some(),
            causation_id: event.causation_id.map(herald_uuid::from).unwrap_or_default(),
            metadata_json: self.metadata_json.as_ptr(),
            metadata_json_len: self.metadata_json.len(),
            data: event.data.as_ptr(),
            data_len: event.data.len(),
        }
    }
}
