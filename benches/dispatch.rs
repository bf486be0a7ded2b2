//! The dispatch benchmark: Herald's ring ([`RingBuilder`]) against the `disruptor` crate (4.x), a
//! bounded crossbeam channel and `std::sync::mpsc::sync_channel`, moving the same payloads
//! between threads; and the event bus against the bare store. Figures: `docs/benchmarks.md`.
//!
//! One criterion group, `dispatch`, with ids `<case>/<impl>`, `impl` one of `herald`,
//! `disruptor`, `crossbeam`, `std_mpsc`:
//!
//! - `1p1c_<payload>`: one producer (the benchmark thread), one consumer. With one producer,
//!   Herald uses its solo ring ([`SoloProducer`]) and the disruptor its single producer; `3p1c`
//!   uses both multi-producer variants.
//! - `3p1c_<payload>`: three producer threads, one consumer (the disruptor's multi producer).
//! - `1p3c_<payload>`: fan-out: three consumers each see every event. The channels emulate it with
//!   one channel per consumer, the producer sending each event to all three.
//! - `batch_<payload>`: 1p1c, published in batches of [`PUBLISH_BATCH`] (Herald `try_claim(n)` +
//!   `Claim::write`, disruptor `batch_publish`, channels `send` in a loop).
//! - `ping_envelope`: one event in flight: publish, then spin until the consumer counted it; the
//!   time per iteration is publish → handler → seen back by the producer (one-way plus one
//!   cache-line transfer).
//! - `e2e/herald_bus`: an [`EventBus`] (default [`BusConfig`]: blocking wait, batches of 256)
//!   over `Log::in_memory` with one handler; publish one draft per call, then wait until the
//!   handler saw them all. `e2e/store_only`: the same appends (`append_one`) with no bus.
//!
//! Payloads: `u64`, and `envelope`, a 64-byte struct shaped like an event header (position, two
//! 16-byte ids, timestamp, version, type hash). Every iteration moves [`EVENTS_PER_ITER`] events
//! (throughput is `Throughput::Elements` of published events; in `1p3c` each consumer sees them
//! all). A handler reads its event (a running sum of a few fields) and bumps its own counter.
//!
//! Fairness: each impl gets the same ring/channel capacity ([`RING`]), long-lived consumer
//! threads created once per id and torn down after it (so nothing spins during other ids),
//! producers on the benchmark thread (1p) or three scoped threads per `iter_custom` call (3p; the
//! spawn is a constant per call, which criterion's slope estimate removes). A full ring/channel
//! makes the producer wait: Herald and the disruptor retry `try_publish` (64 spin hints, then
//! `yield`), the channels block in `send`. Consumers wait with:
//!
//! | case              | herald     | disruptor                     | channels            |
//! |-------------------|------------|-------------------------------|---------------------|
//! | 1p1c, batch, ping | `BusySpin` | `BusySpinWithSpinLoopHint`    | blocking `recv` (ping: `try_recv` spin) |
//! | 3p1c, 1p3c        | `Yield`    | [`YieldWait`] (yield per check, defined here; the crate has none) | blocking `recv` |
//!
//! With 2 cores, 3p1c and 1p3c run four busy threads, so spinning consumers would starve the
//! threads they wait for: they yield instead.
//!
//! Besides the criterion figures, the bench prints (stderr):
//! - per id: process CPU time (`/proc/self/stat` utime + stime) inside the measured windows, as
//!   CPU-seconds per million events and as cores kept busy;
//! - `latency_percentiles`: open-loop publish → handler latency (timestamps carried in the
//!   payload, recorded by the handler into an HDR histogram): one envelope every
//!   [`LATENCY_INTERVAL`], p50 / p99 / p99.9 / max, with busy-spin and with blocking consumers,
//!   plus the consumer side's CPU (process minus the producer thread) at that idle-heavy rate.
//!   It runs when no filter is given or the filter contains `latency`.
//! - `interleaved_1p1c_<payload>`: 1p1c, Herald and the disruptor alternating in
//!   [`INTERLEAVED_ROUNDS`] rounds on long-lived rigs: the median and range of the per-round
//!   throughput ratio, which the machine's drift between two criterion ids cannot skew. It runs
//!   when no filter is given or the filter contains `interleaved`.
//! - `e2e_overhead`: the e2e comparison interleaved ([`E2E_ROUNDS`] rounds, each the same
//!   appends on a fresh log without and with the bus), so that both sides share the machine's
//!   drift: the median and range of the per-round bus/store time ratio, and CPU per event. It
//!   runs when no filter is given or the filter contains `e2e`.

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use crossbeam_utils::CachePadded;
use disruptor::wait_strategies::WaitStrategy as DisruptorWait;
use disruptor::{
    BusySpinWithSpinLoopHint, MultiConsumerBarrier, MultiProducer, Sequence, SingleConsumerBarrier, SingleProducer,
};
use hdrhistogram::Histogram;
use herald_core::dispatch::{
    BusConfig, Claim, ClaimError, Consumer, EventBus, HandlerResult, Producer, RingBuilder, SoloProducer, Subscription,
    Wait, WaitStrategy,
};
use herald_core::event::EventDraft;
use herald_core::store::{EventStore, Log, StoreConfig};

/// Slots of every ring and channel.
const RING: usize = 16_384;
/// Events published per iteration of the throughput cases.
const EVENTS_PER_ITER: u64 = 30_000;
/// Events per publish in the `batch_*` cases.
const PUBLISH_BATCH: usize = 100;
/// Most events a Herald consumer takes per `wait` (the bus's default `batch_size`).
const CONSUMER_BATCH: usize = 256;
/// Events per iteration of the `e2e` cases.
const E2E_EVENTS_PER_ITER: u64 = 1_000;
/// The `e2e` cases start a fresh store (and bus) before a sample once it holds this many events.
const E2E_FRESH_AFTER: u64 = 500_000;
/// Gap between two events of the open-loop latency runs.
const LATENCY_INTERVAL: Duration = Duration::from_micros(50);
/// Events per latency run (2 s at the interval above).
const LATENCY_EVENTS: u64 = 40_000;
/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/*/stat` CPU times (100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// Payloads and clock

/// What moves through the rings.
trait Payload: Copy + Default + Send + Sync + 'static {
    const NAME: &'static str;
    /// Event `n`, published at `stamp_ns` (0 in the throughput cases).
    fn make(n: u64, stamp_ns: u64) -> Self;
    /// Reads the event (what a handler would look at).
    fn key(&self) -> u64;
    /// When it was published ([`now_ns`]).
    fn stamp(&self) -> u64;
}

impl Payload for u64 {
    const NAME: &'static str = "u64";

    #[inline]
    fn make(n: u64, stamp_ns: u64) -> Self {
        if stamp_ns == 0 {
            n
        } else {
            stamp_ns
        }
    }

    #[inline]
    fn key(&self) -> u64 {
        *self
    }

    #[inline]
    fn stamp(&self) -> u64 {
        *self
    }
}

/// An event-header-sized payload: 64 bytes.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct Envelope {
    position: u64,
    id: [u8; 16],
    correlation_id: [u8; 16],
    timestamp_ns: u64,
    aggregate_version: u64,
    type_hash: u64,
}

const _: () = assert!(std::mem::size_of::<Envelope>() == 64);

impl Payload for Envelope {
    const NAME: &'static str = "envelope";

    #[inline]
    fn make(n: u64, stamp_ns: u64) -> Self {
        let id = (u128::from(n) << 64 | 0x7000_0000_0000_8000).to_le_bytes();
        Envelope {
            position: n,
            id,
            correlation_id: id,
            timestamp_ns: stamp_ns,
            aggregate_version: n / 4 + 1,
            type_hash: 0x9e37_79b9_7f4a_7c15,
        }
    }

    #[inline]
    fn key(&self) -> u64 {
        self.position
            ^ self.aggregate_version
            ^ self.type_hash
            ^ u64::from(self.id[8])
            ^ u64::from(self.correlation_id[15])
    }

    #[inline]
    fn stamp(&self) -> u64 {
        self.timestamp_ns
    }
}

/// Nanoseconds since the first call (never 0).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// utime + stime, in clock ticks, of `/proc/self/stat` (the process) or `/proc/thread-self/stat`.
fn cpu_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace().skip(11).take(2).filter_map(|field| field.parse::<u64>().ok()).sum()
}

fn process_ticks() -> u64 {
    cpu_ticks("/proc/self/stat")
}

fn thread_ticks() -> u64 {
    cpu_ticks("/proc/thread-self/stat")
}

// ---------------------------------------------------------------------------------------------
// The consumer side, shared by every impl

/// The latencies every consumer of a rig recorded.
type Merged = Arc<Mutex<Histogram<u64>>>;

/// What a consumer does with each event: read it, count it, optionally record its latency.
/// Dropped when its consumer thread ends, merging the latencies into the rig's histogram.
struct Sink {
    seen: Arc<CachePadded<AtomicU64>>,
    count: u64,
    sum: u64,
    latency: Option<(Histogram<u64>, Merged)>,
}

impl Sink {
    fn new(record_latency: bool, merged: &Merged) -> Self {
        Sink {
            seen: Arc::new(CachePadded::new(AtomicU64::new(0))),
            count: 0,
            sum: 0,
            latency: record_latency.then(|| (histogram(), Arc::clone(merged))),
        }
    }

    #[inline]
    fn on_event<T: Payload>(&mut self, event: &T) {
        self.sum = self.sum.wrapping_add(event.key());
        if let Some((local, _)) = &mut self.latency {
            local.saturating_record(now_ns().saturating_sub(event.stamp()).max(1));
        }
        self.count += 1;
        self.seen.store(self.count, Ordering::Release);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        black_box(self.sum);
        if let Some((local, merged)) = self.latency.take() {
            merged.lock().expect("latency histogram").add(&local).expect("same bounds");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The producer side

/// One producer handle of an impl.
trait Publish<T: Payload>: Send {
    fn publish(&mut self, value: T);

    /// Publishes events `first..first + count` as one batch where the impl has batches.
    fn publish_batch(&mut self, first: u64, count: usize) {
        for n in first..first + count as u64 {
            self.publish(T::make(n, 0));
        }
    }
}

/// How a producer waits for free slots: spin hints, then yield.
#[inline]
fn backoff(tries: &mut u32) {
    *tries += 1;
    if *tries <= 64 {
        spin_loop();
    } else {
        thread::yield_now();
    }
}

/// Herald's two producer kinds, as the bench drives them.
trait HeraldProducer<T>: Send {
    fn try_publish_with(&mut self, write: impl FnOnce(&mut T)) -> Result<u64, ClaimError>;
    fn try_claim(&mut self, count: usize) -> Result<Claim<'_, T>, ClaimError>;
}

impl<T: Payload> HeraldProducer<T> for Producer<T> {
    #[inline]
    fn try_publish_with(&mut self, write: impl FnOnce(&mut T)) -> Result<u64, ClaimError> {
        Producer::try_publish_with(self, write)
    }

    fn try_claim(&mut self, count: usize) -> Result<Claim<'_, T>, ClaimError> {
        Producer::try_claim(self, count)
    }
}

impl<T: Payload> HeraldProducer<T> for SoloProducer<T> {
    #[inline]
    fn try_publish_with(&mut self, write: impl FnOnce(&mut T)) -> Result<u64, ClaimError> {
        SoloProducer::try_publish_with(self, write)
    }

    fn try_claim(&mut self, count: usize) -> Result<Claim<'_, T>, ClaimError> {
        SoloProducer::try_claim(self, count)
    }
}

struct HeraldTx<P>(P);

impl<T: Payload, P: HeraldProducer<T>> Publish<T> for HeraldTx<P> {
    #[inline]
    fn publish(&mut self, value: T) {
        // In place, as the disruptor side does (its `try_publish` takes a closure too).
        let mut tries = 0;
        loop {
            match self.0.try_publish_with(|slot| *slot = value) {
                Ok(_) => return,
                Err(ClaimError::Full) => backoff(&mut tries),
                Err(error) => panic!("publish failed: {error:?}"),
            }
        }
    }

    fn publish_batch(&mut self, first: u64, count: usize) {
        let mut tries = 0;
        loop {
            match self.0.try_claim(count) {
                Ok(mut claim) => {
                    for n in first..first + count as u64 {
                        claim.write(T::make(n, 0));
                    }
                    return;
                }
                Err(ClaimError::Full) => backoff(&mut tries),
                Err(error) => panic!("claim failed: {error:?}"),
            }
        }
    }
}

struct DisruptorTx<P>(P);

impl<T: Payload, P: disruptor::Producer<T> + Send> Publish<T> for DisruptorTx<P> {
    #[inline]
    fn publish(&mut self, value: T) {
        let mut tries = 0;
        while self.0.try_publish(|slot| *slot = value).is_err() {
            backoff(&mut tries);
        }
    }

    fn publish_batch(&mut self, first: u64, count: usize) {
        let mut tries = 0;
        while self
            .0
            .try_batch_publish(count, |slots| {
                for (slot, n) in slots.zip(first..) {
                    *slot = T::make(n, 0);
                }
            })
            .is_err()
        {
            backoff(&mut tries);
        }
    }
}

/// Sends every event to each channel (one per consumer).
struct CrossbeamTx<T>(Vec<crossbeam_channel::Sender<T>>);

impl<T: Payload> Publish<T> for CrossbeamTx<T> {
    #[inline]
    fn publish(&mut self, value: T) {
        for sender in &self.0 {
            sender.send(value).expect("the consumer is alive");
        }
    }
}

struct StdTx<T>(Vec<std::sync::mpsc::SyncSender<T>>);

impl<T: Payload> Publish<T> for StdTx<T> {
    #[inline]
    fn publish(&mut self, value: T) {
        for sender in &self.0 {
            sender.send(value).expect("the consumer is alive");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rigs: producers + running consumers of one impl

struct Rig<P> {
    producers: Vec<P>,
    /// Each consumer's count of handled events.
    seen: Vec<Arc<CachePadded<AtomicU64>>>,
    /// Events published so far (each consumer must see all).
    sent: u64,
    latency: Merged,
    /// Stops and joins the consumers, after the producers are dropped.
    teardown: Option<Box<dyn FnOnce()>>,
}

impl<P> Rig<P> {
    fn new(
        producers: Vec<P>,
        seen: Vec<Arc<CachePadded<AtomicU64>>>,
        latency: Merged,
        teardown: impl FnOnce() + 'static,
    ) -> Self {
        Rig { producers, seen, sent: 0, latency, teardown: Some(Box::new(teardown)) }
    }

    /// Waits until every consumer handled everything published.
    fn wait_seen(&self) {
        for seen in &self.seen {
            let mut tries = 0u32;
            while seen.load(Ordering::Acquire) < self.sent {
                tries = tries.saturating_add(1);
                if tries < 128 {
                    spin_loop();
                } else {
                    thread::yield_now();
                }
            }
        }
    }

    /// Stops the consumers; returns the latencies they recorded.
    fn finish(mut self) -> Histogram<u64> {
        self.stop();
        let merged = self.latency.lock().expect("latency histogram");
        merged.clone()
    }

    fn stop(&mut self) {
        self.producers.clear();
        if let Some(teardown) = self.teardown.take() {
            teardown();
        }
    }
}

impl<P> Drop for Rig<P> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn new_merged() -> Merged {
    Arc::new(Mutex::new(histogram()))
}

/// Starts one thread per Herald consumer; returns their counters and the joins.
fn herald_consumers<T: Payload>(
    ring_consumers: Vec<Consumer<T>>,
    latency: bool,
    merged: &Merged,
) -> (Vec<Arc<CachePadded<AtomicU64>>>, Vec<JoinHandle<()>>) {
    let mut seen = Vec::new();
    let mut threads = Vec::new();
    for mut consumer in ring_consumers {
        let mut sink = Sink::new(latency, merged);
        seen.push(Arc::clone(&sink.seen));
        threads.push(thread::spawn(move || loop {
            let waited = consumer.wait(CONSUMER_BATCH, Duration::from_millis(100), |_, event| {
                if let Some(event) = event {
                    sink.on_event(event);
                }
            });
            if waited == Wait::Closed {
                break;
            }
        }));
    }
    (seen, threads)
}

fn herald_builder(consumers: usize, wait: WaitStrategy) -> RingBuilder {
    let mut builder = RingBuilder::new(RING);
    for _ in 0..consumers {
        builder.consumer(wait, &[]);
    }
    builder
}

/// A multi-producer ring, one cloned [`Producer`] per producer thread.
fn herald_rig<T: Payload>(
    producers: usize,
    consumers: usize,
    wait: WaitStrategy,
    latency: bool,
) -> Rig<HeraldTx<Producer<T>>> {
    let (producer, ring_consumers) = herald_builder(consumers, wait).build::<T>().expect("ring");
    let merged = new_merged();
    let (seen, threads) = herald_consumers(ring_consumers, latency, &merged);
    let closer = producer.clone();
    let handles = (0..producers).map(|_| HeraldTx(producer.clone())).collect();
    Rig::new(handles, seen, merged, move || {
        closer.close();
        threads.into_iter().for_each(|thread| thread.join().expect("herald consumer"));
    })
}

/// A one-producer ring ([`SoloProducer`]); dropping the producer closes it.
fn herald_solo_rig<T: Payload>(consumers: usize, wait: WaitStrategy, latency: bool) -> Rig<HeraldTx<SoloProducer<T>>> {
    let (producer, ring_consumers) = herald_builder(consumers, wait).build_solo::<T>().expect("ring");
    let merged = new_merged();
    let (seen, threads) = herald_consumers(ring_consumers, latency, &merged);
    Rig::new(vec![HeraldTx(producer)], seen, merged, move || {
        threads.into_iter().for_each(|thread| thread.join().expect("herald consumer"));
    })
}

/// The disruptor's stand-in for a yielding wait (the crate has busy-spins and sleep only).
#[derive(Clone, Copy)]
struct YieldWait;

impl DisruptorWait for YieldWait {
    fn wait_for(&self, _sequence: Sequence) {
        thread::yield_now();
    }
}

fn disruptor_handler<T: Payload>(mut sink: Sink) -> impl FnMut(&T, Sequence, bool) + Send + 'static {
    move |event, _, _| sink.on_event(event)
}

fn disruptor_1p1c<T: Payload, W: DisruptorWait + 'static>(
    wait: W,
    latency: bool,
) -> Rig<DisruptorTx<SingleProducer<T, SingleConsumerBarrier>>> {
    let merged = new_merged();
    let sink = Sink::new(latency, &merged);
    let seen = vec![Arc::clone(&sink.seen)];
    let producer =
        disruptor::build_single_producer(RING, T::default, wait).handle_events_with(disruptor_handler(sink)).build();
    // Dropping the producer shuts the disruptor down and joins its consumer thread.
    Rig::new(vec![DisruptorTx(producer)], seen, merged, || {})
}

fn disruptor_1p3c<T: Payload, W: DisruptorWait + 'static>(
    wait: W,
) -> Rig<DisruptorTx<SingleProducer<T, MultiConsumerBarrier>>> {
    let merged = new_merged();
    let sinks: Vec<Sink> = (0..3).map(|_| Sink::new(false, &merged)).collect();
    let seen = sinks.iter().map(|sink| Arc::clone(&sink.seen)).collect();
    let mut sinks = sinks.into_iter();
    let mut next = || disruptor_handler::<T>(sinks.next().expect("three sinks"));
    let producer = disruptor::build_single_producer(RING, T::default, wait)
        .handle_events_with(next())
        .handle_events_with(next())
        .handle_events_with(next())
        .build();
    Rig::new(vec![DisruptorTx(producer)], seen, merged, || {})
}

fn disruptor_3p1c<T: Payload, W: DisruptorWait + 'static>(
    wait: W,
) -> Rig<DisruptorTx<MultiProducer<T, SingleConsumerBarrier>>> {
    let merged = new_merged();
    let sink = Sink::new(false, &merged);
    let seen = vec![Arc::clone(&sink.seen)];
    let producer =
        disruptor::build_multi_producer(RING, T::default, wait).handle_events_with(disruptor_handler(sink)).build();
    let handles = vec![DisruptorTx(producer.clone()), DisruptorTx(producer.clone()), DisruptorTx(producer)];
    Rig::new(handles, seen, merged, || {})
}

/// How a channel consumer waits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChannelWait {
    /// `recv` (crossbeam spins briefly, then parks; std parks).
    Blocking,
    /// `try_recv` in a loop with a spin hint.
    Spin,
}

fn crossbeam_rig<T: Payload>(
    producers: usize,
    consumers: usize,
    wait: ChannelWait,
    latency: bool,
) -> Rig<CrossbeamTx<T>> {
    use crossbeam_channel::TryRecvError;
    let merged = new_merged();
    let (mut senders, mut seen, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..consumers {
        let (sender, receiver) = crossbeam_channel::bounded::<T>(RING);
        let mut sink = Sink::new(latency, &merged);
        senders.push(sender);
        seen.push(Arc::clone(&sink.seen));
        threads.push(thread::spawn(move || match wait {
            ChannelWait::Blocking => receiver.iter().for_each(|event| sink.on_event(&event)),
            ChannelWait::Spin => loop {
                match receiver.try_recv() {
                    Ok(event) => sink.on_event(&event),
                    Err(TryRecvError::Empty) => spin_loop(),
                    Err(TryRecvError::Disconnected) => break,
                }
            },
        }));
    }
    let handles = (0..producers).map(|_| CrossbeamTx(senders.clone())).collect();
    Rig::new(handles, seen, merged, move || {
        threads.into_iter().for_each(|thread| thread.join().expect("crossbeam consumer"));
    })
}

fn std_rig<T: Payload>(producers: usize, consumers: usize, wait: ChannelWait, latency: bool) -> Rig<StdTx<T>> {
    use std::sync::mpsc::TryRecvError;
    let merged = new_merged();
    let (mut senders, mut seen, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..consumers {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<T>(RING);
        let mut sink = Sink::new(latency, &merged);
        senders.push(sender);
        seen.push(Arc::clone(&sink.seen));
        threads.push(thread::spawn(move || match wait {
            ChannelWait::Blocking => receiver.iter().for_each(|event| sink.on_event(&event)),
            ChannelWait::Spin => loop {
                match receiver.try_recv() {
                    Ok(event) => sink.on_event(&event),
                    Err(TryRecvError::Empty) => spin_loop(),
                    Err(TryRecvError::Disconnected) => break,
                }
            },
        }));
    }
    let handles = (0..producers).map(|_| StdTx(senders.clone())).collect();
    Rig::new(handles, seen, merged, move || {
        threads.into_iter().for_each(|thread| thread.join().expect("std consumer"));
    })
}

// ---------------------------------------------------------------------------------------------
// Throughput

#[derive(Clone, Copy, PartialEq, Eq)]
enum Publishing {
    OneByOne,
    Batched,
}

/// Publishes events `first..first + count` from one producer.
fn produce<T: Payload, P: Publish<T>>(producer: &mut P, first: u64, count: u64, publishing: Publishing) {
    match publishing {
        Publishing::OneByOne => {
            for n in first..first + count {
                producer.publish(T::make(n, 0));
            }
        }
        Publishing::Batched => {
            let mut n = first;
            while n < first + count {
                let size = (first + count - n).min(PUBLISH_BATCH as u64);
                producer.publish_batch(n, size as usize);
                n += size;
            }
        }
    }
}

/// Publishes `events` (split over the rig's producers) and waits until every consumer saw them.
fn stream<T: Payload, P: Publish<T>>(rig: &mut Rig<P>, events: u64, publishing: Publishing) -> Duration {
    let first = rig.sent;
    let producers = rig.producers.len() as u64;
    let start = Instant::now();
    if producers == 1 {
        produce(&mut rig.producers[0], first, events, publishing);
    } else {
        thread::scope(|scope| {
            for (index, producer) in rig.producers.iter_mut().enumerate() {
                let index = index as u64;
                let share_start = first + events * index / producers;
                let share_end = first + events * (index + 1) / producers;
                scope.spawn(move || produce(producer, share_start, share_end - share_start, publishing));
            }
        });
    }
    rig.sent += events;
    rig.wait_seen();
    start.elapsed()
}

/// CPU and wall time inside the measured windows of one id.
#[derive(Default, Clone, Copy)]
struct Tally {
    events: u64,
    wall: Duration,
    ticks: u64,
}

impl Tally {
    fn add(&mut self, events: u64, wall: Duration, ticks: u64) {
        self.events += events;
        self.wall += wall;
        self.ticks += ticks;
    }
}

/// Every id's tally, printed at the end.
static TALLIES: Mutex<Vec<(String, String, Tally)>> = Mutex::new(Vec::new());

fn report_tally(case: &str, name: &str, tally: Tally) {
    if tally.events == 0 {
        return;
    }
    let cpu_seconds = tally.ticks as f64 / CLOCK_TICKS_PER_SECOND;
    eprintln!(
        "dispatch/{case}/{name}: {:.2} M events/s over the measured windows, {:.3} CPU-s per M events, {:.2} cores busy",
        tally.events as f64 / tally.wall.as_secs_f64() / 1e6,
        cpu_seconds / tally.events as f64 * 1e6,
        cpu_seconds / tally.wall.as_secs_f64(),
    );
    TALLIES.lock().expect("tallies").push((case.to_string(), name.to_string(), tally));
}

fn throughput<T: Payload, P: Publish<T>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &str,
    name: &str,
    mut rig: Rig<P>,
    publishing: Publishing,
) {
    let mut tally = Tally::default();
    group.bench_function(BenchmarkId::new(case, name), |b| {
        b.iter_custom(|iters| {
            let events = iters * EVENTS_PER_ITER;
            let ticks = process_ticks();
            let wall = stream(&mut rig, events, publishing);
            tally.add(events, wall, process_ticks() - ticks);
            wall
        })
    });
    drop(rig);
    report_tally(case, name, tally);
}

fn ring_cases<T: Payload>(group: &mut BenchmarkGroup<'_, WallTime>) {
    use ChannelWait::Blocking;
    use Publishing::{Batched, OneByOne};
    group.throughput(Throughput::Elements(EVENTS_PER_ITER));

    let case = format!("1p1c_{}", T::NAME);
    throughput(group, &case, "herald", herald_solo_rig::<T>(1, WaitStrategy::BusySpin, false), OneByOne);
    throughput(group, &case, "disruptor", disruptor_1p1c::<T, _>(BusySpinWithSpinLoopHint, false), OneByOne);
    throughput(group, &case, "crossbeam", crossbeam_rig::<T>(1, 1, Blocking, false), OneByOne);
    throughput(group, &case, "std_mpsc", std_rig::<T>(1, 1, Blocking, false), OneByOne);

    let case = format!("3p1c_{}", T::NAME);
    throughput(group, &case, "herald", herald_rig::<T>(3, 1, WaitStrategy::Yield, false), OneByOne);
    throughput(group, &case, "disruptor", disruptor_3p1c::<T, _>(YieldWait), OneByOne);
    throughput(group, &case, "crossbeam", crossbeam_rig::<T>(3, 1, Blocking, false), OneByOne);
    throughput(group, &case, "std_mpsc", std_rig::<T>(3, 1, Blocking, false), OneByOne);

    let case = format!("1p3c_{}", T::NAME);
    throughput(group, &case, "herald", herald_solo_rig::<T>(3, WaitStrategy::Yield, false), OneByOne);
    throughput(group, &case, "disruptor", disruptor_1p3c::<T, _>(YieldWait), OneByOne);
    throughput(group, &case, "crossbeam", crossbeam_rig::<T>(1, 3, Blocking, false), OneByOne);
    throughput(group, &case, "std_mpsc", std_rig::<T>(1, 3, Blocking, false), OneByOne);

    let case = format!("batch_{}", T::NAME);
    throughput(group, &case, "herald", herald_solo_rig::<T>(1, WaitStrategy::BusySpin, false), Batched);
    throughput(group, &case, "disruptor", disruptor_1p1c::<T, _>(BusySpinWithSpinLoopHint, false), Batched);
    throughput(group, &case, "crossbeam", crossbeam_rig::<T>(1, 1, Blocking, false), Batched);
    throughput(group, &case, "std_mpsc", std_rig::<T>(1, 1, Blocking, false), Batched);
}

// ---------------------------------------------------------------------------------------------
// Latency

/// One event in flight: publish, spin until the consumer counted it.
fn ping<P: Publish<Envelope>>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut rig: Rig<P>) {
    group.bench_function(BenchmarkId::new("ping_envelope", name), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rig.sent += 1;
                rig.producers[0].publish(Envelope::make(rig.sent, now_ns()));
                while rig.seen[0].load(Ordering::Acquire) < rig.sent {
                    spin_loop();
                }
            }
            start.elapsed()
        })
    });
}

fn ping_cases(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.throughput(Throughput::Elements(1));
    ping(group, "herald", herald_solo_rig::<Envelope>(1, WaitStrategy::BusySpin, true));
    ping(group, "disruptor", disruptor_1p1c::<Envelope, _>(BusySpinWithSpinLoopHint, true));
    ping(group, "crossbeam", crossbeam_rig::<Envelope>(1, 1, ChannelWait::Spin, true));
    ping(group, "std_mpsc", std_rig::<Envelope>(1, 1, ChannelWait::Spin, true));
}

/// Open loop: one envelope every [`LATENCY_INTERVAL`] (the producer spins between them), each
/// stamped when published; prints the handler-side latency percentiles and the consumer side's
/// CPU (the process's minus the producer thread's).
fn paced<P: Publish<Envelope>>(wait: &str, name: &str, mut rig: Rig<P>, events: u64) {
    let (process_start, thread_start) = (process_ticks(), thread_ticks());
    let start = Instant::now();
    let mut next = start;
    for n in 0..events {
        next += LATENCY_INTERVAL;
        while Instant::now() < next {
            spin_loop();
        }
        rig.producers[0].publish(Envelope::make(n, now_ns()));
    }
    rig.sent += events;
    rig.wait_seen();
    let wall = start.elapsed().as_secs_f64();
    let consumer_ticks = (process_ticks() - process_start).saturating_sub(thread_ticks() - thread_start);
    let latencies = rig.finish();
    let micros = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1e3;
    eprintln!(
        "| {wait} | {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
        micros(0.5),
        micros(0.99),
        micros(0.999),
        latencies.max() as f64 / 1e3,
        consumer_ticks as f64 / CLOCK_TICKS_PER_SECOND / wall,
        latencies.len(),
    );
}

fn latency_percentiles(events: u64) {
    eprintln!(
        "\ndispatch/latency_percentiles: publish -> handler, one 64-byte envelope every {} µs, {events} events each",
        LATENCY_INTERVAL.as_micros()
    );
    eprintln!("| wait | impl | p50 µs | p99 µs | p99.9 µs | max µs | consumer cores | samples |");
    eprintln!("|---|---|---|---|---|---|---|---|");
    let spin = "busy-spin";
    paced(spin, "herald (BusySpin)", herald_solo_rig::<Envelope>(1, WaitStrategy::BusySpin, true), events);
    paced(
        spin,
        "disruptor (BusySpinWithSpinLoopHint)",
        disruptor_1p1c::<Envelope, _>(BusySpinWithSpinLoopHint, true),
        events,
    );
    paced(spin, "crossbeam (try_recv loop)", crossbeam_rig::<Envelope>(1, 1, ChannelWait::Spin, true), events);
    paced(spin, "std_mpsc (try_recv loop)", std_rig::<Envelope>(1, 1, ChannelWait::Spin, true), events);
    let blocking = "blocking";
    paced(blocking, "herald (Blocking)", herald_solo_rig::<Envelope>(1, WaitStrategy::Blocking, true), events);
    paced(blocking, "crossbeam (recv)", crossbeam_rig::<Envelope>(1, 1, ChannelWait::Blocking, true), events);
    paced(blocking, "std_mpsc (recv)", std_rig::<Envelope>(1, 1, ChannelWait::Blocking, true), events);
    eprintln!("(the disruptor crate has no blocking wait strategy: BusySpin, BusySpinWithSpinLoopHint, Sleep)\n");
}

// ---------------------------------------------------------------------------------------------
// End to end: bus over the store vs the store alone

/// Aggregates the e2e drafts rotate over.
const E2E_AGGREGATES: usize = 1000;

fn e2e_drafts() -> Vec<EventDraft> {
    let payload = Bytes::from_static(
        br#"{"task":"t-0001","title":"write the dispatch benchmark","owner":"herald","done":false}"#,
    );
    (0..E2E_AGGREGATES).map(|a| EventDraft::new("TaskCreated", format!("task-{a:04}"), payload.clone())).collect()
}

fn e2e_log() -> Log {
    Log::in_memory(StoreConfig::default()).expect("in-memory log")
}

struct BusRig {
    bus: EventBus,
    seen: Arc<CachePadded<AtomicU64>>,
    published: u64,
}

impl BusRig {
    fn new() -> Self {
        let seen = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let counter = Arc::clone(&seen);
        let mut count = 0u64;
        let handler = Subscription::all("count", move |view| -> HandlerResult {
            black_box(view.position);
            count += 1;
            counter.store(count, Ordering::Release);
            Ok(())
        });
        let store: Arc<dyn EventStore> = Arc::new(e2e_log());
        let bus = EventBus::builder(store, BusConfig::default()).subscribe(handler).build().expect("bus");
        BusRig { bus, seen, published: 0 }
    }
}

fn e2e_cases(group: &mut BenchmarkGroup<'_, WallTime>) {
    let drafts = e2e_drafts();
    group.throughput(Throughput::Elements(E2E_EVENTS_PER_ITER));

    let mut slot: Option<BusRig> = None;
    let mut tally = Tally::default();
    group.bench_function(BenchmarkId::new("e2e", "herald_bus"), |b| {
        b.iter_custom(|iters| {
            if slot.as_ref().is_some_and(|rig| rig.published >= E2E_FRESH_AFTER) {
                slot = None;
            }
            let rig = slot.get_or_insert_with(BusRig::new);
            let events = iters * E2E_EVENTS_PER_ITER;
            let ticks = process_ticks();
            let start = Instant::now();
            for _ in 0..events {
                let draft = drafts[(rig.published % E2E_AGGREGATES as u64) as usize].clone();
                black_box(rig.bus.publish_draft(draft).expect("publish"));
                rig.published += 1;
            }
            let mut tries = 0u32;
            while rig.seen.load(Ordering::Acquire) < rig.published {
                tries = tries.saturating_add(1);
                if tries < 128 {
                    spin_loop();
                } else {
                    thread::yield_now();
                }
            }
            let wall = start.elapsed();
            tally.add(events, wall, process_ticks() - ticks);
            wall
        })
    });
    drop(slot);
    report_tally("e2e", "herald_bus", tally);

    let mut slot: Option<(Log, u64)> = None;
    let mut tally = Tally::default();
    group.bench_function(BenchmarkId::new("e2e", "store_only"), |b| {
        b.iter_custom(|iters| {
            if slot.as_ref().is_some_and(|(_, appended)| *appended >= E2E_FRESH_AFTER) {
                slot = None;
            }
            let (log, appended) = slot.get_or_insert_with(|| (e2e_log(), 0));
            let events = iters * E2E_EVENTS_PER_ITER;
            let ticks = process_ticks();
            let start = Instant::now();
            for _ in 0..events {
                let draft = drafts[(*appended % E2E_AGGREGATES as u64) as usize].clone();
                black_box(log.append_one(&draft).expect("append"));
                *appended += 1;
            }
            let wall = start.elapsed();
            tally.add(events, wall, process_ticks() - ticks);
            wall
        })
    });
    drop(slot);
    report_tally("e2e", "store_only", tally);
}

/// Rounds of the interleaved e2e comparison, and events per side per round.
const E2E_ROUNDS: usize = 15;
const E2E_ROUND_EVENTS: u64 = 50_000;

/// The e2e comparison interleaved: each round runs the same appends on a fresh log without and
/// with the bus (alternating which goes first), so both sides see the same machine; prints the
/// median and range of the per-round time ratio, and each side's CPU per event.
fn e2e_overhead((rounds, events): (usize, u64)) {
    let drafts = e2e_drafts();
    let draft = |n: u64| drafts[(n % E2E_AGGREGATES as u64) as usize].clone();
    let (mut bus_total, mut store_total) = (Tally::default(), Tally::default());
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut store_only = || {
            let log = e2e_log();
            let ticks = process_ticks();
            let start = Instant::now();
            for n in 0..events {
                black_box(log.append_one(&draft(n)).expect("append"));
            }
            let wall = start.elapsed();
            store_total.add(events, wall, process_ticks() - ticks);
            wall
        };
        let mut herald_bus = || {
            let rig = BusRig::new();
            let ticks = process_ticks();
            let start = Instant::now();
            for n in 0..events {
                black_box(rig.bus.publish_draft(draft(n)).expect("publish"));
            }
            while rig.seen.load(Ordering::Acquire) < events {
                thread::yield_now();
            }
            let wall = start.elapsed();
            bus_total.add(events, wall, process_ticks() - ticks);
            wall
        };
        let (store, bus) = if round % 2 == 0 {
            let store = store_only();
            (store, herald_bus())
        } else {
            let bus = herald_bus();
            (store_only(), bus)
        };
        ratios.push(bus.as_secs_f64() / store.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let cpu_per_million = |tally: &Tally| tally.ticks as f64 / CLOCK_TICKS_PER_SECOND / tally.events as f64 * 1e6;
    let rate = |tally: &Tally| tally.events as f64 / tally.wall.as_secs_f64() / 1e6;
    eprintln!(
        "\ndispatch/e2e_overhead: {rounds} interleaved rounds of {events} events per side, fresh logs: bus time \
         per event = store time × {:.2} (median; range {:.2}–{:.2}); herald_bus {:.3} M events/s, {:.2} CPU-s per \
         M events; store_only {:.3} M events/s, {:.2} CPU-s per M events",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        rate(&bus_total),
        cpu_per_million(&bus_total),
        rate(&store_total),
        cpu_per_million(&store_total),
    );
}

/// Rounds of [`interleaved_1p1c`].
const INTERLEAVED_ROUNDS: usize = 21;
/// Events per side per round of [`interleaved_1p1c`].
const INTERLEAVED_EVENTS: u64 = 2_000_000;

/// 1p1c, Herald against the disruptor, interleaved: each round streams the same events through
/// both (long-lived rigs, alternating which goes first), so both share the machine's drift;
/// prints the median and range of the per-round Herald/disruptor throughput ratio.
fn interleaved_1p1c<T: Payload>((rounds, events): (usize, u64)) {
    let mut herald = herald_solo_rig::<T>(1, WaitStrategy::BusySpin, false);
    let mut disruptor = disruptor_1p1c::<T, _>(BusySpinWithSpinLoopHint, false);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (herald_time, disruptor_time) = if round % 2 == 0 {
            let h = stream(&mut herald, events, Publishing::OneByOne);
            (h, stream(&mut disruptor, events, Publishing::OneByOne))
        } else {
            let d = stream(&mut disruptor, events, Publishing::OneByOne);
            (stream(&mut herald, events, Publishing::OneByOne), d)
        };
        ratios.push(disruptor_time.as_secs_f64() / herald_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "dispatch/interleaved_1p1c_{}: {rounds} rounds of {events} events per side: herald throughput = disruptor × \
         {:.2} (median; range {:.2}–{:.2})",
        T::NAME,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    );
}

// ---------------------------------------------------------------------------------------------
// Summary and main

fn print_summary() {
    let tallies = TALLIES.lock().expect("tallies");
    if tallies.is_empty() {
        return;
    }
    let rate = |tally: &Tally| tally.events as f64 / tally.wall.as_secs_f64();
    let find = |case: &str, name: &str| tallies.iter().find(|(c, n, _)| c == case && n == name).map(|(_, _, t)| *t);
    eprintln!("\ndispatch summary (mean over the measured windows of this run; criterion's estimates are above)");
    eprintln!("| case | impl | M events/s | vs crossbeam | vs disruptor | CPU-s per M events | cores busy |");
    eprintln!("|---|---|---|---|---|---|---|");
    for (case, name, tally) in tallies.iter() {
        let ratio = |other: &str| {
            find(case, other).map_or_else(|| "–".to_string(), |base| format!("{:.2}×", rate(tally) / rate(&base)))
        };
        let cpu_seconds = tally.ticks as f64 / CLOCK_TICKS_PER_SECOND;
        eprintln!(
            "| {case} | {name} | {:.2} | {} | {} | {:.3} | {:.2} |",
            rate(tally) / 1e6,
            ratio("crossbeam"),
            ratio("disruptor"),
            cpu_seconds / tally.events as f64 * 1e6,
            cpu_seconds / tally.wall.as_secs_f64(),
        );
    }
    if let (Some(bus), Some(store)) = (find("e2e", "herald_bus"), find("e2e", "store_only")) {
        eprintln!(
            "e2e dispatch overhead: {:+.1}% time per event (bus vs store alone)",
            (rate(&store) / rate(&bus) - 1.0) * 100.0
        );
    }
}

/// Criterion's positional filter, if any (flags taking a value are skipped with their value).
fn filter(args: &[String]) -> Option<&str> {
    const VALUE_FLAGS: [&str; 14] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--output-format",
        "--color",
    ];
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if VALUE_FLAGS.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) criterion runs each id once.
    let bench_mode = args.iter().any(|arg| arg == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("dispatch");
        group.sampling_mode(SamplingMode::Auto);
        ring_cases::<u64>(&mut group);
        ring_cases::<Envelope>(&mut group);
        ping_cases(&mut group);
        e2e_cases(&mut group);
        group.finish();
    }
    criterion.final_summary();
    let wanted = |name: &str| filter(&args).is_none_or(|filter| filter.contains(name));
    if wanted("latency") {
        latency_percentiles(if bench_mode { LATENCY_EVENTS } else { 1000 });
    }
    if wanted("interleaved") {
        let size = if bench_mode { (INTERLEAVED_ROUNDS, INTERLEAVED_EVENTS) } else { (1, 1000) };
        interleaved_1p1c::<u64>(size);
        interleaved_1p1c::<Envelope>(size);
    }
    if wanted("e2e") {
        e2e_overhead(if bench_mode { (E2E_ROUNDS, E2E_ROUND_EVENTS) } else { (1, 1000) });
    }
    print_summary();
}
