//! Readers: iterator handles over the log (all, by type, from a time) or one aggregate's
//! stream. A reader reads ahead in batches of owned events; each `herald_reader_next` hands out
//! a view that stays valid until the next call or `herald_reader_free`.
//!
//! A log reader stops at the end the log had when the reader was made (a consistent snapshot);
//! follow new events with a subscription.

use std::collections::VecDeque;
use std::ffi::c_char;
use std::ops::ControlFlow;
use std::sync::Arc;

use herald_core::event::Event;
use herald_core::store::{EventStore, ReadQuery};

use crate::args;
use crate::event::{herald_event, Held};
use crate::status::{guard, herald_status, Failure};
use crate::system::herald_system;

/// Events a reader fetches per store read.
const BATCH_EVENTS: usize = 256;

/// An iterator over stored events.
#[allow(non_camel_case_types)]
pub struct herald_reader {
    store: Arc<dyn EventStore>,
    source: Source,
    /// Events still to hand out in total.
    remaining: usize,
    buffer: VecDeque<Event>,
    current: Option<Held>,
    exhausted: bool,
}

enum Source {
    /// The log in position order, up to `end` (exclusive).
    Log { query: ReadQuery, end: u64 },
    /// One aggregate's stream from `next_version`.
    Stream { aggregate_id: String, next_version: u64 },
}

impl herald_reader {
    fn new(system: &herald_system, source: Source, limit: u64) -> Result<*mut herald_reader, Failure> {
        let remaining = if limit == 0 { usize::MAX } else { usize::try_from(limit).unwrap_or(usize::MAX) };
        let store = Arc::clone(system.system.store());
        let mut reader =
            herald_reader { store, source, remaining, buffer: VecDeque::new(), current: None, exhausted: false };
        // Read the first batch now, so a bad start (before retention) fails at creation.
        reader.fill()?;
        Ok(Box::into_raw(Box::new(reader)))
    }

    fn fill(&mut self) -> Result<(), Failure> {
        let want = self.remaining.min(BATCH_EVENTS);
        if want == 0 {
            self.exhausted = true;
            return Ok(());
        }
        let buffer = &mut self.buffer;
        let count = match &mut self.source {
            Source::Log { query, end } => {
                query.limit = want;
                let end = *end;
                let mut count = 0;
                let summary = self.store.read(query, &mut |view| {
                    if view.position >= end {
                        return ControlFlow::Break(());
                    }
                    count += 1;
                    buffer.push_back(view.to_event());
                    ControlFlow::Continue(())
                })?;
                query.from_position = summary.next_position.max(query.from_position);
                if count < want {
                    self.exhausted = true;
                }
                count
            }
            Source::Stream { aggregate_id, next_version } => {
                let summary = self.store.read_stream(aggregate_id, *next_version, want, &mut |view| {
                    buffer.push_back(view.to_event());
                    ControlFlow::Continue(())
                })?;
                *next_version += summary.count as u64;
                if summary.count < want {
                    self.exhausted = true;
                }
                summary.count
            }
        };
        self.remaining -= count;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<herald_event>, Failure> {
        if self.buffer.is_empty() && !self.exhausted {
            self.fill()?;
        }
        let Some(event) = self.buffer.pop_front() else {
            self.current = None;
            return Ok(None);
        };
        Ok(Some(self.current.insert(Held::new(event)).view()))
    }
}

fn log_reader(
    system: *const herald_system,
    query: ReadQuery,
    limit: u64,
    reader_out: *mut *mut herald_reader,
) -> Result<(), Failure> {
    let out = args::out(reader_out, "reader_out")?;
    // SAFETY: every caller forwards its own caller's promise that `system` is NULL or live.
    let system = unsafe { args::borrow(system, "system") }?;
    let end = system.system.store().bounds().1;
    let reader = herald_reader::new(system, Source::Log { query, end }, limit)?;
    // SAFETY: checked non-NULL; the caller vouches it is writable.
    unsafe { out.write(reader) };
    Ok(())
}

/// A reader over every event from `from_position`, in position order; at most `limit` events
/// (0: no limit). `HERALD_GONE` if retention removed `from_position`.
///
/// # Safety
/// `system` a live handle; `reader_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_read_all(
    system: *const herald_system,
    from_position: u64,
    limit: u64,
    reader_out: *mut *mut herald_reader,
) -> herald_status {
    guard(|| log_reader(system, ReadQuery { from_position, ..ReadQuery::default() }, limit, reader_out))
}

/// A reader over the domain events of one type from `from_position` (by the type index).
///
/// # Safety
/// `system` a live handle; `event_type` valid for its length; `reader_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_read_by_type(
    system: *const herald_system,
    event_type: *const c_char,
    event_type_len: usize,
    from_position: u64,
    limit: u64,
    reader_out: *mut *mut herald_reader,
) -> herald_status {
    guard(|| {
        // SAFETY: the caller vouches for the text.
        let event_type = unsafe { args::text(event_type, event_type_len, "event_type") }?;
        let query = ReadQuery { from_position, event_type: Some(event_type.to_owned()), ..ReadQuery::default() };
        log_reader(system, query, limit, reader_out)
    })
}

/// A reader over every event appended at or after `timestamp_ns` (unix nanoseconds).
///
/// # Safety
/// `system` a live handle; `reader_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_read_since(
    system: *const herald_system,
    timestamp_ns: u64,
    limit: u64,
    reader_out: *mut *mut herald_reader,
) -> herald_status {
    guard(|| log_reader(system, ReadQuery { since_ns: Some(timestamp_ns), ..ReadQuery::default() }, limit, reader_out))
}

/// A reader over one aggregate's events from `from_version` (1-based; 0 counts as 1) in version
/// order. An unknown aggregate reads as empty.
///
/// # Safety
/// `system` a live handle; `aggregate_id` valid for its length; `reader_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_read_stream(
    system: *const herald_system,
    aggregate_id: *const c_char,
    aggregate_id_len: usize,
    from_version: u64,
    limit: u64,
    reader_out: *mut *mut herald_reader,
) -> herald_status {
    guard(|| {
        let out = args::out(reader_out, "reader_out")?;
        // SAFETY: the caller vouches for the handle and the text.
        let system = unsafe { args::borrow(system, "system") }?;
        let aggregate_id = unsafe { args::text(aggregate_id, aggregate_id_len, "aggregate_id") }?.to_owned();
        let source = Source::Stream { aggregate_id, next_version: from_version.max(1) };
        let reader = herald_reader::new(system, source, limit)?;
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(reader) };
        Ok(())
    })
}

/// The next event: `HERALD_OK` with `*event_out` filled (valid until the next call on this
/// reader or its free), or `HERALD_END` when there are no more.
///
/// # Safety
/// `reader` a live reader used by one thread at a time; `event_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_reader_next(reader: *mut herald_reader, event_out: *mut herald_event) -> herald_status {
    let mut end = false;
    let status = guard(|| {
        let out = args::out(event_out, "event_out")?;
        // SAFETY: the caller vouches for exclusive use of a live reader.
        let reader = unsafe { args::borrow_mut(reader, "reader") }?;
        match reader.next()? {
            // SAFETY: checked non-NULL; the caller vouches it is writable.
            Some(view) => unsafe { out.write(view) },
            None => end = true,
        }
        Ok(())
    });
    if end {
        herald_status::HERALD_END
    } else {
        status
    }
}

/// Frees a reader (and the views it handed out). NULL is a no-op.
///
/// # Safety
/// `reader` NULL or a live reader, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn herald_reader_free(reader: *mut herald_reader) {
    guard(|| {
        if !reader.is_null() {
            // SAFETY: the caller hands back a live reader.
            drop(unsafe { Box::from_raw(reader) });
        }
        Ok(())
    });
}
