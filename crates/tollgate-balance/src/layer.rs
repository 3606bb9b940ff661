use std::sync::Arc;
use std::time::Duration;

use tollgate_core::{Clock, ErrorKind, RenderOptions, SystemClock};
use tower::Layer;

use crate::config::{
    BalanceConfig, DEFAULT_MAX_TOKENS, DEFAULT_RESERVATION_TTL_SECS, DisconnectPolicy,
};
use crate::ledger::Ledger;
use crate::price::PriceTable;
use crate::service::BalanceService;
use crate::settle::Inflight;

/// Reserves the worst-case cost of each request against its account and settles it from
/// the real usage exactly once; see the [crate docs](crate).
///
/// Cheap to clone; clones share the ledger, prices and the count of settlements in flight.
#[derive(Clone, Debug)]
pub struct BalanceLayer {
    shared: Arc<Shared>,
}

/// What every service of one layer shares.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) prices: PriceTable,
    pub(crate) insufficient: ErrorKind,
    pub(crate) unknown_model: ErrorKind,
    pub(crate) default_max_tokens: u32,
    pub(crate) ttl: Duration,
    pub(crate) policy: DisconnectPolicy,
    pub(crate) render: RenderOptions,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) inflight: Arc<Inflight>,
}

impl BalanceLayer {
    /// A layer charging `ledger` at `prices`, with the [`BalanceConfig`] defaults.
    pub fn new(ledger: Arc<dyn Ledger>, prices: PriceTable) -> BalanceLayer {
        BalanceLayer {
            shared: Arc::new(Shared {
                ledger,
                prices,
                insufficient: ErrorKind::Billing,
                unknown_model: ErrorKind::InvalidRequest,
                default_max_tokens: DEFAULT_MAX_TOKENS,
                ttl: Duration::from_secs(DEFAULT_RESERVATION_TTL_SECS),
                policy: DisconnectPolicy::default(),
                render: RenderOptions::default(),
                clock: Arc::new(SystemClock),
                inflight: Arc::new(Inflight::default()),
            }),
        }
    }

    /// A layer set up from the gateway's `[balance]` table.
    pub fn from_config(ledger: Arc<dyn Ledger>, config: &BalanceConfig) -> BalanceLayer {
        let kind = |status| ErrorKind::from_status(status).unwrap_or(ErrorKind::Billing);
        BalanceLayer::new(ledger, config.prices.clone())
            .insufficient_kind(kind(config.insufficient_status))
            .unknown_model_kind(kind(config.unknown_model_status))
            .default_max_tokens(config.default_max_tokens)
            .reservation_ttl(Duration::from_secs(config.reservation_ttl_secs))
            .on_disconnect(config.on_disconnect)
    }

    fn with(mut self, f: impl FnOnce(&mut Shared)) -> BalanceLayer {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    /// The error an unaffordable request gets: [`ErrorKind::Billing`] (402
    /// `billing_error`) by default, [`ErrorKind::Permission`] to answer 403 like some
    /// relays. Always sent with `x-should-retry: false`.
    pub fn insufficient_kind(self, kind: ErrorKind) -> BalanceLayer {
        self.with(|s| s.insufficient = kind)
    }

    /// The error a request for a model without a price gets:
    /// [`ErrorKind::InvalidRequest`] (400) by default, or [`ErrorKind::Permission`] (403).
    pub fn unknown_model_kind(self, kind: ErrorKind) -> BalanceLayer {
        self.with(|s| s.unknown_model = kind)
    }

    /// Output tokens reserved for a request without `max_tokens` (default 16 384).
    pub fn default_max_tokens(self, tokens: u32) -> BalanceLayer {
        self.with(|s| s.default_max_tokens = tokens)
    }

    /// How long a reservation holds before reconciliation may release it (default 1 h).
    pub fn reservation_ttl(self, ttl: Duration) -> BalanceLayer {
        self.with(|s| s.ttl = ttl)
    }

    /// What a stream that stops early is charged (default
    /// [`DisconnectPolicy::ChargeReportedOrEstimate`]).
    pub fn on_disconnect(self, policy: DisconnectPolicy) -> BalanceLayer {
        self.with(|s| s.policy = policy)
    }

    /// How refusals are rendered.
    pub fn render_options(self, render: RenderOptions) -> BalanceLayer {
        self.with(|s| s.render = render)
    }

    /// Read time (reservation expiry) from `clock`.
    pub fn clock(self, clock: Arc<dyn Clock>) -> BalanceLayer {
        self.with(|s| s.clock = clock)
    }

    /// The ledger charged.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.shared.ledger
    }

    /// The prices.
    pub fn prices(&self) -> &PriceTable {
        &self.shared.prices
    }

    /// Wait until no settle or release of this layer (or its clones) is in flight. Call
    /// it on shutdown after the server stopped serving, so every finished request is in
    /// the ledger before the runtime goes; tests use it to read the ledger after a body.
    pub async fn idle(&self) {
        self.shared.inflight.wait_idle().await;
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = BalanceService<S>;

    fn layer(&self, inner: S) -> BalanceService<S> {
        BalanceService::new(inner, self.shared.clone())
    }
}
