//! The layer's settings, as read from the gateway's `[balance]` table.

use serde::{Deserialize, Deserializer, Serialize};

use crate::price::PriceTable;

/// Default output cap reserved for requests that set no `max_tokens` (OpenAI dialect).
pub const DEFAULT_MAX_TOKENS: u32 = 16_384;
/// Default lifetime of a reservation: 1 hour.
pub const DEFAULT_RESERVATION_TTL_SECS: u64 = 3_600;

/// Settings of a [`BalanceLayer`](crate::BalanceLayer). Every field has a default; in
/// TOML (all defaults shown):
///
/// ```toml
/// [balance]
/// insufficient_status = 402            # 402 billing_error | 403 permission_error | 429
/// unknown_model_status = 400           # 400 invalid_request_error | 403 | 404
/// default_max_tokens = 16384           # output reserved when a request sets no max_tokens
/// reservation_ttl_secs = 3600          # a crashed gateway's holds lapse after this
/// on_disconnect = "charge_reported_or_estimate"   # | "charge_reported" | "charge_reservation"
///
/// [balance.prices]                     # see PriceTable; default: the Claude prices
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// Status of the "insufficient balance" refusal: 402 (`billing_error`, the default;
    /// SDKs raise `PaymentRequiredError`), 403 (`permission_error`, as some relays answer)
    /// or 429 (`rate_limit_error`, always with `x-should-retry: false`).
    #[serde(deserialize_with = "insufficient_status")]
    pub insufficient_status: u16,
    /// Status of the refusal for a model without a price: 400 (default), 403 or 404.
    #[serde(deserialize_with = "unknown_model_status")]
    pub unknown_model_status: u16,
    /// Output tokens reserved for a request without `max_tokens` (an OpenAI-dialect
    /// request may omit it). Output beyond it is still charged when settled.
    pub default_max_tokens: u32,
    /// Seconds a reservation holds before [`reconcile_expired`](crate::Ledger::reconcile_expired)
    /// may release it. Keep it longer than your longest stream: a settle after expiry is
    /// still charged, but until then the balance it held could be spent twice.
    pub reservation_ttl_secs: u64,
    /// What a stream that stops early (client gone, upstream cut) is charged.
    pub on_disconnect: DisconnectPolicy,
    /// The prices.
    pub prices: PriceTable,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            insufficient_status: 402,
            unknown_model_status: 400,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            reservation_ttl_secs: DEFAULT_RESERVATION_TTL_SECS,
            on_disconnect: DisconnectPolicy::default(),
            prices: PriceTable::default(),
        }
    }
}

fn status_in<'de, D: Deserializer<'de>>(
    d: D,
    allowed: &[u16],
    what: &str,
) -> Result<u16, D::Error> {
    let status = u16::deserialize(d)?;
    if allowed.contains(&status) {
        Ok(status)
    } else {
        let list: Vec<String> = allowed.iter().map(u16::to_string).collect();
        Err(serde::de::Error::custom(format!(
            "{status} is not a status for {what}; use one of {}",
            list.join(", ")
        )))
    }
}

fn insufficient_status<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    status_in(d, &[402, 403, 429], "an insufficient balance")
}

fn unknown_model_status<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    status_in(d, &[400, 403, 404], "a model without a price")
}

/// What a stream that stopped before its final usage is charged: the client went away
/// (the response body was dropped) or the upstream cut the stream without its terminal
/// event. A stream the upstream ended with an in-band error is always charged what it
/// reported, and a request whose response future is dropped before the response head is
/// always released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectPolicy {
    /// Charge what the upstream reported so far; fill in what it did not report with
    /// estimates: the input with the request's estimated input tokens, the output with
    /// [`estimate_output_tokens`](crate::estimate_output_tokens) of what was relayed
    /// (never less than the last reported count, never more than `max_tokens`). The default.
    #[default]
    ChargeReportedOrEstimate,
    /// Charge only what the upstream reported; nothing when it reported nothing.
    ChargeReported,
    /// Charge the whole reservation (the worst case).
    ChargeReservation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults() {
        let c: BalanceConfig = toml::from_str("").expect("valid");
        assert_eq!(c, BalanceConfig::default());
    }

    #[test]
    fn operators_can_answer_403_and_choose_a_policy() {
        let c: BalanceConfig = toml::from_str(
            "insufficient_status = 403\non_disconnect = \"charge_reported\"\n[prices]\ndefaults = false",
        )
        .expect("valid");
        assert_eq!(c.insufficient_status, 403);
        assert_eq!(c.on_disconnect, DisconnectPolicy::ChargeReported);
        assert_eq!(c.prices.models().count(), 0);
    }

    #[test]
    fn bad_statuses_and_unknown_keys_fail_with_the_key() {
        let err =
            toml::from_str::<BalanceConfig>("insufficient_status = 500").expect_err("refused");
        assert!(err.to_string().contains("insufficient_status"), "{err}");
        assert!(err.to_string().contains("402, 403, 429"), "{err}");
        assert!(toml::from_str::<BalanceConfig>("unknown_model_status = 402").is_err());
        assert!(toml::from_str::<BalanceConfig>("max_tokens = 1").is_err());
    }
}
