//! The status codes, the thread-local last error message and the panic boundary every export
//! runs inside.
//!
//! Invariants: every export returns a [`herald_status`] (or a documented default for the few
//! that cannot fail); a failed call stores its message for [`herald_last_error`] on the calling
//! thread before it returns; a panic never unwinds into C: it becomes [`herald_status::HERALD_PANIC`].

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use herald_core::dispatch::BusError;
use herald_core::integration::IntegrationError;
use herald_core::store::StoreError;
use herald_core::system::SystemError;

/// The result of every fallible call. The numbers are stable: new codes are only added.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum herald_status {
    /// Success; outputs were written.
    HERALD_OK = 0,
    /// A required pointer argument was NULL.
    HERALD_NULL_PARAMETER = 1,
    /// A string argument was not UTF-8.
    HERALD_INVALID_UTF8 = 2,
    /// An argument broke a rule (the message names the field and the limit).
    HERALD_INVALID_ARGUMENT = 3,
    /// The configuration (preset name or TOML) is invalid; the message names the key.
    HERALD_INVALID_CONFIG = 4,
    /// `expected_version` did not hold; nothing was stored.
    HERALD_VERSION_CONFLICT = 5,
    /// Some event ids are stored already with other contents; nothing was stored.
    HERALD_DUPLICATE_ID = 6,
    /// No such stream, snapshot or webhook endpoint.
    HERALD_NOT_FOUND = 7,
    /// The position was removed by retention.
    HERALD_GONE = 8,
    /// The dispatch ring stayed full; nothing was stored. Retry later.
    HERALD_OVERLOADED = 9,
    /// The system is shutting down or closed; nothing was stored.
    HERALD_SHUTTING_DOWN = 10,
    /// The batch does not fit in one store segment.
    HERALD_TOO_LARGE = 11,
    /// The store or a journal failed (I/O, corruption, read-only after an fsync error, locked).
    HERALD_STORAGE = 12,
    /// No event arrived within the timeout (subscriptions); not an error.
    HERALD_TIMEOUT = 13,
    /// The reader has no more events; not an error.
    HERALD_END = 14,
    /// The operation does not apply in the current state (e.g. pulling from a callback
    /// subscription, retrying a delivery that is not failed).
    HERALD_CONFLICT = 15,
    /// Herald panicked inside the call; the message says where. The handle stays usable.
    HERALD_PANIC = 16,
    /// Anything else (a thread could not be started, …).
    HERALD_INTERNAL = 17,
}

/// A failure: its status and its message.
#[derive(Debug)]
pub struct Failure {
    pub status: herald_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: herald_status, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }

    pub fn null(parameter: &str) -> Failure {
        Failure::new(herald_status::HERALD_NULL_PARAMETER, format!("`{parameter}` must not be NULL"))
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(herald_status::HERALD_INVALID_ARGUMENT, message)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        use herald_status::*;
        let status = match &error {
            StoreError::Invalid(_) => HERALD_INVALID_ARGUMENT,
            StoreError::TooLarge { .. } => HERALD_TOO_LARGE,
            StoreError::VersionConflict { .. } => HERALD_VERSION_CONFLICT,
            StoreError::DuplicateId { .. } => HERALD_DUPLICATE_ID,
            StoreError::StreamNotFound { .. } => HERALD_NOT_FOUND,
            StoreError::BeforeRetention { .. } => HERALD_GONE,
            StoreError::Overloaded(_) => HERALD_OVERLOADED,
            StoreError::Config(_) => HERALD_INVALID_CONFIG,
            _ => HERALD_STORAGE,
        };
        Failure::new(status, error.to_string())
    }
}

impl From<BusError> for Failure {
    fn from(error: BusError) -> Failure {
        match error {
            BusError::Store(error) => error.into(),
            BusError::Overloaded(_) => Failure::new(herald_status::HERALD_OVERLOADED, error.to_string()),
            BusError::ShuttingDown(_) => Failure::new(herald_status::HERALD_SHUTTING_DOWN, error.to_string()),
            other => Failure::new(herald_status::HERALD_INTERNAL, other.to_string()),
        }
    }
}

impl From<IntegrationError> for Failure {
    fn from(error: IntegrationError) -> Failure {
        let status = match &error {
            IntegrationError::Invalid(_) => herald_status::HERALD_INVALID_ARGUMENT,
            IntegrationError::NotFound(_) => herald_status::HERALD_NOT_FOUND,
            IntegrationError::Conflict(_) => herald_status::HERALD_CONFLICT,
            IntegrationError::Journal(_) | IntegrationError::Route(_) => herald_status::HERALD_STORAGE,
            IntegrationError::Thread(_) => herald_status::HERALD_INTERNAL,
        };
        Failure::new(status, error.to_string())
    }
}

impl From<SystemError> for Failure {
    fn from(error: SystemError) -> Failure {
        match error {
            SystemError::Config(error) => Failure::new(herald_status::HERALD_INVALID_CONFIG, error.to_string()),
            SystemError::Store(error) => error.into(),
            SystemError::Bus(error) => error.into(),
            SystemError::Integration(error) => error.into(),
        }
    }
}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn remember(message: &str) {
    // A message with an interior NUL keeps the part before it.
    let bytes = message.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = CString::new(&bytes[..end]).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = text);
}

/// Runs an export's body inside the panic boundary: its failure (or panic) becomes a status
/// with the message remembered for [`herald_last_error`].
pub fn guard(body: impl FnOnce() -> Result<(), Failure>) -> herald_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => herald_status::HERALD_OK,
        Ok(Err(failure)) => {
            remember(&failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            remember(&format!("herald panicked: {what}"));
            herald_status::HERALD_PANIC
        }
    }
}

/// The message of the last failed call on this thread, NUL-terminated (empty when none failed
/// yet). Never NULL; valid until the next failing call on this thread; never to be freed.
#[no_mangle]
pub extern "C" fn herald_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|last| last.borrow().as_ptr())).unwrap_or(c"herald: error unavailable".as_ptr())
}

/// Every status with its name, in number order.
const NAMES: [(herald_status, &std::ffi::CStr); 18] = [
    (herald_status::HERALD_OK, c"HERALD_OK"),
    (herald_status::HERALD_NULL_PARAMETER, c"HERALD_NULL_PARAMETER"),
    (herald_status::HERALD_INVALID_UTF8, c"HERALD_INVALID_UTF8"),
    (herald_status::HERALD_INVALID_ARGUMENT, c"HERALD_INVALID_ARGUMENT"),
    (herald_status::HERALD_INVALID_CONFIG, c"HERALD_INVALID_CONFIG"),
    (herald_status::HERALD_VERSION_CONFLICT, c"HERALD_VERSION_CONFLICT"),
    (herald_status::HERALD_DUPLICATE_ID, c"HERALD_DUPLICATE_ID"),
    (herald_status::HERALD_NOT_FOUND, c"HERALD_NOT_FOUND"),
    (herald_status::HERALD_GONE, c"HERALD_GONE"),
    (herald_status::HERALD_OVERLOADED, c"HERALD_OVERLOADED"),
    (herald_status::HERALD_SHUTTING_DOWN, c"HERALD_SHUTTING_DOWN"),
    (herald_status::HERALD_TOO_LARGE, c"HERALD_TOO_LARGE"),
    (herald_status::HERALD_STORAGE, c"HERALD_STORAGE"),
    (herald_status::HERALD_TIMEOUT, c"HERALD_TIMEOUT"),
    (herald_status::HERALD_END, c"HERALD_END"),
    (herald_status::HERALD_CONFLICT, c"HERALD_CONFLICT"),
    (herald_status::HERALD_PANIC, c"HERALD_PANIC"),
    (herald_status::HERALD_INTERNAL, c"HERALD_INTERNAL"),
];

/// The stable name of a status (`"HERALD_OK"`, …), or `"HERALD_UNKNOWN"`. Static; never NULL.
#[no_mangle]
pub extern "C" fn herald_status_name(status: u32) -> *const c_char {
    let name = NAMES.iter().find(|(known, _)| *known as u32 == status).map_or(c"HERALD_UNKNOWN", |(_, name)| name);
    name.as_ptr()
}
