//! Stress test of the ring: 4 producers × 1 M events (HERALD_STRESS_EVENTS overrides the count per
//! producer), 3 consumers (two independent, one after both); every consumer sees every event
//! exactly once, in sequence order, and each producer's events in the order it published them.

use std::time::Duration;

use herald_core::dispatch::{RingBuilder, Wait, WaitStrategy};

const PRODUCERS: u64 = 4;

#[test]
fn four_producers_three_consumers_see_everything_once_in_order() {
    // Every consumer reads every sequence exactly once, in order, with per-producer FIFO intact.
    let per_producer: u64 =
        std::env::var("HERALD_STRESS_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let total = PRODUCERS * per_producer;
    let mut builder = RingBuilder::new(1 << 12);
    let first = builder.consumer(WaitStrategy::Yield, &[]);
    let second = builder.consumer(WaitStrategy::Yield, &[]);
    builder.consumer(WaitStrategy::Blocking, &[first, second]);
    let (producer, consumers) = builder.build::<u64>().unwrap();

    let readers: Vec<_> = consumers
        .into_iter()
        .enumerate()
        .map(|(index, mut consumer)| {
            std::thread::spawn(move || {
                // Per producer, the next counter value expected; and the next sequence.
                let mut next_from = [0u64; PRODUCERS as usize];
                let mut next_sequence = 0u64;
                let mut problems = Vec::new();
                while next_sequence < total {
                    let outcome = consumer.wait(1024, Duration::from_secs(30), |sequence, value| {
                        let Some(&value) = value else {
                            problems.push(format!("empty slot at {sequence}"));
                            return;
                        };
                        if sequence != next_sequence && problems.len() < 10 {
                            problems.push(format!("sequence {sequence}, expected {next_sequence}"));
                        }
                        next_sequence = sequence + 1;
                        let (source, counter) = ((value >> 40) as usize, value & ((1 << 40) - 1));
                        if next_from[source] != counter && problems.len() < 10 {
                            problems.push(format!("producer {source}: got {counter}, expected {}", next_from[source]));
                        }
                        next_from[source] = counter + 1;
                    });
                    assert_ne!(outcome, Wait::TimedOut, "consumer {index} starved at {next_sequence}");
                }
                (index, next_sequence, next_from, problems)
            })
        })
        .collect();
    let writers: Vec<_> = (0..PRODUCERS)
        .map(|source| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                for counter in 0..per_producer {
                    producer.publish_timeout((source << 40) | counter, Duration::from_secs(30)).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    for reader in readers {
        let (index, seen, per_source, problems) = reader.join().unwrap();
        assert!(problems.is_empty(), "consumer {index}: {problems:?}");
        assert_eq!(seen, total, "consumer {index}");
        assert_eq!(per_source, [per_producer; PRODUCERS as usize], "consumer {index}");
    }
    assert_eq!(producer.consumed(), total);
}
