//! Byte buffers Herald hands out (JSON answers), released with `herald_buffer_free`, never with
//! `free()`.

use crate::args;
use crate::status::{guard, herald_status};

/// Bytes owned by Herald.
#[allow(non_camel_case_types)]
pub struct herald_buffer {
    bytes: Vec<u8>,
}

impl herald_buffer {
    pub fn boxed(bytes: Vec<u8>) -> *mut herald_buffer {
        Box::into_raw(Box::new(herald_buffer { bytes }))
    }
}

/// The buffer's bytes (UTF-8 JSON for every buffer Herald makes today), valid until
/// `herald_buffer_free`. Not NUL-terminated.
///
/// # Safety
/// `buffer` a live buffer; `data_out` and `len_out` valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn herald_buffer_data(
    buffer: *const herald_buffer,
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> herald_status {
    guard(|| {
        let data = args::out(data_out, "data_out")?;
        let len = args::out(len_out, "len_out")?;
        // SAFETY: the caller vouches for the handle.
        let buffer = unsafe { args::borrow(buffer, "buffer") }?;
        // SAFETY: both checked non-NULL; the caller vouches they are writable.
        unsafe {
            data.write(buffer.bytes.as_ptr());
            len.write(buffer.bytes.len());
        }
        Ok(())
    })
}

/// Frees a buffer. NULL is a no-op.
///
/// # Safety
/// `buffer` NULL or a live buffer, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn herald_buffer_free(buffer: *mut herald_buffer) {
    guard(|| {
        if !buffer.is_null() {
            // SAFETY: the caller hands back a live buffer from Herald.
            drop(unsafe { Box::from_raw(buffer) });
        }
        Ok(())
    });
}
