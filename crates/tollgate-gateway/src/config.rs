//! The gateway's configuration: one TOML file.
//!
//! Every option has a default; only `[[upstreams]]` is required. A bad file fails at
//! start with the file, the key and the reason:
//!
//! ```text
//! tollgate.toml: upstreams[0].base_url: "api.anthropic.com" is not an absolute http(s) URL without a query; write e.g. "https://api.anthropic.com"
//! ```
//!
//! # Example
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # default
//! max_body_bytes = 33554432          # default: 32 MiB, the API's own limit
//! shutdown_grace_ms = 30000          # default: time in-flight requests get on SIGTERM
//! database = "sqlite://tollgate.db"  # keys (and balances); or "postgres://user@host/db",
//!                                    # or "memory" (lost on exit; see [memory] below)
//!
//! [auth]                             # key auth (all defaults shown)
//! enabled = true                     # false: no keys at all — only behind your own auth
//! cache_ttl_ms = 5000                # a disabled key stops working within this time
//!
//! [errors]                           # how errors reach clients (all defaults shown)
//! type_prefix = false                # true: gateway errors use "gateway_…" error types
//! non_json_errors = "wrap"           # "raw": pass HTML error pages from upstream untouched
//! strip_upstream_identity = true     # drop anthropic-organization-id / -workspace-id
//!
//! [[upstreams]]
//! name = "anthropic"
//! base_url = "https://api.anthropic.com"
//! api_key_env = "ANTHROPIC_UPSTREAM_KEY"   # or api_key = "sk-ant-…" (not recommended)
//! auth = "x-api-key"                       # default; "bearer" for Authorization: Bearer
//! models = ["*"]                           # default: every model
//! connect_timeout_ms = 5000                # default
//! response_timeout_ms = 600000             # default: time allowed until the response head
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollgate_balance::BalanceConfig;
use tollgate_fallback::{FallbackConfig, ModelRoutes};
use tollgate_passthrough::PassthroughConfig;
use tollgate_ratelimit::RateLimitConfig;
use tollgate_retry::RetryConfig;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted on messages endpoints, in bytes. Default 32 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish. Default 30 s.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Where keys and accounts live: `sqlite://PATH` (created if missing),
    /// `postgres://…`, or `memory` (in process, lost on exit: one account and one key
    /// are created at start, see [`MemoryConfig`]). Required while key auth is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// What `database = "memory"` creates at start.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Key auth.
    #[serde(default)]
    pub auth: AuthConfig,
    /// How errors are rendered and relayed.
    #[serde(default)]
    pub errors: PassthroughConfig,
    /// Charge requests to their account's balance (needs key auth and `database`).
    /// Default `true`: an account must be topped up before its keys can spend.
    #[serde(default = "default_true")]
    pub billing: bool,
    /// Prices and refusal statuses for billing (see docs/balance.md).
    #[serde(default)]
    pub balance: BalanceConfig,
    /// Rate limits per key, per account and global (see docs/ratelimit.md). Default:
    /// none, except what keys carry themselves (`keys create --rpm …`).
    #[serde(default)]
    pub ratelimit: RateLimitConfig,
    /// Retries against the upstream (see docs/retry.md). Defaults: 3 attempts in all,
    /// 0.5 s base backoff capped at 8 s, `retry-after` honoured up to 10 s, a budget of
    /// 20 % extra attempts.
    #[serde(default = "RetryConfig::default")]
    pub retry: RetryConfig,
    /// Routes per model (see docs/fallback.md). Default: derived from `upstreams` — every
    /// model is tried on each upstream that serves it, in file order; no model
    /// substitution unless configured here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
    /// Where requests go. A model is served by the first upstream that lists it (or `"*"`).
    pub upstreams: Vec<UpstreamConfig>,
}

/// Key auth settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a key issued by this gateway on every relayed request. Default `true`.
    /// Turning it off makes the gateway an open relay spending the upstream key: only do
    /// that behind your own authentication.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a looked-up key is cached in the process, in milliseconds. Disabling a
    /// key takes effect within this time. Default 5000.
    #[serde(default = "default_cache_ttl_ms")]
    pub cache_ttl_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            cache_ttl_ms: default_cache_ttl_ms(),
        }
    }
}

/// With `database = "memory"` the admin CLI cannot reach the keys and balances (they
/// live in the gateway process), so the gateway creates one account at start, tops it up,
/// issues one key for it and prints that key once on stdout. Only its hash stays in
/// memory; nothing secret is read from or written to a file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The account created at start. Default `"default"`.
    #[serde(default = "default_memory_account")]
    pub account: String,
    /// Its balance at start, a decimal amount in currency units (at most 6 decimals).
    /// Default `"0"`: with billing on, the key is refused with 402 until topped up, so
    /// set it.
    #[serde(default = "default_memory_balance")]
    pub balance: String,
    /// The currency of that balance. Default `"USD"`.
    #[serde(default = "default_memory_currency")]
    pub currency: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            account: default_memory_account(),
            balance: default_memory_balance(),
            currency: default_memory_currency(),
        }
    }
}

impl Config {
    /// Whether keys and balances live in this process (`database = "memory"`).
    pub fn memory_stores(&self) -> bool {
        self.database.as_deref() == Some(MEMORY_DATABASE)
    }
}

/// The `database` value that keeps keys and balances in process memory.
pub const MEMORY_DATABASE: &str = "memory";

fn default_memory_account() -> String {
    "default".to_string()
}
fn default_memory_balance() -> String {
    "0".to_string()
}
fn default_memory_currency() -> String {
    "USD".to_string()
}

fn default_true() -> bool {
    true
}
fn default_cache_ttl_ms() -> u64 {
    5_000
}

/// How the upstream expects its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuth {
    /// `x-api-key: KEY` (Anthropic's classic header).
    #[default]
    XApiKey,
    /// `Authorization: Bearer KEY` (OpenAI-compatible upstreams, newer Anthropic SDKs).
    Bearer,
}

/// One upstream route.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Base URL; request paths are appended (`https://api.anthropic.com` + `/v1/messages`).
    pub base_url: String,
    /// The upstream key, inline. Prefer `api_key_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Name of the environment variable holding the upstream key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// How the key is sent. Default `x-api-key`.
    #[serde(default)]
    pub auth: UpstreamAuth,
    /// Models this upstream serves; `"*"` for any. Default `["*"]`.
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// Connect timeout in milliseconds. Default 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the response head arrives, in milliseconds. Default 600 000
    /// (10 minutes: non-streaming calls with a large `max_tokens` take that long).
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("auth", &self.auth)
            .field("models", &self.models)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .finish()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    tollgate_core::request_meta::DEFAULT_MAX_BODY_BYTES
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}
fn default_models() -> Vec<String> {
    vec!["*".to_string()]
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_response_timeout_ms() -> u64 {
    600_000
}

/// A configuration problem: which file, which key, and why.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, or `<config>` for configurations built in code.
    pub file: PathBuf,
    /// Dotted path of the offending key (`upstreams[0].base_url`), empty when the whole
    /// file is at fault.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// A configuration with defaults and the given upstreams.
    pub fn with_upstreams(upstreams: Vec<UpstreamConfig>) -> Self {
        Config {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            database: None,
            memory: MemoryConfig::default(),
            auth: AuthConfig::default(),
            errors: PassthroughConfig::default(),
            retry: RetryConfig::default(),
            fallback: None,
            billing: true,
            balance: BalanceConfig::default(),
            ratelimit: RateLimitConfig::default(),
            upstreams,
        }
    }

    /// Read, parse and check a configuration file.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read the file: {e}")))?;
        Config::parse(&text, path)
    }

    /// Parse and check configuration text; `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `origin`, the key and the reason.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let toml_error = |key: String, e: &toml::de::Error| ConfigError {
            file: origin.to_path_buf(),
            key,
            reason: match e.span().filter(|span| span.start > 0) {
                Some(span) => format!(
                    "{} (line {})",
                    e.message().trim_end(),
                    text[..span.start.min(text.len())].lines().count().max(1)
                ),
                None => e.message().trim_end().to_string(),
            },
        };
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(String::new(), &e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." { String::new() } else { path };
            toml_error(key, e.inner())
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Check what types alone cannot: URLs, keys, names, numbers.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `origin`, the key and the reason.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let err = |key: String, reason: String| ConfigError {
            file: origin.to_path_buf(),
            key,
            reason,
        };
        if self.upstreams.is_empty() {
            return Err(err(
                "upstreams".into(),
                "at least one [[upstreams]] entry is required (name, base_url, api_key_env)".into(),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(err(
                "max_body_bytes".into(),
                "must be greater than 0".into(),
            ));
        }
        match &self.database {
            None if self.auth.enabled => {
                return Err(err(
                    "database".into(),
                    "key auth needs a database for its keys: set database = \"sqlite://tollgate.db\" (or a postgres:// URL), or set [auth] enabled = false to run without keys (an open relay: only behind your own auth)".into(),
                ));
            }
            Some(url)
                if !(url == MEMORY_DATABASE
                    || url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://")) =>
            {
                return Err(err(
                    "database".into(),
                    "must be a sqlite: or postgres:// URL, e.g. \"sqlite://tollgate.db\", or \"memory\"".into(),
                ));
            }
            _ => {}
        }
        if self.memory_stores() {
            let m = &self.memory;
            if m.account.trim().is_empty() || m.account.trim() != m.account {
                return Err(err(
                    "memory.account".into(),
                    "must be a non-empty id without surrounding whitespace".into(),
                ));
            }
            tollgate_balance::Amount::parse(&m.balance)
                .map_err(|e| err("memory.balance".into(), format!("{:?}: {e}", m.balance)))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let key = |field: &str| format!("upstreams[{i}].{field}");
            if u.name.trim().is_empty() {
                return Err(err(key("name"), "must not be empty".into()));
            }
            if !names.insert(u.name.as_str()) {
                return Err(err(
                    key("name"),
                    format!(
                        "{:?} is used by another upstream; names must be unique",
                        u.name
                    ),
                ));
            }
            match u.base_url.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.authority().is_some()
                        && uri.query().is_none() => {}
                _ => {
                    return Err(err(
                        key("base_url"),
                        format!(
                            "{:?} is not an absolute http(s) URL without a query; write e.g. \"https://api.anthropic.com\"",
                            u.base_url
                        ),
                    ));
                }
            }
            match (&u.api_key, &u.api_key_env) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        key("api_key"),
                        "set either api_key or api_key_env, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(err(
                        key("api_key_env"),
                        "the upstream needs a key: set api_key_env = \"NAME_OF_ENV_VAR\" (or api_key)"
                            .into(),
                    ));
                }
                (Some(k), None) => check_key(k).map_err(|r| err(key("api_key"), r))?,
                (None, Some(var)) => match std::env::var(var) {
                    Ok(k) => check_key(&k).map_err(|r| {
                        err(
                            key("api_key_env"),
                            format!("environment variable {var}: {r}"),
                        )
                    })?,
                    Err(_) => {
                        return Err(err(
                            key("api_key_env"),
                            format!(
                                "environment variable {var} is not set; export it before starting"
                            ),
                        ));
                    }
                },
            }
            if u.models.is_empty() {
                return Err(err(
                    key("models"),
                    "must list at least one model, or \"*\" for any".into(),
                ));
            }
            if u.connect_timeout_ms == 0 || u.response_timeout_ms == 0 {
                return Err(err(
                    key(if u.connect_timeout_ms == 0 {
                        "connect_timeout_ms"
                    } else {
                        "response_timeout_ms"
                    }),
                    "must be greater than 0".into(),
                ));
            }
        }
        if let Err(e) = self.ratelimit.validate() {
            return Err(err(format!("ratelimit.{}", e.key), e.reason));
        }
        self.retry
            .validate()
            .map_err(|reason| split_key("retry", reason, origin))?;
        let names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
        self.fallback_config()
            .validate(&names)
            .map_err(|reason| split_key("fallback", reason, origin))?;
        Ok(())
    }

    /// The routes per model: `[fallback]` as written, or, without it, every upstream that
    /// serves a model in file order (so a second upstream is a failover for the first).
    pub fn fallback_config(&self) -> FallbackConfig {
        if let Some(fallback) = &self.fallback {
            return fallback.clone();
        }
        let mut config = FallbackConfig::default();
        let serving = |model: &str| -> Vec<String> {
            self.upstreams
                .iter()
                .filter(|u| u.models.iter().any(|m| m == model || m == "*"))
                .map(|u| u.name.clone())
                .collect()
        };
        for model in self.upstreams.iter().flat_map(|u| u.models.iter()) {
            if !config.models.contains_key(model) {
                let routes = if model == "*" {
                    self.upstreams
                        .iter()
                        .filter(|u| u.models.iter().any(|m| m == "*"))
                        .map(|u| u.name.clone())
                        .collect()
                } else {
                    serving(model)
                };
                config.models.insert(
                    model.clone(),
                    ModelRoutes {
                        routes,
                        fallback_models: Vec::new(),
                    },
                );
            }
        }
        config
    }
}

/// A layer's validation message `"field: reason"` as a [`ConfigError`] under `table`.
fn split_key(table: &str, reason: String, origin: &Path) -> ConfigError {
    let (key, reason) = match reason.split_once(": ") {
        Some((field, rest)) => (format!("{table}.{field}"), rest.to_string()),
        None => (table.to_string(), reason),
    };
    ConfigError {
        file: origin.to_path_buf(),
        key,
        reason,
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.trim() != key {
        return Err("the key has leading or trailing whitespace; remove it".into());
    }
    if http::HeaderValue::from_str(key).is_err() {
        return Err("the key contains characters not allowed in a header".into());
    }
    Ok(())
}

impl UpstreamConfig {
    /// An upstream at `base_url` serving every model, with an inline key.
    pub fn new(name: &str, base_url: &str, api_key: &str) -> Self {
        UpstreamConfig {
            name: name.to_string(),
            base_url: base_url.to_string(),
            api_key: Some(api_key.to_string()),
            api_key_env: None,
            auth: UpstreamAuth::default(),
            models: default_models(),
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
        }
    }

    /// The key, from the config or the environment.
    pub(crate) fn resolve_key(&self) -> Option<String> {
        match (&self.api_key, &self.api_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(var)) => std::env::var(var).ok(),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let text = format!("database = \"sqlite://t.db\"\n{text}");
        Config::parse(&text, Path::new("tollgate.toml"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(
            "[[upstreams]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9000\"\napi_key = \"k\"\n",
        )
        .expect("valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.upstreams[0].models, vec!["*"]);
        assert_eq!(c.upstreams[0].auth, UpstreamAuth::XApiKey);
        assert_eq!(c.upstreams[0].response_timeout_ms, 600_000);
    }

    #[test]
    fn bad_url_names_file_key_and_fix() {
        let e = parse(
            "[[upstreams]]\nname = \"a\"\nbase_url = \"api.anthropic.com\"\napi_key = \"k\"\n",
        )
        .expect_err("invalid");
        let s = e.to_string();
        assert!(
            s.starts_with("tollgate.toml: upstreams[0].base_url: "),
            "{s}"
        );
        assert!(s.contains("https://api.anthropic.com"), "{s}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_name() {
        let e = parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\n")
            .expect_err("invalid");
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn missing_env_var_is_named() {
        let e = parse("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key_env = \"TOLLGATE_TEST_SURELY_UNSET_VAR\"\n")
            .expect_err("invalid");
        assert_eq!(e.key, "upstreams[0].api_key_env");
        assert!(
            e.reason
                .contains("TOLLGATE_TEST_SURELY_UNSET_VAR is not set")
        );
    }

    #[test]
    fn duplicate_names_and_missing_upstreams_are_errors() {
        let e = parse("upstreams = []\n").expect_err("invalid");
        assert_eq!(e.key, "upstreams");
        let e = Config::parse(
            "[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\n",
            Path::new("t.toml"),
        )
        .expect_err("auth without a database");
        assert_eq!(e.key, "database");
        assert!(e.reason.contains("enabled = false"), "{e}");
        let e = parse("upstreams = []\n").expect_err("invalid");
        assert_eq!(e.key, "upstreams");
        let e = parse("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://y\"\napi_key = \"k\"\n")
            .expect_err("invalid");
        assert_eq!(e.key, "upstreams[1].name");
    }

    #[test]
    fn fallback_routes_default_to_every_serving_upstream_in_order() {
        let c = parse("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\nmodels = [\"claude-opus-4-8\"]\n[[upstreams]]\nname = \"b\"\nbase_url = \"http://y\"\napi_key = \"k\"\n")
            .expect("valid");
        let f = c.fallback_config();
        assert_eq!(f.models["claude-opus-4-8"].routes, vec!["a", "b"]);
        assert_eq!(f.models["*"].routes, vec!["b"]);
        assert!(f.models.values().all(|m| m.fallback_models.is_empty()));
    }

    #[test]
    fn fallback_to_an_unknown_route_names_the_key() {
        let e = parse("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\n[fallback.models.\"m\"]\nroutes = [\"a\", \"nope\"]\n")
            .expect_err("invalid");
        assert!(e.key.starts_with("fallback.models"), "{e}");
        assert!(e.reason.contains("nope"), "{e}");
    }

    #[test]
    fn retry_config_is_checked() {
        let e = parse("[retry]\nmax_attempts = 0\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\n")
            .expect_err("invalid");
        assert_eq!(e.key, "retry.max_attempts", "{e}");
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let u = UpstreamConfig::new("a", "http://x", "sk-ant-secret");
        assert!(!format!("{u:?}").contains("sk-ant-secret"));
    }

    #[test]
    fn type_errors_say_where() {
        let e = parse("max_body_bytes = \"big\"\n[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\n")
            .expect_err("invalid");
        assert_eq!(e.key, "max_body_bytes", "{e}");
        assert!(
            e.to_string().starts_with("tollgate.toml: max_body_bytes: "),
            "{e}"
        );
    }

    #[test]
    fn nested_type_errors_name_the_full_key() {
        let e = parse("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\nconnect_timeout_ms = \"fast\"\n")
            .expect_err("invalid");
        assert_eq!(e.key, "upstreams[0].connect_timeout_ms", "{e}");
        assert!(e.reason.ends_with("(line 6)"), "{e}");
        let e = parse("[[upstreams]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"k\"\nauth = \"basic\"\n")
            .expect_err("invalid");
        assert_eq!(e.key, "upstreams[0].auth", "{e}");
    }
}
