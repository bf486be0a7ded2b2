//! A connection's bounded send queue with four priorities.
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

/// A queued frame.
#[derive(Clone, Debug)]
pub struct Queued {
    pub frame: Bytes,
    /// The room of an event frame (`None` for replies, diffs and events to every connection).
    pub room: Option<Arc<str>>,
    /// A persistent event (never dropped silently).
    pub persistent: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct SendQueue {
    ordered: VecDeque<Queued>,
    lanes: [VecDeque<Queued>; 4],
    live: usize,
    capacity: usize,
}

impl SendQueue {
    pub fn new(capacity: usize) -> Self {
        SendQueue { ordered: VecDeque::new(), lanes: Default::default(), live: 0, capacity: capacity.max(1) }
    }

    /// Queues a live frame (see the module docs for a full queue).
    pub fn push(&mut self, item: Queued, priority: Priority) -> Push {
        let lane = priority as usize;
        if self.live < self.capacity {
            self.lanes[lane].push_back(item);
            self.live += 1;
            return Push::Queued;
        }
        if priority == Priority::Low && !item.persistent {
            return Push::DroppedLow;
        }
        let lows = &mut self.lanes[Priority::Low as usize];
        if priority != Priority::Low {
            if let Some(at) = lows.iter().position(|queued| !queued.persistent) {
                lows.remove(at);
                self.lanes[lane].push_back(item);
                return Push::DroppedLow;
            }
        }
        Push::Overflow
    }

    /// Queues a reply or a frame of a recovery replay (ahead of every live frame, in order).
    pub fn push_ordered(&mut self, item: Queued) {
        self.ordered.push_back(item);
    }

    /// Frames in the ordered lane.
    pub fn ordered_len(&self) -> usize {
        self.ordered.len()
    }

    /// Removes every queued frame of `room`.
    pub fn forget_room(&mut self, room: &str) {
        let of_room = |queued: &Queued| queued.room.as_deref() == Some(room);
        self.ordered.retain(|queued| !of_room(queued));
        for lane in &mut self.lanes {
            let before = lane.len();
            lane.retain(|queued| !of_room(queued));
            self.live -= before - lane.len();
        }
    }

    /// The next frame to send.
    pub fn pop(&mut self) -> Option<Bytes> {
        if let Some(queued) = self.ordered.pop_front() {
            return Some(queued.frame);
        }
        for lane in self.lanes.iter_mut().rev() {
            if let Some(queued) = lane.pop_front() {
                self.live -= 1;
                return Some(queued.frame);
            }
        }
        None
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

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn higher_priorities_overtake_and_each_lane_is_fifo() {
        // Ordered lane first, then critical, high, normal, low; arrival order within each.
        let mut queue = SendQueue::new(10);
        queue.push(item("l1"), Priority::Low);
        queue.push(item("n1"), Priority::Normal);
        queue.push(item("c1"), Priority::Critical);
        queue.push(item("l2"), Priority::Low);
        queue.push(item("c2"), Priority::Critical);
        queue.push_ordered(item("r1"));
        queue.push(item("h1"), Priority::High);
        queue.push_ordered(item("r2"));
        let order: Vec<Bytes> = std::iter::from_fn(|| queue.pop()).collect();
        let expected: Vec<Bytes> = ["r1", "r2", "c1", "c2", "h1", "n1", "l1", "l2"].into_iter().map(frame).collect();
        assert_eq!(order, expected);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_queue_drops_low_first_then_overflows() {
        // Capacity 2: a critical push evicts the oldest low; a low push is itself dropped;
        // with no low left, the push overflows.
        let mut queue = SendQueue::new(2);
        assert_eq!(queue.push(item("l1"), Priority::Low), Push::Queued);
        assert_eq!(queue.push(item("n1"), Priority::Normal), Push::Queued);
        assert_eq!(queue.push(item("l2"), Priority::Low), Push::DroppedLow);
        assert_eq!(queue.push(item("c1"), Priority::Critical), Push::DroppedLow);
        assert_eq!(queue.push(item("c2"), Priority::Critical), Push::Overflow);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop(), Some(frame("c1")));
        assert_eq!(queue.pop(), Some(frame("n1")));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn persistent_events_are_never_dropped_silently() {
        // A persistent low frame is neither evicted nor dropped: the push overflows instead.
        let mut queue = SendQueue::new(1);
        let persistent = |text| Queued { persistent: true, ..item(text) };
        assert_eq!(queue.push(persistent("l1"), Priority::Low), Push::Queued);
        assert_eq!(queue.push(item("c1"), Priority::Critical), Push::Overflow);
        assert_eq!(queue.push(persistent("l2"), Priority::Low), Push::Overflow);
        assert_eq!(queue.pop(), Some(frame("l1")));
    }

    #[test]
    fn forgetting_a_room_removes_its_frames_only() {
        // An unsubscribe leaves other rooms' frames and replies in place.
        let mut queue = SendQueue::new(10);
        let in_room = |text, room: &str| Queued { room: Some(Arc::from(room)), ..item(text) };
        queue.push(in_room("a1", "p:a"), Priority::Normal);
        queue.push(in_room("b1", "p:b"), Priority::Normal);
        queue.push_ordered(in_room("a0", "p:a"));
        queue.push_ordered(item("reply"));
        queue.forget_room("p:a");
        let order: Vec<Bytes> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, vec![frame("reply"), frame("b1")]);
    }
}
