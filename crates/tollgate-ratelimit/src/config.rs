//! The `[ratelimit]` table of the gateway's configuration.
//!
//! Every field has a default; an empty table limits nothing and uses the memory backend.
//!
//! ```toml
//! [ratelimit]
//! headers_on_success = true        # default: anthropic-ratelimit-* on 2xx answers too
//! evict_interval_secs = 60         # default: how often idle memory state is dropped
//!
//! [ratelimit.default_key]          # keys whose record sets no limit of its own
//! rpm = 50                         # requests per minute
//! itpm = 30000                     # input tokens per minute (estimated at admission)
//! otpm = 8000                      # output tokens per minute (charged from usage)
//! tpd = 1000000                    # tokens per day (input estimate + output)
//! burst = 100                      # percent of each limit usable at once (default 100)
//!
//! [ratelimit.account]              # shared by every key of one account
//! rpm = 500
//!
//! [ratelimit.global]               # shared by every key of the gateway
//! rpm = 4000
//!
//! [ratelimit.backend]
//! kind = "redis"                   # default "memory"
//! url = "redis://127.0.0.1:6379"   # default
//! prefix = "tollgate:rl:"          # default
//! on_outage = "fail_closed"        # default; or "fail_open"
//! timeout_ms = 250                 # default: a check slower than this is an outage
//! ```
//!
//! Omitted limits are "no limit". A key's own limits (`Principal::limits`) replace the
//! `default_key` value field by field.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Limits of one scope. Each field `None` (omitted) means no limit on that dimension.
///
/// ```
/// use tollgate_ratelimit::LimitsConfig;
///
/// let limits: LimitsConfig = toml::from_str("rpm = 60\nitpm = 30000").unwrap();
/// assert_eq!((limits.rpm, limits.itpm, limits.otpm, limits.burst), (Some(60), Some(30000), None, 100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Input tokens per minute, charged from `RequestMeta::est_input_tokens` at admission.
    pub itpm: Option<u64>,
    /// Output tokens per minute, charged from the response's usage when its body ends;
    /// while a scope owes output tokens, its new requests are refused.
    pub otpm: Option<u64>,
    /// Tokens per day: the input estimate at admission plus the output at the end.
    pub tpd: Option<u64>,
    /// Percent of each limit that may be spent at once (the GCRA burst). Default 100: a
    /// full minute's (day's) allowance, refilled continuously, like the API's own token
    /// bucket. Lower values smooth traffic; a request larger than the burst never fits.
    /// Range 1–1000.
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rpm: None,
            itpm: None,
            otpm: None,
            tpd: None,
            burst: 100,
        }
    }
}

impl LimitsConfig {
    /// No limits at all.
    pub fn unlimited() -> Self {
        LimitsConfig::default()
    }

    /// Whether any dimension is limited.
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.itpm.is_some() || self.otpm.is_some() || self.tpd.is_some()
    }

    /// The limits in dimension order: requests, input tokens, output tokens, tokens per day.
    pub(crate) fn as_array(&self) -> [Option<u64>; 4] {
        [self.rpm, self.itpm, self.otpm, self.tpd]
    }

    pub(crate) fn validate(&self, table: &str) -> Result<(), ConfigError> {
        for (name, value) in [
            ("rpm", self.rpm),
            ("itpm", self.itpm),
            ("otpm", self.otpm),
            ("tpd", self.tpd),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(
                    format!("{table}.{name}"),
                    "0 would refuse every request; leave the field out for no limit",
                ));
            }
        }
        if !(1..=1000).contains(&self.burst) {
            return Err(ConfigError::new(
                format!("{table}.burst"),
                format!(
                    "{} is not a percentage between 1 and 1000 (100 = a full period's limit at once)",
                    self.burst
                ),
            ));
        }
        Ok(())
    }
}

/// What to do when the Redis backend cannot answer (down, slow, unreachable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutagePolicy {
    /// Admit the request without limiting it (and without rate-limit headers).
    FailOpen,
    /// Refuse with a 503 envelope that says the limiter is unavailable, `x-should-retry:
    /// true`. The default: limits are a promise to whoever pays for the upstream.
    #[default]
    FailClosed,
}

/// The Redis backend's settings (used with the crate feature `redis`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key the limiter writes. Default `tollgate:rl:`. Instances that
    /// share a limit must share the prefix. On Redis Cluster, put a hash tag in it
    /// (`{tollgate}:rl:`): one check touches the key, account and global keys at once.
    pub prefix: String,
    /// What to do while Redis cannot answer. Default `fail_closed`.
    pub on_outage: OutagePolicy,
    /// A check that takes longer than this counts as an outage. Default 250 ms.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "tollgate:rl:".to_owned(),
            on_outage: OutagePolicy::FailClosed,
            timeout_ms: 250,
        }
    }
}

/// Where limiter state lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendConfig {
    /// In this process (the default): nothing shared between gateway instances.
    #[default]
    Memory,
    /// In Redis, shared exactly by every instance using the same prefix.
    Redis(RedisConfig),
}

/// The whole `[ratelimit]` table; see the [module docs](self) for the TOML shape.
///
/// ```
/// use tollgate_ratelimit::{BackendConfig, OutagePolicy, RateLimitConfig};
///
/// let cfg: RateLimitConfig = toml::from_str(r#"
///     [default_key]
///     rpm = 50
///     [backend]
///     kind = "redis"
///     on_outage = "fail_open"
/// "#).unwrap();
/// cfg.validate().unwrap();
/// assert!(cfg.headers_on_success);
/// let BackendConfig::Redis(redis) = &cfg.backend else { panic!("redis") };
/// assert_eq!((redis.url.as_str(), redis.on_outage), ("redis://127.0.0.1:6379", OutagePolicy::FailOpen));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Limits of keys whose record has none of its own (field by field).
    pub default_key: LimitsConfig,
    /// Limits of each account, shared by all its keys.
    pub account: LimitsConfig,
    /// Limits of the whole gateway, shared by every key.
    pub global: LimitsConfig,
    /// Send `anthropic-ratelimit-*` on successful responses too, for the most restrictive
    /// scope of each dimension. Default `true`.
    pub headers_on_success: bool,
    /// Memory backend: drop state of keys whose buckets are full again this often
    /// (lossless: a full bucket is the same as no state). Default 60.
    pub evict_interval_secs: u64,
    /// Memory (default) or Redis.
    pub backend: BackendConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            default_key: LimitsConfig::default(),
            account: LimitsConfig::default(),
            global: LimitsConfig::default(),
            headers_on_success: true,
            evict_interval_secs: 60,
            backend: BackendConfig::Memory,
        }
    }
}

impl RateLimitConfig {
    /// Check values serde cannot: zero limits, burst range, Redis URL and timeout.
    ///
    /// # Errors
    ///
    /// The first bad value, with its key relative to the `[ratelimit]` table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default_key.validate("default_key")?;
        self.account.validate("account")?;
        self.global.validate("global")?;
        if self.evict_interval_secs == 0 {
            return Err(ConfigError::new(
                "evict_interval_secs",
                "must be at least 1 (seconds between sweeps of idle state)",
            ));
        }
        if let BackendConfig::Redis(redis) = &self.backend {
            let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|s| redis.url.starts_with(s));
            if !scheme_ok {
                return Err(ConfigError::new(
                    "backend.url",
                    format!(
                        "{:?} is not a Redis URL; write e.g. \"redis://127.0.0.1:6379\"",
                        redis.url
                    ),
                ));
            }
            if redis.timeout_ms == 0 {
                return Err(ConfigError::new(
                    "backend.timeout_ms",
                    "must be at least 1 (milliseconds a check may take before it counts as an outage)",
                ));
            }
        }
        Ok(())
    }
}

/// A configuration value that cannot work, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, relative to the `[ratelimit]` table (e.g. `default_key.burst`).
    pub key: String,
    /// What is wrong and what to write instead.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_limits_nothing_in_memory_with_headers() {
        let cfg: RateLimitConfig = toml::from_str("").expect("valid");
        assert_eq!(cfg, RateLimitConfig::default());
        assert!(!cfg.default_key.is_limited());
        assert_eq!(cfg.backend, BackendConfig::Memory);
        cfg.validate().expect("valid");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<RateLimitConfig>("[default_key]\nrpmm = 5")
            .expect_err("unknown field");
        assert!(err.to_string().contains("rpmm"), "{err}");
    }

    #[test]
    fn zero_limit_and_bad_burst_name_their_key() {
        let mut cfg = RateLimitConfig::default();
        cfg.account.itpm = Some(0);
        assert_eq!(cfg.validate().expect_err("zero").key, "account.itpm");
        cfg.account.itpm = None;
        cfg.global.burst = 0;
        assert_eq!(cfg.validate().expect_err("burst").key, "global.burst");
    }

    #[test]
    fn redis_backend_defaults_and_url_check() {
        let cfg: RateLimitConfig =
            toml::from_str("[backend]\nkind = \"redis\"\nurl = \"localhost:6379\"").expect("valid");
        let BackendConfig::Redis(redis) = &cfg.backend else {
            panic!("redis backend")
        };
        assert_eq!(redis.prefix, "tollgate:rl:");
        assert_eq!(redis.on_outage, OutagePolicy::FailClosed);
        assert_eq!(redis.timeout_ms, 250);
        let err = cfg.validate().expect_err("bad url");
        assert_eq!(err.key, "backend.url");
        assert!(err.reason.contains("redis://127.0.0.1:6379"));
    }
}
