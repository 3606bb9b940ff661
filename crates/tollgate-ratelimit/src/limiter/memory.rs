//! The in-process backend: sharded maps of compact TATs (16 bytes a key); see the
//! [parent module](super) for the layout and the lock order.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use std::collections::HashMap;

use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;
use tollgate_core::Clock;

use super::{Deltas, Plan, Raw, View, evaluate};
use crate::gcra;

pub(crate) struct Memory {
    clock: Arc<dyn Clock>,
    epoch: Instant,
    evict_every: u64,
    state: Arc<State>,
}

struct State {
    keys: Shards,
    accounts: Shards,
    /// Account names interned to the numeric ids `accounts` is keyed by. Grows with the
    /// number of accounts, which the key store bounds; never swept.
    names: DashMap<Arc<str>, u64, RandomState>,
    next_account: AtomicU64,
    global: Mutex<[u64; 4]>,
    last_sweep: AtomicU64,
    /// Wall-clock nanoseconds since the Unix epoch minus ticks, re-read at every sweep:
    /// the wall time of a decision without a second clock read per check.
    wall_offset: AtomicI64,
}

// ===== compact state =====

/// Nanoseconds per stored unit of each dimension: 1 µs for the per-minute ones (a
/// `u32` spans 71 minutes), 1 ms for tokens per day (49 days).
const UNIT_NS: [u64; 4] = [1_000, 1_000, 1_000, 1_000_000];

/// A shard is rebased (every stored TAT shifted) when its base is this far behind: the
/// periodic sweep does it, and a check that finds a stale shard does it inline, so a
/// stored per-minute TAT always has over an hour of room.
const REBASE_AFTER_NS: u64 = 10 * 60 * 1_000_000_000;

/// One key's (or account's) four TATs, each `ceil((tat - base) / unit)` of its shard's
/// base; 0 means "at or before the base", i.e. an idle dimension. 16 bytes; with the
/// `u64` id a map slot is 24 bytes.
type Slot = [u32; 4];

/// A sharded map of slots. Hand-rolled rather than a `DashMap` because each shard needs
/// its own base, moved under the shard's lock.
struct Shards {
    shards: Box<[Mutex<Shard>]>,
    shift: u32,
}

struct Shard {
    /// Ticks (ns) the stored offsets count from; a multiple of every unit.
    base: u64,
    /// foldhash, seeded per process: ids are server-assigned numbers, not attacker-chosen.
    map: HashMap<u64, Slot, RandomState>,
}

impl Shards {
    fn new() -> Shards {
        let n = std::thread::available_parallelism()
            .map_or(4, usize::from)
            .saturating_mul(4)
            .next_power_of_two()
            .max(2);
        Shards {
            shards: (0..n)
                .map(|_| {
                    Mutex::new(Shard {
                        base: 0,
                        map: HashMap::with_hasher(RandomState::default()),
                    })
                })
                .collect(),
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// The locked shard of `id`, rebased first if its base is stale. The shard comes from
    /// a multiplicative hash's top bits, independent of the map's own hash.
    fn lock(&self, id: u64, now: u64) -> MutexGuard<'_, Shard> {
        let i = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        let mut shard = self.shards[i].lock();
        if now.saturating_sub(shard.base) > REBASE_AFTER_NS {
            shard.rebase(now);
        }
        shard
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Rebase every shard to `now` and drop the slots that are idle at `now`.
    fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut shard = s.lock();
                let before = shard.map.len();
                shard.rebase(now);
                let base = shard.base;
                shard
                    .map
                    .retain(|_, slot| decode(base, slot).iter().any(|&t| t > now));
                before - shard.map.len()
            })
            .sum()
    }
}

impl Shard {
    /// Move the base up to `now` (rounded down to the coarsest unit, so that every
    /// offset shifts exactly) and shift every offset down by as much.
    fn rebase(&mut self, now: u64) {
        let step = UNIT_NS[3];
        let by = now.saturating_sub(self.base) / step * step;
        if by == 0 {
            return;
        }
        self.base += by;
        for slot in self.map.values_mut() {
            for (s, unit) in slot.iter_mut().zip(UNIT_NS) {
                *s = s.saturating_sub(u32::try_from(by / unit).unwrap_or(u32::MAX));
            }
        }
    }

    /// The slot of `id` (a new, idle one if it has none) and the base it counts from.
    fn slot(&mut self, id: u64) -> (u64, &mut Slot) {
        (self.base, self.map.entry(id).or_default())
    }
}

fn decode(base: u64, slot: &Slot) -> [u64; 4] {
    let [m, d] = [UNIT_NS[0], UNIT_NS[3]];
    [
        decode_one(base, slot[0], m),
        decode_one(base, slot[1], m),
        decode_one(base, slot[2], m),
        decode_one(base, slot[3], d),
    ]
}

/// `tats` as offsets from `base`, each rounded *up* to its unit: a stored TAT is never
/// earlier than the exact one, so it can refuse a little sooner but never admit more.
/// Offsets beyond a `u32` (output debt of more than about an hour per minute, or 49 days
/// per day) are capped there: the only approximation that may admit early.
fn encode(base: u64, tats: &[u64; 4]) -> Slot {
    let [m, d] = [UNIT_NS[0], UNIT_NS[3]];
    [
        encode_one(base, tats[0], m),
        encode_one(base, tats[1], m),
        encode_one(base, tats[2], m),
        encode_one(base, tats[3], d),
    ]
}

// Spelled out per dimension so that each unit is a constant the division is folded into.
#[inline(always)]
fn decode_one(base: u64, s: u32, unit: u64) -> u64 {
    if s == 0 {
        0
    } else {
        base.saturating_add(u64::from(s) * unit)
    }
}

#[inline(always)]
fn encode_one(base: u64, tat: u64, unit: u64) -> u32 {
    u32::try_from(tat.saturating_sub(base).div_ceil(unit)).unwrap_or(u32::MAX)
}

impl Memory {
    pub(crate) fn new(clock: Arc<dyn Clock>, evict_every: Duration) -> Memory {
        let memory = Memory {
            epoch: clock.now(),
            clock,
            evict_every: u64::try_from(evict_every.as_nanos()).unwrap_or(u64::MAX),
            state: Arc::new(State {
                keys: Shards::new(),
                accounts: Shards::new(),
                names: DashMap::with_hasher(RandomState::default()),
                next_account: AtomicU64::new(0),
                global: Mutex::new([0; 4]),
                last_sweep: AtomicU64::new(0),
                wall_offset: AtomicI64::new(0),
            }),
        };
        memory.sync_wall(0);
        memory
    }

    fn sync_wall(&self, now: u64) {
        let wall = self
            .clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let wall = i64::try_from(wall.as_nanos()).unwrap_or(i64::MAX);
        let offset = wall.saturating_sub(i64::try_from(now).unwrap_or(i64::MAX));
        self.state.wall_offset.store(offset, Ordering::Relaxed);
    }

    pub(crate) fn wall(&self, now: u64) -> SystemTime {
        let offset = self.state.wall_offset.load(Ordering::Relaxed);
        let nanos = offset.saturating_add(i64::try_from(now).unwrap_or(i64::MAX));
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }

    /// Nanoseconds since this backend was created.
    pub(crate) fn now_ticks(&self) -> u64 {
        let since = self.clock.now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn len(&self) -> usize {
        self.state.keys.len() + self.state.accounts.len()
    }

    pub(crate) fn check(&self, plan: &Plan, view: &View<'_>) -> Raw {
        let now = self.now_ticks();
        self.maybe_sweep(now);
        self.with_entries(plan, now, |current| {
            match evaluate(view, plan.tokens, current, now) {
                Ok(after) => (
                    Some(after),
                    Raw {
                        refused: None,
                        tats: after,
                        now,
                    },
                ),
                Err(refused) => (
                    None,
                    Raw {
                        refused: Some(refused),
                        tats: *current,
                        now,
                    },
                ),
            }
        })
    }

    /// Move every TAT of the plan's scopes by its delta (see [`gcra::shift`]).
    pub(crate) fn settle(&self, plan: &Plan, deltas: &Deltas) {
        let now = self.now_ticks();
        self.with_entries(plan, now, |current| {
            let mut after = *current;
            for (tats, delta) in after.iter_mut().zip(deltas) {
                for (t, &d) in tats.iter_mut().zip(delta) {
                    if d != 0 {
                        *t = gcra::shift(*t, now, d);
                    }
                }
            }
            (Some(after), ())
        });
    }

    /// Lock the entries of the plan's scopes in the order key → account → global, run
    /// `f` on their TATs (0 for a scope the plan does not have), and store what it
    /// returns to store. One probe per map: a key without state gets a slot at once,
    /// removed again if it stays idle (refused).
    fn with_entries<R>(
        &self,
        plan: &Plan,
        now: u64,
        f: impl FnOnce(&[[u64; 4]; 3]) -> (Option<[[u64; 4]; 3]>, R),
    ) -> R {
        let state = &*self.state;
        let account_id = plan.account.as_ref().map(|name| self.intern(name));
        let mut key = plan.key.as_ref().map(|(id, _)| {
            let id = *id as u64;
            (id, state.keys.lock(id, now))
        });
        let mut account = account_id.map(|id| (id, state.accounts.lock(id, now)));
        let mut global = plan.global.then(|| state.global.lock());
        let mut slots = [
            key.as_mut().map(|(id, shard)| shard.slot(*id)),
            account.as_mut().map(|(id, shard)| shard.slot(*id)),
        ];
        let mut current = [[0; 4]; 3];
        for (tats, slot) in current.iter_mut().zip(&slots) {
            if let Some((base, slot)) = slot {
                *tats = decode(*base, slot);
            }
        }
        if let Some(g) = &global {
            current[2] = **g;
        }
        let (store, out) = f(&current);
        if let Some(after) = store {
            for ((slot, new), old) in slots.iter_mut().zip(&after).zip(&current) {
                if let Some((base, slot)) = slot.as_mut().filter(|_| new != old) {
                    **slot = encode(*base, new);
                }
            }
            if let Some(g) = &mut global {
                **g = after[2];
            }
        }
        let idle = slots.map(|slot| slot.is_some_and(|(_, s)| *s == [0; 4]));
        for (entry, idle) in [(&mut key, idle[0]), (&mut account, idle[1])] {
            if let (Some((id, shard)), true) = (entry, idle) {
                shard.map.remove(id);
            }
        }
        out
    }

    fn intern(&self, name: &Arc<str>) -> u64 {
        if let Some(id) = self.state.names.get(&**name).map(|r| *r) {
            return id;
        }
        *self
            .state
            .names
            .entry(name.clone())
            .or_insert_with(|| self.state.next_account.fetch_add(1, Ordering::Relaxed))
    }

    /// Sweep when the interval has passed: on Tokio's blocking pool when there is a
    /// runtime, else inline. Called before any entry is locked.
    fn maybe_sweep(&self, now: u64) {
        let last = self.state.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.evict_every
            || self
                .state
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.sync_wall(now);
        let state = self.state.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || state.sweep(now))),
            Err(_) => {
                state.sweep(now);
            }
        }
    }

    pub(crate) fn sweep(&self, now: u64) -> usize {
        self.state.sweep(now)
    }
}

impl State {
    fn sweep(&self, now: u64) -> usize {
        self.keys.sweep(now) + self.accounts.sweep(now)
    }
}
