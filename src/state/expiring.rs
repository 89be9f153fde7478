//! A concurrent map for entries written once whose end of life is known when
//! they are written: remembered decisions (the ledger's, until their offers
//! expire, and the learner's, until the attribution window closes).
//!
//! A DashMap plus, per eviction ring, the ids in insertion order. Inserting
//! evicts from the front of its ring what has outlived its `keep_until` and,
//! past the ring's share of the capacity, the oldest entry. Lookups with a
//! clock treat an outlived entry as absent even before it is evicted.
//!
//! Not a cache: a cache's admission and bookkeeping (frequency sketch,
//! access-order deques, write channel, housekeeping) cost about 7% of a
//! checkout decision's CPU for the ledger and about 5% for the learner
//! (perf profiles in docs/performance.md), for
//! policies (frequency admission, access order) this data does not need: an
//! entry is written once, read at most a few times, and the oldest is the one
//! least likely to be asked for again.
//!
//! Locks: a ring's mutex is taken after the map shard's lock is released, and
//! eviction takes a map shard lock inside a ring's lock; nothing takes them
//! the other way round.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;

/// Eviction rings; an entry's ring is chosen by its id's hash.
const RINGS: usize = 16;

/// One eviction ring: (keep until ms, id) in insertion order.
type Ring = VecDeque<(i64, Box<str>)>;

/// Entries by id, bounded in number and time (see the module notes).
pub struct ExpiringMap<V> {
    map: DashMap<Box<str>, (i64, V), ahash::RandomState>,
    rings: Box<[Mutex<Ring>]>,
    /// Capacity share of one ring.
    per_ring: usize,
    hasher: ahash::RandomState,
}

impl<V> std::fmt::Debug for ExpiringMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiringMap")
            .field("len", &self.map.len())
            .field("capacity", &(self.per_ring * RINGS))
            .finish()
    }
}

impl<V: Clone> ExpiringMap<V> {
    /// Holds at most about `capacity` entries (rounded up to a multiple of 16).
    pub fn new(capacity: usize) -> ExpiringMap<V> {
        ExpiringMap {
            map: crate::state::members::growing_map(ahash::RandomState::with_seeds(11, 12, 13, 14)),
            rings: (0..RINGS).map(|_| Mutex::new(VecDeque::new())).collect(),
            per_ring: capacity.div_ceil(RINGS).max(1),
            hasher: ahash::RandomState::with_seeds(21, 22, 23, 24),
        }
    }

    /// Most entries held.
    pub fn capacity(&self) -> usize {
        self.per_ring * RINGS
    }

    /// Inserts `make()` under `id`, to be kept until `keep_until` (ms), unless
    /// `id` is already held: then the entry held is kept (so replay is
    /// idempotent). Returns the entry held and whether it is new. `now_ms` is
    /// the clock eviction goes by.
    pub fn insert_with(
        &self,
        id: &str,
        keep_until: i64,
        now_ms: i64,
        make: impl FnOnce() -> V,
    ) -> (V, bool) {
        let key: Box<str> = id.into();
        let (value, fresh) = match self.map.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => (e.get().1.clone(), false),
            dashmap::Entry::Vacant(e) => {
                let v = make();
                e.insert((keep_until, v.clone()));
                (v, true)
            }
        };
        if fresh {
            let mut ring = self.ring(&key);
            ring.push_back((keep_until, key));
            while let Some((until, _)) = ring.front() {
                if ring.len() <= self.per_ring && *until > now_ms {
                    break;
                }
                if let Some((_, old)) = ring.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
        (value, fresh)
    }

    /// The entry under `id`, unless unknown or outlived at `now_ms`.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<V> {
        let e = self.map.get(id)?;
        (e.0 > now_ms).then(|| e.1.clone())
    }

    /// The entry under `id` if still held, outlived or not (the caller
    /// tells "too late" from "unknown").
    pub fn get_held(&self, id: &str) -> Option<V> {
        self.map.get(id).map(|e| e.1.clone())
    }

    /// Replaces the entry under `id` if it is held; returns whether it was.
    /// Its place in the eviction order stays.
    pub fn replace(&self, id: &str, value: V) -> bool {
        match self.map.get_mut(id) {
            Some(mut e) => {
                e.1 = value;
                true
            }
            None => false,
        }
    }

    /// Evicts what has outlived its time from the front of every ring
    /// (inserts do this too; this is for quiet periods).
    pub fn evict_expired(&self, now_ms: i64) {
        for ring in self.rings.iter() {
            let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
            while ring.front().is_some_and(|(until, _)| *until <= now_ms) {
                if let Some((_, old)) = ring.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// Calls `f` for every entry not outlived at `now_ms`.
    pub fn for_each(&self, now_ms: i64, mut f: impl FnMut(&str, &V)) {
        for e in self.map.iter() {
            if e.value().0 > now_ms {
                f(e.key(), &e.value().1);
            }
        }
    }

    /// Forgets every entry for which `f` is true (erasure: rare, walks the
    /// whole map). Their ids stay in the rings until evicted; removing an
    /// absent id is harmless.
    pub fn remove_where(&self, f: impl Fn(&V) -> bool) {
        self.map.retain(|_, (_, v)| !f(v));
    }

    /// Entries held (outlived ones not yet evicted included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `id` is held (outlived or not).
    pub fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    fn ring(&self, id: &str) -> MutexGuard<'_, Ring> {
        let i = (self.hasher.hash_one(id) as usize) % RINGS;
        self.rings[i].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_the_newest() {
        let m: ExpiringMap<u32> = ExpiringMap::new(160);
        let now = 1_000_000_000;
        for i in 0..10_000u32 {
            m.insert_with(&format!("d{i}"), now + 3_600_000, now, || i);
            assert!(m.len() <= 160, "bounded at every step");
        }
        let newest_missing = (9_990..10_000)
            .filter(|i| m.get(&format!("d{i}"), now).is_none())
            .count();
        assert_eq!(newest_missing, 0);
        assert!(m.get("d0", now).is_none(), "the oldest is evicted");
    }

    #[test]
    fn outlived_entries_are_absent_then_evicted() {
        let m: ExpiringMap<&str> = ExpiringMap::new(1000);
        let now = 1_000;
        m.insert_with("short", now + 10, now, || "s");
        m.insert_with("long", now + 1_000, now, || "l");
        assert_eq!(m.get("short", now + 9), Some("s"));
        assert_eq!(m.get("short", now + 10), None);
        assert_eq!(m.get_held("short"), Some("s"), "held until evicted");
        let mut seen = Vec::new();
        m.for_each(now + 10, |id, _| seen.push(id.to_string()));
        assert_eq!(seen, vec!["long".to_string()]);
        m.evict_expired(now + 10);
        assert!(!m.contains("short"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn insert_keeps_what_is_held_and_replace_keeps_the_order() {
        let m: ExpiringMap<u32> = ExpiringMap::new(100);
        assert_eq!(m.insert_with("x", 100, 0, || 1), (1, true));
        assert_eq!(m.insert_with("x", 100, 0, || 2), (1, false));
        assert!(m.replace("x", 3));
        assert!(!m.replace("y", 3));
        assert_eq!(m.get("x", 0), Some(3));
        assert_eq!(m.len(), 1);
        m.remove_where(|v| *v == 3);
        assert!(m.is_empty());
    }
}
