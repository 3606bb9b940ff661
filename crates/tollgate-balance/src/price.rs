//! Prices per model, and the integer cost of a request.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use tollgate_core::Usage;

use crate::amount::Amount;

/// Tokens per price unit: prices are per million tokens.
const TOKENS_PER_PRICE: u128 = 1_000_000;

/// The price of one model, each part in micro-units **per million tokens**
/// (`$3.75/MTok` is `Amount::from_micros(3_750_000)`).
///
/// In a config file each part is a decimal string in currency units per million tokens
/// (`input = "3.00"`) or an integer in micro-units per million tokens (`input = 3_000_000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input tokens.
    pub input: Amount,
    /// Output tokens.
    pub output: Amount,
    /// Cache writes with the 5-minute TTL.
    pub cache_write_5m: Amount,
    /// Cache writes with the 1-hour TTL.
    pub cache_write_1h: Amount,
    /// Cache reads.
    pub cache_read: Amount,
}

impl ModelPrice {
    /// A price from its parts in micro-units per million tokens.
    pub const fn from_micros(
        input: i64,
        output: i64,
        cache_write_5m: i64,
        cache_write_1h: i64,
        cache_read: i64,
    ) -> ModelPrice {
        ModelPrice {
            input: Amount::from_micros(input),
            output: Amount::from_micros(output),
            cache_write_5m: Amount::from_micros(cache_write_5m),
            cache_write_1h: Amount::from_micros(cache_write_1h),
            cache_read: Amount::from_micros(cache_read),
        }
    }

    /// The cost of `usage` at this price: `ceil(Σ tokens × price / 1_000_000)`, one
    /// rounding step, up (never under-charge). `usage.cache_write_1h` is the 1-hour part of
    /// `usage.cache_write`; the rest is priced as 5-minute writes.
    ///
    /// ```
    /// use tollgate_balance::{Amount, PriceTable};
    /// use tollgate_core::Usage;
    ///
    /// let sonnet = *PriceTable::default().price("claude-sonnet-4-6").unwrap();
    /// let usage = Usage { input: 1_200, cache_write: 10_000, cache_read: 50_000, output: 800, ..Usage::default() };
    /// assert_eq!(sonnet.cost(&usage), Amount::from_micros(68_100)); // $0.068100
    /// ```
    pub fn cost(&self, usage: &Usage) -> Amount {
        self.scaled_cost(usage, 100)
    }

    /// The cost of `usage` with a multiplier of `percent` applied to the sum before the
    /// one rounding step.
    pub fn scaled_cost(&self, usage: &Usage, percent: u32) -> Amount {
        let write_1h = usage.cache_write_1h.min(usage.cache_write);
        let write_5m = usage.cache_write - write_1h;
        let n = [
            (usage.input, self.input),
            (write_5m, self.cache_write_5m),
            (write_1h, self.cache_write_1h),
            (usage.cache_read, self.cache_read),
            (usage.output, self.output),
        ]
        .iter()
        .fold(0u128, |sum, &(tokens, price)| {
            sum.saturating_add(u128::from(tokens).saturating_mul(price_u128(price)))
        });
        ceil_cost(n, percent)
    }

    /// The most `input_tokens` of prompt and `output_tokens` of output can cost: the input
    /// is priced at the dearest input-side price (a prompt may be written to the cache in
    /// full, and cache writes cost more than plain input), the output at the output price.
    pub fn worst_case(&self, input_tokens: u64, output_tokens: u64, percent: u32) -> Amount {
        let input_price = [
            self.input,
            self.cache_write_5m,
            self.cache_write_1h,
            self.cache_read,
        ]
        .into_iter()
        .max()
        .unwrap_or(self.input);
        let n = u128::from(input_tokens)
            .saturating_mul(price_u128(input_price))
            .saturating_add(u128::from(output_tokens).saturating_mul(price_u128(self.output)));
        ceil_cost(n, percent)
    }
}

fn price_u128(price: Amount) -> u128 {
    u128::try_from(price.micros()).unwrap_or(0)
}

/// `ceil(n × percent / 100 / 1_000_000)`, saturating at the largest amount.
fn ceil_cost(n: u128, percent: u32) -> Amount {
    let divisor = TOKENS_PER_PRICE * 100;
    let micros = n.saturating_mul(u128::from(percent)).div_ceil(divisor);
    Amount::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Prices per model id, and optional per-account multipliers (integer percent).
///
/// The [default](PriceTable::default) holds the Claude prices of the active models as
/// published in November 2026, in micro-USD per million tokens:
///
/// | model ids | input | output | cache write 5m | cache write 1h | cache read |
/// |---|---|---|---|---|---|
/// | `claude-opus-4-8`, `claude-opus-4-7`, `claude-opus-4-6`, `claude-opus-4-5`, `claude-opus-4-5-20251101` | 5.00 | 25.00 | 6.25 | 10.00 | 0.50 |
/// | `claude-sonnet-4-6` | 3.00 | 15.00 | 3.75 | 6.00 | 0.30 |
/// | `claude-haiku-4-5`, `claude-haiku-4-5-20251001` | 1.00 | 5.00 | 1.25 | 2.00 | 0.10 |
///
/// Prices change: keep them in config. Models are matched by exact id; a model without a
/// price is refused ([`UnknownModel`]) rather than served for free.
///
/// # Config
///
/// ```toml
/// defaults = true                      # start from the built-in prices above (default)
///
/// [models."claude-sonnet-4-6"]         # add or override a model
/// input = "3.00"                       # currency units per million tokens …
/// output = 15_000_000                  # … or integer micro-units per million tokens
/// cache_write_5m = "3.75"
/// cache_write_1h = "6.00"
/// cache_read = "0.30"
///
/// [account_percent]                    # optional multipliers, integer percent
/// acme = 80                            # 20 % discount
/// resale = 150                         # 50 % markup
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PriceTableConfig", into = "PriceTableConfig")]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrice>,
    account_percent: HashMap<String, u32>,
}

/// The serde form of a [`PriceTable`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceTableConfig {
    #[serde(default = "default_true")]
    defaults: bool,
    #[serde(default)]
    models: BTreeMap<String, ModelPrice>,
    #[serde(default)]
    account_percent: HashMap<String, u32>,
}

fn default_true() -> bool {
    true
}

impl TryFrom<PriceTableConfig> for PriceTable {
    type Error = String;

    fn try_from(config: PriceTableConfig) -> Result<PriceTable, String> {
        let mut table = if config.defaults {
            PriceTable::default()
        } else {
            PriceTable::empty()
        };
        for (model, price) in config.models {
            if model.trim().is_empty() {
                return Err("models: a model id must not be empty".into());
            }
            table.models.insert(model, price);
        }
        for (account, percent) in config.account_percent {
            if percent > 10_000 {
                return Err(format!(
                    "account_percent.{account}: {percent} is over 10000 (100×); write the multiplier in percent, e.g. 150 for a 50 % markup"
                ));
            }
            table.account_percent.insert(account, percent);
        }
        Ok(table)
    }
}

impl From<PriceTable> for PriceTableConfig {
    fn from(table: PriceTable) -> PriceTableConfig {
        PriceTableConfig {
            defaults: false,
            models: table.models,
            account_percent: table.account_percent,
        }
    }
}

impl Default for PriceTable {
    /// The Claude prices of the active models (see the [type docs](PriceTable)).
    fn default() -> PriceTable {
        const OPUS: ModelPrice =
            ModelPrice::from_micros(5_000_000, 25_000_000, 6_250_000, 10_000_000, 500_000);
        const SONNET: ModelPrice =
            ModelPrice::from_micros(3_000_000, 15_000_000, 3_750_000, 6_000_000, 300_000);
        const HAIKU: ModelPrice =
            ModelPrice::from_micros(1_000_000, 5_000_000, 1_250_000, 2_000_000, 100_000);
        let mut table = PriceTable::empty();
        for model in [
            "claude-opus-4-8",
            "claude-opus-4-7",
            "claude-opus-4-6",
            "claude-opus-4-5",
            "claude-opus-4-5-20251101",
        ] {
            table = table.with_model(model, OPUS);
        }
        table = table.with_model("claude-sonnet-4-6", SONNET);
        for model in ["claude-haiku-4-5", "claude-haiku-4-5-20251001"] {
            table = table.with_model(model, HAIKU);
        }
        table
    }
}

impl PriceTable {
    /// A table with no models: every request is refused until prices are added.
    pub fn empty() -> PriceTable {
        PriceTable {
            models: BTreeMap::new(),
            account_percent: HashMap::new(),
        }
    }

    /// Add or replace the price of `model`.
    pub fn with_model(mut self, model: impl Into<String>, price: ModelPrice) -> PriceTable {
        self.models.insert(model.into(), price);
        self
    }

    /// Charge `account` `percent` % of the listed prices (80 = 20 % discount, 150 = 50 %
    /// markup). Applied to the exact sum before rounding.
    pub fn with_account_percent(mut self, account: impl Into<String>, percent: u32) -> PriceTable {
        self.account_percent.insert(account.into(), percent);
        self
    }

    /// The price of `model`, if it has one.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// The multiplier for `account` in percent; 100 when none is set.
    pub fn account_percent(&self, account: &str) -> u32 {
        self.account_percent.get(account).copied().unwrap_or(100)
    }

    /// The priced model ids, sorted.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// What `usage` of `model` costs `account`.
    ///
    /// # Errors
    ///
    /// [`UnknownModel`] when `model` has no price.
    pub fn cost(&self, model: &str, account: &str, usage: &Usage) -> Result<Amount, UnknownModel> {
        let price = self.lookup(model)?;
        Ok(price.scaled_cost(usage, self.account_percent(account)))
    }

    /// The most a request to `model` with `input_tokens` of prompt and at most
    /// `output_tokens` of output can cost `account` (see [`ModelPrice::worst_case`]).
    ///
    /// # Errors
    ///
    /// [`UnknownModel`] when `model` has no price.
    pub fn worst_case(
        &self,
        model: &str,
        account: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<Amount, UnknownModel> {
        let price = self.lookup(model)?;
        Ok(price.worst_case(input_tokens, output_tokens, self.account_percent(account)))
    }

    fn lookup(&self, model: &str) -> Result<&ModelPrice, UnknownModel> {
        self.models.get(model).ok_or_else(|| UnknownModel {
            model: model.to_string(),
            known: self.models.keys().take(12).cloned().collect(),
        })
    }
}

/// A model without a price: it cannot be billed, so it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownModel {
    /// The model id as requested.
    pub model: String,
    known: Vec<String>,
}

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {:?} has no price on this gateway, so it cannot be billed; ",
            self.model
        )?;
        if self.known.is_empty() {
            f.write_str("ask the operator to add its price")
        } else {
            write!(
                f,
                "use a priced model ({}) or ask the operator to add its price",
                self.known.join(", ")
            )
        }
    }
}

impl std::error::Error for UnknownModel {}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, write: u64, write_1h: u64, read: u64, output: u64) -> Usage {
        Usage {
            input,
            output,
            cache_write: write,
            cache_write_1h: write_1h,
            cache_read: read,
        }
    }

    #[test]
    fn sonnet_worked_example_costs_68_100_micros() {
        let table = PriceTable::default();
        let cost = table
            .cost(
                "claude-sonnet-4-6",
                "acct",
                &usage(1_200, 10_000, 0, 50_000, 800),
            )
            .expect("priced");
        assert_eq!(cost, Amount::from_micros(68_100));
        assert_eq!(cost.display_in("USD"), "$0.0681");
    }

    #[test]
    fn seven_haiku_3_5_cache_reads_round_up_to_one_micro() {
        let haiku_3_5 = ModelPrice::from_micros(800_000, 4_000_000, 1_000_000, 1_600_000, 80_000);
        assert_eq!(
            haiku_3_5.cost(&usage(0, 0, 0, 7, 0)),
            Amount::from_micros(1)
        );
        assert_eq!(haiku_3_5.cost(&Usage::default()), Amount::ZERO);
    }

    #[test]
    fn one_hour_writes_are_the_1h_part_of_cache_write() {
        let sonnet = *PriceTable::default()
            .price("claude-sonnet-4-6")
            .expect("priced");
        // 1 000 written: 400 for 5m at 3.75, 600 for 1h at 6.00 → 1 500 + 3 600 µ$.
        assert_eq!(
            sonnet.cost(&usage(0, 1_000, 600, 0, 0)),
            Amount::from_micros(5_100)
        );
    }

    #[test]
    fn account_percent_applies_before_the_one_rounding() {
        let table = PriceTable::default().with_account_percent("cheap", 80);
        let u = usage(1_200, 10_000, 0, 50_000, 800);
        assert_eq!(
            table.cost("claude-sonnet-4-6", "cheap", &u),
            Ok(Amount::from_micros(54_480))
        );
        // 1 input token on Haiku: 1 µ$ at 100 %, 0.8 µ$ → 1 µ$ at 80 %.
        assert_eq!(
            table.cost("claude-haiku-4-5", "cheap", &usage(1, 0, 0, 0, 0)),
            Ok(Amount::from_micros(1))
        );
    }

    #[test]
    fn worst_case_prices_input_at_the_dearest_input_side_price() {
        let table = PriceTable::default();
        // Sonnet: 1 000 input at 6.00 (1h write) + 1 000 output at 15.00.
        assert_eq!(
            table.worst_case("claude-sonnet-4-6", "a", 1_000, 1_000),
            Ok(Amount::from_micros(21_000))
        );
    }

    #[test]
    fn unknown_model_is_refused_with_a_hint() {
        let err = PriceTable::default()
            .cost("gpt-9", "a", &Usage::default())
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("\"gpt-9\" has no price"), "{text}");
        assert!(text.contains("claude-sonnet-4-6"), "{text}");
    }

    #[test]
    fn huge_usage_saturates_instead_of_wrapping() {
        let sonnet = *PriceTable::default()
            .price("claude-sonnet-4-6")
            .expect("priced");
        let u = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(sonnet.cost(&u), Amount::from_micros(i64::MAX));
    }

    #[test]
    fn config_merges_over_defaults_and_accepts_both_price_forms() {
        let text = r#"
            [models."my-model"]
            input = "0.50"
            output = 2_000_000
            cache_write_5m = "0.625"
            cache_write_1h = "1"
            cache_read = "0.05"

            [account_percent]
            acme = 150
        "#;
        let table: PriceTable = toml::from_str(text).expect("valid");
        assert_eq!(
            table.price("my-model"),
            Some(&ModelPrice::from_micros(
                500_000, 2_000_000, 625_000, 1_000_000, 50_000
            ))
        );
        assert!(table.price("claude-sonnet-4-6").is_some());
        assert_eq!(table.account_percent("acme"), 150);
        assert_eq!(table.account_percent("other"), 100);

        let only: PriceTable = toml::from_str(&format!("defaults = false\n{text}")).expect("valid");
        assert_eq!(only.models().collect::<Vec<_>>(), ["my-model"]);
    }

    #[test]
    fn config_rejects_unknown_fields_and_bad_prices() {
        let bad = [
            "[models.x]\ninput = \"1\"\noutput = \"1\"\ncache_write_5m = \"1\"\ncache_write_1h = \"1\"\ncache_read = \"1\"\ncache_wrte = \"1\"",
            "[models.x]\ninput = \"1.0000001\"\noutput = \"1\"\ncache_write_5m = \"1\"\ncache_write_1h = \"1\"\ncache_read = \"1\"",
            "[models.x]\ninput = \"1\"",
            "[account_percent]\nx = 20000",
            "colour = 1",
        ];
        for text in bad {
            assert!(toml::from_str::<PriceTable>(text).is_err(), "{text}");
        }
    }
}
