//! Herald's C ABI: the only crate with `extern "C"`.
//!
//! It starts with the library version; the handles for systems, events, reads, snapshots and
//! subscriptions, the status enum and the generated `include/herald.h` come with the C ABI issue.
//! Every export is panic-free and never hands out memory the caller must free.

use std::ffi::c_char;

/// The library version as a static NUL-terminated string (never NULL, never to be freed).
#[no_mangle]
pub extern "C" fn herald_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_a_static_c_string() {
        // SAFETY: herald_version returns a pointer to a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(super::herald_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
