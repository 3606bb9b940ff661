//! The decision engine: [`RateLimiter`] checks one request against every limited
//! dimension of every scope at once and answers a [`Decision`].
//!
//! # Why a hand-written GCRA and not `governor`
//!
//! The algorithm is governor's (GCRA: one `u64` theoretical arrival time per dimension,
//! weighted costs like `check_key_n`), but governor's keyed limiter cannot express four
//! things this layer must do:
//!
//! 1. **Per-key quotas.** A governor keyed limiter has one quota for all its keys; here
//!    every key may carry its own limits (`Principal::limits`).
//! 2. **All-or-nothing across dimensions and scopes.** A request is admitted only if its
//!    requests, input tokens, output room and daily tokens fit for the key, its account
//!    and the gateway. Governor consumes capacity on each `check_key_n`, so a request
//!    refused by its account would already have spent its key's capacity; there is no
//!    peek or rollback.
//! 3. **Debt.** Output tokens are known only when the response ends and must be charged
//!    even beyond the burst (governor refuses a charge that does not fit); the debt then
//!    makes later requests wait.
//! 4. **Headers.** `remaining`/`reset` of every dimension need the TAT itself, after the
//!    decision, refused or not.
//!
//! So [`gcra`](crate::gcra) keeps the arithmetic as pure functions on a `u64`, the memory
//! backend applies them under the locks of the (at most three) entries a request touches,
//! and the Redis script applies the same lines to the same numbers.
//!
//! # Memory layout
//!
//! A key's state is its four TATs stored as `u32` offsets from a per-shard base (1 µs
//! units for the per-minute dimensions, 1 ms for tokens per day; 16 bytes) in a sharded
//! hash map keyed by the numeric key id: 24 bytes per slot plus the map's control byte
//! and load factor (≈ 52 bytes a key at 1M keys, see `tests/memory_cost.rs`). Stored TATs
//! are rounded *up* to their unit, so compaction can only refuse a microsecond early,
//! never admit more. Each shard's base moves forward at every sweep (and when a check
//! finds it more than 10 minutes old), so offsets keep over an hour of room; debt beyond
//! that (an output of more than an hour's worth of the output limit) is capped. Accounts
//! are interned to a `u64` once and have shards of their own; the global scope is one
//! `parking_lot::Mutex<[u64; 4]>`. A request locks its key's shard, then its account's
//! shard, then the global entry — always in that order, so they cannot deadlock —
//! decides, writes the new TATs if admitted, and unlocks. A parking_lot lock costs one
//! compare-and-swap uncontended, the same as a CAS on one TAT, and several TATs change
//! together without rollback.
//!
//! State whose TATs are all in the past is indistinguishable from no state, so the
//! periodic sweep that drops it loses nothing, and a refused request of a key without
//! state stores none.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response};
use tollgate_core::{
    Clock, Dialect, ErrorKind, GatewayError, Limits, Principal, RenderOptions, SystemClock,
};

use crate::config::{BackendConfig, ConfigError, LimitsConfig, RateLimitConfig};
use crate::gcra::{self, Outcome, Rate};
use crate::headers;

mod memory;
#[cfg(feature = "redis")]
mod redis;

/// Who a limit is shared by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One API key.
    Key,
    /// Every key of one account.
    Account,
    /// Every key of the gateway.
    Global,
}

impl Scope {
    /// Every scope, in the order they are checked and locked.
    pub const ALL: [Scope; 3] = [Scope::Key, Scope::Account, Scope::Global];

    /// `key`, `account` or `global`: stable for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Account => "account",
            Scope::Global => "global",
        }
    }

    /// How a client-facing message names the scope.
    pub fn phrase(self) -> &'static str {
        match self {
            Scope::Key => "for this key",
            Scope::Account => "for this key's account",
            Scope::Global => "for this gateway (shared by all keys)",
        }
    }

    fn index(self) -> usize {
        match self {
            Scope::Key => 0,
            Scope::Account => 1,
            Scope::Global => 2,
        }
    }
}

/// What is limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Requests per minute (RPM).
    Requests,
    /// Input tokens per minute (ITPM), charged from the request's estimate.
    InputTokens,
    /// Output tokens per minute (OTPM), charged from the response's usage.
    OutputTokens,
    /// Tokens per day (TPD): input estimate plus output.
    TokensPerDay,
}

impl Dimension {
    /// Every dimension, in storage order.
    pub const ALL: [Dimension; 4] = [
        Dimension::Requests,
        Dimension::InputTokens,
        Dimension::OutputTokens,
        Dimension::TokensPerDay,
    ];

    /// `rpm`, `itpm`, `otpm` or `tpd`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "rpm",
            Dimension::InputTokens => "itpm",
            Dimension::OutputTokens => "otpm",
            Dimension::TokensPerDay => "tpd",
        }
    }

    /// How a client-facing message names the dimension.
    pub fn phrase(self) -> &'static str {
        match self {
            Dimension::Requests => "requests per minute",
            Dimension::InputTokens => "input tokens per minute",
            Dimension::OutputTokens => "output tokens per minute",
            Dimension::TokensPerDay => "tokens per day",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::InputTokens => "input tokens",
            Dimension::OutputTokens => "output tokens",
            Dimension::TokensPerDay => "tokens",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Dimension::Requests => 0,
            Dimension::InputTokens => 1,
            Dimension::OutputTokens => 2,
            Dimension::TokensPerDay => 3,
        }
    }

    fn period_secs(self) -> u64 {
        match self {
            Dimension::TokensPerDay => 86_400,
            _ => 60,
        }
    }
}

/// One dimension of one scope, as the `anthropic-ratelimit-*` headers describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The limit per period (minute, or day for tokens per day).
    pub limit: u64,
    /// Units that could be spent right now.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset_after: Duration,
}

// ===== plans: what one request asks of which scopes =====

pub(crate) type Rates = [Option<Rate>; 4];

/// The rates of each scope of one request, indexed by [`Scope::index`]; `None` when the
/// scope limits nothing.
pub(crate) type View<'a> = [Option<&'a Rates>; 3];

/// The limited scopes of one request and its token estimate. Small (it is moved into
/// the admission): the configured rates stay in [`Shared`], see [`Shared::view`].
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The key's id, and its own rates when its record overrides a default.
    pub(crate) key: Option<(i64, Option<Box<Rates>>)>,
    /// The key's account, when accounts are limited.
    pub(crate) account: Option<Arc<str>>,
    /// Whether the global scope is limited.
    pub(crate) global: bool,
    pub(crate) tokens: u64,
}

/// How a dimension takes part in an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Spend `n` units.
    Admit(u64),
    /// Require room for `n` units without spending them (output tokens).
    Peek(u64),
}

impl Mode {
    pub(crate) fn of(dim: Dimension, tokens: u64) -> Mode {
        match dim {
            Dimension::Requests => Mode::Admit(1),
            Dimension::InputTokens | Dimension::TokensPerDay => Mode::Admit(tokens),
            Dimension::OutputTokens => Mode::Peek(1),
        }
    }

    /// 1 = admit, 2 = peek, as the Redis script numbers them.
    #[cfg(feature = "redis")]
    pub(crate) fn code(self) -> (u8, u64) {
        match self {
            Mode::Admit(n) => (1, n),
            Mode::Peek(n) => (2, n),
        }
    }
}

/// Whether any scope limits a dimension that the response's usage settles: input tokens
/// (the estimate is corrected), output tokens or tokens per day.
fn settles(view: &View<'_>) -> bool {
    view.iter().flatten().any(|rates| {
        rates[Dimension::InputTokens.index()].is_some()
            || rates[Dimension::OutputTokens.index()].is_some()
            || rates[Dimension::TokensPerDay.index()].is_some()
    })
}

/// Ticks to move each TAT by, per scope and dimension, once usage is known.
pub(crate) type Deltas = [[i64; 4]; 3];

/// The settlement of a request admitted with an `estimate` of input tokens: input
/// tokens per minute corrected to `input` when the response reported it, output tokens
/// charged in full, tokens per day corrected to `input` (else the estimate) plus output.
fn deltas(view: &View<'_>, estimate: u64, input: Option<u64>, output: u64) -> Deltas {
    let mut out = [[0; 4]; 3];
    let spent = input.unwrap_or(estimate);
    for (rates, delta) in view.iter().zip(out.iter_mut()) {
        let Some(rates) = rates else { continue };
        let mut set = |dim: Dimension, charged: u64, actual: u64| {
            if let Some(rate) = &rates[dim.index()] {
                delta[dim.index()] = gcra::correction(rate, charged, actual);
            }
        };
        set(Dimension::InputTokens, estimate, spent);
        set(Dimension::OutputTokens, 0, output);
        set(
            Dimension::TokensPerDay,
            estimate,
            spent.saturating_add(output),
        );
    }
    out
}

/// A refusal as evaluated: scope, dimension, ticks to wait (`None`: never fits).
pub(crate) type Refused = (Scope, Dimension, Option<u64>);

/// Evaluate a request of `tokens` against stored TATs: the refusal with the longest wait
/// (a request that can never fit wins), or the TATs after admission. The Redis script is
/// a copy of this.
pub(crate) fn evaluate(
    view: &View<'_>,
    tokens: u64,
    tats: &[[u64; 4]; 3],
    now: u64,
) -> Result<[[u64; 4]; 3], Refused> {
    let mut after = *tats;
    let mut worst: Option<Refused> = None;
    for scope in Scope::ALL {
        let Some(rates) = view[scope.index()] else {
            continue;
        };
        for dim in Dimension::ALL {
            let Some(rate) = &rates[dim.index()] else {
                continue;
            };
            let tat = tats[scope.index()][dim.index()];
            let (spend, n) = match Mode::of(dim, tokens) {
                Mode::Admit(n) => (true, n),
                Mode::Peek(n) => (false, n),
            };
            let wait = match gcra::admit(tat, now, rate, n) {
                Outcome::Fits(new) => {
                    if spend {
                        after[scope.index()][dim.index()] = new;
                    }
                    continue;
                }
                Outcome::Wait(w) => Some(w),
                Outcome::Never => None,
            };
            let worse = match worst {
                None => true,
                Some((_, _, None)) => false,
                Some((_, _, Some(w))) => wait.is_none_or(|new| new > w),
            };
            if worse {
                worst = Some((scope, dim, wait));
            }
        }
    }
    match worst {
        None => Ok(after),
        Some(refused) => Err(refused),
    }
}

/// What a backend answers: the decision and the TATs it leaves (after admission, or
/// untouched when refused), at backend time `now` in ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Raw {
    pub(crate) refused: Option<Refused>,
    pub(crate) tats: [[u64; 4]; 3],
    pub(crate) now: u64,
}

// ===== RateLimiter =====

/// Checks requests against per-key, per-account and global limits; cheap to clone (one
/// `Arc`), shared by every clone of [`RateLimitLayer`](crate::RateLimitLayer).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use tollgate_core::{Limits, Principal};
/// use tollgate_ratelimit::{Decision, Dimension, RateLimitConfig, RateLimiter, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut config = RateLimitConfig::default();
/// config.default_key.itpm = Some(10_000);
/// let limiter = RateLimiter::from_config(&config).unwrap();
///
/// let key = Principal {
///     key_id: 7,
///     account_id: Arc::from("acme"),
///     name: None,
///     allowed_models: None,
///     limits: Limits::default(),
/// };
/// assert!(matches!(limiter.check(Some(&key), 8_000).await, Decision::Admitted(_)));
/// let Decision::Refused(refusal) = limiter.check(Some(&key), 8_000).await else { panic!() };
/// assert_eq!((refusal.scope(), refusal.dimension()), (Scope::Key, Dimension::InputTokens));
/// assert_eq!(refusal.wait().unwrap().as_secs(), 36); // 6,000 tokens at 10,000 a minute
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    key_defaults: LimitsConfig,
    key_rates: Rates,
    /// Whether the default key rates limit anything.
    key_limited: bool,
    account_rates: Option<Rates>,
    global_rates: Option<Rates>,
    /// Nanoseconds per backend tick.
    tick_ns: u64,
    headers_on_success: bool,
    backend: Backend,
}

enum Backend {
    Memory(memory::Memory),
    #[cfg(feature = "redis")]
    Redis(redis::RedisBackend),
}

/// A decision now, or one that needs a round trip.
pub(crate) enum Pending {
    Ready(Decision),
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "only the Redis backend awaits")
    )]
    Later(Pin<Box<dyn Future<Output = Decision> + Send + 'static>>),
}

impl RateLimiter {
    /// A limiter for `config` on the real clock.
    ///
    /// The Redis backend (feature `redis`) connects lazily, so this must be called inside
    /// a Tokio runtime when `config.backend` is Redis; it does not wait for Redis.
    ///
    /// # Errors
    ///
    /// An invalid configuration ([`RateLimitConfig::validate`]), a Redis URL the client
    /// rejects, or a Redis backend in a build without the `redis` feature.
    pub fn from_config(config: &RateLimitConfig) -> Result<RateLimiter, ConfigError> {
        RateLimiter::with_clock(config, Arc::new(SystemClock))
    }

    /// A limiter for `config` that reads time from `clock` (a `ManualClock` in tests).
    /// The Redis backend ignores it: its buckets and `*-reset` headers follow the Redis
    /// server's clock, so that instances need not agree on time.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::from_config`].
    pub fn with_clock(
        config: &RateLimitConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<RateLimiter, ConfigError> {
        config.validate()?;
        let (backend, tick_ns) = match &config.backend {
            BackendConfig::Memory => {
                let every = Duration::from_secs(config.evict_interval_secs);
                (Backend::Memory(memory::Memory::new(clock, every)), 1)
            }
            #[cfg(feature = "redis")]
            BackendConfig::Redis(redis) => {
                (Backend::Redis(redis::RedisBackend::new(redis)?), 1_000)
            }
            #[cfg(not(feature = "redis"))]
            BackendConfig::Redis(_) => {
                return Err(ConfigError::new(
                    "backend.kind",
                    "\"redis\" needs tollgate-ratelimit built with the `redis` feature; use \"memory\" or enable the feature",
                ));
            }
        };
        let scoped = |limits: &LimitsConfig| {
            limits
                .is_limited()
                .then(|| rates(limits.as_array(), limits.burst, tick_ns))
        };
        Ok(RateLimiter {
            shared: Arc::new(Shared {
                key_rates: rates(
                    config.default_key.as_array(),
                    config.default_key.burst,
                    tick_ns,
                ),
                key_limited: config.default_key.is_limited(),
                key_defaults: config.default_key,
                account_rates: scoped(&config.account),
                global_rates: scoped(&config.global),
                tick_ns,
                headers_on_success: config.headers_on_success,
                backend,
            }),
        })
    }

    /// Decide on one request of `principal` (none: only the global scope applies) that is
    /// estimated at `input_tokens` (0 for requests that carry no prompt).
    ///
    /// Admission spends one request, the input tokens per minute and per day, and needs
    /// room for at least one output token; output is charged later with
    /// [`Admission::settle`], which also corrects the input estimate from the real usage.
    /// The memory backend answers without awaiting.
    pub async fn check(&self, principal: Option<&Principal>, input_tokens: u64) -> Decision {
        match self.begin(principal, input_tokens) {
            Pending::Ready(d) => d,
            Pending::Later(f) => f.await,
        }
    }

    /// Whether successful responses carry `anthropic-ratelimit-*` (the configuration's
    /// `headers_on_success`).
    pub fn headers_on_success(&self) -> bool {
        self.shared.headers_on_success
    }

    /// Memory backend: drop the state of every key and account whose buckets are full
    /// (lossless), and answer how many entries went. Runs by itself every
    /// `evict_interval_secs`; 0 for Redis, whose keys expire by themselves.
    pub fn evict_idle(&self) -> usize {
        match &self.shared.backend {
            Backend::Memory(m) => m.sweep(m.now_ticks()),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => 0,
        }
    }

    /// Memory backend: keys and accounts with state in memory (0 for Redis).
    pub fn tracked(&self) -> usize {
        match &self.shared.backend {
            Backend::Memory(m) => m.len(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => 0,
        }
    }

    pub(crate) fn begin(&self, principal: Option<&Principal>, input_tokens: u64) -> Pending {
        let plan = self.shared.plan(principal, input_tokens);
        if plan.key.is_none() && plan.account.is_none() && !plan.global {
            return Pending::Ready(Decision::Admitted(Admission {
                shared: self.shared.clone(),
                plan: None,
                snapshot: None,
            }));
        }
        match &self.shared.backend {
            Backend::Memory(m) => {
                let raw = m.check(&plan, &self.shared.view(&plan));
                Pending::Ready(self.shared.decide(plan, raw))
            }
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                let shared = self.shared.clone();
                let fut = r.check(&self.shared, plan);
                Pending::Later(Box::pin(async move {
                    let (plan, result) = fut.await;
                    match result {
                        Ok(raw) => shared.decide(plan, raw),
                        Err(reason) => shared.outage(reason),
                    }
                }))
            }
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.shared.backend {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("RateLimiter")
            .field("backend", &backend)
            .field("key_defaults", &self.shared.key_defaults)
            .field("headers_on_success", &self.shared.headers_on_success)
            .finish_non_exhaustive()
    }
}

fn rates(limits: [Option<u64>; 4], burst: u32, tick_ns: u64) -> Rates {
    let mut out = [None; 4];
    for dim in Dimension::ALL {
        out[dim.index()] = limits[dim.index()].map(|l| rate(l, burst, dim, tick_ns));
    }
    out
}

fn rate(limit: u64, burst: u32, dim: Dimension, tick_ns: u64) -> Rate {
    Rate::new(limit, burst, dim.period_secs() * (1_000_000_000 / tick_ns))
}

impl Shared {
    fn plan(&self, principal: Option<&Principal>, tokens: u64) -> Plan {
        let key = principal.and_then(|p| {
            if p.limits == Limits::default() {
                return self.key_limited.then_some((p.key_id, None));
            }
            let d = &self.key_defaults;
            let own = [
                p.limits.rpm.or(d.rpm),
                p.limits.itpm.or(d.itpm),
                p.limits.otpm.or(d.otpm),
                p.limits.tpd.or(d.tpd),
            ];
            // A key store may hand over any number; the configuration's range applies.
            let burst = p.limits.burst.map_or(d.burst, |b| b.clamp(1, 1000));
            let rates = rates(own, burst, self.tick_ns);
            rates
                .iter()
                .any(Option::is_some)
                .then(|| (p.key_id, Some(Box::new(rates))))
        });
        Plan {
            key,
            account: principal
                .filter(|_| self.account_rates.is_some())
                .map(|p| p.account_id.clone()),
            global: self.global_rates.is_some(),
            tokens,
        }
    }

    /// The rates of each scope of `plan`.
    pub(crate) fn view<'a>(&'a self, plan: &'a Plan) -> View<'a> {
        [
            plan.key
                .as_ref()
                .map(|(_, own)| own.as_deref().unwrap_or(&self.key_rates)),
            plan.account.as_ref().and(self.account_rates.as_ref()),
            self.global_rates.as_ref().filter(|_| plan.global),
        ]
    }

    /// The wall-clock instant of backend time `now`.
    fn wall(&self, now: u64) -> SystemTime {
        match &self.backend {
            Backend::Memory(m) => m.wall(now),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => std::time::UNIX_EPOCH + Duration::from_micros(now),
        }
    }

    fn ticks(&self, ticks: u64) -> Duration {
        Duration::from_nanos(ticks.saturating_mul(self.tick_ns))
    }

    fn quota(&self, rate: &Rate, tat: u64, now: u64) -> Quota {
        Quota {
            limit: rate.limit,
            remaining: rate.remaining(tat, now),
            reset_after: self.ticks(gcra::reset_after(tat, now)),
        }
    }

    fn decide(self: &Arc<Self>, plan: Plan, raw: Raw) -> Decision {
        let snapshot = Snapshot {
            tats: raw.tats,
            now: raw.now,
        };
        let Some((scope, dimension, wait)) = raw.refused else {
            return Decision::Admitted(Admission {
                shared: self.clone(),
                plan: Some(plan),
                snapshot: Some(snapshot),
            });
        };
        let Some(rates) = self.view(&plan)[scope.index()] else {
            return self.outage("backend refused a scope the request does not have".into());
        };
        let mut quotas = [None; 4];
        for dim in Dimension::ALL {
            quotas[dim.index()] = rates[dim.index()]
                .map(|r| self.quota(&r, raw.tats[scope.index()][dim.index()], raw.now));
        }
        let (limit, capacity) = rates[dimension.index()].map_or((0, 0), |r| (r.limit, r.capacity));
        let needed = match Mode::of(dimension, plan.tokens) {
            Mode::Admit(n) | Mode::Peek(n) => n,
        };
        Decision::Refused(Refusal {
            scope,
            dimension,
            wait: wait.map(|w| self.ticks(w)),
            needed,
            limit,
            capacity,
            quotas,
            wall: self.wall(raw.now),
        })
    }

    fn outage(self: &Arc<Self>, reason: String) -> Decision {
        #[cfg(feature = "redis")]
        if let Backend::Redis(r) = &self.backend {
            if r.fails_open() {
                tracing::warn!(%reason, "rate limiter unavailable; admitting without limits (fail_open)");
                return Decision::Admitted(Admission {
                    shared: self.clone(),
                    plan: None,
                    snapshot: None,
                });
            }
        }
        tracing::warn!(%reason, "rate limiter unavailable; refusing (fail_closed)");
        Decision::Unavailable(Unavailable { reason })
    }
}

// ===== Decision =====

/// The answer for one request.
#[derive(Debug)]
pub enum Decision {
    /// Go ahead; charge the output when the response is over.
    Admitted(Admission),
    /// A limit is exhausted: answer 429 ([`Refusal::to_response`]).
    Refused(Refusal),
    /// The backend could not answer and the policy is `fail_closed`: answer 503
    /// ([`Unavailable::to_response`]).
    Unavailable(Unavailable),
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    tats: [[u64; 4]; 3],
    now: u64,
}

/// An admitted request: its quotas after admission, and the handle that charges its
/// output tokens.
pub struct Admission {
    shared: Arc<Shared>,
    /// `None` when nothing was limited (or the backend was down and failing open).
    plan: Option<Plan>,
    snapshot: Option<Snapshot>,
}

impl Admission {
    /// A dimension of a scope after admission; `None` if it is not limited.
    pub fn quota(&self, scope: Scope, dim: Dimension) -> Option<Quota> {
        let (plan, snap) = (self.plan.as_ref()?, self.snapshot.as_ref()?);
        let rate = self.shared.view(plan)[scope.index()]?[dim.index()]?;
        Some(
            self.shared
                .quota(&rate, snap.tats[scope.index()][dim.index()], snap.now),
        )
    }

    /// The most restrictive scope of a dimension: the fewest units remaining (ties: the
    /// later reset).
    pub fn tightest(&self, dim: Dimension) -> Option<(Scope, Quota)> {
        Scope::ALL
            .iter()
            .filter_map(|&s| self.quota(s, dim).map(|q| (s, q)))
            .min_by_key(|(_, q)| (q.remaining, std::cmp::Reverse(q.reset_after)))
    }

    /// Replace the response's `anthropic-ratelimit-{requests,input-tokens,output-tokens,
    /// tokens}-*` with this admission's: each the tightest scope of its dimension, and
    /// `tokens-*` the tightest of all token dimensions. Leaves the headers alone when
    /// nothing was limited.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let Some(snap) = &self.snapshot else {
            return;
        };
        let wall = self.shared.wall(snap.now);
        let quotas = Dimension::ALL.map(|dim| self.tightest(dim).map(|(_, q)| q));
        headers::replace_all(headers, &quotas, wall);
    }

    /// Whether any scope limits input, output or daily tokens, i.e. whether
    /// [`settle`](Admission::settle) (or [`charge_output`](Admission::charge_output))
    /// changes anything — and so whether the response's usage needs reading.
    pub fn settles_usage(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|plan| settles(&self.shared.view(plan)))
    }

    /// Charge the response's output tokens to output tokens per minute and tokens per
    /// day of every scope, unconditionally: beyond the burst it is debt, and the scope's
    /// next requests wait until it is paid back. The same as
    /// [`settle(None, tokens)`](Admission::settle).
    pub fn charge_output(self, tokens: u64) {
        self.settle(None, tokens);
    }

    /// Settle the request from the response's usage: `input_tokens` (when the response
    /// reported them) replaces the admission's estimate in input tokens per minute and
    /// tokens per day — the difference is charged, or refunded down to a full bucket —
    /// and `output_tokens` are charged unconditionally (debt beyond the burst, which the
    /// scope's next requests wait out). Redis: sent in the background (needs a Tokio
    /// runtime; lost, with a warning, if Redis is down).
    pub fn settle(self, input_tokens: Option<u64>, output_tokens: u64) {
        let Some(plan) = &self.plan else {
            return;
        };
        let view = self.shared.view(plan);
        let deltas = deltas(&view, plan.tokens, input_tokens, output_tokens);
        if deltas.iter().flatten().all(|&d| d == 0) {
            return;
        }
        match &self.shared.backend {
            Backend::Memory(m) => m.settle(plan, &deltas),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.settle(plan, &view, &deltas),
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("limited", &self.plan.is_some())
            .finish_non_exhaustive()
    }
}

/// A refused request: which limit, for whom, and for how long.
#[derive(Clone, Debug)]
pub struct Refusal {
    scope: Scope,
    dimension: Dimension,
    wait: Option<Duration>,
    needed: u64,
    limit: u64,
    capacity: u64,
    quotas: [Option<Quota>; 4],
    wall: SystemTime,
}

/// Longest wait a client is told to retry after; longer waits send `x-should-retry: false`.
pub const MAX_RETRYABLE_WAIT: Duration = Duration::from_secs(60);

impl Refusal {
    /// The scope whose limit refused.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The exhausted dimension.
    pub fn dimension(&self) -> Dimension {
        self.dimension
    }

    /// How long until the same request fits; `None` if it never can (it is larger than
    /// the burst, or the limit is 0).
    pub fn wait(&self) -> Option<Duration> {
        self.wait
    }

    /// Whether the client should retry by itself: the wait is known and at most
    /// [`MAX_RETRYABLE_WAIT`] (longer ones would make SDKs sleep for hours or give up
    /// inconsistently).
    pub fn should_retry(&self) -> bool {
        self.wait.is_some_and(|w| w <= MAX_RETRYABLE_WAIT)
    }

    /// A dimension of the refusing scope, as it stands.
    pub fn quota(&self, dim: Dimension) -> Option<Quota> {
        self.quotas[dim.index()]
    }

    /// The 429 `rate_limit_error`, naming dimension and scope, with `retry-after`
    /// (rounded up) and `retry-after-ms` when the wait is known.
    pub fn to_error(&self) -> GatewayError {
        let (dim, scope) = (self.dimension.phrase(), self.scope.phrase());
        let message = match self.wait {
            None if self.limit == 0 => format!(
                "rate limit: the {dim} limit {scope} is 0, so no request can pass; ask the operator to raise it"
            ),
            None => format!(
                "rate limit: this request needs {} {} but the {dim} limit {scope} allows at most {} at once; send a smaller request or ask for a higher limit",
                self.needed,
                self.dimension.unit(),
                self.capacity
            ),
            Some(wait) => {
                let what = if self.dimension == Dimension::OutputTokens {
                    format!(
                        "{dim} {scope} are used up (limit {}; output of earlier responses is still being paid back)",
                        self.limit
                    )
                } else {
                    format!("{dim} {scope} exceeded (limit {})", self.limit)
                };
                let advice = if self.should_retry() {
                    format!("retry after {:.3} s", wait.as_secs_f64())
                } else {
                    format!(
                        "capacity returns in {:.0} s, longer than a client should wait in a retry loop; slow down or ask for a higher limit",
                        wait.as_secs_f64().ceil()
                    )
                };
                format!("rate limit: {what}; {advice}")
            }
        };
        let mut err =
            GatewayError::new(ErrorKind::RateLimit, message).with_should_retry(self.should_retry());
        if let Some(wait) = self.wait {
            err = err.with_retry_after(wait);
        }
        err
    }

    /// The refusing scope's `anthropic-ratelimit-*` triplets (`tokens-*`: its tightest
    /// token dimension).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers::write_all(headers, &self.quotas, self.wall);
    }

    /// The complete 429 response in `dialect`: envelope, `retry-after`, `retry-after-ms`,
    /// `x-should-retry`, `x-tollgate-origin: gateway` and the rate-limit headers.
    pub fn to_response<B: From<Bytes>>(
        &self,
        dialect: Dialect,
        render: &RenderOptions,
    ) -> Response<B> {
        let mut res = self.to_error().to_response(dialect, render);
        self.write_headers(res.headers_mut());
        res
    }
}

/// The backend could not answer (Redis down or slow) and the policy is `fail_closed`.
#[derive(Clone, Debug)]
pub struct Unavailable {
    reason: String,
}

impl Unavailable {
    /// What failed, for logs (no secrets: the Redis error, never the URL's password).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The 503 envelope: the limiter is unavailable, retry shortly (`x-should-retry: true`).
    pub fn to_error(&self) -> GatewayError {
        GatewayError::new(
            ErrorKind::Unavailable,
            "the gateway's rate limiter is unavailable, so requests are refused until it is back; retry shortly",
        )
        .with_should_retry(true)
    }

    /// The complete 503 response in `dialect`.
    pub fn to_response<B: From<Bytes>>(
        &self,
        dialect: Dialect,
        render: &RenderOptions,
    ) -> Response<B> {
        self.to_error().to_response(dialect, render)
    }
}

#[cfg(test)]
mod tests;
