//! A small in-process cache with a stated staleness bound, for what the
//! accept path would otherwise read from Postgres on every request (API
//! keys, compiled templates).
//!
//! An entry is served for at most `ttl` after it was loaded, so a change made
//! elsewhere (a revoked key, an edited template) shows within `ttl`; a change
//! made through this process removes the entry at once ([`TtlCache::remove`]).
//! A `ttl` of zero turns the cache off. Only answers worth keeping are
//! inserted (callers never cache "not found"), and the cache holds at most
//! `capacity` entries: when full, expired entries go first, then the one
//! closest to expiry, so memory stays bounded whatever callers present.
//!
//! Time is read from a [`Clock`], so tests move it instead of sleeping.

use std::{
    collections::HashMap,
    fmt,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Where a cache reads the time.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A bounded map whose entries expire `ttl` after they were inserted.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<K, (V, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A cache's counters since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Entries held.
    pub entries: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing fresh (while the cache is on).
    pub misses: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache serving entries for `ttl` (zero: never), holding at most
    /// `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self::with_clock(ttl, capacity, Arc::new(SystemClock))
    }

    /// [`TtlCache::new`], reading the time from `clock`.
    pub fn with_clock(ttl: Duration, capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            clock,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// How long an entry is served.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the cache keeps anything.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fresh entry for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let now = self.clock.now();
        let mut entries = self.lock();
        let found = match entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `value` for `key` for the next `ttl`.
    pub fn insert(&self, key: K, value: V) {
        if !self.enabled() {
            return;
        }
        let now = self.clock.now();
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, (value, now + self.ttl));
    }

    /// Forgets `key`, so the next lookup loads it again.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Forgets every entry `drop` picks.
    pub fn remove_where(&self, mut drop: impl FnMut(&K, &V) -> bool) {
        self.lock().retain(|k, (v, _)| !drop(k, v));
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Entries held, hits and misses.
    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// How many entries are held (fresh or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves.
    #[derive(Debug)]
    struct Manual(Instant, Mutex<Duration>);

    impl Clock for Manual {
        fn now(&self) -> Instant {
            self.0 + *self.1.lock().unwrap()
        }
    }

    fn clock() -> Arc<Manual> {
        Arc::new(Manual(Instant::now(), Mutex::new(Duration::ZERO)))
    }

    fn advance(clock: &Manual, by: Duration) {
        *clock.1.lock().unwrap() += by;
    }

    #[test]
    fn an_entry_is_served_until_its_ttl_has_passed() {
        let clock = clock();
        let cache = TtlCache::with_clock(Duration::from_secs(5), 10, clock.clone());
        cache.insert("k", 1);
        advance(&clock, Duration::from_millis(4_999));
        assert_eq!(cache.get(&"k"), Some(1));
        advance(&clock, Duration::from_millis(1));
        assert_eq!(cache.get(&"k"), None);
        assert!(cache.is_empty(), "an expired entry is dropped when read");
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let clock = clock();
        let cache = TtlCache::with_clock(Duration::ZERO, 10, clock.clone());
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_oldest() {
        let clock = clock();
        let cache = TtlCache::with_clock(Duration::from_secs(10), 3, clock.clone());
        cache.insert(1, "a");
        advance(&clock, Duration::from_secs(1));
        cache.insert(2, "b");
        cache.insert(3, "c");
        cache.insert(4, "d");
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1), None, "the oldest went");
        assert_eq!(cache.get(&4), Some("d"));
        advance(&clock, Duration::from_secs(10));
        cache.insert(5, "e");
        assert_eq!(cache.len(), 1, "expired entries went first");
        for k in 6..1_000 {
            cache.insert(k, "x");
        }
        assert_eq!(cache.len(), 3, "never more than the capacity");
    }

    #[test]
    fn removed_entries_are_loaded_again() {
        let clock = clock();
        let cache = TtlCache::with_clock(Duration::from_secs(10), 10, clock.clone());
        cache.insert((1, "a"), 1);
        cache.insert((1, "b"), 2);
        cache.insert((2, "a"), 3);
        cache.remove(&(1, "a"));
        assert_eq!(cache.get(&(1, "a")), None);
        cache.remove_where(|k, _| k.0 == 2);
        assert_eq!(cache.get(&(2, "a")), None);
        assert_eq!(cache.get(&(1, "b")), Some(2));
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn lookups_are_counted_as_hits_and_misses() {
        let clock = clock();
        let cache = TtlCache::with_clock(Duration::from_secs(10), 10, clock.clone());
        assert_eq!(cache.get(&1), None);
        cache.insert(1, "a");
        assert_eq!(cache.get(&1), Some("a"));
        assert_eq!(cache.get(&1), Some("a"));
        advance(&clock, Duration::from_secs(10));
        assert_eq!(cache.get(&1), None, "expired");
        assert_eq!(
            cache.stats(),
            Stats {
                entries: 0,
                hits: 2,
                misses: 2
            }
        );
    }
}
