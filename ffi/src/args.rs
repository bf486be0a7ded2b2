//! Reading C arguments: pointer-and-length buffers, UTF-8 text, handles and out-pointers, each
//! checked before use, with failures that name the parameter.
//!
//! Every function here is `unsafe` with one contract, repeated in the header for each export: a
//! non-NULL pointer must be valid for its stated length (or for one `T`) for the duration of the
//! call. What can be checked (NULL, lengths beyond `isize::MAX`, UTF-8) is checked.

use std::ffi::c_char;

use crate::status::{herald_status, Failure};

/// The bytes at `ptr`; NULL is an error even with a zero length.
///
/// # Safety
/// `ptr` must be NULL or valid for reads of `len` bytes during the call.
#[inline]
pub unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() || len > isize::MAX as usize {
        return Err(bad_buffer(ptr.is_null(), len, name));
    }
    // SAFETY: non-NULL, the length fits `isize`, and the caller vouches for `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Why [`bytes`] refused a buffer (out of line: the checks are on every call, failures rare).
#[cold]
#[inline(never)]
fn bad_buffer(null: bool, len: usize, name: &str) -> Failure {
    if null {
        Failure::null(name)
    } else {
        Failure::invalid(format!("`{name}_len` of {len} bytes is larger than any buffer"))
    }
}

/// The bytes at `ptr`, or `None` when it is NULL.
///
/// # Safety
/// As [`bytes`].
#[inline]
pub unsafe fn optional_bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<Option<&'a [u8]>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract is the one `bytes` needs.
    unsafe { bytes(ptr, len, name) }.map(Some)
}

/// UTF-8 text at `ptr` (not NUL-terminated; `len` bytes).
///
/// # Safety
/// As [`bytes`].
#[inline]
pub unsafe fn text<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<&'a str, Failure> {
    // SAFETY: the caller's contract is the one `bytes` needs.
    let raw = unsafe { bytes(ptr.cast(), len, name) }?;
    // Names are mostly ASCII: checked word by word, inline (the general check is a call).
    if raw.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(raw) });
    }
    not_ascii(raw, name)
}

/// [`text`] for bytes that are not all ASCII (out of line, as above).
#[cold]
#[inline(never)]
fn not_ascii<'a>(raw: &'a [u8], name: &str) -> Result<&'a str, Failure> {
    std::str::from_utf8(raw)
        .map_err(|error| Failure::new(herald_status::HERALD_INVALID_UTF8, format!("`{name}` is not UTF-8: {error}")))
}

/// UTF-8 text at `ptr`, or `None` when it is NULL.
///
/// # Safety
/// As [`bytes`].
pub unsafe fn optional_text<'a>(ptr: *const c_char, len: usize, name: &str) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract is the one `text` needs.
    unsafe { text(ptr, len, name) }.map(Some)
}

/// A shared reference to the handle or struct at `ptr`.
///
/// # Safety
/// `ptr` must be NULL or point to a live `T` for the duration of the call.
#[inline]
pub unsafe fn borrow<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller vouches that a non-NULL `ptr` points to a live `T`.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// An exclusive reference to the handle at `ptr`.
///
/// # Safety
/// `ptr` must be NULL or point to a live `T` that no other thread uses during the call.
pub unsafe fn borrow_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller vouches that a non-NULL `ptr` points to a live `T` used by this call only.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::null(name))
}

/// An out-pointer, checked before the call does any work so outputs are written only on
/// success.
pub fn out<T>(ptr: *mut T, name: &str) -> Result<Out<T>, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    Ok(Out(ptr))
}

/// A checked, non-NULL out-pointer.
pub struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Writes the output (without reading or dropping what was there: C memory may be
    /// uninitialized).
    ///
    /// # Safety
    /// The pointer must be valid for a write of one `T`.
    pub unsafe fn write(self, value: T) {
        // SAFETY: non-NULL (checked in `out`); the caller vouches it is writable.
        unsafe { self.0.write(value) }
    }
}
