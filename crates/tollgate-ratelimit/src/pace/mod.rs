//! Client-side pacing: [`PaceLayer`] → [`Pace`] → [`PaceFuture`].
//!
//! On the client side a rate limit is better waited for than refused: a request that
//! does not fit waits (on Tokio's timer) until it does, at most `max_wait`; if it would
//! have to wait longer it fails at once with a [`PaceError`] instead of sending a request
//! the upstream would refuse.
//!
//! The pacer knows limits two ways:
//!
//! - **configured** (`limits`): RPM, ITPM (from `RequestMeta::est_input_tokens` when the
//!   request carries one), OTPM (room for one token; output is not charged locally) and
//!   TPD, as GCRA buckets like the server side's;
//! - **learned** (`learn_from_headers`, on by default): every response's
//!   `anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining}` say how
//!   full the upstream's bucket is; the pacer moves its own bucket at least that far
//!   (a dimension without a configured limit adopts the upstream's), so it slows down
//!   before the upstream refuses. A 429 with `retry-after` holds every request back for
//!   that long.
//!
//! One pacer is one upstream credential: clones of the layer share it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollgate_ratelimit::{PaceConfig, PaceError, PaceLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let client = |max_wait_ms| {
//!     let mut config = PaceConfig::default();
//!     config.limits.rpm = Some(60);
//!     config.limits.burst = 5; // 3 requests at once, then one a second
//!     config.max_wait_ms = max_wait_ms;
//!     ServiceBuilder::new()
//!         .layer(PaceLayer::from_config(&config).unwrap())
//!         .service(tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!             Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("{}"))))
//!         }))
//! };
//! let request = || Request::post("/v1/messages").body(Full::default()).unwrap();
//!
//! // Five requests: three at once, then one a second. Paced, never refused.
//! let patient = client(60_000);
//! let start = tokio::time::Instant::now();
//! for _ in 0..5 {
//!     patient.clone().oneshot(request()).await.unwrap();
//! }
//! assert_eq!(start.elapsed(), Duration::from_secs(2));
//!
//! // With max_wait 500 ms the fourth request would wait 1 s: it fails at once.
//! let hurried = client(500);
//! for _ in 0..3 {
//!     hurried.clone().oneshot(request()).await.unwrap();
//! }
//! let err = hurried.clone().oneshot(request()).await.unwrap_err();
//! let pace = err.downcast_ref::<PaceError>().expect("a PaceError");
//! assert_eq!(pace.wait(), Some(Duration::from_secs(1)));
//! # }
//! ```

mod future;
mod layer;
mod service;

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tollgate_core::{ErrorKind, GatewayError};

pub use self::future::PaceFuture;
pub use self::layer::PaceLayer;
pub use self::service::Pace;

use crate::config::{ConfigError, LimitsConfig};
use crate::gcra::Rate;
use crate::headers::{self, Stem};
use crate::limiter::{Dimension, evaluate};

/// The client-side pacer's settings.
///
/// ```
/// use tollgate_ratelimit::PaceConfig;
///
/// let cfg: PaceConfig = toml::from_str("max_wait_ms = 30000\n[limits]\nrpm = 50").unwrap();
/// assert_eq!(cfg.limits.rpm, Some(50));
/// assert!(cfg.learn_from_headers);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaceConfig {
    /// Limits to pace to without asking the upstream (the account's tier). Default none.
    pub limits: LimitsConfig,
    /// Longest a request may wait for capacity, in milliseconds; a longer wait fails at
    /// once with [`PaceError`]. Default 60 000.
    pub max_wait_ms: u64,
    /// Learn from the upstream's `anthropic-ratelimit-*` headers and 429 `retry-after`.
    /// Default `true`.
    pub learn_from_headers: bool,
}

impl Default for PaceConfig {
    fn default() -> Self {
        PaceConfig {
            limits: LimitsConfig::default(),
            max_wait_ms: 60_000,
            learn_from_headers: true,
        }
    }
}

impl PaceConfig {
    /// Check the limits (no zeros, burst 1–1000).
    ///
    /// # Errors
    ///
    /// The first bad value, with its key relative to this table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate("limits")
    }
}

/// A request could not be paced within `max_wait`; returned (boxed) as the service's
/// error, without calling the upstream. Match it with `err.downcast_ref::<PaceError>()`.
///
/// Its [`source`](std::error::Error::source) is the local 429 it stands for, a
/// [`GatewayError`] of kind `RateLimit` (`retry-after` the wait, `x-should-retry: false`:
/// pacing again would only wait again), so `ClassifyLayer` above it answers a rate-limit
/// `ApiError` instead of a transport failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaceError {
    dimension: Option<Dimension>,
    wait: Option<Duration>,
    max_wait: Duration,
    error: GatewayError,
}

impl PaceError {
    pub(crate) fn new(
        dimension: Option<Dimension>,
        wait: Option<Duration>,
        max_wait: Duration,
    ) -> PaceError {
        let what = match dimension {
            Some(d) => format!("the {} limit", d.phrase()),
            None => "the upstream's retry-after".to_owned(),
        };
        let message = match wait {
            Some(wait) => format!(
                "rate limit (client pacing): {what} needs a wait of {:.3} s, more than max_wait {:.3} s; send later or raise max_wait",
                wait.as_secs_f64(),
                max_wait.as_secs_f64()
            ),
            None => format!(
                "rate limit (client pacing): the request is larger than {what} allows at once; send a smaller request"
            ),
        };
        let mut error = GatewayError::new(ErrorKind::RateLimit, message).with_should_retry(false);
        if let Some(wait) = wait {
            error = error.with_retry_after(wait);
        }
        PaceError {
            dimension,
            wait,
            max_wait,
            error,
        }
    }

    /// The dimension that needed the wait; `None` when the upstream's 429 `retry-after`
    /// is holding requests back.
    pub fn dimension(&self) -> Option<Dimension> {
        self.dimension
    }

    /// The total wait, from the moment the request arrived, that it would have needed;
    /// `None` if it can never fit (larger than the burst).
    pub fn wait(&self) -> Option<Duration> {
        self.wait
    }

    /// The configured bound.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The local 429 this stands for (also the error's `source`).
    pub fn to_error(&self) -> &GatewayError {
        &self.error
    }
}

impl fmt::Display for PaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.error.message())
    }
}

impl std::error::Error for PaceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

// ===== Pacer =====

/// The shared state of one pacer: one bucket per dimension, plus a hold from `retry-after`.
#[derive(Debug)]
pub(crate) struct Pacer {
    epoch: Instant,
    max_wait: Duration,
    learn: bool,
    configured: [Option<Rate>; 4],
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rates: [Option<Rate>; 4],
    tats: [u64; 4],
    held_until: u64,
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl Pacer {
    fn new(config: &PaceConfig) -> Pacer {
        let mut configured = [None; 4];
        for dim in Dimension::ALL {
            configured[dim.index()] = config.limits.as_array()[dim.index()]
                .map(|l| Rate::new(l, config.limits.burst, period(dim)));
        }
        Pacer {
            epoch: Instant::now(),
            max_wait: Duration::from_millis(config.max_wait_ms),
            learn: config.learn_from_headers,
            configured,
            state: Mutex::new(State {
                rates: configured,
                tats: [0; 4],
                held_until: 0,
            }),
        }
    }

    fn ticks(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Spend one request of `tokens` input tokens now, or say how long to wait.
    fn try_acquire(&self, tokens: u64) -> Result<(), (Option<Dimension>, Option<Duration>)> {
        let now = self.ticks(Instant::now());
        let mut st = self.state.lock();
        if st.held_until > now {
            return Err((None, Some(Duration::from_nanos(st.held_until - now))));
        }
        let view = [None, None, Some(&st.rates)];
        match evaluate(&view, tokens, &[[0; 4], [0; 4], st.tats], now) {
            Ok(after) => {
                st.tats = after[2];
                Ok(())
            }
            Err((_, dim, wait)) => Err((Some(dim), wait.map(Duration::from_nanos))),
        }
    }

    /// Learn from an upstream response's headers.
    fn learn(&self, status: StatusCode, headers: &HeaderMap) {
        if !self.learn {
            return;
        }
        let now = self.ticks(Instant::now());
        let wall = SystemTime::now();
        let mut st = self.state.lock();
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(wait) = tollgate_core::headers::parse_retry_after(headers, wall) {
                let until = now.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
                st.held_until = st.held_until.max(until);
            }
        }
        for dim in [
            Dimension::Requests,
            Dimension::InputTokens,
            Dimension::OutputTokens,
        ] {
            let Some(stem) = Stem::of(dim) else {
                continue;
            };
            let Some((limit, remaining, _reset)) = headers::read(headers, stem, wall) else {
                continue;
            };
            if limit == 0 {
                continue;
            }
            let upstream = Rate::new(limit, 100, period(dim));
            let i = dim.index();
            let rate = *st.rates[i].get_or_insert(self.configured[i].unwrap_or(upstream));
            if self.configured[i].is_none() && rate != upstream {
                st.rates[i] = Some(upstream);
            }
            // The upstream's bucket drains in (limit − remaining) units of its own rate.
            let backlog = upstream.cost(limit.saturating_sub(remaining));
            st.tats[i] = st.tats[i].max(now.saturating_add(backlog));
        }
    }
}

fn period(dim: Dimension) -> u64 {
    match dim {
        Dimension::TokensPerDay => 86_400 * NANOS_PER_SEC,
        _ => 60 * NANOS_PER_SEC,
    }
}

#[cfg(test)]
mod tests;
