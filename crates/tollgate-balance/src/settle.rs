//! From a finished response to one ledger operation: what to charge, and the guard that
//! makes sure every reservation is settled or released exactly once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tollgate_core::usage::{Outcome, UsageReport};
use tollgate_core::{Dialect, Usage};

use crate::amount::Amount;
use crate::config::DisconnectPolicy;
use crate::layer::Shared;
use crate::ledger::{Charge, LedgerEntry, LedgerError, Reservation};

/// Bytes of SSE framing around the text of one Anthropic `content_block_delta`
/// (`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}`).
pub const ANTHROPIC_DELTA_FRAMING_BYTES: u64 = 86;
/// Bytes of relayed text per estimated output token.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Attempts at a settle or release when the store fails, with doubling waits from 100 ms.
const CLOSE_ATTEMPTS: u32 = 5;

/// Estimate the output tokens of a stream from what was relayed, for a stream that ended
/// without its final usage:
///
/// - Anthropic: `max(delta_events, ⌈(delta_bytes − 86 × delta_events) / 4⌉)` — the text
///   of the content deltas (their `data:` lines minus the fixed JSON framing of a text
///   delta) at 4 bytes per token, and at least one token per delta.
/// - OpenAI: `delta_events` — chat completion chunks carry about one token each, and their
///   framing (ids, model, timestamps) is too variable to subtract.
///
/// ```
/// use tollgate_balance::estimate_output_tokens;
/// use tollgate_core::Dialect;
/// use tollgate_core::usage::{Outcome, UsageReport};
///
/// let report = UsageReport {
///     usage: Default::default(), usage_seen: false, output_final: false,
///     outcome: Outcome::Cancelled, delta_events: 2, delta_bytes: 86 * 2 + 40,
/// };
/// assert_eq!(estimate_output_tokens(&report, Dialect::Anthropic), 10);
/// assert_eq!(estimate_output_tokens(&report, Dialect::OpenAi), 2);
/// ```
pub fn estimate_output_tokens(report: &UsageReport, dialect: Dialect) -> u64 {
    match dialect {
        Dialect::Anthropic => {
            let framing = ANTHROPIC_DELTA_FRAMING_BYTES.saturating_mul(report.delta_events);
            let text = report.delta_bytes.saturating_sub(framing);
            text.div_ceil(BYTES_PER_TOKEN).max(report.delta_events)
        }
        Dialect::OpenAi => report.delta_events,
    }
}

/// What a finished response is charged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Charge these tokens.
    Charge(Usage, String),
    /// Charge the whole reservation.
    ChargeReservation(String),
    /// Charge nothing.
    Release(String),
}

/// The facts about a request that settling needs.
#[derive(Clone, Debug)]
pub(crate) struct ChargeContext {
    pub(crate) account: Arc<str>,
    pub(crate) key_id: i64,
    pub(crate) model: String,
    pub(crate) served_model: Option<Arc<str>>,
    pub(crate) est_input: u64,
    pub(crate) max_output: u64,
    pub(crate) dialect: Dialect,
    pub(crate) http_status: Option<u16>,
    pub(crate) upstream_request_id: Option<String>,
}

/// The charging rules; see the crate docs' table.
pub(crate) fn decide(
    report: &UsageReport,
    policy: DisconnectPolicy,
    ctx: &ChargeContext,
) -> Decision {
    let filled = |what: &str| {
        let mut usage = report.usage;
        let mut estimated = Vec::new();
        if !report.usage_seen {
            usage.input = ctx.est_input;
            estimated.push("input");
        }
        if !report.output_final {
            let est = estimate_output_tokens(report, ctx.dialect).min(ctx.max_output);
            usage.output = usage.output.max(est);
            estimated.push("output");
        }
        let note = if estimated.is_empty() {
            what.to_string()
        } else {
            format!("{what}; {} estimated", estimated.join(" and "))
        };
        Decision::Charge(usage, note)
    };
    match &report.outcome {
        Outcome::Completed if report.usage_seen && report.output_final => {
            Decision::Charge(report.usage, "completed".into())
        }
        Outcome::Completed => filled("completed without final usage"),
        Outcome::Errored(kind) => {
            let what = format!(
                "upstream error mid-stream ({})",
                kind.as_deref().unwrap_or("unknown")
            );
            if report.usage_seen {
                Decision::Charge(report.usage, format!("{what}; reported usage charged"))
            } else {
                Decision::Release(format!("{what} before any usage"))
            }
        }
        Outcome::Truncated | Outcome::Cancelled => {
            let what = if report.outcome == Outcome::Cancelled {
                "client disconnected"
            } else {
                "upstream stream cut short"
            };
            match policy {
                DisconnectPolicy::ChargeReportedOrEstimate => filled(what),
                DisconnectPolicy::ChargeReported if report.usage_seen => {
                    Decision::Charge(report.usage, format!("{what}; reported usage charged"))
                }
                DisconnectPolicy::ChargeReported => {
                    Decision::Release(format!("{what} before any usage"))
                }
                DisconnectPolicy::ChargeReservation => {
                    Decision::ChargeReservation(format!("{what}; reservation charged"))
                }
            }
        }
    }
}

// ===== Inflight =====

/// Counts settlements under way, so a gateway can wait for them before it exits.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

impl Inflight {
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One settlement under way; its drop (task done, or dropped unpolled) ends it.
struct InflightToken(Arc<Inflight>);

impl InflightToken {
    fn new(inflight: Arc<Inflight>) -> InflightToken {
        inflight.count.fetch_add(1, Ordering::SeqCst);
        InflightToken(inflight)
    }
}

impl Drop for InflightToken {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Run `fut` on `handle`, counted as in flight.
pub(crate) fn spawn_tracked<F>(shared: &Shared, handle: &Handle, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let token = InflightToken::new(shared.inflight.clone());
    handle.spawn(async move {
        let _token = token;
        fut.await;
    });
}

// ===== Guard =====

/// Holds a reservation until the response ends; settles or releases it exactly once —
/// in `Drop` if nothing else did.
pub(crate) struct Guard {
    shared: Arc<Shared>,
    reservation: Option<Reservation>,
    pub(crate) ctx: ChargeContext,
    handle: Handle,
}

enum Close {
    Settle(Charge),
    Release(String),
}

impl Guard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        reservation: Reservation,
        ctx: ChargeContext,
        handle: Handle,
    ) -> Guard {
        Guard {
            shared,
            reservation: Some(reservation),
            ctx,
            handle,
        }
    }

    /// Release without a charge.
    pub(crate) fn release(mut self, reason: String) {
        self.close(Close::Release(reason), None);
    }

    /// Settle from the report of a finished response body.
    pub(crate) fn finish(mut self, report: UsageReport) {
        let close = match decide(&report, self.shared.policy, &self.ctx) {
            Decision::Charge(usage, note) => Close::Settle(self.charge(usage, note)),
            Decision::ChargeReservation(note) => {
                let mut charge = self.charge(report.usage, note);
                charge.cost = self.reservation.as_ref().map_or(Amount::ZERO, |r| r.amount);
                Close::Settle(charge)
            }
            Decision::Release(note) => Close::Release(note),
        };
        self.close(close, None);
    }

    /// Settle from usage known before the response goes out; the receiver gets the entry.
    pub(crate) fn settle_now(mut self, usage: Usage) -> oneshot::Receiver<LedgerEntry> {
        let (tx, rx) = oneshot::channel();
        let charge = self.charge(usage, "completed".into());
        self.close(Close::Settle(charge), Some(tx));
        rx
    }

    /// The charge for `usage`. Takes the model and upstream id out of the context: the
    /// guard closes right after (called once, from a method that consumes it).
    fn charge(&mut self, usage: Usage, note: String) -> Charge {
        let prices = &self.shared.prices;
        let model = match &self.ctx.served_model {
            Some(served) if prices.price(served).is_some() => served.to_string(),
            _ => std::mem::take(&mut self.ctx.model),
        };
        let cost = prices
            .cost(&model, &self.ctx.account, &usage)
            .unwrap_or_else(|_| self.reservation.as_ref().map_or(Amount::ZERO, |r| r.amount));
        Charge {
            cost,
            key_id: Some(self.ctx.key_id),
            model,
            usage,
            upstream_request_id: self.ctx.upstream_request_id.take(),
            http_status: self.ctx.http_status,
            note: Some(note),
        }
    }

    fn close(&mut self, close: Close, reply: Option<oneshot::Sender<LedgerEntry>>) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        let shared = self.shared.clone();
        let mut fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            if let Some(entry) = close_with_retries(&shared, &reservation, close).await {
                if let Some(reply) = reply {
                    let _ = reply.send(entry);
                }
            }
        });
        // A ledger that answers at once (memory) is done in this poll, without a task;
        // anything else continues in a task of its own (which polls it with a real waker).
        let _runtime = self.handle.enter();
        if fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            spawn_tracked(&self.shared, &self.handle, fut);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.close(
            Close::Release("request cancelled before the response".into()),
            None,
        );
    }
}

async fn close_with_retries(
    shared: &Shared,
    reservation: &Reservation,
    close: Close,
) -> Option<LedgerEntry> {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=CLOSE_ATTEMPTS {
        let result: Result<LedgerEntry, LedgerError> = match &close {
            Close::Settle(charge) => shared.ledger.settle(reservation, charge.clone()).await,
            Close::Release(reason) => shared.ledger.release(reservation, reason).await,
        };
        match result {
            Ok(entry) => {
                tracing::debug!(
                    request_id = %reservation.request_id,
                    account = %reservation.account,
                    kind = %entry.kind,
                    cost = entry.cost().micros(),
                    "balance reservation closed"
                );
                return Some(entry);
            }
            Err(e) if e.is_storage() && attempt < CLOSE_ATTEMPTS => {
                tracing::warn!(
                    request_id = %reservation.request_id,
                    error = %e,
                    attempt,
                    "closing a balance reservation failed; retrying"
                );
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                let cost = match &close {
                    Close::Settle(charge) => charge.cost.micros(),
                    Close::Release(_) => 0,
                };
                tracing::error!(
                    request_id = %reservation.request_id,
                    account = %reservation.account,
                    cost,
                    error = %e,
                    "closing a balance reservation failed; it stays held until it expires"
                );
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ChargeContext {
        ChargeContext {
            account: "a".into(),
            key_id: 1,
            model: "claude-sonnet-4-6".into(),
            served_model: None,
            est_input: 100,
            max_output: 50,
            dialect: Dialect::Anthropic,
            http_status: Some(200),
            upstream_request_id: None,
        }
    }

    fn report(outcome: Outcome, usage_seen: bool, output_final: bool) -> UsageReport {
        UsageReport {
            usage: Usage {
                input: 25,
                output: 1,
                ..Usage::default()
            },
            usage_seen,
            output_final,
            outcome,
            delta_events: 3,
            delta_bytes: 3 * 86 + 80,
        }
    }

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input,
            output,
            ..Usage::default()
        }
    }

    #[test]
    fn completed_with_final_usage_charges_it() {
        let d = decide(
            &report(Outcome::Completed, true, true),
            DisconnectPolicy::default(),
            &ctx(),
        );
        assert_eq!(d, Decision::Charge(usage(25, 1), "completed".into()));
    }

    #[test]
    fn completed_without_usage_is_estimated_never_free() {
        let mut r = report(Outcome::Completed, false, false);
        r.usage = Usage::default();
        let Decision::Charge(u, note) = decide(&r, DisconnectPolicy::ChargeReported, &ctx()) else {
            panic!("charged")
        };
        assert_eq!(u, usage(100, 20));
        assert!(note.contains("input and output estimated"), "{note}");
    }

    #[test]
    fn mid_stream_error_charges_what_was_reported() {
        let r = report(
            Outcome::Errored(Some("overloaded_error".into())),
            true,
            false,
        );
        let d = decide(&r, DisconnectPolicy::default(), &ctx());
        assert!(matches!(d, Decision::Charge(u, _) if u == usage(25, 1)));
    }

    #[test]
    fn error_before_any_usage_releases() {
        let r = report(Outcome::Errored(None), false, false);
        assert!(matches!(
            decide(&r, DisconnectPolicy::default(), &ctx()),
            Decision::Release(_)
        ));
    }

    #[test]
    fn disconnect_default_estimates_output_from_relayed_deltas() {
        let r = report(Outcome::Cancelled, true, false);
        let d = decide(&r, DisconnectPolicy::ChargeReportedOrEstimate, &ctx());
        // 80 bytes of text → 20 tokens, more than the reported 1.
        assert!(matches!(d, Decision::Charge(u, _) if u == usage(25, 20)));
    }

    #[test]
    fn disconnect_estimate_is_capped_at_max_tokens() {
        let mut r = report(Outcome::Cancelled, true, false);
        r.delta_bytes = 3 * 86 + 10_000;
        let d = decide(&r, DisconnectPolicy::ChargeReportedOrEstimate, &ctx());
        assert!(matches!(d, Decision::Charge(u, _) if u == usage(25, 50)));
    }

    #[test]
    fn disconnect_other_policies() {
        let r = report(Outcome::Truncated, true, false);
        assert!(matches!(
            decide(&r, DisconnectPolicy::ChargeReported, &ctx()),
            Decision::Charge(u, _) if u == usage(25, 1)
        ));
        assert!(matches!(
            decide(&r, DisconnectPolicy::ChargeReservation, &ctx()),
            Decision::ChargeReservation(_)
        ));
        let nothing = report(Outcome::Cancelled, false, false);
        assert!(matches!(
            decide(&nothing, DisconnectPolicy::ChargeReported, &ctx()),
            Decision::Release(_)
        ));
    }

    #[test]
    fn openai_streams_estimate_one_token_per_chunk() {
        let r = report(Outcome::Cancelled, false, false);
        assert_eq!(estimate_output_tokens(&r, Dialect::OpenAi), 3);
        assert_eq!(estimate_output_tokens(&r, Dialect::Anthropic), 20);
    }
}
