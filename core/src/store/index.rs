//! The in-memory indexes (event id, aggregate stream, type) and their rkyv checkpoint.
//!
//! - ids ([`IdIndex`]): every id ever appended → its position and aggregate version. Ids are
//!   never forgotten, not even when retention deletes their segment, so idempotency reaches back
//!   to the start of the log (the cost: 32 bytes of memory per generated id, about 40 per
//!   publisher-chosen one; see `docs/benchmarks.md` for all indexes together).
//! - streams: aggregate id → positions of its domain events; a version is an index + 1.
//! - types: event type → positions, one list per kind (so a read by kind and type is exact).
//! - time needs no index: timestamps never decrease along positions, so a binary search over the
//!   records finds a time (see `Log::position_at_time`).
//!
//! The checkpoint file `index.ckpt` is: magic `HERALDIX`, format u32, crc32c u32 of the payload,
//! payload length u64, the count of leading generated ids u64 (see [`IdIndex`]; 0 in older
//! files), then the rkyv archive of [`CheckpointData`]. It is written
//! to a temporary name, fsynced and renamed, and only ever covers records already fsynced. On
//! open it is validated (checksum, then rkyv's bytecheck) and then checked against the segments;
//! anything off and the store rebuilds from the records instead. The deltas written between
//! full checkpoints are `delta.rs`'s.

use std::collections::HashMap;
use std::path::Path;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::prefault::PrefaultQueue;
use super::record::{read_u32, read_u64};
use super::segment::{io_error, sync_dir};
use super::StoreError;
use crate::event::{EventKind, Uuid};

type Hasher = foldhash::fast::RandomState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdEntry {
    pub position: u64,
    pub aggregate_version: u64,
}

/// The id index. The log generates ids in increasing order (see `Log::append`), so generated
/// ids go to `ordered`, a sorted vector: an append is a push (no hashing, no random memory
/// access) and a lookup a binary search. Publisher-chosen ids, and any id that does not sort
/// after the last ordered one, go to `unordered`, a hash map. An id is in one of the two.
#[derive(Default)]
pub(crate) struct IdIndex {
    ordered: Vec<OrderedId>,
    unordered: HashMap<Uuid, IdEntry, Hasher>,
}

#[derive(Clone, Copy)]
struct OrderedId {
    id: u128,
    entry: IdEntry,
}

impl IdIndex {
    pub fn get(&self, id: &Uuid) -> Option<IdEntry> {
        // Only UUIDv7s are generated, so only they can be in the ordered part.
        if id.get_version_num() == 7 {
            if let Ok(at) = self.ordered.binary_search_by_key(&id.as_u128(), |row| row.id) {
                return Some(self.ordered[at].entry);
            }
        }
        self.unordered.get(id).copied()
    }

    /// Adds an id that is not in the index; `generated` ids go to the ordered part if they sort
    /// after its last id.
    pub fn insert(&mut self, id: Uuid, entry: IdEntry, generated: bool, prefault: &mut PrefaultQueue) {
        let key = id.as_u128();
        if generated && id.get_version_num() == 7 && self.ordered.last().is_none_or(|last| key > last.id) {
            prefault.push(&mut self.ordered, OrderedId { id: key, entry });
        } else {
            self.unordered.insert(id, entry);
        }
    }

    /// The greatest id of the ordered part: a new id above it is appended without hashing.
    pub fn last_ordered(&self) -> Option<u128> {
        self.ordered.last().map(|row| row.id)
    }

    /// How many ids the ordered part holds ([`IdIndex::iter`] yields them first).
    pub fn ordered_len(&self) -> usize {
        self.ordered.len()
    }

    /// Every id, the ordered ones first, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, IdEntry)> + '_ {
        let ordered = self.ordered.iter().map(|row| (Uuid::from_u128(row.id), row.entry));
        ordered.chain(self.unordered.iter().map(|(id, entry)| (*id, *entry)))
    }

    fn with_capacity(ordered: usize, unordered: usize) -> Self {
        IdIndex {
            ordered: Vec::with_capacity(ordered),
            unordered: HashMap::with_capacity_and_hasher(unordered, Hasher::default()),
        }
    }

    /// Whether the unordered part holds `id` (generation steps over such ids).
    pub fn contains_unordered(&self, id: &Uuid) -> bool {
        !self.unordered.is_empty() && self.unordered.contains_key(id)
    }

    fn approximate_bytes(&self) -> usize {
        self.ordered.capacity() * std::mem::size_of::<OrderedId>()
            + self.unordered.capacity() * (std::mem::size_of::<(Uuid, IdEntry)>() + 1)
    }
}

#[derive(Default)]
pub(crate) struct Index {
    pub ids: IdIndex,
    pub streams: Streams,
    pub types: HashMap<Box<str>, [Vec<u64>; 3], Hasher>,
    /// The fresh capacity of the vectors above (and of the segments' offsets), for the
    /// prefault thread.
    pub prefault: PrefaultQueue,
}

/// A stream's place in [`Streams`]: valid for the life of the index (streams are never removed).
pub(crate) type StreamSlot = usize;

/// Aggregate id → the positions of its domain events. The map holds each stream's slot in a
/// vector of position lists: an append looks its aggregate up once, to check its version, and
/// pushes through the slot (the second lookup, its hash and its key comparison on a cold line,
/// was 4 % of an append).
#[derive(Default)]
pub(crate) struct Streams {
    slots: HashMap<Box<str>, StreamSlot, Hasher>,
    positions: Vec<Vec<u64>>,
}

impl Streams {
    fn with_capacity(streams: usize) -> Self {
        Streams {
            slots: HashMap::with_capacity_and_hasher(streams, Hasher::default()),
            positions: Vec::with_capacity(streams),
        }
    }

    pub fn slot(&self, aggregate_id: &str) -> Option<StreamSlot> {
        self.slots.get(aggregate_id).copied()
    }

    /// The positions of a stream, by version - 1.
    pub fn get(&self, aggregate_id: &str) -> Option<&Vec<u64>> {
        self.slot(aggregate_id).map(|slot| &self.positions[slot])
    }

    /// The current version of the stream at `slot` (0 for none).
    pub fn version(&self, slot: Option<StreamSlot>) -> u64 {
        slot.map_or(0, |slot| self.positions[slot].len() as u64)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Vec<u64>)> + '_ {
        self.slots.iter().map(|(name, &slot)| (&**name, &self.positions[slot]))
    }

    /// The stream's positions, made empty if it is new.
    fn positions_mut(&mut self, slot: Option<StreamSlot>, aggregate_id: &str) -> &mut Vec<u64> {
        let slot = match slot.or_else(|| self.slot(aggregate_id)) {
            Some(slot) => slot,
            None => {
                let slot = self.positions.len();
                self.positions.push(Vec::new());
                self.slots.insert(aggregate_id.into(), slot);
                slot
            }
        };
        &mut self.positions[slot]
    }
}

/// The slot of a kind in a `[_; 3]` per-kind array.
pub(crate) fn kind_slot(kind: EventKind) -> usize {
    kind as usize - 1
}

impl Index {
    /// Adds one record; records are added in position order. `generated`: whether the log made
    /// the id (see [`IdIndex`]). `stream`: the aggregate's slot if the caller looked it up
    /// already (`None` looks it up, or makes the stream).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        id: Uuid,
        generated: bool,
        kind: EventKind,
        event_type: &str,
        aggregate_id: &str,
        position: u64,
        aggregate_version: u64,
        stream: Option<StreamSlot>,
    ) {
        self.ids.insert(id, IdEntry { position, aggregate_version }, generated, &mut self.prefault);
        if kind == EventKind::Domain {
            push_version(self.streams.positions_mut(stream, aggregate_id), position, aggregate_version);
        }
        match self.types.get_mut(event_type) {
            Some(lists) => self.prefault.push(&mut lists[kind_slot(kind)], position),
            None => {
                let mut lists: [Vec<u64>; 3] = Default::default();
                lists[kind_slot(kind)].push(position);
                self.types.insert(event_type.into(), lists);
            }
        }
    }

    /// The positions of `event_type` (of `kind`, or of every kind merged) in `[from, end)`, at
    /// most `limit` of them.
    pub fn type_positions(
        &self,
        event_type: &str,
        kind: Option<EventKind>,
        from: u64,
        end: u64,
        limit: usize,
    ) -> Vec<u64> {
        let Some(lists) = self.types.get(event_type) else { return Vec::new() };
        let window = |list: &[u64]| -> Vec<u64> {
            let start = list.partition_point(|&p| p < from);
            let stop = list.partition_point(|&p| p < end);
            list[start..stop.max(start)].iter().take(limit).copied().collect()
        };
        match kind {
            Some(kind) => window(&lists[kind_slot(kind)]),
            None => {
                let mut merged: Vec<u64> = lists.iter().flat_map(|list| window(list)).collect();
                merged.sort_unstable();
                merged.truncate(limit);
                merged
            }
        }
    }

    /// Bytes of heap the index uses, roughly (for the benchmark report).
    pub fn approximate_bytes(&self) -> usize {
        let ids = self.ids.approximate_bytes();
        let streams: usize = self.streams.iter().map(|(k, v)| k.len() + 56 + v.capacity() * 8).sum();
        let types: usize =
            self.types.iter().map(|(k, v)| k.len() + 96 + v.iter().map(|l| l.capacity() * 8).sum::<usize>()).sum();
        ids + streams + types
    }
}

/// Adds the stream's event at `version` (its positions are indexed by version - 1). A version
/// beyond the next one means the events before it are gone with no index entry for them (deleted
/// by retention, and no checkpoint file held them): [`RETAINED_AWAY`] stands in for their
/// positions, so the stream's version still counts them and the next append continues it.
fn push_version(positions: &mut Vec<u64>, position: u64, version: u64) {
    // A stream has at most one event per earlier position: a larger version is damage
    // (which `verify` reports), not a reason to allocate stand-ins without bound.
    let before = usize::try_from(version.saturating_sub(1).min(position)).unwrap_or(usize::MAX);
    if positions.len() < before {
        positions.resize(before, RETAINED_AWAY);
    }
    positions.push(position);
}

/// The position recorded for a stream event that retention deleted before any index entry for
/// it was saved: it sorts before every retained position, so reads of it say the event is gone.
pub(crate) const RETAINED_AWAY: u64 = 0;

/// One segment as the checkpoint saw it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct SegmentState {
    pub first_position: u64,
    pub written: u64,
    pub last_timestamp_ns: u64,
    pub offsets: Vec<u32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(crate) struct NamedPositions {
    pub name: String,
    /// The kind (for types; streams hold domain events only).
    pub kind: u8,
    pub positions: Vec<u64>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(crate) struct IdRow {
    pub id: [u8; 16],
    pub position: u64,
    pub aggregate_version: u64,
}

/// Everything needed to resume without rescanning the records it covers.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(crate) struct CheckpointData {
    pub next_position: u64,
    pub last_timestamp_ns: u64,
    pub segments: Vec<SegmentState>,
    /// Generated ids first, in increasing order (their count is in the file header), then the rest.
    pub ids: Vec<IdRow>,
    pub streams: Vec<NamedPositions>,
    pub types: Vec<NamedPositions>,
}

pub(crate) const CHECKPOINT_FILE: &str = "index.ckpt";

impl CheckpointData {
    pub fn capture(index: &Index, next_position: u64, last_timestamp_ns: u64, segments: Vec<SegmentState>) -> Self {
        let streams = index
            .streams
            .iter()
            .map(|(name, positions)| NamedPositions {
                name: name.to_string(),
                kind: EventKind::Domain as u8,
                positions: positions.clone(),
            })
            .collect();
        let types = index
            .types
            .iter()
            .flat_map(|(name, lists)| {
                lists.iter().enumerate().filter(|(_, list)| !list.is_empty()).map(|(slot, list)| NamedPositions {
                    name: name.to_string(),
                    kind: slot as u8 + 1,
                    positions: list.clone(),
                })
            })
            .collect();
        CheckpointData {
            next_position,
            last_timestamp_ns,
            segments,
            ids: index
                .ids
                .iter()
                .map(|(id, entry)| IdRow {
                    id: *id.as_bytes(),
                    position: entry.position,
                    aggregate_version: entry.aggregate_version,
                })
                .collect(),
            streams,
            types,
        }
    }

    /// Writes the checkpoint durably (temporary file, fsync, rename, directory fsync).
    /// `ordered_ids`: how many leading `ids` rows are generated ids in increasing order; it goes
    /// in the header's last 8 bytes (zero in files written before it existed, which is correct:
    /// every id then goes to the hash map).
    pub fn write(&self, dir: &Path, ordered_ids: u64) -> Result<(), StoreError> {
        let payload = rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|error| StoreError::Config(format!("cannot encode the index checkpoint: {error}")))?;
        CHECKPOINT.write(dir, &dir.join(CHECKPOINT_FILE), ordered_ids, &payload)
    }

    /// Reads and validates the checkpoint; `Ok(None)` when there is none or it is unusable (the
    /// reason is returned so the caller can log it), since the records can always rebuild it.
    /// Returns the archive and the number of leading generated ids (see [`CheckpointData::write`]).
    pub fn read(dir: &Path) -> Result<Option<(AlignedVec, u64)>, String> {
        let path = dir.join(CHECKPOINT_FILE);
        let Some((aligned, ordered_ids)) = CHECKPOINT.read(&path)? else { return Ok(None) };
        let data = rkyv::access::<ArchivedCheckpointData, rancor::Error>(&aligned)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let ordered_ids = ordered_ids.min(data.ids.len() as u64);
        Ok(Some((aligned, ordered_ids)))
    }
}

/// The framing of the index's files (`index.ckpt`, and the deltas of `delta.rs`): magic, format
/// u32, crc32c u32 of the payload, payload length u64, one u64 of the kind's own, the payload.
pub(crate) struct CheckedFile {
    pub magic: &'static [u8; 8],
    pub format: u32,
    /// What the file is, for messages.
    pub what: &'static str,
}

const CHECKPOINT: CheckedFile = CheckedFile { magic: b"HERALDIX", format: 1, what: "index checkpoint" };
const CHECKED_HEADER_BYTES: usize = 32;

impl CheckedFile {
    /// Writes the file durably: a temporary name (`<path>.tmp`), fsync, rename, directory fsync.
    pub fn write(&self, dir: &Path, path: &Path, extra: u64, payload: &[u8]) -> Result<(), StoreError> {
        let mut header = [0u8; CHECKED_HEADER_BYTES];
        header[0..8].copy_from_slice(self.magic);
        header[8..12].copy_from_slice(&self.format.to_le_bytes());
        header[12..16].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        header[24..32].copy_from_slice(&extra.to_le_bytes());
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&header)?;
            file.write_all(payload)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(io_error(format!("write {} {}", self.what, path.display())))?;
        sync_dir(dir)
    }

    /// The payload (aligned for rkyv) and the extra u64, checked against the header;
    /// `Ok(None)` when there is no such file.
    pub fn read(&self, path: &Path) -> Result<Option<(AlignedVec, u64)>, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        if bytes.len() < CHECKED_HEADER_BYTES || &bytes[0..8] != self.magic {
            return Err(format!("{}: not a Herald {}", path.display(), self.what));
        }
        if read_u32(&bytes, 8) != self.format {
            return Err(format!("{}: unknown {} format", path.display(), self.what));
        }
        let length = read_u64(&bytes, 16) as usize;
        let payload = &bytes[CHECKED_HEADER_BYTES..];
        if payload.len() != length || crc32c::crc32c(payload) != read_u32(&bytes, 12) {
            return Err(format!("{}: checksum or length mismatch", path.display()));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        Ok(Some((aligned, read_u64(&bytes, 24))))
    }
}

/// Accesses a buffer that [`CheckpointData::read`] validated.
pub(crate) fn archived(bytes: &AlignedVec) -> Result<&ArchivedCheckpointData, String> {
    rkyv::access::<ArchivedCheckpointData, rancor::Error>(bytes).map_err(|error| error.to_string())
}

impl Index {
    /// Rebuilds the maps from an archived checkpoint, without an intermediate deserialization.
    pub fn from_checkpoint(data: &ArchivedCheckpointData, ordered_ids: u64) -> Index {
        let mut index = Index {
            ids: IdIndex::with_capacity(ordered_ids as usize, data.ids.len() - ordered_ids as usize),
            streams: Streams::with_capacity(data.streams.len()),
            types: HashMap::with_capacity_and_hasher(data.types.len(), Hasher::default()),
            prefault: PrefaultQueue::default(),
        };
        let ordered = ordered_ids;
        for (at, row) in data.ids.iter().enumerate() {
            index.ids.insert(
                Uuid::from_bytes(row.id),
                IdEntry { position: row.position.to_native(), aggregate_version: row.aggregate_version.to_native() },
                (at as u64) < ordered,
                &mut index.prefault,
            );
        }
        for row in data.streams.iter() {
            *index.streams.positions_mut(None, row.name.as_str()) =
                row.positions.iter().map(|p| p.to_native()).collect();
        }
        for row in data.types.iter() {
            let Some(kind) = EventKind::from_u8(row.kind) else { continue };
            let lists = index.types.entry(row.name.as_str().into()).or_default();
            lists[kind_slot(kind)] = row.positions.iter().map(|p| p.to_native()).collect();
        }
        index
    }
}
