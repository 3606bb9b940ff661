//! Retry settings, as the gateway's TOML holds them.

use std::time::Duration;

use serde::Deserialize;

/// How [`RetryLayer`](crate::RetryLayer) retries. Every field has a default, so an empty
/// table is a valid configuration:
///
/// ```toml
/// [retry]
/// max_attempts = 3            # attempts in total, the first included (the SDKs' 1 + 2 retries)
/// base_delay_ms = 500         # full-jitter backoff: retry n waits uniform(0, min(base·2ⁿ, max))
/// max_delay_ms = 8000
/// max_retry_after_ms = 10000  # longer server-directed waits are not waited: the answer goes back
/// deadline_ms = 60000         # no attempt starts later than this after the first; 0 = none
///
/// [retry.budget]
/// ttl_secs = 10               # the window requests and retries are counted over
/// min_per_sec = 1             # retries always allowed per second of window, however few requests
/// retry_percent = 0.2         # otherwise retries ≤ 20 % of requests in the window
/// ```
///
/// `max_retry_after_ms` defaults to the server-side value (10 s); a client stack should
/// use [`RetryConfig::client`] (60 s, what the official SDKs honour).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, the first included; `1` turns retries off. Default 3.
    pub max_attempts: u32,
    /// Backoff base in milliseconds: retry `n` (0-based) waits a uniform random time in
    /// `[0, min(base_delay_ms · 2ⁿ, max_delay_ms)]`. Default 500.
    pub base_delay_ms: u64,
    /// Backoff cap in milliseconds. Default 8000.
    pub max_delay_ms: u64,
    /// Longest server-directed wait (`retry-after-ms`, `retry-after`) that is waited, in
    /// milliseconds. A longer one is not retried: the response goes back with its header.
    /// Default 10 000 (server side); [`RetryConfig::client`] uses 60 000.
    pub max_retry_after_ms: u64,
    /// Overall deadline in milliseconds from the first attempt: a retry whose wait would
    /// end after it is not made. An attempt in flight is never cut (that is the upstream
    /// client's response timeout). `0` turns the deadline off. Default 60 000.
    pub deadline_ms: u64,
    /// The retry budget that bounds retries under a full outage.
    pub budget: BudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay_ms: 500,
            max_delay_ms: 8_000,
            max_retry_after_ms: 10_000,
            deadline_ms: 60_000,
            budget: BudgetConfig::default(),
        }
    }
}

impl RetryConfig {
    /// The defaults for a client stack: like [`RetryConfig::default`], but server-directed
    /// waits up to 60 s are honoured, as the official SDKs do.
    pub fn client() -> Self {
        RetryConfig {
            max_retry_after_ms: 60_000,
            ..RetryConfig::default()
        }
    }

    /// Check the values; the error names the field and says what it must be.
    ///
    /// [`RetryLayer::new`](crate::RetryLayer::new) accepts any values (it clamps them),
    /// so call this at start-up to refuse a bad configuration instead.
    ///
    /// # Errors
    ///
    /// A message such as `max_attempts: must be at least 1, got 0`.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts: must be at least 1 (1 = no retries), got 0".into());
        }
        if self.max_delay_ms < self.base_delay_ms {
            return Err(format!(
                "max_delay_ms: must be at least base_delay_ms ({}), got {}",
                self.base_delay_ms, self.max_delay_ms
            ));
        }
        self.budget.validate().map_err(|e| format!("budget.{e}"))
    }

    pub(crate) fn base_delay(&self) -> Duration {
        Duration::from_millis(self.base_delay_ms)
    }

    pub(crate) fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms.max(self.base_delay_ms))
    }

    pub(crate) fn max_retry_after(&self) -> Duration {
        Duration::from_millis(self.max_retry_after_ms)
    }

    pub(crate) fn deadline(&self) -> Option<Duration> {
        (self.deadline_ms > 0).then(|| Duration::from_millis(self.deadline_ms))
    }
}

/// The retry budget's settings: over a sliding window of `ttl_secs`, retries may be at
/// most `max(min_per_sec · ttl_secs, retry_percent · requests)`.
///
/// Unlike tower's `TpsBudget`, which *adds* the reserve to the percentage, the larger of
/// the two applies, so under a full outage attempts stay within `1 + retry_percent`
/// times the requests, and a lone request on a quiet gateway can still be retried.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Window length in seconds (1–3600). Default 10.
    pub ttl_secs: u64,
    /// Retries per second of window that are always allowed. Default 1 (10 per window).
    pub min_per_sec: u32,
    /// Retries allowed as a fraction of the requests seen in the window. Default 0.2.
    pub retry_percent: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ttl_secs: 10,
            min_per_sec: 1,
            retry_percent: 0.2,
        }
    }
}

impl BudgetConfig {
    /// Check the values; the error names the field and says what it must be.
    ///
    /// # Errors
    ///
    /// A message such as `ttl_secs: must be between 1 and 3600, got 0`.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=3600).contains(&self.ttl_secs) {
            return Err(format!(
                "ttl_secs: must be between 1 and 3600, got {}",
                self.ttl_secs
            ));
        }
        if !(self.retry_percent.is_finite() && (0.0..=100.0).contains(&self.retry_percent)) {
            return Err(format!(
                "retry_percent: must be a fraction between 0 and 100 (0.2 = 20 %), got {}",
                self.retry_percent
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = RetryConfig::default();
        assert_eq!(
            (c.max_attempts, c.base_delay_ms, c.max_delay_ms),
            (3, 500, 8_000)
        );
        assert_eq!((c.max_retry_after_ms, c.deadline_ms), (10_000, 60_000));
        assert_eq!(RetryConfig::client().max_retry_after_ms, 60_000);
        assert_eq!(
            c.budget,
            BudgetConfig {
                ttl_secs: 10,
                min_per_sec: 1,
                retry_percent: 0.2
            }
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn toml_tables_fill_in_defaults() {
        let c: RetryConfig = toml::from_str("max_attempts = 2\n[budget]\nretry_percent = 0.1\n")
            .expect("valid TOML");
        assert_eq!(c.max_attempts, 2);
        assert_eq!(c.base_delay_ms, 500);
        assert_eq!(c.budget.retry_percent, 0.1);
        assert_eq!(c.budget.ttl_secs, 10);
        assert!(toml::from_str::<RetryConfig>("max_atempts = 2").is_err());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let c = RetryConfig {
            max_attempts: 0,
            ..RetryConfig::default()
        };
        let err = c.validate().err().unwrap_or_default();
        assert!(err.starts_with("max_attempts: "), "{err}");
        let c = RetryConfig {
            budget: BudgetConfig {
                ttl_secs: 0,
                ..BudgetConfig::default()
            },
            ..RetryConfig::default()
        };
        let err = c.validate().err().unwrap_or_default();
        assert!(err.starts_with("budget.ttl_secs: "), "{err}");
    }
}
