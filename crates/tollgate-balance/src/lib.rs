//! Prepaid balances: reserve the worst case, settle exactly once, never serve unbilled.
//!
//! [`BalanceLayer`] sits after key auth in a server stack. For each request that carries
//! a [`Principal`](tollgate_core::Principal) (the account) and a
//! [`RequestMeta`](tollgate_core::RequestMeta) (model, `max_tokens`, estimated input):
//!
//! 1. **Admission.** The worst case — estimated input tokens at the model's dearest
//!    input-side price plus `max_tokens` (or [`BalanceConfig::default_max_tokens`]) at
//!    its output price — is **reserved** atomically in the [`Ledger`]
//!    (`balance − reserved ≥ amount`). If it cannot be, the request is refused before
//!    any upstream call: 402 `billing_error` (configurable, e.g. 403 `permission_error`),
//!    `x-should-retry: false`, message `insufficient balance: this request may cost up to
//!    $X, available $Y; top up or lower max_tokens`, in the request's dialect. A model
//!    without a price is refused (400 by default); a failing ledger answers 503 with
//!    `x-should-retry: true` — never served unbilled.
//! 2. **Settlement.** The response body is metered with
//!    [`observe_response`](tollgate_core::usage::observe_response) (read once, shared with
//!    the layers further out); when it ends, the reservation is
//!    settled from the reported usage (JSON or SSE, cache tokens included) at the price
//!    of the model that served it, exactly once (idempotent on the request id), as one
//!    [`LedgerEntry`]: at once when the ledger answers at once (memory), else in a
//!    spawned task.
//!
//! Requests without a `Principal` or `RequestMeta` (`GET /v1/models`) and
//! `count_tokens` (free upstream) pass through untouched.
//!
//! # What is charged
//!
//! | how the response ends | charged |
//! |---|---|
//! | error status (4xx/5xx) | nothing: released at once |
//! | body complete with final usage | the reported usage |
//! | body complete without usage (e.g. an OpenAI stream without `include_usage`) | reported usage, missing parts estimated as below — never free |
//! | in-band error mid-stream (`event: error`) | what the upstream reported (input, last output count); nothing if it reported nothing |
//! | client disconnect, or upstream cut the stream | [`DisconnectPolicy`]; default: what was reported, the missing input estimated from the request and the missing output by [`estimate_output_tokens`] of what was relayed |
//! | transport failure, or the request future dropped before the response | nothing: released |
//!
//! Every path ends the reservation: a guard releases it in `Drop` when the future or
//! the body is dropped before it was settled, and a reserve still under way when the
//! request goes away finishes in a task that releases what it reserved. After a crash,
//! [`Ledger::reconcile_expired`] (run at start and by [`spawn_reconciler`]) releases what
//! is left once it expires.
//!
//! The cost reaches the client as `x-tollgate-cost` (micro-units) only when the usage is
//! known before the response head goes out, i.e. an inner layer put a
//! [`Usage`](tollgate_core::Usage) into the response's extensions. Bodies are never
//! buffered to learn it: for a relayed upstream body the cost is in the ledger only.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tollgate_balance::{BalanceLayer, Ledger, MemoryLedger, PriceTable};
//! use tollgate_core::{Endpoint, Principal, request_meta::parse_body};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ledger = Arc::new(MemoryLedger::new());
//! ledger.open_account("acme", "USD").await.unwrap();
//! ledger.topup("acme", "1.00".parse().unwrap(), "welcome").await.unwrap();
//!
//! let layer = BalanceLayer::new(ledger.clone(), PriceTable::default());
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let json = r#"{"type":"message","usage":{"input_tokens":1200,"cache_creation_input_tokens":10000,"cache_read_input_tokens":50000,"output_tokens":800}}"#;
//!     Ok::<_, std::convert::Infallible>(
//!         Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from(json))).unwrap(),
//!     )
//! });
//! let svc = ServiceBuilder::new().layer(layer.clone()).service(upstream);
//!
//! // Key auth and RequestMetaLayer put these in a real stack.
//! let body = Bytes::from_static(br#"{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}"#);
//! let mut req = Request::post("/v1/messages").body(Full::new(body.clone())).unwrap();
//! req.extensions_mut().insert(parse_body(Endpoint::Messages, body).unwrap());
//! req.extensions_mut().insert(Principal {
//!     key_id: 1, account_id: "acme".into(), name: None, allowed_models: None, limits: Default::default(),
//! });
//!
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! res.into_body().collect().await.unwrap(); // the body streams through untouched
//! layer.idle().await;                          // every settle is in the ledger
//!
//! let b = ledger.balance("acme").await.unwrap();
//! assert_eq!((b.balance.to_string(), b.reserved.micros()), ("0.9319".to_string(), 0));
//! let charge = &ledger.history("acme", 1).await.unwrap()[0];
//! assert_eq!(charge.cost().micros(), 68_100); // the wire reference's worked example
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod amount;
mod body;
mod config;
mod future;
mod layer;
pub mod ledger;
mod price;
mod service;
mod settle;

pub use amount::{Amount, AmountError, MICROS_PER_UNIT};
pub use body::BalanceBody;
pub use config::{
    BalanceConfig, DEFAULT_MAX_TOKENS, DEFAULT_RESERVATION_TTL_SECS, DisconnectPolicy,
};
pub use future::{ResponseFuture, X_TOLLGATE_COST};
pub use layer::BalanceLayer;
#[cfg(feature = "postgres")]
pub use ledger::PostgresLedger;
#[cfg(feature = "sqlite")]
pub use ledger::SqliteLedger;
pub use ledger::{
    AccountBalance, Charge, DEFAULT_RETAINED_ENTRIES, EntryKind, Ledger, LedgerEntry, LedgerError,
    LedgerFuture, MemoryLedger, Reservation, ReserveError, open, spawn_reconciler,
};
pub use price::{ModelPrice, PriceTable, UnknownModel};
pub use service::BalanceService;
pub use settle::{ANTHROPIC_DELTA_FRAMING_BYTES, BYTES_PER_TOKEN, estimate_output_tokens};
