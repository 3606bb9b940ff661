//! The per-process lookup cache in front of a [`KeyStore`](crate::KeyStore).
//!
//! Found keys are kept for the TTL (default 5 s), unknown keys for the negative TTL
//! (default 1 s). The map is bounded: when full, expired entries are pruned (at most once
//! a second), then unknown-key entries give way to found ones; a new unknown key is simply
//! not cached while the map is full of fresh entries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::time::Instant;
use tollgate_core::Principal;

use crate::key::KeyHash;
use crate::record::{KeyRecord, to_unix};

const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A key as the layer needs it on every request: the record, the ready-made principal,
/// and when its last use was last recorded.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) record: KeyRecord,
    pub(crate) principal: Principal,
    /// Unix seconds of the last `touch` sent for this key (or read from the store).
    pub(crate) last_touch: AtomicU64,
}

#[derive(Debug)]
enum Slot {
    Found { key: Arc<CachedKey>, at: Instant },
    Missing { at: Instant },
}

#[derive(Debug)]
struct Map {
    entries: HashMap<KeyHash, Slot>,
    last_prune: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct KeyCache {
    ttl: Duration,
    negative_ttl: Duration,
    capacity: usize,
    map: RwLock<Map>,
}

/// What the cache knows about a hash.
pub(crate) enum Cached {
    /// The key, looked up within the TTL.
    Found(Arc<CachedKey>),
    /// The store said "unknown" within the negative TTL.
    Missing,
}

impl KeyCache {
    pub(crate) fn new(ttl: Duration, negative_ttl: Duration, capacity: usize) -> KeyCache {
        KeyCache {
            ttl,
            negative_ttl,
            capacity,
            map: RwLock::new(Map {
                entries: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    /// The fresh entry for `hash`, if any.
    pub(crate) fn get(&self, hash: &KeyHash, now: Instant) -> Option<Cached> {
        let map = self.map.read();
        match map.entries.get(hash)? {
            Slot::Found { key, at } if now.saturating_duration_since(*at) < self.ttl => {
                Some(Cached::Found(key.clone()))
            }
            Slot::Missing { at } if now.saturating_duration_since(*at) < self.negative_ttl => {
                Some(Cached::Missing)
            }
            _ => None,
        }
    }

    /// Remember what the store answered for `hash` at `now`; returns the entry to use.
    pub(crate) fn insert(
        &self,
        hash: KeyHash,
        found: Option<KeyRecord>,
        now: Instant,
    ) -> Option<Arc<CachedKey>> {
        let Some(record) = found else {
            if !self.negative_ttl.is_zero() {
                self.put(hash, Slot::Missing { at: now }, now);
            }
            return None;
        };
        let stored_touch = record
            .last_used_at
            .map_or(0, |t| u64::try_from(to_unix(t)).unwrap_or(0));
        // Keep the newest touch time we know of, so a refresh does not re-send it.
        let previous_touch = match self.map.read().entries.get(&hash) {
            Some(Slot::Found { key, .. }) => key.last_touch.load(Ordering::Relaxed),
            _ => 0,
        };
        let key = Arc::new(CachedKey {
            principal: record.principal(),
            record,
            last_touch: AtomicU64::new(stored_touch.max(previous_touch)),
        });
        if !self.ttl.is_zero() {
            self.put(
                hash,
                Slot::Found {
                    key: key.clone(),
                    at: now,
                },
                now,
            );
        }
        Some(key)
    }

    fn put(&self, hash: KeyHash, slot: Slot, now: Instant) {
        let mut map = self.map.write();
        if map.entries.len() >= self.capacity && !map.entries.contains_key(&hash) {
            let due = map
                .last_prune
                .is_none_or(|last| now.saturating_duration_since(last) >= PRUNE_EVERY);
            if due {
                map.last_prune = Some(now);
                let (ttl, negative_ttl) = (self.ttl, self.negative_ttl);
                map.entries.retain(|_, slot| match slot {
                    Slot::Found { at, .. } => now.saturating_duration_since(*at) < ttl,
                    Slot::Missing { at } => now.saturating_duration_since(*at) < negative_ttl,
                });
            }
            if map.entries.len() >= self.capacity {
                if matches!(slot, Slot::Missing { .. }) {
                    return;
                }
                let victim = map
                    .entries
                    .iter()
                    .find(|(_, s)| matches!(s, Slot::Missing { .. }))
                    .or_else(|| map.entries.iter().next())
                    .map(|(h, _)| *h);
                if let Some(victim) = victim {
                    map.entries.remove(&victim);
                }
            }
        }
        map.entries.insert(hash, slot);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tollgate_core::Limits;

    use super::*;
    use crate::record::{AccountStatus, KeyStatus};

    fn record(id: i64) -> KeyRecord {
        KeyRecord {
            id,
            account_id: "acme".into(),
            name: None,
            prefix: "tg-abcd".into(),
            hash: KeyHash::of(&id.to_string()),
            allowed_models: None,
            limits: Limits::default(),
            status: KeyStatus::Active,
            account_status: AccountStatus::Active,
            created_at: SystemTime::UNIX_EPOCH,
            expires_at: None,
            last_used_at: None,
        }
    }

    fn cache(capacity: usize) -> KeyCache {
        KeyCache::new(Duration::from_secs(5), Duration::from_secs(1), capacity)
    }

    #[tokio::test(start_paused = true)]
    async fn found_entries_expire_after_the_ttl_and_missing_after_the_negative_ttl() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert(KeyHash::of("a"), Some(record(1)), t0);
        c.insert(KeyHash::of("b"), None, t0);
        let later = t0 + Duration::from_millis(1500);
        assert!(matches!(
            c.get(&KeyHash::of("a"), later),
            Some(Cached::Found(_))
        ));
        assert!(c.get(&KeyHash::of("b"), later).is_none());
        assert!(
            c.get(&KeyHash::of("a"), t0 + Duration::from_secs(5))
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_never_grows_past_its_capacity() {
        let c = cache(8);
        let t0 = Instant::now();
        for i in 0..100 {
            c.insert(KeyHash::of(&format!("missing{i}")), None, t0);
            c.insert(KeyHash::of(&format!("found{i}")), Some(record(i)), t0);
            assert!(c.len() <= 8);
        }
        // Found keys pushed the unknown ones out.
        assert!(matches!(
            c.get(&KeyHash::of("found99"), t0),
            Some(Cached::Found(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_pruned_when_full() {
        let c = cache(4);
        let t0 = Instant::now();
        for i in 0..4 {
            c.insert(KeyHash::of(&format!("m{i}")), None, t0);
        }
        let later = t0 + Duration::from_secs(2);
        c.insert(KeyHash::of("new-missing"), None, later);
        assert_eq!(c.len(), 1);
        assert!(matches!(
            c.get(&KeyHash::of("new-missing"), later),
            Some(Cached::Missing)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_caches_nothing() {
        let c = KeyCache::new(Duration::ZERO, Duration::ZERO, 10);
        let t0 = Instant::now();
        assert!(c.insert(KeyHash::of("a"), Some(record(1)), t0).is_some());
        c.insert(KeyHash::of("b"), None, t0);
        assert_eq!(c.len(), 0);
    }
}
