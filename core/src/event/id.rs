//! Event ids: UUIDv7 (48-bit unix milliseconds, then 74 random bits), made without a system
//! call per id.
//!
//! The random bits come from a per-thread wyrand generator seeded once from the operating
//! system (through std's randomly keyed `RandomState`). Ids are unique, not secret: nothing in
//! Herald relies on them being unpredictable. Within one millisecond ids from different threads
//! do not sort by creation; across milliseconds they do.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use uuid::{Builder, Uuid};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(super::time::now_ns());
    hasher.write_usize(&hasher as *const _ as usize);
    hasher.finish()
}

fn next_random() -> u64 {
    STATE.with(|state| {
        // wyrand: a 64-bit state stepped by a constant, mixed by one 128-bit multiply.
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let product = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((product >> 64) as u64) ^ (product as u64)
    })
}

/// A new UUIDv7 for the given unix time in nanoseconds.
pub fn new_event_id(unix_ns: u64) -> Uuid {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&next_random().to_le_bytes());
    random[8..].copy_from_slice(&next_random().to_le_bytes()[..2]);
    Builder::from_unix_timestamp_millis(unix_ns / 1_000_000, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_unique_and_carry_the_time() {
        let now = super::super::time::now_ns();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let id = new_event_id(now);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(id));
        }
        let (seconds, nanos) = new_event_id(now).get_timestamp().unwrap().to_unix();
        assert_eq!(seconds * 1000 + u64::from(nanos) / 1_000_000, now / 1_000_000);
        let other_thread = std::thread::spawn(move || new_event_id(now)).join().unwrap();
        assert!(!seen.contains(&other_thread));
    }
}
