//! One segment: a fixed-capacity, memory-mapped region holding a header and then frames.
//!
//! Owns the only `unsafe` of the store: the mapping is shared between one writer (the log,
//! under its append lock) and any number of readers. The invariant that makes this sound:
//! bytes below `written` are never written again (until retention drops the whole segment),
//! readers only form slices below the log's visible watermark (which is at most `written`),
//! and the writer only forms a mutable slice at or above `written`.
//!
//! A segment is either a file (`segments/<first position, 20 digits>.seg`, preallocated to its
//! capacity, mapped shared) or anonymous memory for the in-memory store.
//!
//! Header (64 bytes, little-endian): magic `HERALDSG`, format version u32, header length u32,
//! first position u64, capacity u64, created unix ns u64, 20 reserved zero bytes, crc32c u32 of
//! bytes 0..60.

#![allow(unsafe_code)] // the store's mapping; see the module invariant above

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memmap2::{MmapMut, MmapRaw};
use parking_lot::RwLock;

use super::record::{read_u32, read_u64};
use super::StoreError;
use crate::event::time::now_ns;

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"HERALDSG";
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_BYTES: usize = 64;

enum Mapping {
    /// The map, and the file for `pwrite` and `fdatasync`.
    File(MmapRaw, File),
    // Held only to keep the anonymous mapping alive; accessed through `Segment::base`.
    Anonymous(#[allow(dead_code)] MmapMut),
}

pub(crate) struct Segment {
    pub first_position: u64,
    pub path: Option<PathBuf>,
    mapping: Mapping,
    base: *mut u8,
    capacity: usize,
    /// The file's length when it was opened (the capacity for a new segment): a crash or a cut
    /// can leave the last file shorter, and it is grown back before mapping, so recovery must not
    /// read the grown zeros as data.
    pub length_at_open: usize,
    /// End of the appended bytes; only the log's writer (holding the append lock) stores it.
    pub written: AtomicUsize,
    /// End of the bytes known to be on disk.
    pub synced: AtomicUsize,
    /// Offset of each record, by `position - first_position`; pushed under the append lock.
    pub offsets: RwLock<Vec<u32>>,
    /// Timestamp of the last record (0 when empty), for retention by age.
    pub last_timestamp_ns: AtomicU64,
    /// End of the pages already faulted in ahead of the writer (see [`Segment::populate`]).
    pub populated: AtomicUsize,
    /// End of the records whose checksum this process has checked or computed (the writer's
    /// own records, and contiguous runs readers verified): reads below it skip the CRC.
    pub verified: AtomicUsize,
}

// SAFETY: `base` points into `mapping`, which the segment owns and which lives as long as it.
// Concurrent access follows the module invariant: the one writer works above `written`, readers
// below the visible watermark, so no byte is read and written at the same time.
unsafe impl Send for Segment {}
// SAFETY: as for `Send`; all shared mutable state is atomics or behind locks.
unsafe impl Sync for Segment {}

pub(crate) fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// Parses `<20 digits>.seg`, the only name a segment file may have.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

fn header(first_position: u64, capacity: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
    header[16..24].copy_from_slice(&first_position.to_le_bytes());
    header[24..32].copy_from_slice(&capacity.to_le_bytes());
    header[32..40].copy_from_slice(&now_ns().to_le_bytes());
    let crc = crc32c::crc32c(&header[0..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    header
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Fsyncs a directory so that a create, rename or unlink inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(format!("fsync directory {}", dir.display())))
}

/// How recovery opens a segment file ([`Segment::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// A sealed segment: never written again.
    Sealed,
    /// A segment that may take appends without being the last file: the one before an empty
    /// last segment, which recovery may find torn (see `log::recover`).
    Writable,
    /// The last segment: writable, and an all-zero header is its creation, never synced.
    Last,
}

impl Segment {
    /// Writes a file of `capacity` zero bytes and fsyncs it: a future segment whose blocks are
    /// all allocated and initialized, so a later fsync of appended data writes data only, with no
    /// file-system metadata (block allocation, extent conversion) to journal. This is what makes
    /// an fsync cheap enough for group commit; PostgreSQL zero-fills its WAL files for the same
    /// reason.
    ///
    /// The zeros go in one page per `write`: the page cache sizes a file's folios after the
    /// writes that create them, and the appends that land in a 1 MiB folio each walk its 256
    /// block buffers (a 392-byte `pwrite` took 2.4–6.5 µs there against 1.2–2.8 µs in a page).
    ///
    /// `paced` (the background spare) writes 1 MiB at a time, each fsynced, with a pause after
    /// it, so the preparation never queues a large flush in front of appenders' fsyncs; it gives
    /// up (an error) as soon as `paced` returns false.
    pub fn prepare_file(path: &Path, capacity: usize, paced: Option<&dyn Fn() -> bool>) -> Result<(), StoreError> {
        const PACE_BYTES: usize = 1 << 20;
        let context = format!("prepare segment file {}", path.display());
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).open(path).map_err(io_error(context.clone()))?;
        let zeros = vec![0u8; page_size().min(capacity)];
        let mut left = capacity;
        while left > 0 {
            let step = left.min(PACE_BYTES);
            for at in (0..step).step_by(zeros.len()) {
                // The context is copied only on failure: this runs once per page.
                let page = &zeros[..zeros.len().min(step - at)];
                file.write_all(page).map_err(|source| io_error(context.as_str())(source))?;
            }
            left -= step;
            if let Some(keep_going) = paced {
                file.sync_data().map_err(io_error(context.clone()))?;
                std::thread::sleep(std::time::Duration::from_millis(10));
                if !keep_going() {
                    return Err(StoreError::Io { context, source: std::io::Error::other("stopped") });
                }
            }
        }
        file.sync_all().map_err(io_error(context))
    }

    /// Makes a segment file from a prepared one (`spare`, see [`Segment::prepare_file`]) or,
    /// without one, from a file zero-filled now: write the header, rename into place. Nothing is
    /// fsynced here (a roll must not wait for the disk under the append lock):
    /// [`Segment::sync_creation`] makes the header and the name durable, and must run before
    /// anything in the segment is synced or another segment is created. Until then a crash
    /// leaves no segment file (the temporary one is removed at open) or this one with its
    /// header all zeros, which [`Segment::open`] takes for the last segment's unsynced creation.
    ///
    /// Without a spare, `zero_fill` chooses between a zero-filled file (for `Always` durability)
    /// and an allocated one ([`preallocate`]: instant, but each fsync then also journals the
    /// conversion of the extents it wrote).
    pub fn create(
        dir: &Path,
        first_position: u64,
        capacity: usize,
        spare: Option<&Path>,
        zero_fill: bool,
    ) -> Result<Segment, StoreError> {
        let path = dir.join(segment_file_name(first_position));
        let context = format!("create segment {}", path.display());
        let temporary = dir.join(format!("{}.tmp", segment_file_name(first_position)));
        let source = match spare {
            Some(spare) => spare.to_path_buf(),
            None if zero_fill => {
                Self::prepare_file(&temporary, capacity, None)?;
                temporary
            }
            None => {
                let file = File::create(&temporary).map_err(io_error(context.clone()))?;
                preallocate(&file, capacity as u64).map_err(io_error(context.clone()))?;
                temporary
            }
        };
        let file = OpenOptions::new().read(true).write(true).open(&source).map_err(io_error(context.clone()))?;
        let length = file.metadata().map_err(io_error(context.clone()))?.len();
        if length != capacity as u64 {
            return Err(StoreError::Io {
                context,
                source: std::io::Error::other(format!("prepared file is {length} bytes, expected {capacity}")),
            });
        }
        std::os::unix::fs::FileExt::write_all_at(&file, &header(first_position, capacity as u64), 0)
            .map_err(io_error(context.clone()))?;
        std::fs::rename(&source, &path).map_err(io_error(context))?;
        Self::map_file(file, path, first_position, SEGMENT_HEADER_BYTES)
    }

    /// Makes the header and the name of a segment [`Segment::create`] made durable: fsyncs the
    /// file's data, then its directory.
    pub fn sync_creation(&self) -> Result<(), StoreError> {
        let (Mapping::File(_, file), Some(path)) = (&self.mapping, &self.path) else { return Ok(()) };
        file.sync_data().map_err(io_error(format!("fsync segment {}", path.display())))?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    /// Whether the segment file at `path` holds no record: its header is ours (or all zeros, a
    /// creation never synced) and the first record's length is zero or missing. Reads 68 bytes.
    pub fn holds_no_record(path: &Path) -> Result<bool, StoreError> {
        let context = format!("read segment {}", path.display());
        let file = File::open(path).map_err(io_error(context.clone()))?;
        let mut start = [0u8; SEGMENT_HEADER_BYTES + 4];
        let length = file.metadata().map_err(io_error(context.clone()))?.len();
        let read = usize::try_from(length).unwrap_or(usize::MAX).min(start.len());
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut start[..read], 0).map_err(io_error(context))?;
        let header = &start[..SEGMENT_HEADER_BYTES];
        let ours = &header[0..8] == SEGMENT_MAGIC || header.iter().all(|&byte| byte == 0);
        Ok(ours && read_u32(&start, SEGMENT_HEADER_BYTES) == 0)
    }

    /// Opens an existing segment file, checking its header. A segment that may take appends
    /// (`Reopen::Writable` or `Last`) is grown back to its capacity if a crash or a cut left the
    /// file shorter. `length` is the file's length as first found (a failed recovery attempt may
    /// already have grown it).
    pub fn open(path: &Path, first_position: u64, reopen: Reopen, length: u64) -> Result<Segment, StoreError> {
        let writable = reopen != Reopen::Sealed;
        let context = format!("open segment {}", path.display());
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_error(context.clone()))?;
        let current_length = file.metadata().map_err(io_error(context.clone()))?.len();
        let corrupt =
            |reason: String| StoreError::Corruption { file: path.to_path_buf(), offset: 0, position: None, reason };
        let mut raw = [0u8; SEGMENT_HEADER_BYTES];
        if length < SEGMENT_HEADER_BYTES as u64 {
            return Err(corrupt(format!("file is {length} bytes, shorter than the segment header")));
        }
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut raw, 0).map_err(io_error(context.clone()))?;
        if reopen == Reopen::Last && raw.iter().all(|&byte| byte == 0) {
            // The last segment's creation was never synced (see `Segment::create`): its name
            // reached the disk, its header did not. The name says where it starts; records that
            // did reach the disk are found by the scan, each checked against its checksum.
            eprintln!(
                "herald: {}: the header was zeros (the segment's creation never reached the disk); written back",
                path.display()
            );
            raw = header(first_position, current_length);
            std::os::unix::fs::FileExt::write_all_at(&file, &raw, 0).map_err(io_error(context.clone()))?;
            file.sync_data().map_err(io_error(context.clone()))?;
        }
        if &raw[0..8] != SEGMENT_MAGIC {
            return Err(corrupt("not a Herald segment (bad magic)".into()));
        }
        if crc32c::crc32c(&raw[0..60]) != read_u32(&raw, 60) {
            return Err(corrupt("segment header checksum mismatch".into()));
        }
        let version = read_u32(&raw, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(corrupt(format!(
                "segment format version {version}, this build reads {SEGMENT_FORMAT_VERSION}"
            )));
        }
        if read_u64(&raw, 16) != first_position {
            return Err(corrupt(format!(
                "header says first position {}, the file name says {first_position}",
                read_u64(&raw, 16)
            )));
        }
        let capacity = read_u64(&raw, 24);
        if writable && current_length < capacity {
            file.set_len(capacity).map_err(io_error(context))?;
        }
        let mut segment = Self::map_file(file, path.to_path_buf(), first_position, SEGMENT_HEADER_BYTES)?;
        segment.length_at_open = (length as usize).min(segment.capacity);
        Ok(segment)
    }

    fn map_file(file: File, path: PathBuf, first_position: u64, written: usize) -> Result<Segment, StoreError> {
        let map = MmapRaw::map_raw(&file).map_err(io_error(format!("map segment {}", path.display())))?;
        let (base, capacity) = (map.as_mut_ptr(), map.len());
        Ok(Segment::new(Mapping::File(map, file), Some(path), base, capacity, first_position, written))
    }

    /// An in-memory segment (lazily backed by anonymous pages).
    pub fn anonymous(first_position: u64, capacity: usize) -> Result<Segment, StoreError> {
        let mut map = MmapMut::map_anon(capacity).map_err(io_error("map anonymous segment"))?;
        map[..SEGMENT_HEADER_BYTES].copy_from_slice(&header(first_position, capacity as u64));
        let base = map.as_mut_ptr();
        Ok(Segment::new(Mapping::Anonymous(map), None, base, capacity, first_position, SEGMENT_HEADER_BYTES))
    }

    fn new(
        mapping: Mapping,
        path: Option<PathBuf>,
        base: *mut u8,
        capacity: usize,
        first: u64,
        written: usize,
    ) -> Self {
        Segment {
            first_position: first,
            path,
            mapping,
            base,
            capacity,
            length_at_open: capacity,
            written: AtomicUsize::new(written),
            synced: AtomicUsize::new(written),
            offsets: RwLock::new(Vec::new()),
            last_timestamp_ns: AtomicU64::new(0),
            populated: AtomicUsize::new(0),
            verified: AtomicUsize::new(SEGMENT_HEADER_BYTES),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes `[start, end)` of the map, read-only.
    ///
    /// Callers pass only ranges below the log's visible watermark (or, during recovery and under
    /// the append lock, below `written`), which the writer never touches again.
    pub fn bytes(&self, start: usize, end: usize) -> &[u8] {
        assert!(start <= end && end <= self.capacity, "segment range {start}..{end} out of bounds");
        // SAFETY: the range is inside the mapping (asserted), which lives as long as `self`, and by
        // the module invariant nobody writes these bytes while the returned borrow exists.
        unsafe { std::slice::from_raw_parts(self.base.add(start), end - start) }
    }

    /// The writable bytes `[start, end)`, which must lie at or above `written`.
    ///
    /// # Safety
    /// The caller holds the log's append lock (the only writer) and no other live slice covers
    /// the range; readers never look at or above `written`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn writable(&self, start: usize, end: usize) -> &mut [u8] {
        assert!(start >= self.written.load(Ordering::Relaxed) && start <= end && end <= self.capacity);
        // SAFETY: in bounds (asserted); exclusive per this function's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(start), end - start) }
    }

    /// The address of the byte at `offset`, for [`prefetch_for_write`] only (never dereferenced).
    pub fn address_of(&self, offset: usize) -> usize {
        self.base as usize + offset.min(self.capacity)
    }

    /// Faults in the pages up to `end` for writing (`MADV_POPULATE_WRITE`), so the writer does not
    /// take one page fault per 4 KiB on the append path. Returns false where the kernel does not
    /// support it (before Linux 5.14); it is only an optimization.
    pub fn populate(&self, end: usize) -> bool {
        let page = page_size();
        // Pages the writer has passed are faulted in already (it faulted them itself).
        let from = self.populated.load(Ordering::Acquire).max(self.written.load(Ordering::Acquire));
        let start = from / page * page;
        let end = end.min(self.capacity);
        if end <= start {
            self.populated.fetch_max(end, Ordering::AcqRel);
            return true;
        }
        let advice = memmap2::Advice::PopulateWrite;
        let result = match &self.mapping {
            Mapping::File(map, _) => map.advise_range(advice, start, end - start),
            Mapping::Anonymous(map) => map.advise_range(advice, start, end - start),
        };
        self.populated.fetch_max(end, Ordering::AcqRel);
        result.is_ok()
    }

    /// Makes the bytes `[synced, end)` durable (`fdatasync`), then records `end` as synced.
    /// `written_through_map`: the bytes were written through the mapping (not with pwrite);
    /// their whole pages are then unmapped first, see below.
    pub fn sync_to(&self, end: usize, written_through_map: bool) -> Result<(), StoreError> {
        let page = page_size();
        let start = self.synced.load(Ordering::Acquire);
        if end <= start {
            return Ok(());
        }
        if let Mapping::File(map, file) = &self.mapping {
            // Writeback write-protects every page this process has mapped dirty, with one TLB
            // shootdown (an interrupt to the appending thread's core) per page: tens of
            // thousands per checkpoint. The whole pages below `end` are never written again, so
            // they are unmapped first, with one shootdown for the range; the page cache keeps
            // their (dirty) contents and a reader's next access maps them back.
            let (from, to) = (start / page * page, end / page * page);
            if written_through_map && from < to {
                // SAFETY: a shared file mapping: MADV_DONTNEED drops page table entries only, and
                // every later access sees the file's current bytes, the same bytes (nobody writes
                // below `written`, and `end` is at most `written`). The range is inside the map.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
            }
            // fdatasync, not msync: flushing pages that were written through a shared mapping
            // costs a write-protect and TLB shootdown per page; measured here, msync of one
            // record took ~2 ms where pwrite + fdatasync took ~0.2 ms. fdatasync also flushes
            // pages dirtied through the map, so it serves both write paths.
            // The message is formatted only on failure: this runs once per group fsync.
            file.sync_data().map_err(|source| io_error(format!("fsync segment {}", self.display()))(source))?;
        }
        self.synced.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Writes `frames` (whole frames, back to back) at `offset` with `pwrite`, for the durable
    /// path. The first frame's length is written last, in a second call, so a crash in between
    /// leaves a zero length in front of the batch: a torn tail that recovery cuts off.
    /// Returns false for an in-memory segment (the caller writes through the map instead).
    pub fn write_frames(&self, offset: usize, frames: &mut [u8]) -> Result<bool, StoreError> {
        let Mapping::File(_, file) = &self.mapping else { return Ok(false) };
        // Formatted only on failure (a `format!` per call was 0.6 % of the 8-writer case).
        let failed = |source| io_error(format!("write segment {}", self.display()))(source);
        let mut first_length = [0u8; 4];
        first_length.copy_from_slice(&frames[0..4]);
        frames[0..4].fill(0);
        std::os::unix::fs::FileExt::write_all_at(file, frames, offset as u64).map_err(failed)?;
        std::os::unix::fs::FileExt::write_all_at(file, &first_length, offset as u64).map_err(failed)?;
        frames[0..4].copy_from_slice(&first_length);
        Ok(true)
    }

    fn display(&self) -> std::path::Display<'_> {
        self.path.as_deref().unwrap_or(Path::new("<memory>")).display()
    }
}

/// Gives `file` its `length` with the blocks allocated (`fallocate`: unwritten extents, no data
/// written), where the filesystem can; else a sparse `set_len`. The prefault thread populates a
/// page of an allocated file in 2 µs, of a sparse one in 3.3–4.9 µs (ext4 reserves the block at
/// each first write): against a writer that fills a page every 5 µs, too close to stay ahead.
fn preallocate(file: &File, length: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let length_arg = libc::off_t::try_from(length).map_err(|_| io::Error::other("segment too large"))?;
        // SAFETY: a plain system call on a descriptor `file` owns; no memory is passed.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length_arg) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) {
            return Err(error);
        }
    }
    file.set_len(length)
}

/// Asks the CPU to bring the cache lines of `[address, address + bytes)` into its cache, so the
/// record written there soon does not wait for them to arrive (its first stores stalled the
/// append for 6 % of its time). A read prefetch (`prefetcht0`): the write prefetch needs the
/// `prfchw` feature, which a build for generic x86-64 cannot assume. Any address will do: a
/// prefetch never faults and changes no memory.
pub(crate) fn prefetch_for_write(address: usize, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        let mut line = address & !(LINE - 1);
        while line < address.saturating_add(bytes) {
            // SAFETY: SSE is part of every x86-64 processor, and a prefetch of any address is
            // defined: it never faults and writes nothing.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (address, bytes);
}

/// The system's page size (4 KiB on x86-64; 16 or 64 KiB on some ARM kernels), read once.
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: `sysconf` only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).ok().filter(|size| size.is_power_of_two()).unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name("00000000000000000042.seg"), Some(42));
        for name in ["42.seg", "0000000000000000004x.seg", "00000000000000000042.seg.tmp", "index.ckpt"] {
            assert_eq!(parse_segment_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn a_foreign_or_damaged_header_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let error = Segment::open(&path, 0, Reopen::Sealed, 4096).err().unwrap().to_string();
        assert!(error.contains("bad magic") && error.contains("00000000000000000000.seg"), "{error}");

        let segment = Segment::create(dir.path(), 5, 4096, None, false).unwrap();
        drop(segment);
        let path = dir.path().join(segment_file_name(5));
        let error = Segment::open(&path, 6, Reopen::Sealed, 4096).err().unwrap().to_string();
        assert!(error.contains("first position 5"), "{error}");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = Segment::open(&path, 5, Reopen::Sealed, 4096).err().unwrap().to_string();
        assert!(error.contains("header checksum"), "{error}");
    }

    #[test]
    fn an_all_zero_header_is_an_unsynced_creation_on_the_last_segment_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(9));
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let error = Segment::open(&path, 9, Reopen::Sealed, 8192).err().unwrap().to_string();
        assert!(error.contains("bad magic"), "a sealed segment's header must be there: {error}");

        let segment = Segment::open(&path, 9, Reopen::Last, 8192).unwrap();
        assert_eq!((segment.first_position, segment.capacity()), (9, 8192));
        drop(segment);
        // The header was written back: the file now opens as a sealed segment too.
        assert!(Segment::open(&path, 9, Reopen::Sealed, 8192).is_ok());
    }
}
