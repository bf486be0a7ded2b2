//! The ring's slot array: one allocation aligned to [`SLOT_ALIGN`] bytes, each slot an
//! `UnsafeCell<T>` made with `T::default()`.
//!
//! Why not a `Box<[_]>`: its start is aligned only to `T`, so a 64-byte event can straddle two
//! cache lines, and then the producer writing slot `s + 1` and a consumer reading slot `s` fight
//! over the line they share, on every event. Aligned to 128 bytes (two lines, as
//! `CachePadded`), every slot whose size divides 128, or is a multiple of it, sits on lines of
//! its own kind only.
//!
//! Invariants: `pointer` points to `len` initialized slots inside an allocation of `layout`
//! (none for zero-sized layouts), owned by this value and freed with the same layout on drop.

#![allow(unsafe_code)] // allocation with an alignment `Box` cannot ask for

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ops::Deref;
use std::ptr::NonNull;

use super::sync::UnsafeCell;

/// The alignment of the slot array.
pub(super) const SLOT_ALIGN: usize = 128;

pub(super) struct Slots<T> {
    pointer: NonNull<UnsafeCell<T>>,
    len: usize,
    layout: Layout,
}

impl<T: Default> Slots<T> {
    /// `len` slots holding `T::default()`.
    pub(super) fn new(len: usize) -> Slots<T> {
        let layout = Layout::array::<UnsafeCell<T>>(len)
            .and_then(|layout| layout.align_to(SLOT_ALIGN))
            .unwrap_or_else(|_| panic!("a ring of {len} slots does not fit in memory"));
        let pointer = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: the layout has a non-zero size (checked just above).
            let raw = unsafe { alloc(layout) }.cast::<UnsafeCell<T>>();
            NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
        };
        for index in 0..len {
            // SAFETY: `index < len`, so the slot lies inside the allocation (or is zero-sized),
            // properly aligned for `T` (the layout is an array of it); it is not yet initialized,
            // so `write` overwrites nothing that needs dropping.
            unsafe { pointer.add(index).write(UnsafeCell::new(T::default())) };
        }
        Slots { pointer, len, layout }
    }
}

impl<T> Deref for Slots<T> {
    type Target = [UnsafeCell<T>];

    fn deref(&self) -> &[UnsafeCell<T>] {
        // SAFETY: `pointer` points to `len` initialized slots that live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.len) }
    }
}

impl<T> Drop for Slots<T> {
    fn drop(&mut self) {
        // SAFETY: the `len` slots are initialized and dropped exactly once, here; the memory is
        // then freed with the layout it was allocated with (zero-sized layouts never were).
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.pointer.as_ptr(), self.len));
            if self.layout.size() != 0 {
                dealloc(self.pointer.as_ptr().cast(), self.layout);
            }
        }
    }
}

// SAFETY: `Slots` owns its `T`s like a `Box<[UnsafeCell<T>]>` does; sharing it across threads
// is governed by the ring's protocol (see `Shared` in `ring.rs`), exactly as for that box.
unsafe impl<T: Send> Send for Slots<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Slots<T> {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn slots_are_aligned_initialized_and_dropped_once() {
        // The array starts on a 128-byte boundary, holds defaults, and drops each value once.
        let slots = Slots::<[u64; 8]>::new(16);
        assert_eq!(slots.as_ptr() as usize % SLOT_ALIGN, 0);
        assert_eq!(slots.len(), 16);
        // SAFETY: nothing else touches these slots.
        slots[3].with(|value| assert_eq!(unsafe { *value }, [0; 8]));
        let counter = Arc::new(());
        {
            let slots = Slots::<Option<Arc<()>>>::new(4);
            for slot in slots.iter() {
                // SAFETY: nothing else touches these slots.
                slot.with_mut(|value| unsafe { *value = Some(Arc::clone(&counter)) });
            }
            assert_eq!(Arc::strong_count(&counter), 5);
        }
        assert_eq!(Arc::strong_count(&counter), 1);
        assert_eq!(Slots::<()>::new(8).len(), 8, "zero-sized slots need no allocation");
    }
}
