//! Subscriptions over the committed log, from the beginning, the end or a position, filtered by
//! an AMQP routing-key pattern (domain events) or taking every kind:
//!
//! - pull: `herald_subscription_next(sub, timeout_ms, &event)` waits for the next event;
//! - callback: Herald starts one thread per subscription and calls the callback on it, in
//!   position order, one event at a time. Events published from inside the callback are caused
//!   by the event it handles (their `causation_id` and `correlation_id` are filled in).
//!
//! Either way a subscription sees every committed event after its start once, in order, with no
//! gap between history and live events (see `herald_core::system::tail`).

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use herald_core::dispatch::with_cause;
use herald_core::system::tail::{Start, Tail, POLL_CAP};

use crate::args;
use crate::event::{herald_event, Held};
use crate::status::{guard, herald_status, Failure};
use crate::system::herald_system;

/// `start`: from the first retained event.
pub const HERALD_START_BEGINNING: u32 = 0;
/// `start`: only events committed after the subscription is made.
pub const HERALD_START_END: u32 = 1;
/// `start`: from `position` (`HERALD_GONE` if retention removed it).
pub const HERALD_START_POSITION: u32 = 2;

/// Called on Herald's subscription thread with `userdata` first and an event valid only during
/// the call.
#[allow(non_camel_case_types)]
pub type herald_event_callback = Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const herald_event)>;

/// A subscription handle (pull or callback).
#[allow(non_camel_case_types)]
pub struct herald_subscription {
    mode: Mode,
}

enum Mode {
    Pull { tail: Box<Tail>, current: Option<Held> },
    Callback { stop: Arc<AtomicBool>, thread: Option<JoinHandle<()>>, thread_id: ThreadId },
}

/// The caller's `userdata`, which it promised may be used from Herald's thread.
struct UserData(*mut c_void);

// SAFETY: `herald_subscription_callback_new` documents that `userdata` is used from Herald's
// subscription thread; the caller promises that is sound for what it points to.
unsafe impl Send for UserData {}

/// Parses the shared arguments and opens the tail.
///
/// # Safety
/// `system` NULL or live; `pattern` NULL or valid for `pattern_len` bytes.
unsafe fn open_tail(
    system: *const herald_system,
    pattern: *const c_char,
    pattern_len: usize,
    start: u32,
    position: u64,
) -> Result<Tail, Failure> {
    // SAFETY: forwarded contract.
    let system = unsafe { args::borrow(system, "system") }?;
    let pattern = unsafe { args::optional_text(pattern, pattern_len, "pattern") }?;
    let start = match start {
        HERALD_START_BEGINNING => Start::Beginning,
        HERALD_START_END => Start::End,
        HERALD_START_POSITION => Start::Position(position),
        other => return Err(Failure::invalid(format!("start: unknown value {other}"))),
    };
    Ok(system.system.tail(pattern, start)?)
}

/// A pull subscription. `pattern` (NULL: every event of every kind) is an AMQP topic pattern
/// matched against domain events' routing keys (`TaskCreated` → `task.created`; `*` one
/// word, `#` any number). `start` is a `HERALD_START_*`; `position` is used with
/// `HERALD_START_POSITION`.
///
/// # Safety
/// `system` a live handle; `pattern` NULL or valid for `pattern_len` bytes;
/// `subscription_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_subscription_new(
    system: *const herald_system,
    pattern: *const c_char,
    pattern_len: usize,
    start: u32,
    position: u64,
    subscription_out: *mut *mut herald_subscription,
) -> herald_status {
    guard(|| {
        let out = args::out(subscription_out, "subscription_out")?;
        // SAFETY: forwarded contract.
        let tail = unsafe { open_tail(system, pattern, pattern_len, start, position) }?;
        let subscription = herald_subscription { mode: Mode::Pull { tail: Box::new(tail), current: None } };
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(Box::into_raw(Box::new(subscription))) };
        Ok(())
    })
}

/// The next event of a pull subscription, waiting up to `timeout_ms` (0: do not wait):
/// `HERALD_OK` with `*event_out` filled (valid until the next call or the free), or
/// `HERALD_TIMEOUT`. `HERALD_CONFLICT` on a callback subscription.
///
/// # Safety
/// `subscription` a live handle used by one thread at a time; `event_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_subscription_next(
    subscription: *mut herald_subscription,
    timeout_ms: u32,
    event_out: *mut herald_event,
) -> herald_status {
    let mut timed_out = false;
    let status = guard(|| {
        let out = args::out(event_out, "event_out")?;
        // SAFETY: the caller vouches for exclusive use of a live handle.
        let subscription = unsafe { args::borrow_mut(subscription, "subscription") }?;
        let Mode::Pull { tail, current } = &mut subscription.mode else {
            return Err(Failure::new(herald_status::HERALD_CONFLICT, "a callback subscription cannot be pulled"));
        };
        match tail.next(Duration::from_millis(u64::from(timeout_ms)))? {
            // SAFETY: checked non-NULL; the caller vouches it is writable.
            Some(event) => unsafe { out.write(current.insert(Held::new(event)).view()) },
            None => {
                *current = None;
                timed_out = true;
            }
        }
        Ok(())
    });
    if timed_out {
        herald_status::HERALD_TIMEOUT
    } else {
        status
    }
}

/// A callback subscription (arguments as `herald_subscription_new`): Herald calls
/// `callback(userdata, event)` on its own thread for each event, in order; the event is valid
/// only during the call. The callback must not unwind (C++ exceptions) into Herald.
/// `herald_subscription_free` stops the thread (waiting for a running callback to return);
/// called from inside the callback, it stops the thread after the callback returns. If the
/// store fails, the thread stops.
///
/// # Safety
/// `system` a live handle; `pattern` NULL or valid for `pattern_len` bytes; `callback` safe to
/// call from another thread with `userdata` until the subscription is freed;
/// `subscription_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn herald_subscription_callback_new(
    system: *const herald_system,
    pattern: *const c_char,
    pattern_len: usize,
    start: u32,
    position: u64,
    callback: herald_event_callback,
    userdata: *mut c_void,
    subscription_out: *mut *mut herald_subscription,
) -> herald_status {
    guard(|| {
        let out = args::out(subscription_out, "subscription_out")?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        // SAFETY: forwarded contract.
        let mut tail = unsafe { open_tail(system, pattern, pattern_len, start, position) }?;
        let stop = Arc::new(AtomicBool::new(false));
        let userdata = UserData(userdata);
        let thread = std::thread::Builder::new()
            .name("herald-subscription".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    let userdata = userdata;
                    while !stop.load(Ordering::Acquire) {
                        let turn = catch_unwind(AssertUnwindSafe(|| -> Result<(), ()> {
                            let Some(event) = tail.next(POLL_CAP).map_err(|_| ())? else { return Ok(()) };
                            let held = Held::new(event);
                            let view = held.view();
                            let (id, correlation) = (held.event().id, held.event().correlation_id);
                            // SAFETY: the caller promised the callback may be called from this
                            // thread with its userdata; `view` lives until the call returns.
                            with_cause(id, correlation, || unsafe { callback(userdata.0, &view) });
                            Ok(())
                        }));
                        if !matches!(turn, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
            })
            .map_err(|error| Failure::new(herald_status::HERALD_INTERNAL, format!("cannot start a thread: {error}")))?;
        let thread_id = thread.thread().id();
        let subscription = herald_subscription { mode: Mode::Callback { stop, thread: Some(thread), thread_id } };
        // SAFETY: checked non-NULL; the caller vouches it is writable.
        unsafe { out.write(Box::into_raw(Box::new(subscription))) };
        Ok(())
    })
}

/// Stops and frees a subscription (see `herald_subscription_callback_new` for callbacks). NULL
/// is a no-op.
///
/// # Safety
/// `subscription` NULL or a live handle, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn herald_subscription_free(subscription: *mut herald_subscription) {
    guard(|| {
        if subscription.is_null() {
            return Ok(());
        }
        // SAFETY: the caller hands back a live handle.
        let subscription = unsafe { Box::from_raw(subscription) };
        if let Mode::Callback { stop, mut thread, thread_id } = subscription.mode {
            stop.store(true, Ordering::Release);
            // From inside the callback the thread is this one: it ends when the callback returns.
            if std::thread::current().id() != thread_id {
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
        Ok(())
    });
}
