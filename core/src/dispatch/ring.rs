//! The ring: a preallocated, power-of-two array of slots shared by many producers and a fixed
//! set of consumers, after the LMAX Disruptor. `docs/dispatch.md` states the protocol and argues
//! its correctness; this is the summary.
//!
//! Sequences are `u64`s that never wrap in practice; sequence `s` lives in slot `s & mask`.
//! - `claimed`: the next sequence a producer may claim. Producers claim `n` sequences with a CAS
//!   from `c` to `c + n`, allowed only while `c + n <= slowest consumer + capacity`, so a claimed
//!   slot is never one a consumer still has to read.
//! - `published[slot]`: `s + 1` once the value for `s` is written (release); a consumer reads slot
//!   `s` only after seeing `s + 1` there (acquire). Producers publish out of order; consumers read
//!   in order, so they stop at the first unpublished sequence.
//! - each consumer's `sequence`: every sequence below it has been read by that consumer and will
//!   not be touched by it again (release). Producers gate on the minimum over all consumers
//!   (acquire); a consumer with dependencies reads only below the minimum of theirs.
//!
//! Nothing on the publish or consume path locks or allocates. The only lock is taken when a
//! consumer using [`WaitStrategy::Blocking`] actually sleeps, and by a producer waking it.

#![allow(unsafe_code)] // the slots: written by the claiming producer, read by consumers, per the protocol

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::sync::{fence, spin, yield_now, AtomicBool, AtomicU64, AtomicUsize, Ordering, UnsafeCell};

/// How a consumer waits for the next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin on the sequences: the lowest latency; burns a core while idle.
    BusySpin,
    /// Spin briefly, then `yield` between checks: low latency, a core shared with others.
    Yield,
    /// Spin briefly, then park until a producer (or the consumer this one depends on) wakes it:
    /// no CPU while idle; a wake-up costs a system call on both sides (tens of µs).
    #[default]
    Blocking,
}

/// Why a publish did not happen; the value is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishError<T> {
    /// No free slot (reject policy), or none freed before the timeout (block policy).
    Full(T),
    /// The ring was closed.
    Closed(T),
}

impl<T> PublishError<T> {
    /// The value that was not published.
    pub fn into_inner(self) -> T {
        match self {
            PublishError::Full(value) | PublishError::Closed(value) => value,
        }
    }
}

/// Why a claim failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    Full,
    Closed,
    /// More sequences than the ring has slots.
    TooMany,
}

/// A consumer's place in the topology, returned by [`RingBuilder::consumer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerId(usize);

struct ConsumerShared {
    /// Every sequence below this has been consumed.
    sequence: CachePadded<AtomicU64>,
    /// The thread to unpark when it sleeps (blocking strategy only).
    sleeper: Mutex<Option<std::thread::Thread>>,
}

struct Shared<T> {
    slots: Box<[UnsafeCell<Option<T>>]>,
    published: Box<[AtomicU64]>,
    mask: u64,
    capacity: u64,
    claimed: CachePadded<AtomicU64>,
    /// A lower bound of the slowest consumer's sequence, so producers rarely scan them all.
    gate_cache: CachePadded<AtomicU64>,
    consumers: Box<[ConsumerShared]>,
    /// Consumers currently about to park or parked.
    sleepers: CachePadded<AtomicUsize>,
    /// Whether any consumer may park, so producers skip the wake check otherwise.
    any_blocking: bool,
    closed: AtomicBool,
}

// SAFETY: slots are accessed per the sequence protocol (module docs): a slot is written only by
// the producer that claimed its sequence, and only after every consumer passed the previous use;
// it is read (shared) only after its publication. So values move between threads (`T: Send`)
// and are read from several consumer threads at once (`T: Sync`).
unsafe impl<T: Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

/// Describes the consumers before the ring exists.
pub struct RingBuilder {
    capacity: usize,
    consumers: Vec<(WaitStrategy, Vec<ConsumerId>)>,
    start: u64,
}

impl RingBuilder {
    /// A ring of `capacity` slots (a power of two, at least 2).
    pub fn new(capacity: usize) -> Self {
        RingBuilder { capacity, consumers: Vec::new(), start: 0 }
    }

    /// The first sequence (default 0); the event bus starts at the log's next position.
    pub fn starting_at(mut self, sequence: u64) -> Self {
        self.start = sequence;
        self
    }

    /// Adds a consumer that reads each sequence after every consumer in `after` has.
    pub fn consumer(&mut self, wait: WaitStrategy, after: &[ConsumerId]) -> ConsumerId {
        self.consumers.push((wait, after.to_vec()));
        ConsumerId(self.consumers.len() - 1)
    }

    /// Builds the ring: one producer handle (clone it per thread) and the consumers in id order.
    pub fn build<T: Send + Sync>(self) -> Result<(Producer<T>, Vec<Consumer<T>>), String> {
        if self.capacity < 2 || !self.capacity.is_power_of_two() {
            return Err(format!("ring capacity must be a power of two ≥ 2, got {}", self.capacity));
        }
        if self.consumers.is_empty() {
            return Err("a ring needs at least one consumer".into());
        }
        for (index, (_, after)) in self.consumers.iter().enumerate() {
            if after.iter().any(|dependency| dependency.0 >= index) {
                return Err(format!("consumer {index} may only depend on consumers added before it"));
            }
        }
        let shared = Arc::new(Shared {
            slots: (0..self.capacity).map(|_| UnsafeCell::new(None)).collect(),
            published: (0..self.capacity).map(|_| AtomicU64::new(0)).collect(),
            mask: self.capacity as u64 - 1,
            capacity: self.capacity as u64,
            claimed: CachePadded::new(AtomicU64::new(self.start)),
            gate_cache: CachePadded::new(AtomicU64::new(self.start)),
            consumers: self
                .consumers
                .iter()
                .map(|_| ConsumerShared {
                    sequence: CachePadded::new(AtomicU64::new(self.start)),
                    sleeper: Mutex::new(None),
                })
                .collect(),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            any_blocking: self.consumers.iter().any(|(wait, _)| *wait == WaitStrategy::Blocking),
            closed: AtomicBool::new(false),
        });
        let consumers = self
            .consumers
            .into_iter()
            .enumerate()
            .map(|(index, (wait, after))| Consumer {
                shared: Arc::clone(&shared),
                index,
                after: after.into_iter().map(|id| id.0).collect(),
                wait,
                next: self.start,
                readable_until: self.start,
            })
            .collect();
        Ok((Producer { shared }, consumers))
    }
}

impl<T> Shared<T> {
    fn slowest_consumer(&self) -> u64 {
        let slowest = self.consumers.iter().map(|c| c.sequence.load(Ordering::Acquire)).min();
        let slowest = slowest.unwrap_or_else(|| self.claimed.load(Ordering::Acquire));
        self.gate_cache.fetch_max(slowest, Ordering::AcqRel);
        slowest
    }

    /// Wakes parked consumers, if any may be parked. Called after every publish and every
    /// consumer advance when the ring has blocking consumers.
    fn wake_sleepers(&self) {
        if !self.any_blocking {
            return;
        }
        // Pairs with the fence in `Consumer::park`: either the sleeper sees our progress when it
        // re-checks, or we see it counted here.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            self.unpark_all();
        }
    }

    fn unpark_all(&self) {
        for consumer in self.consumers.iter() {
            if let Some(thread) = consumer.sleeper.lock().as_ref() {
                thread.unpark();
            }
        }
    }
}

/// The publishing side; cheap to clone, one per producing thread.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer { shared: Arc::clone(&self.shared) }
    }
}

/// `n` claimed sequences from `start`; each must be written with [`Claim::write`] and then the
/// whole claim published. Dropping a claim publishes the slots written so far and `None` for the
/// rest, so consumers never stall on an abandoned claim.
pub struct Claim<'a, T> {
    producer: &'a Producer<T>,
    start: u64,
    count: u64,
    written: u64,
}

impl<T> Claim<'_, T> {
    /// The first claimed sequence.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Writes the next claimed slot.
    pub fn write(&mut self, value: T) {
        assert!(self.written < self.count, "more writes than claimed sequences");
        let sequence = self.start + self.written;
        self.producer.store(sequence, Some(value));
        self.written += 1;
    }
}

impl<T> Drop for Claim<'_, T> {
    fn drop(&mut self) {
        let shared = &self.producer.shared;
        for sequence in self.start + self.written..self.start + self.count {
            self.producer.store(sequence, None);
        }
        for sequence in self.start..self.start + self.count {
            shared.published[(sequence & shared.mask) as usize].store(sequence + 1, Ordering::Release);
        }
        shared.wake_sleepers();
    }
}

impl<T> Producer<T> {
    /// Claims `count` consecutive sequences if that many slots are free now.
    pub fn try_claim(&self, count: usize) -> Result<Claim<'_, T>, ClaimError> {
        let shared = &self.shared;
        let count = count as u64;
        if count > shared.capacity || count == 0 {
            return Err(ClaimError::TooMany);
        }
        loop {
            if shared.closed.load(Ordering::Acquire) {
                return Err(ClaimError::Closed);
            }
            let current = shared.claimed.load(Ordering::Acquire);
            let wrap_point = (current + count).saturating_sub(shared.capacity);
            if wrap_point > shared.gate_cache.load(Ordering::Acquire) && wrap_point > shared.slowest_consumer() {
                return Err(ClaimError::Full);
            }
            if shared
                .claimed
                .compare_exchange_weak(current, current + count, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Claim { producer: self, start: current, count, written: 0 });
            }
        }
    }

    /// Claims `count` sequences, waiting up to `timeout` for free slots (spin, then yield, then
    /// short sleeps).
    pub fn claim_timeout(&self, count: usize, timeout: Duration) -> Result<Claim<'_, T>, ClaimError> {
        match self.try_claim(count) {
            Err(ClaimError::Full) => {}
            result => return result,
        }
        let deadline = Instant::now() + timeout;
        let mut attempts = 0u32;
        loop {
            match self.try_claim(count) {
                Err(ClaimError::Full) if Instant::now() < deadline => {
                    attempts += 1;
                    match attempts {
                        0..=64 => spin(),
                        65..=128 => yield_now(),
                        _ => std::thread::sleep(Duration::from_micros(50)),
                    }
                }
                result => return result,
            }
        }
    }

    /// Publishes one value if a slot is free; otherwise hands it back (`Full`).
    pub fn try_publish(&self, value: T) -> Result<u64, PublishError<T>> {
        match self.try_claim(1) {
            Ok(mut claim) => {
                claim.write(value);
                Ok(claim.start())
            }
            Err(ClaimError::Closed) => Err(PublishError::Closed(value)),
            Err(_) => Err(PublishError::Full(value)),
        }
    }

    /// Publishes one value, waiting up to `timeout` for a free slot.
    pub fn publish_timeout(&self, value: T, timeout: Duration) -> Result<u64, PublishError<T>> {
        match self.claim_timeout(1, timeout) {
            Ok(mut claim) => {
                claim.write(value);
                Ok(claim.start())
            }
            Err(ClaimError::Closed) => Err(PublishError::Closed(value)),
            Err(_) => Err(PublishError::Full(value)),
        }
    }

    /// Closes the ring: claims fail from now on; consumers drain what is published, then see
    /// the end.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        // Wake everyone so they notice.
        fence(Ordering::SeqCst);
        self.shared.unpark_all();
    }

    /// The next sequence to be claimed (everything below is claimed).
    pub fn claimed(&self) -> u64 {
        self.shared.claimed.load(Ordering::Acquire)
    }

    /// The slowest consumer's sequence (everything below is consumed by all).
    pub fn consumed(&self) -> u64 {
        self.shared.slowest_consumer()
    }

    fn store(&self, sequence: u64, value: Option<T>) {
        let shared = &self.shared;
        let slot = &shared.slots[(sequence & shared.mask) as usize];
        // SAFETY: this producer claimed `sequence`, so no other producer writes this slot, and the
        // claim was allowed only once every consumer's sequence passed `sequence - capacity`, the
        // slot's previous use; the slot is not published for `sequence` yet, so no consumer reads it.
        slot.with_mut(|pointer| unsafe { *pointer = value });
    }
}

/// The consuming side of one consumer; move it to the thread that runs the consumer.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    index: usize,
    after: Vec<usize>,
    wait: WaitStrategy,
    next: u64,
    /// The end of the last range [`Consumer::readable`] returned: sequences below it are readable.
    readable_until: u64,
}

/// What a wait for events ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// This many events were handled.
    Handled(usize),
    /// The timeout passed with nothing to read.
    TimedOut,
    /// The ring is closed and everything published was read.
    Closed,
}

impl<T> Consumer<T> {
    /// The next sequence this consumer will read.
    pub fn sequence(&self) -> u64 {
        self.next
    }

    /// The end (exclusive) of what this consumer may read now, at most `max` ahead.
    fn readable_end(&self, max: u64) -> u64 {
        let shared = &self.shared;
        let limit = self.next.saturating_add(max);
        if self.after.is_empty() {
            // The published flags alone say what is readable (a flag from an earlier lap never
            // equals `s + 1`), so the consumer never touches the producers' `claimed` line.
            let mut end = self.next;
            while end < limit && shared.published[(end & shared.mask) as usize].load(Ordering::Acquire) == end + 1 {
                end += 1;
            }
            end
        } else {
            let dependencies = self.after.iter().map(|&i| shared.consumers[i].sequence.load(Ordering::Acquire));
            dependencies.min().unwrap_or(self.next).min(limit)
        }
    }

    /// Hands up to `max` readable events to `handle` (sequence, value; `None` for an abandoned
    /// claim), without waiting, then releases them. Returns how many sequences it consumed.
    pub fn poll(&mut self, max: usize, mut handle: impl FnMut(u64, Option<&T>)) -> usize {
        let range = self.readable(max);
        for sequence in range.clone() {
            self.with_value(sequence, |value| handle(sequence, value));
        }
        self.release(range.end);
        (range.end - range.start) as usize
    }

    /// The sequences readable now (at most `max`), without consuming them: read them with
    /// [`Consumer::with_value`], then [`Consumer::release`] them. Until released, producers
    /// cannot reuse their slots and dependent consumers cannot see them.
    pub fn readable(&mut self, max: usize) -> std::ops::Range<u64> {
        let end = self.readable_end(max as u64);
        self.readable_until = self.readable_until.max(end);
        self.next..end
    }

    /// Calls `f` with the value at `sequence`, which must lie in a range [`Consumer::readable`]
    /// returned and not yet released (`None` for an abandoned claim).
    pub fn with_value<R>(&self, sequence: u64, f: impl FnOnce(Option<&T>) -> R) -> R {
        assert!(
            sequence >= self.next && sequence < self.readable_until,
            "sequence {sequence} is not in the readable range {}..{}",
            self.next,
            self.readable_until
        );
        let shared = &self.shared;
        let slot = &shared.slots[(sequence & shared.mask) as usize];
        // SAFETY: `sequence` was readable (published, or consumed by every dependency, which
        // implies it), and no producer can claim it again before this consumer releases it.
        slot.with(|pointer| f(unsafe { (*pointer).as_ref() }))
    }

    /// Marks every sequence below `end` consumed by this consumer.
    pub fn release(&mut self, end: u64) {
        if end <= self.next {
            return;
        }
        self.next = end;
        let shared = &self.shared;
        shared.consumers[self.index].sequence.store(end, Ordering::Release);
        shared.wake_sleepers();
    }

    /// Waits (per the strategy) until something is readable; returns the readable range (at most
    /// `max` long), unreleased, or why it stopped.
    pub fn wait_readable(&mut self, max: usize, timeout: Duration) -> Result<std::ops::Range<u64>, Wait> {
        // The clock is read only once there is something to wait for.
        let mut deadline = None;
        let mut idle = 0u32;
        loop {
            let range = self.readable(max);
            if !range.is_empty() {
                return Ok(range);
            }
            if self.shared.closed.load(Ordering::Acquire) && self.drained() {
                return Err(Wait::Closed);
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            idle = idle.saturating_add(1);
            if idle.is_multiple_of(64) && Instant::now() >= deadline {
                return Err(Wait::TimedOut);
            }
            match (self.wait, idle) {
                (WaitStrategy::BusySpin, _) | (_, 0..=100) => spin(),
                (WaitStrategy::Yield, _) | (WaitStrategy::Blocking, 101..=120) => yield_now(),
                (WaitStrategy::Blocking, _) => self.park(deadline),
            }
        }
    }

    /// Waits (per the strategy) until events are readable, then handles up to `max` of them.
    pub fn wait(&mut self, max: usize, timeout: Duration, mut handle: impl FnMut(u64, Option<&T>)) -> Wait {
        match self.wait_readable(max, timeout) {
            Ok(range) => {
                for sequence in range.clone() {
                    self.with_value(sequence, |value| handle(sequence, value));
                }
                self.release(range.end);
                Wait::Handled((range.end - range.start) as usize)
            }
            Err(stopped) => stopped,
        }
    }

    /// Whether every claimed sequence has been read by this consumer.
    fn drained(&self) -> bool {
        self.readable_end(u64::MAX) == self.next && self.next >= self.shared.claimed.load(Ordering::Acquire)
    }

    fn park(&self, deadline: Instant) {
        let shared = &self.shared;
        *shared.consumers[self.index].sleeper.lock() = Some(std::thread::current());
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `wake_sleepers` (see there).
        fence(Ordering::SeqCst);
        if self.readable_end(1) == self.next && !shared.closed.load(Ordering::Acquire) {
            let now = Instant::now();
            // Bounded even without a wake-up, so a lost one costs latency, never liveness.
            std::thread::park_timeout(deadline.saturating_duration_since(now).min(Duration::from_millis(10)));
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_producer_one_consumer_in_order_across_wrap_around() {
        // Every value arrives once, in order, through many laps of a small ring.
        let mut builder = RingBuilder::new(4);
        builder.consumer(WaitStrategy::Yield, &[]);
        let (producer, mut consumers) = builder.build::<u64>().unwrap();
        let mut consumer = consumers.remove(0);
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 1000 {
                consumer.wait(3, Duration::from_secs(5), |sequence, value| {
                    assert_eq!(Some(&sequence), value);
                    seen.push(sequence);
                });
            }
            seen
        });
        for value in 0..1000u64 {
            producer.publish_timeout(value, Duration::from_secs(5)).unwrap();
        }
        assert_eq!(reader.join().unwrap(), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_ring_hands_the_value_back() {
        // Under the reject policy a full ring returns the value; consuming frees a slot.
        let mut builder = RingBuilder::new(2);
        builder.consumer(WaitStrategy::BusySpin, &[]);
        let (producer, mut consumers) = builder.build::<String>().unwrap();
        producer.try_publish("a".into()).unwrap();
        producer.try_publish("b".into()).unwrap();
        assert_eq!(producer.try_publish("c".into()), Err(PublishError::Full("c".to_string())));
        let timeout = producer.publish_timeout("d".into(), Duration::from_millis(5));
        assert_eq!(timeout, Err(PublishError::Full("d".to_string())));
        let mut got = Vec::new();
        consumers[0].poll(1, |_, value| got.push(value.cloned()));
        assert_eq!(got, vec![Some("a".to_string())]);
        assert_eq!(producer.try_publish("c".into()), Ok(2));
    }

    #[test]
    fn dependent_consumers_run_after_their_dependencies() {
        // A consumer placed after another never reads a sequence the first has not finished.
        let mut builder = RingBuilder::new(8);
        let first = builder.consumer(WaitStrategy::BusySpin, &[]);
        builder.consumer(WaitStrategy::BusySpin, &[first]);
        let (producer, mut consumers) = builder.build::<u64>().unwrap();
        let mut second = consumers.pop().unwrap();
        let mut first = consumers.pop().unwrap();
        for value in 0..5 {
            producer.try_publish(value).unwrap();
        }
        assert_eq!(second.poll(10, |_, _| ()), 0, "the dependency has read nothing yet");
        assert_eq!(first.poll(3, |_, _| ()), 3);
        assert_eq!(second.poll(10, |_, _| ()), 3);
        assert_eq!(producer.consumed(), 3);
    }

    #[test]
    fn an_abandoned_claim_is_published_as_empty() {
        // Dropping a claim without writing publishes `None`, so consumers move on.
        let mut builder = RingBuilder::new(8);
        builder.consumer(WaitStrategy::BusySpin, &[]);
        let (producer, mut consumers) = builder.build::<u64>().unwrap();
        {
            let mut claim = producer.try_claim(3).unwrap();
            claim.write(7);
        }
        let mut got = Vec::new();
        consumers[0].poll(10, |sequence, value| got.push((sequence, value.copied())));
        assert_eq!(got, vec![(0, Some(7)), (1, None), (2, None)]);
        assert_eq!(producer.try_claim(9).err(), Some(ClaimError::TooMany));
    }

    #[test]
    fn closing_drains_then_ends_and_blocking_consumers_wake() {
        // A parked consumer is woken by a publish and by close, and sees Closed once drained.
        let mut builder = RingBuilder::new(8);
        builder.consumer(WaitStrategy::Blocking, &[]);
        let (producer, mut consumers) = builder.build::<u64>().unwrap();
        let mut consumer = consumers.remove(0);
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match consumer.wait(8, Duration::from_secs(10), |_, value| seen.push(*value.unwrap())) {
                    Wait::Closed => return seen,
                    Wait::TimedOut => panic!("a blocking consumer was never woken"),
                    Wait::Handled(_) => {}
                }
            }
        });
        std::thread::sleep(Duration::from_millis(30));
        producer.try_publish(1).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        producer.try_publish(2).unwrap();
        producer.close();
        assert_eq!(reader.join().unwrap(), vec![1, 2]);
        assert_eq!(producer.try_publish(3), Err(PublishError::Closed(3)));
    }

    #[test]
    fn values_are_dropped_exactly_once() {
        // Overwritten and remaining values are dropped, nothing leaks or double-drops.
        let counter = Arc::new(());
        {
            let mut builder = RingBuilder::new(4);
            builder.consumer(WaitStrategy::BusySpin, &[]);
            let (producer, mut consumers) = builder.build::<Arc<()>>().unwrap();
            for _ in 0..10 {
                producer.try_publish(Arc::clone(&counter)).unwrap();
                consumers[0].poll(1, |_, _| ());
            }
            assert!(Arc::strong_count(&counter) <= 5);
        }
        assert_eq!(Arc::strong_count(&counter), 1);
    }

    #[test]
    fn bad_topologies_are_refused() {
        // Capacity and dependency rules are checked at build time.
        assert!(RingBuilder::new(3).build::<u64>().is_err());
        assert!(RingBuilder::new(4).build::<u64>().is_err(), "no consumer");
        let mut builder = RingBuilder::new(4);
        builder.consumer(WaitStrategy::BusySpin, &[ConsumerId(1)]);
        assert!(builder.build::<u64>().is_err());
    }
}

/// Model checks of the sequence protocol: run with
/// `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p herald-core --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    fn publish(producer: &Producer<u64>, mut value: u64) -> u64 {
        loop {
            match producer.try_publish(value) {
                Ok(sequence) => return sequence,
                Err(PublishError::Full(back)) => {
                    value = back;
                    loom::thread::yield_now();
                }
                Err(PublishError::Closed(_)) => unreachable!("never closed here"),
            }
        }
    }

    fn drain(consumer: &mut Consumer<u64>, count: usize) -> Vec<(u64, u64)> {
        let mut seen = Vec::new();
        while seen.len() < count {
            if consumer.poll(count, |sequence, value| seen.push((sequence, *value.unwrap()))) == 0 {
                loom::thread::yield_now();
            }
        }
        seen
    }

    #[test]
    fn two_producers_one_consumer_with_wrap_around() {
        // Claims never overlap, every value is read once, in sequence order, through a 2-slot ring.
        loom::model(|| {
            let mut builder = RingBuilder::new(2);
            builder.consumer(WaitStrategy::BusySpin, &[]);
            let (producer, mut consumers) = builder.build::<u64>().unwrap();
            let mut consumer = consumers.remove(0);
            let reader = loom::thread::spawn(move || drain(&mut consumer, 3));
            let other = producer.clone();
            let second = loom::thread::spawn(move || {
                publish(&other, 10);
                publish(&other, 11);
            });
            publish(&producer, 20);
            second.join().unwrap();
            let seen = reader.join().unwrap();
            let sequences: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
            assert_eq!(sequences, vec![0, 1, 2]);
            let mut values: Vec<u64> = seen.iter().map(|(_, v)| *v).collect();
            let tens: Vec<u64> = values.iter().copied().filter(|v| *v < 20).collect();
            assert_eq!(tens, vec![10, 11], "one producer's values keep their order");
            values.sort_unstable();
            assert_eq!(values, vec![10, 11, 20]);
        });
    }

    #[test]
    fn a_pipeline_consumer_never_overtakes_its_dependency() {
        // The second stage reads only what the first finished, and sees the values it wrote.
        loom::model(|| {
            let mut builder = RingBuilder::new(2);
            let first = builder.consumer(WaitStrategy::BusySpin, &[]);
            builder.consumer(WaitStrategy::BusySpin, &[first]);
            let (producer, mut consumers) = builder.build::<u64>().unwrap();
            let mut second = consumers.pop().unwrap();
            let mut first = consumers.pop().unwrap();
            let stage = loom::thread::spawn(move || drain(&mut first, 2));
            publish(&producer, 7);
            publish(&producer, 8);
            let seen = drain(&mut second, 2);
            assert_eq!(seen, vec![(0, 7), (1, 8)]);
            assert_eq!(stage.join().unwrap(), vec![(0, 7), (1, 8)]);
            assert_eq!(producer.consumed(), 2);
        });
    }
}
