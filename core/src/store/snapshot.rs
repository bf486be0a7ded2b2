//! Aggregate snapshots: a state blob (typically an rkyv archive) at a stream version.
//!
//! Stored in one append-only file, `snapshots.dat`, as frames (little-endian):
//!
//! ```text
//! 0 frame_len u32 | 4 crc32c u32 of bytes 8..frame_len | 8 version u64 | 16 timestamp_ns u64
//! 24 state_len u64 | 32 aggregate_len u16 | 34 six zero bytes | 40 aggregate id
//! zero padding to a multiple of 16 | state (state_len bytes)
//! ```
//!
//! The state starts 16-aligned inside its frame, and a load reads the frame into a 16-aligned
//! buffer, so [`Snapshot::access`] hands out the archived state in place, validated by bytecheck,
//! without deserializing it. The newest snapshot wins: the highest version, and the last written
//! among equals. On open a torn tail is truncated and a bad checksum is an error naming the offset.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::record::{read_u16, read_u32, read_u64};
use super::segment::io_error;
use super::StoreError;
use crate::event::ValidationError;

pub(crate) const SNAPSHOT_FILE: &str = "snapshots.dat";
const FRAME_FIXED_BYTES: usize = 40;

/// A loaded snapshot; its state stays in one 16-aligned buffer.
pub struct Snapshot {
    pub aggregate_id: String,
    /// The stream version the state reflects.
    pub version: u64,
    /// Unix nanoseconds when it was saved.
    pub timestamp_ns: u64,
    frame: AlignedVec<16>,
    state_start: usize,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("aggregate_id", &self.aggregate_id)
            .field("version", &self.version)
            .field("state_bytes", &self.state().len())
            .finish()
    }
}

impl Snapshot {
    /// The state bytes as saved.
    pub fn state(&self) -> &[u8] {
        &self.frame[self.state_start..]
    }

    /// The state as an archived `T` (saved with `rkyv::to_bytes`), validated, zero-copy.
    pub fn access<T>(&self) -> Result<&T, StoreError>
    where
        T: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        rkyv::access::<T, rancor::Error>(self.state()).map_err(|error| {
            StoreError::Invalid(ValidationError::new(
                "state",
                format!("not a valid archive of the requested type: {error}"),
            ))
        })
    }
}

struct Entry {
    offset: u64,
    frame_len: usize,
    version: u64,
}

enum Storage {
    File { file: File, path: PathBuf },
    Memory(Vec<u8>),
}

struct Inner {
    storage: Storage,
    end: u64,
    entries: HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
}

pub(crate) struct SnapshotStore {
    inner: Mutex<Inner>,
}

fn state_start(aggregate_len: usize) -> usize {
    (FRAME_FIXED_BYTES + aggregate_len).div_ceil(16) * 16
}

impl SnapshotStore {
    pub fn in_memory() -> Self {
        SnapshotStore {
            inner: Mutex::new(Inner { storage: Storage::Memory(Vec::new()), end: 0, entries: HashMap::default() }),
        }
    }

    /// Opens (or creates) `snapshots.dat`, scanning every frame. Returns the store and how many
    /// snapshots it holds.
    pub fn open(dir: &Path) -> Result<(SnapshotStore, u64), StoreError> {
        let path = dir.join(SNAPSHOT_FILE);
        let context = format!("open {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .append(false)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(context.clone()))?;
        let bytes = std::fs::read(&path).map_err(io_error(context.clone()))?;
        let mut entries = HashMap::default();
        let mut offset = 0usize;
        let mut count = 0;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            if rest.len() >= FRAME_FIXED_BYTES {
                // The fixed header says how long the frame must be; a stored length that disagrees
                // is damage, not a torn write (a save writes the header whole, then the rest).
                let implied = state_start(read_u16(rest, 32) as usize).saturating_add(read_u64(rest, 24) as usize);
                if read_u32(rest, 0) as usize != implied {
                    return Err(corrupt(&path, offset, "frame length disagrees with its fields"));
                }
            }
            let frame_len = if rest.len() >= FRAME_FIXED_BYTES { read_u32(rest, 0) as usize } else { usize::MAX };
            if frame_len > rest.len() {
                // A torn tail: the last save never completed, so it was never acknowledged.
                file.set_len(offset as u64).map_err(io_error(context.clone()))?;
                file.sync_all().map_err(io_error(context.clone()))?;
                break;
            }
            let frame = &rest[..frame_len];
            if crc32c::crc32c(&frame[8..]) != read_u32(frame, 4) {
                return Err(corrupt(&path, offset, "snapshot checksum mismatch"));
            }
            let aggregate_len = read_u16(frame, 32) as usize;
            let aggregate = std::str::from_utf8(&frame[FRAME_FIXED_BYTES..FRAME_FIXED_BYTES + aggregate_len])
                .map_err(|_| corrupt(&path, offset, "aggregate id is not UTF-8"))?;
            let entry = Entry { offset: offset as u64, frame_len, version: read_u64(frame, 8) };
            insert_newest(&mut entries, aggregate, entry);
            count += 1;
            offset += frame_len;
        }
        let inner = Inner { storage: Storage::File { file, path }, end: offset as u64, entries };
        Ok((SnapshotStore { inner: Mutex::new(inner) }, count))
    }

    /// Appends a snapshot frame; with `sync`, fsyncs it before returning. Returns the bytes added.
    pub fn save(
        &self,
        aggregate_id: &str,
        version: u64,
        timestamp_ns: u64,
        state: &[u8],
        sync: bool,
    ) -> Result<u64, StoreError> {
        let start = state_start(aggregate_id.len());
        let frame_len = start + state.len();
        let mut frame = vec![0u8; frame_len];
        frame[0..4].copy_from_slice(&(frame_len as u32).to_le_bytes());
        frame[8..16].copy_from_slice(&version.to_le_bytes());
        frame[16..24].copy_from_slice(&timestamp_ns.to_le_bytes());
        frame[24..32].copy_from_slice(&(state.len() as u64).to_le_bytes());
        frame[32..34].copy_from_slice(&(aggregate_id.len() as u16).to_le_bytes());
        frame[FRAME_FIXED_BYTES..FRAME_FIXED_BYTES + aggregate_id.len()].copy_from_slice(aggregate_id.as_bytes());
        frame[start..].copy_from_slice(state);
        let crc = crc32c::crc32c(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());

        let mut inner = self.inner.lock();
        let offset = inner.end;
        match &mut inner.storage {
            Storage::File { file, path } => {
                let context = format!("write snapshot to {}", path.display());
                file.write_all_at(&frame, offset).map_err(io_error(context.clone()))?;
                if sync {
                    file.sync_data().map_err(io_error(context))?;
                }
            }
            Storage::Memory(buffer) => buffer.extend_from_slice(&frame),
        }
        inner.end += frame_len as u64;
        insert_newest(&mut inner.entries, aggregate_id, Entry { offset, frame_len, version });
        Ok(frame_len as u64)
    }

    pub fn load(&self, aggregate_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let inner = self.inner.lock();
        let Some(entry) = inner.entries.get(aggregate_id) else { return Ok(None) };
        let mut frame = AlignedVec::<16>::with_capacity(entry.frame_len);
        frame.resize(entry.frame_len, 0);
        match &inner.storage {
            Storage::File { file, path } => file
                .read_exact_at(&mut frame, entry.offset)
                .map_err(io_error(format!("read snapshot from {}", path.display())))?,
            Storage::Memory(buffer) => {
                let start = entry.offset as usize;
                frame.copy_from_slice(&buffer[start..start + entry.frame_len]);
            }
        }
        let path = match &inner.storage {
            Storage::File { path, .. } => path.clone(),
            Storage::Memory(_) => PathBuf::from("<memory>"),
        };
        if crc32c::crc32c(&frame[8..]) != read_u32(&frame, 4) {
            return Err(corrupt(&path, entry.offset as usize, "snapshot checksum mismatch"));
        }
        Ok(Some(Snapshot {
            aggregate_id: aggregate_id.to_owned(),
            version: read_u64(&frame, 8),
            timestamp_ns: read_u64(&frame, 16),
            state_start: state_start(aggregate_id.len()),
            frame,
        }))
    }

    pub fn bytes(&self) -> u64 {
        self.inner.lock().end
    }
}

fn insert_newest(entries: &mut HashMap<Box<str>, Entry, foldhash::fast::RandomState>, aggregate: &str, entry: Entry) {
    match entries.get_mut(aggregate) {
        Some(existing) if existing.version > entry.version => {}
        Some(existing) => *existing = entry,
        None => {
            entries.insert(aggregate.into(), entry);
        }
    }
}

fn corrupt(path: &Path, offset: usize, reason: &str) -> StoreError {
    StoreError::Corruption { file: path.to_path_buf(), offset: offset as u64, position: None, reason: reason.into() }
}
