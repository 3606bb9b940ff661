//! The `tollgate` relay gateway, built from the Tollgate layers.
//!
//! - [`config`]: the TOML configuration, with defaults and file/key/reason errors.
//! - [`stack`]: the server stack in order, and the extension contract between its layers.
//! - [`upstream`]: the pooled upstream client that routes by model and injects keys.
//! - [`metrics`]: Prometheus metrics at `GET /metrics`.
//! - [`Gateway`]: a running gateway (tests and embedding); [`cli`]: the binary.
//!
//! # Example
//!
//! A gateway in front of the mock upstream, on a free port:
//!
//! ```
//! use tollgate_gateway::{Config, Gateway, UpstreamConfig};
//! use tollgate_mock::{MockOptions, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let mock = MockServer::start(MockOptions::new()).await?;
//! let mut config = Config::with_upstreams(vec![UpstreamConfig::new("mock", &mock.url(), "upstream-key")]);
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.database = Some("sqlite::memory:".into()); // keys; a file or postgres:// in production
//! let gateway = Gateway::start(config).await?;
//! println!("relaying on {}", gateway.url());
//! gateway.shutdown().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access_log;
mod admin;
pub mod cli;
pub mod config;
mod demo;
mod log_format;
pub mod log_writer;
pub mod metrics;
mod server;
pub mod stack;
pub mod stores;
pub mod upstream;

pub use config::{AuthConfig, Config, ConfigError, MemoryConfig, UpstreamAuth, UpstreamConfig};
pub use metrics::Metrics;
pub use server::{Gateway, shutdown_signal};
pub use stores::{IssuedKey, Stores};
