//! Herald's C ABI: the only crate with `extern "C"`, in the manner of rustls-ffi.
//!
//! - Handles are opaque pointers made by a `herald_<thing>_new` (or a call that loads or reads)
//!   and released by the matching NULL-safe `herald_<thing>_free`.
//! - Every fallible call returns a [`status::herald_status`] with stable numbers; its message is
//!   then available from `herald_last_error()` on the same thread.
//! - Every pointer is NULL-checked; byte buffers and strings come with their lengths (strings
//!   need no NUL); outputs are written only on success.
//! - Every export runs inside a panic boundary: a panic becomes `HERALD_PANIC`, never an unwind
//!   into C.
//! - Nothing is to be released with `free()`: views borrow from their handle, and JSON answers
//!   come in a `herald_buffer`.
//!
//! `include/herald.h` is generated from this crate by cbindgen (`cbindgen.toml`).

pub mod args;
pub mod buffer;
pub mod event;
pub mod read;
pub mod snapshot;
pub mod status;
pub mod subscription;
pub mod system;

use std::ffi::c_char;

/// The major version of the library.
pub const HERALD_VERSION_MAJOR: u32 = 0;
/// The minor version of the library.
pub const HERALD_VERSION_MINOR: u32 = 1;
/// The patch version of the library.
pub const HERALD_VERSION_PATCH: u32 = 0;

/// The library version as a static NUL-terminated string (never NULL, never to be freed).
#[no_mangle]
pub extern "C" fn herald_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_a_static_c_string_matching_the_macros() {
        // SAFETY: herald_version returns a pointer to a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(super::herald_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        let macros =
            format!("{}.{}.{}", super::HERALD_VERSION_MAJOR, super::HERALD_VERSION_MINOR, super::HERALD_VERSION_PATCH);
        assert_eq!(macros, env!("CARGO_PKG_VERSION"));
    }
}
