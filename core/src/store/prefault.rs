//! Memory the append path is about to write, queued for the log's prefault thread.
//!
//! The first write to a page costs a page fault: 2–3 µs on the benchmark machine, most of it
//! the kernel zeroing the page. The prefault thread faults the segments' maps in ahead of the
//! writer (`Segment::populate`). The indexes' big vectors (the generated ids, the type lists,
//! each segment's offsets) double when full, and the writer used to fault each fresh half in
//! itself, page by page: 11 k faults per 800 k appends, about 7 % of an append. Now the growth
//! queues the fresh capacity here, and the prefault thread populates it.
//!
//! Invariant: a queued region is only ever handed to `MADV_POPULATE_WRITE`, which faults the
//! pages in as a write would, without reading or changing a byte of them. A region freed or
//! reused before the thread gets to it is therefore safe to populate: the call is advice about
//! addresses, never an access through them. Its side effects there are those of a write fault
//! (a private copy of a copy-on-write page, a page of a shared file mapping marked dirty, a
//! `MADV_FREE` cancelled), never a changed byte. The queue holds at most [`MAX_QUEUED`]
//! regions (the oldest go first), so it stays small even if nothing takes from it.

/// Capacity smaller than this is left to fault in on its own (a few dozen pages).
const MIN_BYTES: usize = 256 * 1024;
/// The most regions waiting; more means the thread is not keeping up, and the oldest go.
const MAX_QUEUED: usize = 64;

/// Addresses `[start, start + len)`: never dereferenced, only populated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    start: usize,
    len: usize,
}

impl Region {
    /// The first `bytes` of the region, and the rest if any.
    pub fn split(self, bytes: usize) -> (Region, Option<Region>) {
        if self.len <= bytes {
            return (self, None);
        }
        let rest = Region { start: self.start + bytes, len: self.len - bytes };
        (Region { start: self.start, len: bytes }, Some(rest))
    }
}

/// The regions grown since the prefault thread last looked.
#[derive(Default)]
pub(crate) struct PrefaultQueue {
    regions: Vec<Region>,
}

impl PrefaultQueue {
    /// Pushes `value` onto `vec`, first queuing the unused capacity when the push grows it.
    #[inline]
    pub fn push<T>(&mut self, vec: &mut Vec<T>, value: T) {
        if vec.len() == vec.capacity() {
            self.grow(vec);
        }
        vec.push(value);
    }

    #[cold]
    fn grow<T>(&mut self, vec: &mut Vec<T>) {
        // The amortized doubling a push would do.
        vec.reserve(1);
        let size = std::mem::size_of::<T>();
        let len = (vec.capacity() - vec.len()) * size;
        if len < MIN_BYTES {
            return;
        }
        if self.regions.len() == MAX_QUEUED {
            self.regions.remove(0);
        }
        let start = vec.as_ptr() as usize + vec.len() * size;
        self.regions.push(Region { start, len });
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The queued regions, oldest first; the queue is left empty.
    pub fn take(&mut self) -> Vec<Region> {
        std::mem::take(&mut self.regions)
    }
}

/// Faults `region`'s whole pages in for writing. False where the kernel cannot (before Linux
/// 5.14, or not Linux); then the writer faults them in itself, as it would anyway.
#[allow(unsafe_code)] // one madvise call, justified below
pub(crate) fn populate(region: Region) -> bool {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = region.start.next_multiple_of(PAGE);
        let end = region.start.saturating_add(region.len) / PAGE * PAGE;
        if end <= start {
            return true;
        }
        // SAFETY: MADV_POPULATE_WRITE faults pages in without reading or writing their bytes
        // (see the module invariant), so no access happens through these addresses whatever
        // is mapped there now; an unmapped range only makes the call fail.
        let result = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) };
        result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = region;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growth_queues_the_fresh_capacity_and_small_ones_are_skipped() {
        let mut queue = PrefaultQueue::default();
        let mut small: Vec<u64> = Vec::new();
        for n in 0..1000 {
            queue.push(&mut small, n);
        }
        assert!(queue.is_empty(), "8 KB of capacity is not worth a region");

        let mut big: Vec<u64> = Vec::with_capacity(MIN_BYTES / 8);
        big.extend(0..(MIN_BYTES / 8) as u64);
        queue.push(&mut big, 7);
        let regions = queue.take();
        assert_eq!(regions.len(), 1);
        let Region { start, len } = regions[0];
        // The region is exactly the unused capacity after the pushed value's slot.
        assert_eq!(start, big.as_ptr() as usize + (big.len() - 1) * 8);
        assert_eq!(len, (big.capacity() - big.len() + 1) * 8);
        assert!(queue.is_empty());
        assert!(populate(regions[0]));
        // Populating changed nothing the vector holds.
        assert!(big[..big.len() - 1].iter().copied().eq(0..(MIN_BYTES / 8) as u64));
        assert_eq!(big.last(), Some(&7));
    }

    #[test]
    fn a_region_splits_into_its_first_bytes_and_the_rest() {
        let region = Region { start: 4096, len: 10_000 };
        assert_eq!(region.split(20_000), (region, None));
        let (first, rest) = region.split(4096);
        assert_eq!(first, Region { start: 4096, len: 4096 });
        assert_eq!(rest, Some(Region { start: 8192, len: 5904 }));
    }

    #[test]
    fn the_queue_keeps_the_newest_regions_only() {
        let mut queue = PrefaultQueue::default();
        let mut vectors: Vec<Vec<u8>> = (0..MAX_QUEUED + 5).map(|_| vec![0u8; MIN_BYTES]).collect();
        for vector in &mut vectors {
            queue.push(vector, 1);
        }
        let regions = queue.take();
        assert_eq!(regions.len(), MAX_QUEUED);
        assert_eq!(regions[MAX_QUEUED - 1].start, vectors[MAX_QUEUED + 4].as_ptr() as usize + MIN_BYTES);
    }

    #[test]
    fn populating_a_freed_and_reused_region_changes_nothing() {
        let mut queue = PrefaultQueue::default();
        let mut vector = vec![0u8; MIN_BYTES];
        queue.push(&mut vector, 1);
        drop(vector);
        // The allocator may hand the same addresses out again: their new owner's bytes stay.
        let reused = vec![5u8; MIN_BYTES * 2];
        for region in queue.take() {
            populate(region);
        }
        assert!(reused.iter().all(|&byte| byte == 5));
    }
}
