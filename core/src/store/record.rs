//! One log record: its frame, its fixed-width body, and the zero-copy [`EventView`] over it.
//!
//! Layout (all integers little-endian, see `docs/storage.md`):
//!
//! ```text
//! frame:  body_len u32 | crc32c u32 | body (body_len bytes) | zero padding to a multiple of 8
//!         crc32c covers the body; body_len must equal the sum of the body's field lengths, so
//!         a damaged length fails one check or the other. Frames start 8-aligned, so
//!         a length never straddles a page or sector boundary.
//! body:   0 position u64 | 8 timestamp_ns u64 | 16 aggregate_version u64 | 24 id [16]
//!        40 correlation_id [16] | 56 causation_id [16] | 72 kind u8 | 73 flags u8
//!        74 type_len u16 | 76 batch_remaining u32 | 80 aggregate_len u16 | 82 reserved u16
//!        84 metadata_len u32 | 88 data_len u32 | 92 reserved u32
//!        96 type | aggregate_id | metadata | data
//! metadata: repeated key_len u16 | value_len u32 | key | value
//! ```
//!
//! Invariant: a frame whose `body_len` is non-zero was written completely before `body_len` was
//! stored (the writer stores it last), so a zero length marks the end of the data. A decoded
//! view's strings are valid UTF-8 and its lengths are consistent, or decoding fails.

use std::sync::atomic::{fence, Ordering};

use crate::event::{Event, EventDraft, EventJson, EventKind, Metadata, Uuid};

/// Bytes before the body: `body_len` and `crc32c`.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;
/// The fixed part of a body.
pub(crate) const BODY_FIXED_BYTES: usize = 96;
const FLAG_HAS_CAUSATION: u8 = 1;
/// Frames start at multiples of this.
pub(crate) const FRAME_ALIGN: usize = 8;

fn aligned(length: usize) -> usize {
    length.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

fn body_len_of(draft: &EventDraft) -> usize {
    let metadata: usize = draft.metadata.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
    BODY_FIXED_BYTES + draft.event_type.len() + draft.aggregate_id.len() + metadata + draft.data.len()
}

/// Everything a record holds, with the fields the store assigns filled in.
pub(crate) struct RecordFields<'a> {
    pub draft: &'a EventDraft,
    pub id: Uuid,
    pub position: u64,
    pub timestamp_ns: u64,
    pub aggregate_version: u64,
    pub batch_remaining: u32,
}

/// Bytes the frame for `draft` takes (header and body).
pub(crate) fn frame_len(draft: &EventDraft) -> usize {
    aligned(FRAME_HEADER_BYTES + body_len_of(draft))
}

/// Writes the frame of `fields` into `dst`, which is exactly [`frame_len`] bytes and zeroed or
/// unseen by readers. The length is stored last, after a release fence, so a crash mid-write
/// leaves a zero length (the end of the data), never a half record behind a valid length.
pub(crate) fn write_frame(dst: &mut [u8], fields: &RecordFields<'_>) {
    let draft = fields.draft;
    let body_len = body_len_of(draft);
    dst[FRAME_HEADER_BYTES + body_len..].fill(0);
    let body = &mut dst[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_len];
    body[0..8].copy_from_slice(&fields.position.to_le_bytes());
    body[8..16].copy_from_slice(&fields.timestamp_ns.to_le_bytes());
    body[16..24].copy_from_slice(&fields.aggregate_version.to_le_bytes());
    body[24..40].copy_from_slice(fields.id.as_bytes());
    body[40..56].copy_from_slice(draft.correlation_id.unwrap_or(fields.id).as_bytes());
    body[56..72].copy_from_slice(draft.causation_id.unwrap_or(Uuid::nil()).as_bytes());
    body[72] = draft.kind as u8;
    body[73] = if draft.causation_id.is_some() { FLAG_HAS_CAUSATION } else { 0 };
    body[74..76].copy_from_slice(&(draft.event_type.len() as u16).to_le_bytes());
    body[76..80].copy_from_slice(&fields.batch_remaining.to_le_bytes());
    body[80..82].copy_from_slice(&(draft.aggregate_id.len() as u16).to_le_bytes());
    body[82..84].fill(0);
    let metadata_len: usize = draft.metadata.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
    body[84..88].copy_from_slice(&(metadata_len as u32).to_le_bytes());
    body[88..92].copy_from_slice(&(draft.data.len() as u32).to_le_bytes());
    body[92..96].fill(0);
    let mut at = BODY_FIXED_BYTES;
    let mut put = |bytes: &[u8]| {
        body[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(draft.event_type.as_bytes());
    put(draft.aggregate_id.as_bytes());
    for (key, value) in &draft.metadata {
        put(&(key.len() as u16).to_le_bytes());
        put(&(value.len() as u32).to_le_bytes());
        put(key.as_bytes());
        put(value.as_bytes());
    }
    put(&draft.data);
    debug_assert_eq!(at, body_len);
    let len_bytes = (body_len as u32).to_le_bytes();
    let crc = crc32c::crc32c(&dst[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_len]);
    dst[4..8].copy_from_slice(&crc.to_le_bytes());
    fence(Ordering::Release);
    dst[0..4].copy_from_slice(&len_bytes);
}

/// The frame length (with padding) for a stored `body_len`.
pub(crate) fn frame_len_for_body(body_len: u32) -> usize {
    aligned(FRAME_HEADER_BYTES + body_len as usize)
}

/// What lies at an offset of a segment's data region.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A zero length: no record here, the data ends.
    End,
    /// A record whose bytes run past the end of the region: a torn write.
    Incomplete,
    /// A complete frame taking this many bytes (header and padding included; the padding may be
    /// cut off at the very end of a region).
    Complete(usize),
}

/// Classifies the bytes at the start of `region` without checking the checksum.
pub(crate) fn classify(region: &[u8]) -> Frame {
    if region.len() < FRAME_HEADER_BYTES {
        return if region.iter().all(|&b| b == 0) { Frame::End } else { Frame::Incomplete };
    }
    let body_len = read_u32(region, 0) as usize;
    if body_len == 0 {
        return Frame::End;
    }
    if FRAME_HEADER_BYTES + body_len <= region.len() {
        Frame::Complete(aligned(FRAME_HEADER_BYTES + body_len).min(region.len()))
    } else {
        Frame::Incomplete
    }
}

/// The unit a disk writes whole: a power loss during a write (an fsync that never returned) may
/// leave any of its sectors unwritten, and an unwritten sector of a segment reads as zeros (the
/// files are zero-filled or preallocated, and never written twice).
pub(crate) const SECTOR_BYTES: usize = 512;

/// Whether the complete frame at the start of `region` (which runs on to the end of the
/// segment's data), at file offset `at`, whose checksum failed, shows a sector that never
/// reached the disk: a whole sector after the one holding its length reads as zeros, and a
/// record cannot hold that many. The sector must cover some of the payload (JSON: never empty,
/// never a zero byte; metadata may hold zeros) and the body's field lengths must add up to its
/// length, unless the sector holds those lengths too (a flipped length bit must not stretch the
/// frame over the zeros after the log). A bit flip zeroes one byte at most, so the only flip
/// read as a tear is one that zeroes the payload's last byte when that byte is alone in the last
/// sector of the data.
pub(crate) fn lost_sector(region: &[u8], at: usize) -> bool {
    let body_len = u64::from(read_u32(region, 0));
    let content = FRAME_HEADER_BYTES as u64 + body_len;
    if content < (FRAME_HEADER_BYTES + BODY_FIXED_BYTES) as u64 || content > region.len() as u64 {
        return false;
    }
    let (content, data_end) = (content as usize, at + region.len());
    // Whether the sector starting at `sector` (after the frame's start) holds only zeros.
    let lost = |sector: usize| region[sector - at..(sector + SECTOR_BYTES).min(data_end) - at].iter().all(|&b| b == 0);
    let body = &region[FRAME_HEADER_BYTES..content];
    let fields = u64::from(read_u16(body, 74)) + u64::from(read_u16(body, 80));
    let metadata_and_data = u64::from(read_u32(body, 84)) + u64::from(read_u32(body, 88));
    let sectors = |from: usize, to: usize| (from / SECTOR_BYTES * SECTOR_BYTES..to).step_by(SECTOR_BYTES);
    if BODY_FIXED_BYTES as u64 + fields + metadata_and_data == body_len {
        let payload = at + content - read_u32(body, 88) as usize;
        sectors(payload, at + content).any(|sector| sector > at && lost(sector))
    } else {
        let lengths = at + FRAME_HEADER_BYTES + 74..at + FRAME_HEADER_BYTES + 92;
        sectors(lengths.start, lengths.end).any(|sector| sector > at && lost(sector))
    }
}

/// Why a complete frame is not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Checksum { stored: u32, computed: u32 },
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Checksum { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            DecodeError::Malformed(reason) => write!(f, "malformed record: {reason}"),
        }
    }
}

/// A zero-copy view of one stored event, borrowing the log's memory map.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// The record kind.
    pub kind: EventKind,
    /// The event id.
    pub id: Uuid,
    /// The event type.
    pub event_type: &'a str,
    /// The aggregate id (empty for kinds without one).
    pub aggregate_id: &'a str,
    /// 1-based version within the aggregate.
    pub aggregate_version: u64,
    /// The log position.
    pub position: u64,
    /// Unix nanoseconds at append.
    pub timestamp_ns: u64,
    /// The workflow id.
    pub correlation_id: Uuid,
    /// The causing event, if any.
    pub causation_id: Option<Uuid>,
    /// The JSON payload.
    pub data: &'a [u8],
    metadata: &'a [u8],
    pub(crate) batch_remaining: u32,
    /// Bytes of the whole frame, header included.
    pub(crate) frame_len: usize,
}

impl<'a> EventView<'a> {
    /// Decodes a complete frame (as [`classify`] measured it), verifying its checksum.
    pub(crate) fn decode(frame: &'a [u8]) -> Result<EventView<'a>, DecodeError> {
        Self::decode_checked(frame, true)
    }

    /// Decodes a complete frame; `check_crc: false` trusts a checksum already verified.
    pub(crate) fn decode_checked(frame: &'a [u8], check_crc: bool) -> Result<EventView<'a>, DecodeError> {
        let body_len = read_u32(frame, 0) as usize;
        let body = frame
            .get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_len)
            .ok_or(DecodeError::Malformed("frame shorter than its length"))?;
        if check_crc {
            let stored = read_u32(frame, 4);
            let computed = crc32c::crc32c(body);
            if stored != computed {
                return Err(DecodeError::Checksum { stored, computed });
            }
        }
        if body.len() < BODY_FIXED_BYTES {
            return Err(DecodeError::Malformed("body shorter than its fixed part"));
        }
        let kind = EventKind::from_u8(body[72]).ok_or(DecodeError::Malformed("unknown kind"))?;
        let type_len = read_u16(body, 74) as usize;
        let aggregate_len = read_u16(body, 80) as usize;
        let metadata_len = read_u32(body, 84) as usize;
        let data_len = read_u32(body, 88) as usize;
        if BODY_FIXED_BYTES + type_len + aggregate_len + metadata_len + data_len != body.len() {
            return Err(DecodeError::Malformed("field lengths disagree with the body length"));
        }
        let mut at = BODY_FIXED_BYTES;
        let mut take = |len: usize| {
            let slice = &body[at..at + len];
            at += len;
            slice
        };
        let utf8 = |bytes: &'a [u8]| std::str::from_utf8(bytes).map_err(|_| DecodeError::Malformed("invalid UTF-8"));
        let event_type = utf8(take(type_len))?;
        let aggregate_id = utf8(take(aggregate_len))?;
        let metadata = take(metadata_len);
        let data = take(data_len);
        Ok(EventView {
            kind,
            id: read_uuid(body, 24),
            event_type,
            aggregate_id,
            aggregate_version: read_u64(body, 16),
            position: read_u64(body, 0),
            timestamp_ns: read_u64(body, 8),
            correlation_id: read_uuid(body, 40),
            causation_id: (body[73] & FLAG_HAS_CAUSATION != 0).then(|| read_uuid(body, 56)),
            data,
            metadata,
            batch_remaining: read_u32(body, 76),
            frame_len: aligned(FRAME_HEADER_BYTES + body_len),
        })
    }

    /// The metadata pairs, in key order. (Checked lazily: the checksum already vouches for the
    /// bytes, and most readers never look at metadata.)
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + Clone + 'a {
        MetadataIter(self.metadata).map_while(Result::ok)
    }

    /// An owned copy.
    pub fn to_event(&self) -> Event {
        Event {
            kind: self.kind,
            id: self.id,
            event_type: self.event_type.to_owned(),
            aggregate_id: self.aggregate_id.to_owned(),
            aggregate_version: self.aggregate_version,
            position: self.position,
            timestamp_ns: self.timestamp_ns,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Metadata>(),
            data: bytes::Bytes::copy_from_slice(self.data),
        }
    }

    /// The spec's JSON form, written without an owned copy.
    pub fn json(&self) -> EventJson<'a, impl Iterator<Item = (&'a str, &'a str)> + Clone + 'a> {
        EventJson {
            kind: self.kind,
            id: self.id,
            event_type: self.event_type,
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
            position: self.position,
            timestamp_ns: self.timestamp_ns,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            metadata: self.metadata(),
            data: self.data,
        }
    }
}

#[derive(Clone)]
struct MetadataIter<'a>(&'a [u8]);

impl<'a> Iterator for MetadataIter<'a> {
    type Item = Result<(&'a str, &'a str), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let entry = || -> Option<(&'a str, &'a str, &'a [u8])> {
            let key_len = u16::from_le_bytes(self.0.get(0..2)?.try_into().ok()?) as usize;
            let value_len = u32::from_le_bytes(self.0.get(2..6)?.try_into().ok()?) as usize;
            let key = std::str::from_utf8(self.0.get(6..6 + key_len)?).ok()?;
            let value = std::str::from_utf8(self.0.get(6 + key_len..6 + key_len + value_len)?).ok()?;
            Some((key, value, &self.0[6 + key_len + value_len..]))
        };
        match entry() {
            Some((key, value, rest)) => {
                self.0 = rest;
                Some(Ok((key, value)))
            }
            None => {
                self.0 = &[];
                Some(Err(()))
            }
        }
    }
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn read_uuid(bytes: &[u8], at: usize) -> Uuid {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes[at..at + 16]);
    Uuid::from_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(draft: &EventDraft) -> Vec<u8> {
        let mut buffer = vec![0u8; frame_len(draft)];
        let fields = RecordFields {
            draft,
            id: Uuid::from_u128(7),
            position: 41,
            timestamp_ns: 1_000,
            aggregate_version: 3,
            batch_remaining: 2,
        };
        write_frame(&mut buffer, &fields);
        buffer
    }

    #[test]
    fn a_frame_round_trips_every_field() {
        let mut draft = EventDraft::new("TaskCreated", "task-1", r#"{"x":1}"#).with_metadata("user_id", "u1");
        draft.causation_id = Some(Uuid::from_u128(9));
        let frame = encoded(&draft);
        assert_eq!(classify(&frame), Frame::Complete(frame.len()));
        let view = EventView::decode(&frame).unwrap();
        assert_eq!(view.position, 41);
        assert_eq!(view.aggregate_version, 3);
        assert_eq!(view.batch_remaining, 2);
        assert_eq!(view.correlation_id, Uuid::from_u128(7), "defaults to the event's own id");
        assert_eq!(view.causation_id, Some(Uuid::from_u128(9)));
        assert_eq!(view.metadata().collect::<Vec<_>>(), vec![("user_id", "u1")]);
        assert_eq!(view.data, br#"{"x":1}"#);
        assert_eq!((view.event_type, view.aggregate_id), ("TaskCreated", "task-1"));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let frame = encoded(&EventDraft::new("T", "a", "[]"));
        let body_end = FRAME_HEADER_BYTES + read_u32(&frame, 0) as usize;
        for byte in (0..body_end).filter(|byte| !(4..8).contains(byte)) {
            for bit in 0..8 {
                let mut damaged = frame.clone();
                damaged[byte] ^= 1 << bit;
                assert!(EventView::decode(&damaged).is_err(), "flip at byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_frames_are_incomplete_and_zeros_are_the_end() {
        let frame = encoded(&EventDraft::new("T", "a", "[]"));
        let body_end = FRAME_HEADER_BYTES + read_u32(&frame, 0) as usize;
        assert_eq!(frame.len() % FRAME_ALIGN, 0);
        for cut in 1..body_end {
            assert_eq!(classify(&frame[..cut]), Frame::Incomplete, "cut at {cut}");
        }
        assert_eq!(classify(&[0u8; 3]), Frame::End);
        assert_eq!(classify(&[0u8; 64]), Frame::End);
    }

    /// `frame` at offset `at` of a file, followed by zeros (the rest of a preallocated segment).
    fn in_file(frame: &[u8]) -> Vec<u8> {
        let mut file = frame.to_vec();
        file.resize(frame.len() + (1 << 17), 0);
        file
    }

    /// The sector starts after `at` that the record's payload overlaps, relative to the frame.
    fn payload_sectors(frame: &[u8], at: usize) -> Vec<usize> {
        let content = FRAME_HEADER_BYTES + read_u32(frame, 0) as usize;
        let payload = content - read_u32(&frame[FRAME_HEADER_BYTES..], 88) as usize;
        (((at + payload) / SECTOR_BYTES * SECTOR_BYTES).max(at + 1)..at + content)
            .filter(|offset| offset % SECTOR_BYTES == 0)
            .map(|offset| offset - at)
            .collect()
    }

    #[test]
    fn a_sector_a_torn_write_left_zero_is_told_from_a_flipped_bit() {
        // A record of about 1.3 KB, at every 8-aligned offset of a sector: it spans 3 or 4 sectors.
        let frame = encoded(&EventDraft::new("T", "a", format!(r#"{{"pad":"{}"}}"#, "x".repeat(1200))));
        let file = in_file(&frame);
        let content = FRAME_HEADER_BYTES + read_u32(&frame, 0) as usize;
        for at in (0..SECTOR_BYTES).step_by(FRAME_ALIGN) {
            assert!(!lost_sector(&file, at), "the whole record at {at}");
            let sectors = payload_sectors(&frame, at);
            assert!(sectors.len() >= 2, "the record at {at} spans several sectors");
            for &start in &sectors {
                let mut torn = file.clone();
                torn[start..start + SECTOR_BYTES].fill(0);
                assert!(lost_sector(&torn, at), "sector from {start} of the record at {at} zeroed");
            }
            // A flipped bit anywhere leaves no zero sector behind, nor does a flipped length
            // bit that stretches the frame over the zeros after it.
            for byte in (0..content).step_by(7).chain(0..3) {
                for bit in [0, 4] {
                    let mut damaged = file.clone();
                    damaged[byte] ^= 1 << bit;
                    if let Frame::Complete(_) = classify(&damaged) {
                        assert!(!lost_sector(&damaged, at), "bit {bit} of byte {byte} of the record at {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn zeros_in_metadata_are_not_a_lost_sector() {
        // Metadata may hold zero bytes: a sector of them is no tear, and a flipped bit elsewhere
        // in such a record is still damage.
        let draft = EventDraft::new("T", "a", r#"{"x":1}"#).with_metadata("blob", "\0".repeat(1100));
        let frame = encoded(&draft);
        let file = in_file(&frame);
        for at in (0..SECTOR_BYTES).step_by(FRAME_ALIGN * 5) {
            for byte in [5, 8, 30, frame.len() - 12, frame.len() - 10] {
                let mut damaged = file.clone();
                damaged[byte] ^= 1;
                assert!(!lost_sector(&damaged, at), "flip at byte {byte} of the record at {at}");
            }
        }
    }
}
