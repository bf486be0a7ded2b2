//! The ring: a preallocated, power-of-two array of slots shared by many producers (or one, on a
//! solo ring) and a fixed set of consumers, after the LMAX Disruptor. `docs/dispatch.md` states the protocol and argues
//! its correctness; this is the summary.
//!
//! Sequences are `u64`s that never wrap in practice; sequence `s` lives in slot `s & mask`.
//! - `claimed`: the next sequence a producer may claim. Producers claim `n` sequences with a CAS
//!   from `c` to `c + n`, allowed only while `c + n <= slowest consumer + capacity`, so a claimed
//!   slot is never one a consumer still has to read.
//! - `published[slot]`: `s + 1` once the value for `s` is written (release), with the [`EMPTY`]
//!   bit set when the claim was abandoned before writing it; a consumer reads slot `s` only after
//!   seeing `s + 1` there (acquire). Producers publish out of order; consumers read in order, so
//!   they stop at the first unpublished sequence.
//! - each consumer's `sequence`: every sequence below it has been read by that consumer and will
//!   not be touched by it again (release). Producers gate on the minimum over all consumers
//!   (acquire); a consumer with dependencies reads only below the minimum of theirs.
//!
//! A ring built with [`RingBuilder::build_solo`] has exactly one producer ([`SoloProducer`]): it
//! claims without a CAS, gates on a private cache of the slowest consumer, and publishes by
//! moving one `cursor` (release) instead of per-slot flags; consumers read up to the cursor
//! (acquire). An abandoned solo claim gives its unwritten sequences back instead of publishing
//! them empty. Everything else is the same protocol.
//!
//! Slots are preallocated with `T::default()` and overwritten in place, as in the Disruptor: a
//! value stays in its slot until a later lap overwrites it or the ring is dropped.
//!
//! Nothing on the publish or consume path locks or allocates. The only lock is taken when a
//! consumer using [`WaitStrategy::Blocking`] actually sleeps, and by a producer waking it.

#![allow(unsafe_code)] // the slots: written by the claiming producer, read by consumers, per the protocol

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::slots::Slots;
use super::sync::{fence, spin, yield_now, AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
    slots: Slots<T>,
    /// Per-slot publication flags (multi-producer rings; empty for a solo ring).
    published: Box<[AtomicU64]>,
    /// Solo rings: every sequence below this is published.
    cursor: CachePadded<AtomicU64>,
    solo: bool,
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

/// The bit of a `published` flag that marks an abandoned (never written) sequence.
const EMPTY: u64 = 1 << 63;

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
    pub fn build<T: Send + Sync + Default>(self) -> Result<(Producer<T>, Vec<Consumer<T>>), String> {
        let (shared, consumers) = self.build_shared(false)?;
        Ok((Producer { shared }, consumers))
    }

    /// Builds a ring with exactly one producer, which is cheaper per publish than the
    /// multi-producer claim. Dropping the producer closes the ring.
    pub fn build_solo<T: Send + Sync + Default>(self) -> Result<(SoloProducer<T>, Vec<Consumer<T>>), String> {
        let start = self.start;
        let (shared, consumers) = self.build_shared(true)?;
        let capacity = shared.capacity;
        Ok((SoloProducer { shared, next: start, free_until: start + capacity, closed: false }, consumers))
    }

    #[allow(clippy::type_complexity)]
    fn build_shared<T: Send + Sync + Default>(self, solo: bool) -> Result<(Arc<Shared<T>>, Vec<Consumer<T>>), String> {
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
            slots: Slots::new(self.capacity),
            published: (0..if solo { 0 } else { self.capacity }).map(|_| AtomicU64::new(0)).collect(),
            cursor: CachePadded::new(AtomicU64::new(self.start)),
            solo,
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
        Ok((shared, consumers))
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
    #[inline]
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

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wake everyone so they notice.
        fence(Ordering::SeqCst);
        self.unpark_all();
    }

    /// Lets `write` change the slot of `sequence` in place (it holds the value of an earlier lap,
    /// or `T::default()`); only the holder of a claim covering `sequence` (or the solo producer,
    /// for the sequence it checked) calls this.
    #[inline]
    fn write_in_place(&self, sequence: u64, write: impl FnOnce(&mut T)) {
        let slot = &self.slots[(sequence & self.mask) as usize];
        // SAFETY: the caller's claim covers `sequence`, so no other producer writes this slot, and
        // the claim (or solo check) was allowed only once every consumer's sequence passed `sequence - capacity`,
        // the slot's previous use; the slot is not published for `sequence` yet, so no consumer
        // reads it.
        slot.with_mut(|pointer| write(unsafe { &mut *pointer }));
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

/// `n` claimed sequences from `start`, written in order with [`Claim::write`] and published
/// when the claim is dropped. Unwritten sequences of a multi-producer claim are published empty
/// (consumers see `None`), so consumers never stall on an abandoned claim; a solo claim gives
/// them back to its producer instead.
pub struct Claim<'a, T> {
    shared: &'a Shared<T>,
    start: u64,
    count: u64,
    written: u64,
    /// A solo claim: its producer's next sequence, set to the end of what was written.
    solo_next: Option<&'a mut u64>,
}

impl<T> Claim<'_, T> {
    /// The first claimed sequence.
    #[inline]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Writes the next claimed slot.
    #[inline]
    pub fn write(&mut self, value: T) {
        self.write_with(|slot| *slot = value);
    }

    /// Writes the next claimed slot in place: `write` gets the slot's current value (an earlier
    /// lap's event, or `T::default()`) to overwrite or reuse (a buffer it holds, say). If
    /// `write` panics, the sequence counts as unwritten.
    #[inline]
    pub fn write_with(&mut self, write: impl FnOnce(&mut T)) {
        assert!(self.written < self.count, "more writes than claimed sequences");
        self.shared.write_in_place(self.start + self.written, write);
        self.written += 1;
    }
}

impl<T> Drop for Claim<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let shared = self.shared;
        let written_end = self.start + self.written;
        if let Some(next) = self.solo_next.take() {
            *next = written_end;
            shared.cursor.store(written_end, Ordering::Release);
        } else {
            for sequence in self.start..self.start + self.count {
                let empty = if sequence < written_end { 0 } else { EMPTY };
                shared.published[(sequence & shared.mask) as usize].store((sequence + 1) | empty, Ordering::Release);
            }
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
                return Ok(Claim { shared, start: current, count, written: 0, solo_next: None });
            }
        }
    }

    /// Claims `count` sequences, waiting up to `timeout` for free slots (spin, then yield, then
    /// short sleeps).
    pub fn claim_timeout(&self, count: usize, timeout: Duration) -> Result<Claim<'_, T>, ClaimError> {
        retry_while_full(timeout, || self.try_claim(count))
    }

    /// Publishes one value if a slot is free; otherwise hands it back (`Full`).
    pub fn try_publish(&self, value: T) -> Result<u64, PublishError<T>> {
        publish_into(self.try_claim(1), value)
    }

    /// Publishes one event that `write` makes in place in a free slot (see
    /// [`Claim::write_with`]); when there is none, `write` is not called. Building the event in
    /// the slot saves moving it, which for a large `T` is most of a publish.
    #[inline]
    pub fn try_publish_with(&self, write: impl FnOnce(&mut T)) -> Result<u64, ClaimError> {
        let mut claim = self.try_claim(1)?;
        claim.write_with(write);
        Ok(claim.start())
    }

    /// Publishes one value, waiting up to `timeout` for a free slot.
    pub fn publish_timeout(&self, value: T, timeout: Duration) -> Result<u64, PublishError<T>> {
        publish_into(self.claim_timeout(1, timeout), value)
    }

    /// Closes the ring: claims fail from now on; consumers drain what is published, then see
    /// the end.
    pub fn close(&self) {
        self.shared.close();
    }

    /// The next sequence to be claimed (everything below is claimed).
    pub fn claimed(&self) -> u64 {
        self.shared.claimed.load(Ordering::Acquire)
    }

    /// The slowest consumer's sequence (everything below is consumed by all).
    pub fn consumed(&self) -> u64 {
        self.shared.slowest_consumer()
    }
}

/// Retries `attempt` while the ring is full, up to `timeout`: spin, then yield, then short sleeps.
fn retry_while_full<R>(timeout: Duration, mut attempt: impl FnMut() -> Result<R, ClaimError>) -> Result<R, ClaimError> {
    match attempt() {
        Err(ClaimError::Full) => {}
        result => return result,
    }
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u32;
    loop {
        match attempt() {
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

/// Writes `value` into a one-slot claim, or hands it back with why there was none.
#[inline]
fn publish_into<T>(claimed: Result<Claim<'_, T>, ClaimError>, value: T) -> Result<u64, PublishError<T>> {
    match claimed {
        Ok(mut claim) => {
            claim.write(value);
            Ok(claim.start())
        }
        Err(ClaimError::Closed) => Err(PublishError::Closed(value)),
        Err(_) => Err(PublishError::Full(value)),
    }
}

/// The only producer of a ring built with [`RingBuilder::build_solo`]: claims are a plain
/// increment of its own counter, checked against a private cache of the slowest consumer.
/// Dropping it closes the ring. Aligned to its own cache lines (its counters change on every
/// publish), wherever the caller keeps it.
#[repr(align(128))]
pub struct SoloProducer<T> {
    shared: Arc<Shared<T>>,
    /// The next sequence to claim.
    next: u64,
    /// Sequences below this were free when the consumers were last looked at (the slowest
    /// consumer's sequence then, plus the capacity).
    free_until: u64,
    /// Only this producer closes a solo ring, so it needs no atomic to know.
    closed: bool,
}

impl<T> SoloProducer<T> {
    /// Whether `count` sequences can be claimed now; refreshes the gate when they seem not to be.
    #[inline]
    fn check(&mut self, count: u64) -> Result<(), ClaimError> {
        if self.next + count <= self.free_until && count != 0 && !self.closed {
            return Ok(());
        }
        let shared = &self.shared;
        if count > shared.capacity || count == 0 {
            return Err(ClaimError::TooMany);
        }
        if self.closed {
            return Err(ClaimError::Closed);
        }
        self.free_until = shared.slowest_consumer() + shared.capacity;
        if self.next + count > self.free_until {
            return Err(ClaimError::Full);
        }
        Ok(())
    }

    /// Claims sequences [`SoloProducer::check`] allowed.
    #[inline]
    fn claim_checked(&mut self, count: u64) -> Claim<'_, T> {
        // `claimed` stays untouched: a claim borrows the producer mutably, so the ring cannot be
        // closed (by `close` or drop) while one is in flight, and consumers drain to the cursor.
        Claim { shared: &self.shared, start: self.next, count, written: 0, solo_next: Some(&mut self.next) }
    }

    /// Claims `count` consecutive sequences if that many slots are free now.
    #[inline]
    pub fn try_claim(&mut self, count: usize) -> Result<Claim<'_, T>, ClaimError> {
        self.check(count as u64)?;
        Ok(self.claim_checked(count as u64))
    }

    /// Claims `count` sequences, waiting up to `timeout` for free slots.
    pub fn claim_timeout(&mut self, count: usize, timeout: Duration) -> Result<Claim<'_, T>, ClaimError> {
        retry_while_full(timeout, || self.check(count as u64))?;
        Ok(self.claim_checked(count as u64))
    }

    /// Publishes one value if a slot is free; otherwise hands it back (`Full`).
    #[inline]
    pub fn try_publish(&mut self, value: T) -> Result<u64, PublishError<T>> {
        if let Err(error) = self.check(1) {
            return Err(if error == ClaimError::Closed {
                PublishError::Closed(value)
            } else {
                PublishError::Full(value)
            });
        }
        Ok(self.publish_checked(|slot| *slot = value))
    }

    /// Publishes one event that `write` makes in place in a free slot (see
    /// [`Claim::write_with`]); when there is none, `write` is not called. Building the event in
    /// the slot saves moving it (a value handed back on `Full` lives on the stack, and reading
    /// it back waited for the slot stores before it: 2.6× slower with 64-byte events here).
    #[inline]
    pub fn try_publish_with(&mut self, write: impl FnOnce(&mut T)) -> Result<u64, ClaimError> {
        self.check(1)?;
        Ok(self.publish_checked(write))
    }

    /// Publishes one value, waiting up to `timeout` for a free slot.
    pub fn publish_timeout(&mut self, value: T, timeout: Duration) -> Result<u64, PublishError<T>> {
        match retry_while_full(timeout, || self.check(1)) {
            Ok(()) => Ok(self.publish_checked(|slot| *slot = value)),
            Err(ClaimError::Closed) => Err(PublishError::Closed(value)),
            Err(_) => Err(PublishError::Full(value)),
        }
    }

    /// Writes (in place) and publishes one sequence [`SoloProducer::check`] allowed: the whole
    /// claim protocol for one slot, without a [`Claim`].
    #[inline]
    fn publish_checked(&mut self, write: impl FnOnce(&mut T)) -> u64 {
        let sequence = self.next;
        let shared = &*self.shared;
        shared.write_in_place(sequence, write);
        self.next = sequence + 1;
        shared.cursor.store(self.next, Ordering::Release);
        shared.wake_sleepers();
        sequence
    }

    /// Closes the ring (as dropping the producer does): claims fail from now on; consumers
    /// drain what is published, then see the end.
    pub fn close(&mut self) {
        self.closed = true;
        self.shared.close();
    }

    /// The next sequence to be claimed.
    pub fn claimed(&self) -> u64 {
        self.next
    }

    /// The slowest consumer's sequence.
    pub fn consumed(&self) -> u64 {
        self.shared.slowest_consumer()
    }
}

impl<T> Drop for SoloProducer<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The consuming side of one consumer; move it to the thread that runs the consumer. Aligned to
/// its own cache lines (its counters change on every batch), wherever the caller keeps it.
#[repr(align(128))]
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
    #[inline]
    fn readable_end(&self, max: u64) -> u64 {
        let shared = &self.shared;
        let limit = self.next.saturating_add(max);
        if self.after.is_empty() && shared.solo {
            shared.cursor.load(Ordering::Acquire).min(limit)
        } else if self.after.is_empty() {
            // The published flags alone say what is readable (a flag from an earlier lap never
            // equals `s + 1`), so the consumer never touches the producers' `claimed` line.
            let mut end = self.next;
            while end < limit
                && shared.published[(end & shared.mask) as usize].load(Ordering::Acquire) & !EMPTY == end + 1
            {
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
        self.consume(range, &mut handle)
    }

    /// Hands every event of `range`, just returned by [`Consumer::readable`], to `handle`, then
    /// releases them.
    #[inline]
    fn consume(&mut self, range: std::ops::Range<u64>, mut handle: impl FnMut(u64, Option<&T>)) -> usize {
        for sequence in range.clone() {
            // `range` is readable and not released.
            self.value_at(sequence, |value| handle(sequence, value));
        }
        self.release(range.end);
        (range.end - range.start) as usize
    }

    /// The sequences readable now (at most `max`), without consuming them: read them with
    /// [`Consumer::with_value`], then [`Consumer::release`] them. Until released, producers
    /// cannot reuse their slots and dependent consumers cannot see them.
    #[inline]
    pub fn readable(&mut self, max: usize) -> std::ops::Range<u64> {
        let end = self.readable_end(max as u64);
        self.readable_until = self.readable_until.max(end);
        self.next..end
    }

    /// Calls `f` with the value at `sequence`, which must lie in a range [`Consumer::readable`]
    /// returned and not yet released (`None` for an abandoned claim).
    #[inline]
    pub fn with_value<R>(&self, sequence: u64, f: impl FnOnce(Option<&T>) -> R) -> R {
        assert!(
            sequence >= self.next && sequence < self.readable_until,
            "sequence {sequence} is not in the readable range {}..{}",
            self.next,
            self.readable_until
        );
        self.value_at(sequence, f)
    }

    /// The value at a readable, unreleased `sequence` (`None` for an abandoned claim).
    #[inline]
    fn value_at<R>(&self, sequence: u64, f: impl FnOnce(Option<&T>) -> R) -> R {
        let shared = &self.shared;
        let index = (sequence & shared.mask) as usize;
        // Already acquired by this consumer's scan or through its dependencies' sequences.
        if !shared.solo && shared.published[index].load(Ordering::Acquire) & EMPTY != 0 {
            return f(None);
        }
        // SAFETY: `sequence` was readable (published, or consumed by every dependency, which
        // implies it), and no producer can claim it again before this consumer releases it.
        shared.slots[index].with(|pointer| f(Some(unsafe { &*pointer })))
    }

    /// Marks every sequence below `end` consumed by this consumer (at most up to the end of the
    /// last range [`Consumer::readable`] returned).
    #[inline]
    pub fn release(&mut self, end: u64) {
        // Never past what was readable: dependents and producers trust this sequence.
        let end = end.min(self.readable_until);
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
    #[inline]
    pub fn wait_readable(&mut self, max: usize, timeout: Duration) -> Result<std::ops::Range<u64>, Wait> {
        // The clock is read only after a while of waiting, and then every 64 checks.
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
            idle = idle.saturating_add(1);
            if idle.is_multiple_of(64) {
                let now = Instant::now();
                if now >= *deadline.get_or_insert(now + timeout) {
                    return Err(Wait::TimedOut);
                }
            }
            match (self.wait, idle) {
                (WaitStrategy::BusySpin, _) | (_, 0..=100) => spin(),
                (WaitStrategy::Yield, _) | (WaitStrategy::Blocking, 101..=120) => yield_now(),
                (WaitStrategy::Blocking, _) => self.park(deadline.unwrap_or_else(|| Instant::now() + timeout)),
            }
        }
    }

    /// Waits (per the strategy) until events are readable, then handles up to `max` of them.
    #[inline]
    pub fn wait(&mut self, max: usize, timeout: Duration, mut handle: impl FnMut(u64, Option<&T>)) -> Wait {
        match self.wait_readable(max, timeout) {
            Ok(range) => Wait::Handled(self.consume(range, &mut handle)),
            Err(stopped) => stopped,
        }
    }

    /// Whether every claimed sequence has been read by this consumer.
    fn drained(&self) -> bool {
        let shared = &self.shared;
        let last = if shared.solo { &shared.cursor } else { &shared.claimed };
        self.readable_end(u64::MAX) == self.next && self.next >= last.load(Ordering::Acquire)
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
    fn a_solo_ring_delivers_in_order_across_wrap_around_and_closes_when_dropped() {
        // One producer publishing through the cursor: every value once, in order, through many
        // laps; dropping the producer ends the consumer once it drained.
        let mut builder = RingBuilder::new(4);
        builder.consumer(WaitStrategy::Blocking, &[]);
        let (mut producer, mut consumers) = builder.build_solo::<u64>().unwrap();
        let mut consumer = consumers.remove(0);
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let waited = consumer.wait(3, Duration::from_secs(5), |sequence, value| {
                    assert_eq!(Some(&sequence), value);
                    seen.push(sequence);
                });
                match waited {
                    Wait::Closed => return seen,
                    Wait::TimedOut => panic!("the consumer was never woken"),
                    Wait::Handled(_) => {}
                }
            }
        });
        for value in 0..1000u64 {
            assert_eq!(producer.publish_timeout(value, Duration::from_secs(5)), Ok(value));
        }
        drop(producer);
        assert_eq!(reader.join().unwrap(), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_solo_ring_hands_back_when_full_and_gives_back_abandoned_claims() {
        // A solo claim publishes what was written and gives the rest back.
        let mut builder = RingBuilder::new(4).starting_at(10);
        builder.consumer(WaitStrategy::BusySpin, &[]);
        let (mut producer, mut consumers) = builder.build_solo::<u64>().unwrap();
        {
            let mut claim = producer.try_claim(3).unwrap();
            assert_eq!(claim.start(), 10);
            claim.write(7);
        }
        assert_eq!(producer.claimed(), 11);
        assert_eq!(producer.try_publish(8), Ok(11));
        assert_eq!(producer.try_publish(9), Ok(12));
        assert_eq!(producer.try_publish(10), Ok(13));
        assert_eq!(producer.try_publish(11), Err(PublishError::Full(11)));
        assert_eq!(producer.try_claim(5).err(), Some(ClaimError::TooMany));
        let mut got = Vec::new();
        consumers[0].poll(2, |sequence, value| got.push((sequence, value.copied())));
        assert_eq!(got, vec![(10, Some(7)), (11, Some(8))]);
        assert_eq!(producer.claim_timeout(2, Duration::from_millis(1)).map(|claim| claim.start()), Ok(14));
        assert_eq!(producer.claimed(), 14, "an unwritten claim is given back");
        producer.close();
        assert_eq!(producer.try_publish(1), Err(PublishError::Closed(1)));
        got.clear();
        consumers[0].poll(10, |sequence, value| got.push((sequence, value.copied())));
        assert_eq!(got, vec![(12, Some(9)), (13, Some(10))]);
        assert_eq!(consumers[0].wait(1, Duration::from_secs(1), |_, _| ()), Wait::Closed);
    }

    #[test]
    fn events_written_in_place_reuse_their_slot_and_a_full_ring_never_calls_the_writer() {
        // Solo and multi-producer: `write` sees the slot's previous lap (here a Vec it reuses),
        // consumers see what it wrote, and with no free slot it is not called at all.
        let mut builder = RingBuilder::new(2);
        builder.consumer(WaitStrategy::BusySpin, &[]);
        let (mut solo, mut solo_consumers) = builder.build_solo::<Vec<u64>>().unwrap();
        let mut builder = RingBuilder::new(2);
        builder.consumer(WaitStrategy::BusySpin, &[]);
        let (shared, mut shared_consumers) = builder.build::<Vec<u64>>().unwrap();
        let mut publish = |n: u64, into_solo: bool| {
            let write = |slot: &mut Vec<u64>| {
                slot.push(n);
            };
            if into_solo {
                solo.try_publish_with(write)
            } else {
                shared.try_publish_with(write)
            }
        };
        for into_solo in [true, false] {
            assert_eq!(publish(1, into_solo), Ok(0));
            assert_eq!(publish(2, into_solo), Ok(1));
            assert_eq!(publish(3, into_solo).err(), Some(ClaimError::Full), "the writer is not called");
        }
        for consumers in [&mut solo_consumers, &mut shared_consumers] {
            let mut got = Vec::new();
            consumers[0].poll(2, |sequence, value| got.push((sequence, value.cloned())));
            assert_eq!(got, vec![(0, Some(vec![1])), (1, Some(vec![2]))]);
        }
        for into_solo in [true, false] {
            assert_eq!(publish(3, into_solo), Ok(2));
        }
        for consumers in [&mut solo_consumers, &mut shared_consumers] {
            let mut got = Vec::new();
            consumers[0].poll(2, |_, value| got.push(value.cloned()));
            assert_eq!(got, vec![Some(vec![1, 3])], "the slot held the first lap's value");
        }
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
    fn a_solo_producer_and_a_consumer_with_wrap_around() {
        // The cursor publishes the slot writes: each value is read once, in order, through a
        // 2-slot ring, and the producer never overwrites a slot the consumer has not released.
        loom::model(|| {
            let mut builder = RingBuilder::new(2);
            builder.consumer(WaitStrategy::BusySpin, &[]);
            let (mut producer, mut consumers) = builder.build_solo::<u64>().unwrap();
            let mut consumer = consumers.remove(0);
            let reader = loom::thread::spawn(move || drain(&mut consumer, 3));
            for value in [5, 6, 7] {
                let mut value = value;
                loop {
                    match producer.try_publish(value) {
                        Ok(_) => break,
                        Err(PublishError::Full(back)) => {
                            value = back;
                            loom::thread::yield_now();
                        }
                        Err(PublishError::Closed(_)) => unreachable!("never closed here"),
                    }
                }
            }
            assert_eq!(reader.join().unwrap(), vec![(0, 5), (1, 6), (2, 7)]);
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
