//! A connection's bounded send queue with four priorities.
//!
//! Invariants: `live` is the number of frames in the four priority lanes and never exceeds
//! `capacity`; within a lane frames leave in arrival order; a higher lane always leaves before a
//! lower one; the replay lane (a recovery's history, in position order) leaves before every
//! lane, and is bounded by the history a subscription may replay, not by `capacity`.
//!
//! When the lanes are full: a new frame above `low` evicts the oldest queued `low` frame; a new
//! `low` frame is itself dropped; with no `low` frame to give up, the push overflows and the
//! caller closes the connection (1013, slow consumer).

use std::collections::VecDeque;

use bytes::Bytes;

use super::event::Priority;

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued, after dropping one `low` frame (or dropped the new `low` frame itself).
    DroppedLow,
    /// Full of frames above `low`: the connection should close.
    Overflow,
}

/// See the module docs.
#[derive(Debug)]
pub struct SendQueue {
    replay: VecDeque<Bytes>,
    lanes: [VecDeque<Bytes>; 4],
    live: usize,
    capacity: usize,
}

impl SendQueue {
    pub fn new(capacity: usize) -> Self {
        SendQueue { replay: VecDeque::new(), lanes: Default::default(), live: 0, capacity: capacity.max(1) }
    }

    /// Queues a live frame (see the module docs for a full queue).
    pub fn push(&mut self, frame: Bytes, priority: Priority) -> Push {
        let lane = priority as usize;
        if self.live < self.capacity {
            self.lanes[lane].push_back(frame);
            self.live += 1;
            return Push::Queued;
        }
        if priority == Priority::Low {
            return Push::DroppedLow;
        }
        if self.lanes[Priority::Low as usize].pop_front().is_some() {
            self.lanes[lane].push_back(frame);
            return Push::DroppedLow;
        }
        Push::Overflow
    }

    /// Queues a frame of a recovery replay (ahead of every live frame).
    pub fn push_replay(&mut self, frame: Bytes) {
        self.replay.push_back(frame);
    }

    /// The next frame to send.
    pub fn pop(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.replay.pop_front() {
            return Some(frame);
        }
        for lane in self.lanes.iter_mut().rev() {
            if let Some(frame) = lane.pop_front() {
                self.live -= 1;
                return Some(frame);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.replay.is_empty() && self.live == 0
    }

    /// Frames queued (replay included).
    pub fn len(&self) -> usize {
        self.replay.len() + self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn higher_priorities_overtake_and_each_lane_is_fifo() {
        // Replay first, then critical, high, normal, low; arrival order within each.
        let mut queue = SendQueue::new(10);
        queue.push(frame("l1"), Priority::Low);
        queue.push(frame("n1"), Priority::Normal);
        queue.push(frame("c1"), Priority::Critical);
        queue.push(frame("l2"), Priority::Low);
        queue.push(frame("c2"), Priority::Critical);
        queue.push_replay(frame("r1"));
        queue.push(frame("h1"), Priority::High);
        let order: Vec<Bytes> = std::iter::from_fn(|| queue.pop()).collect();
        let expected: Vec<Bytes> = ["r1", "c1", "c2", "h1", "n1", "l1", "l2"].into_iter().map(frame).collect();
        assert_eq!(order, expected);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_queue_drops_low_first_then_overflows() {
        // Capacity 2: a critical push evicts the oldest low; a low push is itself dropped;
        // with no low left, the push overflows.
        let mut queue = SendQueue::new(2);
        assert_eq!(queue.push(frame("l1"), Priority::Low), Push::Queued);
        assert_eq!(queue.push(frame("n1"), Priority::Normal), Push::Queued);
        assert_eq!(queue.push(frame("l2"), Priority::Low), Push::DroppedLow);
        assert_eq!(queue.push(frame("c1"), Priority::Critical), Push::DroppedLow);
        assert_eq!(queue.push(frame("c2"), Priority::Critical), Push::Overflow);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop(), Some(frame("c1")));
        assert_eq!(queue.pop(), Some(frame("n1")));
        assert_eq!(queue.pop(), None);
    }
}
