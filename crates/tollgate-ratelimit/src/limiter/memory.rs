//! The in-process backend: sharded maps of `[u64; 4]` TATs; see the
//! [parent module](super) for the layout and the lock order.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tokio::time::Instant;
use tollgate_core::Clock;

use super::{Dimension, Plan, Raw, View, evaluate};
use crate::gcra;

pub(crate) struct Memory {
    clock: Arc<dyn Clock>,
    epoch: Instant,
    evict_every: u64,
    state: Arc<State>,
}

/// Maps use foldhash (seeded per process): the keys are server-assigned numbers and
/// account names from the key store, not attacker-chosen, and SipHash would be a tenth of
/// the check.
type Map<K> = DashMap<K, [u64; 4], RandomState>;

struct State {
    keys: Map<u64>,
    accounts: Map<u64>,
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

impl Memory {
    pub(crate) fn new(clock: Arc<dyn Clock>, evict_every: Duration) -> Memory {
        let memory = Memory {
            epoch: clock.now(),
            clock,
            evict_every: u64::try_from(evict_every.as_nanos()).unwrap_or(u64::MAX),
            state: Arc::new(State {
                keys: DashMap::with_hasher(RandomState::default()),
                accounts: DashMap::with_hasher(RandomState::default()),
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
        self.with_entries(plan, |tats| {
            let mut current = [[0; 4]; 3];
            for (slot, tat) in current.iter_mut().zip(tats.iter()) {
                if let Some(t) = tat {
                    *slot = **t;
                }
            }
            match evaluate(view, plan.tokens, &current, now) {
                Ok(after) => {
                    for (tat, new) in tats.iter_mut().zip(after) {
                        if let Some(t) = tat {
                            **t = new;
                        }
                    }
                    Raw {
                        refused: None,
                        tats: after,
                        now,
                    }
                }
                Err(refused) => Raw {
                    refused: Some(refused),
                    tats: current,
                    now,
                },
            }
        })
    }

    pub(crate) fn charge(&self, plan: &Plan, view: &View<'_>, tokens: u64) {
        let now = self.now_ticks();
        self.with_entries(plan, |tats| {
            for (rates, tat) in view.iter().zip(tats.iter_mut()) {
                let (Some(rates), Some(tat)) = (rates, tat) else {
                    continue;
                };
                for dim in [Dimension::OutputTokens, Dimension::TokensPerDay] {
                    if let Some(rate) = &rates[dim.index()] {
                        let t = &mut tat[dim.index()];
                        *t = gcra::force(*t, now, rate, tokens);
                    }
                }
            }
        });
    }

    /// Run `f` with the entries of the plan's scopes locked, in the order key → account
    /// → global.
    fn with_entries<R>(
        &self,
        plan: &Plan,
        f: impl FnOnce(&mut [Option<&mut [u64; 4]>; 3]) -> R,
    ) -> R {
        let state = &*self.state;
        let account_id = plan.account.as_ref().map(|name| self.intern(name));
        let mut key = plan
            .key
            .as_ref()
            .map(|(id, _)| state.keys.entry(*id as u64).or_insert([0; 4]));
        let mut account = account_id.map(|id| state.accounts.entry(id).or_insert([0; 4]));
        let mut global = plan.global.then(|| state.global.lock());
        let mut tats = [
            key.as_deref_mut(),
            account.as_deref_mut(),
            global.as_deref_mut(),
        ];
        f(&mut tats)
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
        let before = self.keys.len() + self.accounts.len();
        let busy = |_: &u64, tats: &mut [u64; 4]| tats.iter().any(|&t| t > now);
        self.keys.retain(busy);
        self.accounts.retain(busy);
        before.saturating_sub(self.keys.len() + self.accounts.len())
    }
}
