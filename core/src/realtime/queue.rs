//! A connection's bounded send queue with four priorities, and the table of frames the queues
//! share.
//!
//! Invariants: `live` is the number of frames in the four priority lanes and never exceeds
//! `capacity`; within a lane frames leave in arrival order; a higher lane always leaves before a
//! lower one. The ordered lane — replies to the client's ops and a recovery's history, in the
//! order they were made — leaves before every priority lane, so a client sees its replies in the
//! order of its ops and a replay before the room's live events; it is bounded by the caller
//! (the history a subscription may replay), not by `capacity`.
//!
//! When the lanes are full: a new frame above `low` evicts the oldest queued `low` frame that is
//! not a persistent event; a new non-persistent `low` frame is itself dropped; otherwise the push
//! overflows and the caller closes the connection (1013, slow consumer). A persistent event is
//! never dropped silently: losing one would leave a hole a recovery with `since` cannot see, so
//! the connection is closed instead and the client recovers on reconnect.
//!
//! Frames carry their room, so an unsubscribe removes the room's frames still queued.
//!
//! Queues hold [`FrameId`]s into one [`Frames`] table, where a broadcast's frame is stored once
//! with its room and a count of the queues holding it. The table lives beside the queues under
//! the hub's lock, so the count is a plain integer: a fan-out to 1,000 connections costs no
//! atomic instruction per connection (each one waited for the stores before it to drain, which
//! made `Bytes`' shared count a tenth of a busy fan-out). A table entry is freed when its last
//! holder releases it: every id a queue holds is released when it is popped, evicted,
//! forgotten or cleared.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::event::Priority;

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued, after dropping one `low` frame (or dropped the new `low` frame itself).
    DroppedLow,
    /// Full of frames that may not be dropped: the connection should close.
    Overflow,
}

/// A frame to queue.
#[derive(Clone, Debug)]
pub struct Queued {
    pub frame: Bytes,
    /// The room of an event frame (`None` for replies, diffs and events to every connection).
    pub room: Option<Arc<str>>,
    /// A persistent event (never dropped silently).
    pub persistent: bool,
}

/// A frame's place in [`Frames`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameId(u32);

#[derive(Debug)]
struct Entry {
    item: Queued,
    /// The queues holding it, plus one while the adder holds it.
    holders: u32,
}

/// The frames queued anywhere, each stored once (see the module docs).
#[derive(Debug, Default)]
pub struct Frames {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
}

impl Frames {
    /// Stores a frame, held once by the caller, who must [`Frames::release`] it when done.
    pub fn add(&mut self, item: Queued) -> FrameId {
        let entry = Some(Entry { item, holders: 1 });
        match self.free.pop() {
            Some(at) => {
                self.entries[at as usize] = entry;
                FrameId(at)
            }
            None => {
                self.entries.push(entry);
                FrameId((self.entries.len() - 1) as u32)
            }
        }
    }

    /// A held frame (every id handed out is, until its last release).
    fn get(&self, id: FrameId) -> Option<&Queued> {
        self.entries.get(id.0 as usize).and_then(Option::as_ref).map(|entry| &entry.item)
    }

    fn is_persistent(&self, id: FrameId) -> bool {
        self.get(id).is_some_and(|item| item.persistent)
    }

    fn hold(&mut self, id: FrameId) {
        if let Some(Some(entry)) = self.entries.get_mut(id.0 as usize) {
            entry.holders += 1;
        }
    }

    /// Drops one hold; the last frees the frame.
    pub fn release(&mut self, id: FrameId) {
        let Some(slot) = self.entries.get_mut(id.0 as usize) else { return };
        if let Some(entry) = slot {
            entry.holders -= 1;
            if entry.holders == 0 {
                *slot = None;
                self.free.push(id.0);
            }
        }
    }

    /// Frames stored (held by a queue or an adder).
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives back the memory a burst grew, once every frame is gone.
    pub fn shrink_if_empty(&mut self) {
        if self.is_empty() && self.entries.capacity() > 1024 {
            *self = Frames::default();
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct SendQueue {
    ordered: VecDeque<FrameId>,
    lanes: [VecDeque<FrameId>; 4],
    live: usize,
    capacity: usize,
}

impl SendQueue {
    pub fn new(capacity: usize) -> Self {
        SendQueue { ordered: VecDeque::new(), lanes: Default::default(), live: 0, capacity: capacity.max(1) }
    }

    /// Queues a live frame (see the module docs for a full queue); holds it if queued.
    pub fn push(&mut self, frames: &mut Frames, id: FrameId, priority: Priority) -> Push {
        let lane = priority as usize;
        if self.live < self.capacity {
            frames.hold(id);
            self.lanes[lane].push_back(id);
            self.live += 1;
            return Push::Queued;
        }
        if priority == Priority::Low && !frames.is_persistent(id) {
            return Push::DroppedLow;
        }
        let lows = &mut self.lanes[Priority::Low as usize];
        if priority != Priority::Low {
            if let Some(at) = lows.iter().position(|queued| !frames.is_persistent(*queued)) {
                if let Some(evicted) = lows.remove(at) {
                    frames.release(evicted);
                }
                frames.hold(id);
                self.lanes[lane].push_back(id);
                return Push::DroppedLow;
            }
        }
        Push::Overflow
    }

    /// Queues a reply or a frame of a recovery replay (ahead of every live frame, in order).
    pub fn push_ordered(&mut self, frames: &mut Frames, id: FrameId) {
        frames.hold(id);
        self.ordered.push_back(id);
    }

    /// Frames in the ordered lane.
    pub fn ordered_len(&self) -> usize {
        self.ordered.len()
    }

    /// Removes every queued frame of `room`.
    pub fn forget_room(&mut self, frames: &mut Frames, room: &str) {
        let mut forgotten = Vec::new();
        let mut keep = |id: &FrameId| {
            let of_room = frames.get(*id).is_some_and(|item| item.room.as_deref() == Some(room));
            if of_room {
                forgotten.push(*id);
            }
            !of_room
        };
        self.ordered.retain(&mut keep);
        for lane in &mut self.lanes {
            let before = lane.len();
            lane.retain(&mut keep);
            self.live -= before - lane.len();
        }
        forgotten.into_iter().for_each(|id| frames.release(id));
    }

    /// Appends the next frame's bytes to `out`; false if the queue is empty.
    pub fn pop_into(&mut self, frames: &mut Frames, out: &mut Vec<u8>) -> bool {
        let id = match self.ordered.pop_front() {
            Some(id) => id,
            None => match self.lanes.iter_mut().rev().find_map(VecDeque::pop_front) {
                Some(id) => {
                    self.live -= 1;
                    id
                }
                None => return false,
            },
        };
        if let Some(item) = frames.get(id) {
            out.extend_from_slice(&item.frame);
        }
        frames.release(id);
        true
    }

    /// Releases every queued frame (the connection is gone).
    pub fn clear(&mut self, frames: &mut Frames) {
        for lane in std::iter::once(&mut self.ordered).chain(self.lanes.iter_mut()) {
            lane.drain(..).for_each(|id| frames.release(id));
        }
        self.live = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty() && self.live == 0
    }

    /// Gives back the memory of lanes a burst grew, once they are empty again (an idle
    /// connection keeps almost nothing).
    pub fn shrink_if_idle(&mut self) {
        if !self.is_empty() {
            return;
        }
        for lane in std::iter::once(&mut self.ordered).chain(self.lanes.iter_mut()) {
            if lane.capacity() > 16 {
                *lane = VecDeque::new();
            }
        }
    }

    /// Frames queued (the ordered lane included).
    pub fn len(&self) -> usize {
        self.ordered.len() + self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &'static str) -> Queued {
        Queued { frame: Bytes::from_static(text.as_bytes()), room: None, persistent: false }
    }

    /// Adds `item` to the table, pushes it, and lets go of the adder's hold (as the hub does).
    fn push(queue: &mut SendQueue, frames: &mut Frames, item: Queued, priority: Priority) -> Push {
        let id = frames.add(item);
        let pushed = queue.push(frames, id, priority);
        frames.release(id);
        pushed
    }

    fn push_ordered(queue: &mut SendQueue, frames: &mut Frames, item: Queued) {
        let id = frames.add(item);
        queue.push_ordered(frames, id);
        frames.release(id);
    }

    fn drain(queue: &mut SendQueue, frames: &mut Frames) -> Vec<String> {
        let mut order = Vec::new();
        let mut out = Vec::new();
        while queue.pop_into(frames, &mut out) {
            order.push(String::from_utf8(std::mem::take(&mut out)).unwrap());
        }
        order
    }

    #[test]
    fn higher_priorities_overtake_and_each_lane_is_fifo() {
        // Ordered lane first, then critical, high, normal, low; arrival order within each.
        let (mut queue, mut frames) = (SendQueue::new(10), Frames::default());
        push(&mut queue, &mut frames, item("l1"), Priority::Low);
        push(&mut queue, &mut frames, item("n1"), Priority::Normal);
        push(&mut queue, &mut frames, item("c1"), Priority::Critical);
        push(&mut queue, &mut frames, item("l2"), Priority::Low);
        push(&mut queue, &mut frames, item("c2"), Priority::Critical);
        push_ordered(&mut queue, &mut frames, item("r1"));
        push(&mut queue, &mut frames, item("h1"), Priority::High);
        push_ordered(&mut queue, &mut frames, item("r2"));
        assert_eq!(drain(&mut queue, &mut frames), ["r1", "r2", "c1", "c2", "h1", "n1", "l1", "l2"]);
        assert!(queue.is_empty());
        assert!(frames.is_empty(), "every frame is freed once popped: {frames:?}");
    }

    #[test]
    fn a_full_queue_drops_low_first_then_overflows() {
        // Capacity 2: a critical push evicts the oldest low; a low push is itself dropped;
        // with no low left, the push overflows.
        let (mut queue, mut frames) = (SendQueue::new(2), Frames::default());
        assert_eq!(push(&mut queue, &mut frames, item("l1"), Priority::Low), Push::Queued);
        assert_eq!(push(&mut queue, &mut frames, item("n1"), Priority::Normal), Push::Queued);
        assert_eq!(push(&mut queue, &mut frames, item("l2"), Priority::Low), Push::DroppedLow);
        assert_eq!(push(&mut queue, &mut frames, item("c1"), Priority::Critical), Push::DroppedLow);
        assert_eq!(push(&mut queue, &mut frames, item("c2"), Priority::Critical), Push::Overflow);
        assert_eq!(queue.len(), 2);
        assert_eq!(frames.len(), 2, "dropped and evicted frames are freed");
        assert_eq!(drain(&mut queue, &mut frames), ["c1", "n1"]);
        assert!(frames.is_empty());
    }

    #[test]
    fn persistent_events_are_never_dropped_silently() {
        // A persistent low frame is neither evicted nor dropped: the push overflows instead.
        let (mut queue, mut frames) = (SendQueue::new(1), Frames::default());
        let persistent = |text| Queued { persistent: true, ..item(text) };
        assert_eq!(push(&mut queue, &mut frames, persistent("l1"), Priority::Low), Push::Queued);
        assert_eq!(push(&mut queue, &mut frames, item("c1"), Priority::Critical), Push::Overflow);
        assert_eq!(push(&mut queue, &mut frames, persistent("l2"), Priority::Low), Push::Overflow);
        assert_eq!(drain(&mut queue, &mut frames), ["l1"]);
    }

    #[test]
    fn forgetting_a_room_removes_its_frames_only() {
        // An unsubscribe leaves other rooms' frames and replies in place.
        let (mut queue, mut frames) = (SendQueue::new(10), Frames::default());
        let in_room = |text, room: &str| Queued { room: Some(Arc::from(room)), ..item(text) };
        push(&mut queue, &mut frames, in_room("a1", "p:a"), Priority::Normal);
        push(&mut queue, &mut frames, in_room("b1", "p:b"), Priority::Normal);
        push_ordered(&mut queue, &mut frames, in_room("a0", "p:a"));
        push_ordered(&mut queue, &mut frames, item("reply"));
        queue.forget_room(&mut frames, "p:a");
        assert_eq!(frames.len(), 2);
        assert_eq!(drain(&mut queue, &mut frames), ["reply", "b1"]);
    }

    #[test]
    fn one_frame_is_stored_once_for_every_queue_and_freed_by_the_last() {
        // A broadcast's frame, held by three queues: popped from one, cleared from another, it
        // stays until the third lets go; its slot is then reused.
        let mut frames = Frames::default();
        let mut queues: Vec<SendQueue> = (0..3).map(|_| SendQueue::new(4)).collect();
        let id = frames.add(item("event"));
        for queue in &mut queues {
            assert_eq!(queue.push(&mut frames, id, Priority::Normal), Push::Queued);
        }
        frames.release(id);
        assert_eq!(frames.len(), 1);
        assert_eq!(drain(&mut queues[0], &mut frames), ["event"]);
        queues[1].clear(&mut frames);
        assert_eq!(frames.len(), 1);
        assert_eq!(drain(&mut queues[2], &mut frames), ["event"]);
        assert!(frames.is_empty());
        assert_eq!(frames.add(item("next")), id, "a freed slot is reused");
    }
}
