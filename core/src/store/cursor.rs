//! A pull iterator over the log that lends zero-copy [`EventView`]s of the memory map.
//!
//! A cursor holds its own reference to the segments it was created over and the visible
//! watermark at that moment: it sees a consistent prefix of the log, appends made later are not
//! visited, and retention deleting a segment under it does not invalidate its views (the mapping
//! lives until the cursor drops). Every record it returns has had its checksum verified by this
//! process: when it wrote the record, or on the first read of it (see `Segment::verified`);
//! `Log::verify` re-checks every record regardless.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::{classify, EventView, Frame};
use super::segment::{Segment, SEGMENT_HEADER_BYTES};
use super::StoreError;
use crate::event::EventKind;

pub(crate) enum Source {
    /// Every position from `next` on.
    Sequential { next: u64, segment: usize, offset: usize },
    /// These positions (from an index), in order.
    Positions { positions: Vec<u64>, next: usize },
}

/// Iterates events; call [`Cursor::next`] until it returns `None`.
pub struct Cursor {
    pub(crate) segments: Arc<Vec<Arc<Segment>>>,
    pub(crate) end: u64,
    pub(crate) source: Source,
    pub(crate) kind: Option<EventKind>,
    pub(crate) event_type: Option<String>,
    pub(crate) remaining: usize,
    pub(crate) next_position: u64,
    pub(crate) failed: bool,
}

/// Finds the segment holding `position` and the record's offset in it.
pub(crate) fn locate(segments: &[Arc<Segment>], position: u64) -> Result<(usize, usize), StoreError> {
    let index = segments.partition_point(|s| s.first_position <= position);
    let missing = || StoreError::Corruption {
        file: Default::default(),
        offset: 0,
        position: Some(position),
        reason: "position missing from the record index".into(),
    };
    let segment_index = index.checked_sub(1).ok_or_else(missing)?;
    let segment = &segments[segment_index];
    let offsets = segment.offsets.read();
    let offset = offsets.get((position - segment.first_position) as usize).ok_or_else(missing)?;
    Ok((segment_index, *offset as usize))
}

/// Decodes the record at `offset`, checking that it is complete, intact and at `position`. The
/// checksum is checked unless this process already did (below `Segment::verified`); a checked
/// record right at the watermark moves it.
pub(crate) fn decode_at(
    segment: &Segment,
    offset: usize,
    limit: usize,
    position: u64,
) -> Result<EventView<'_>, StoreError> {
    decode_record(segment, offset, limit, position, false)
}

/// [`decode_at`], checking the checksum always when `always_check` (for `verify`).
pub(crate) fn decode_record(
    segment: &Segment,
    offset: usize,
    limit: usize,
    position: u64,
    always_check: bool,
) -> Result<EventView<'_>, StoreError> {
    let corrupt = |reason: String| StoreError::Corruption {
        file: segment.path.clone().unwrap_or_else(|| "<memory>".into()),
        offset: offset as u64,
        position: Some(position),
        reason,
    };
    if offset >= limit || limit > segment.capacity() {
        return Err(corrupt(format!("record offset {offset} outside the written bytes (..{limit})")));
    }
    let region = segment.bytes(offset, limit);
    let Frame::Complete(length) = classify(region) else {
        return Err(corrupt("record missing or incomplete below the committed end".into()));
    };
    let verified = segment.verified.load(Ordering::Acquire);
    let check_crc = always_check || offset + length > verified;
    let view = EventView::decode_checked(&region[..length], check_crc).map_err(|error| corrupt(error.to_string()))?;
    if view.position != position {
        return Err(corrupt(format!("record holds position {}", view.position)));
    }
    if check_crc && offset == verified {
        // Another reader may have moved it already; either way it covers this record now.
        let _ = segment.verified.compare_exchange(offset, offset + length, Ordering::AcqRel, Ordering::Relaxed);
    }
    Ok(view)
}

impl Cursor {
    /// The next matching event, or `None` at the end (or after the limit, or after an error).
    #[allow(clippy::should_implement_trait)] // a lending iterator cannot implement `Iterator`
    pub fn next(&mut self) -> Option<Result<EventView<'_>, StoreError>> {
        let segments = &self.segments;
        while self.remaining > 0 && !self.failed {
            let located = match &mut self.source {
                Source::Sequential { next, segment, offset } => {
                    if *next >= self.end {
                        return None;
                    }
                    if *segment + 1 < segments.len() && *next >= segments[*segment + 1].first_position {
                        *segment += 1;
                        *offset = SEGMENT_HEADER_BYTES;
                    }
                    Ok((*next, *segment, *offset))
                }
                Source::Positions { positions, next } => {
                    let Some(&position) = positions.get(*next) else {
                        self.next_position = self.next_position.max(self.end);
                        return None;
                    };
                    *next += 1;
                    locate(segments, position).map(|(segment, offset)| (position, segment, offset))
                }
            };
            let decoded = located.and_then(|(position, segment, offset)| {
                let segment = &segments[segment];
                decode_at(segment, offset, segment.written.load(Ordering::Acquire), position)
            });
            let view = match decoded {
                Ok(view) => view,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            };
            if let Source::Sequential { next, offset, .. } = &mut self.source {
                *next += 1;
                *offset += view.frame_len;
            }
            self.next_position = view.position + 1;
            let kind_matches = self.kind.is_none_or(|kind| kind == view.kind);
            let type_matches = self.event_type.as_deref().is_none_or(|t| t == view.event_type);
            if kind_matches && type_matches {
                self.remaining -= 1;
                return Some(Ok(view));
            }
        }
        None
    }

    /// Hands every remaining event to `visit` until it breaks; returns how many it was given.
    pub fn visit(
        &mut self,
        visit: &mut dyn FnMut(EventView<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        while let Some(view) = self.next() {
            count += 1;
            if visit(view?).is_break() {
                break;
            }
        }
        Ok(count)
    }

    /// The position after the last record examined; a read continued from it never rescans.
    pub fn next_position(&self) -> u64 {
        if let Source::Sequential { next, .. } = &self.source {
            return *next;
        }
        self.next_position
    }
}
