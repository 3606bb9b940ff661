//! Money as integer micro-units, parsed from and printed as exact decimal strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units in one unit of currency.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// An amount of money in micro-units (10⁻⁶) of an account's currency: `$5.00` is
/// `Amount::from_micros(5_000_000)`. Never a float.
///
/// Parsed exactly from decimal strings ("5.00", "0.000003"); more than six decimal
/// places is an error, never a rounding. Printed with trailing zeros trimmed down to two
/// decimals (`5.00`, `0.0681`, `0.000001`).
///
/// # Example
///
/// ```
/// use tollgate_balance::Amount;
///
/// let a: Amount = "0.000003".parse().unwrap();
/// assert_eq!(a.micros(), 3);
/// assert_eq!(Amount::parse("5").unwrap().to_string(), "5.00");
/// assert!(Amount::parse("0.0000001").is_err()); // 7 decimals: refused, not rounded
/// assert!(Amount::parse("-1.00").is_err());
/// ```
///
/// # Serde
///
/// Serialized as its decimal string. Deserialized from a decimal **string** in currency
/// units (`"3.75"`) or from an **integer** in micro-units (`3_750_000`), so a price table
/// can be written either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// An amount of `micros` micro-units.
    pub const fn from_micros(micros: i64) -> Amount {
        Amount(micros)
    }

    /// The amount in micro-units.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Parse a non-negative decimal amount in currency units, exactly.
    ///
    /// Accepts `5`, `5.`, `5.00`, `.5`, `0.000003`. Surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// An [`AmountError`] saying what is wrong: empty, negative, not a decimal number,
    /// more than six decimal places, or too large.
    pub fn parse(s: &str) -> Result<Amount, AmountError> {
        let text = s.trim();
        let err = |reason: &'static str| AmountError {
            input: s.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(err("empty; write a decimal amount such as 5.00"));
        }
        if text.starts_with('-') {
            return Err(err("negative amounts are not allowed"));
        }
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(err(
                "not a decimal amount; write digits with an optional '.', such as 5.00 or 0.000003",
            ));
        }
        if frac.len() > 6 {
            return Err(err(
                "more than 6 decimal places; amounts are exact to the micro-unit (0.000001)",
            ));
        }
        let too_large = || err("too large");
        let mut micros: i64 = 0;
        for b in whole.bytes() {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(too_large)?;
        }
        micros = micros.checked_mul(MICROS_PER_UNIT).ok_or_else(too_large)?;
        let mut scale = MICROS_PER_UNIT / 10;
        for b in frac.bytes() {
            micros = micros
                .checked_add(i64::from(b - b'0') * scale)
                .ok_or_else(too_large)?;
            scale /= 10;
        }
        Ok(Amount(micros))
    }

    /// `self + other`, `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, `None` on overflow.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Whether the amount is below zero (an account in debt after an overrun).
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The amount written for a person: `$5.00` for USD, `5.00 EUR` for other currencies.
    pub fn display_in(self, currency: &str) -> String {
        if currency.eq_ignore_ascii_case("USD") {
            if self.0 < 0 {
                format!("-${}", Amount(self.0.saturating_neg()))
            } else {
                format!("${self}")
            }
        } else {
            format!("{self} {currency}")
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let micros_per_unit = MICROS_PER_UNIT as u64;
        let whole = abs / micros_per_unit;
        let frac = format!("{:06}", abs % micros_per_unit);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{sign}{whole}.{shown}")
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Amount, AmountError> {
        Amount::parse(s)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string in currency units (\"3.75\") or an integer in micro-units (3750000)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v}: negative amounts are not allowed")));
                }
                Ok(Amount(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                i64::try_from(v)
                    .map(Amount)
                    .map_err(|_| E::custom(format!("{v}: too large")))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "{v}: write amounts as decimal strings (\"{v}\") so they are exact, not as floats"
                )))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// A decimal amount that could not be parsed; says why and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmountError {
    input: String,
    reason: &'static str,
}

impl AmountError {
    /// Why the amount was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid amount {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for AmountError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        let cases = [
            ("5.00", 5_000_000),
            ("5", 5_000_000),
            ("5.", 5_000_000),
            (".5", 500_000),
            ("0.000003", 3),
            ("0.000001", 1),
            ("123.456789", 123_456_789),
            (" 1.5 ", 1_500_000),
            ("0", 0),
        ];
        for (text, micros) in cases {
            assert_eq!(Amount::parse(text), Ok(Amount(micros)), "{text}");
        }
    }

    #[test]
    fn more_than_six_decimals_is_an_error_not_a_rounding() {
        let err = Amount::parse("0.0000001").expect_err("refused");
        assert!(
            err.to_string().contains("more than 6 decimal places"),
            "{err}"
        );
        assert!(Amount::parse("1.1234567").is_err());
    }

    #[test]
    fn negative_and_garbage_are_rejected_with_a_reason() {
        for (text, reason) in [
            ("-1.00", "negative"),
            ("", "empty"),
            ("abc", "not a decimal"),
            ("1,000", "not a decimal"),
            ("1e3", "not a decimal"),
            ("+5", "not a decimal"),
            (".", "not a decimal"),
            ("1.2.3", "not a decimal"),
            ("99999999999999999999", "too large"),
        ] {
            let err = Amount::parse(text).expect_err("refused");
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn formats_with_at_least_two_decimals() {
        assert_eq!(Amount(5_000_000).to_string(), "5.00");
        assert_eq!(Amount(68_100).to_string(), "0.0681");
        assert_eq!(Amount(1).to_string(), "0.000001");
        assert_eq!(Amount(1_500_000).to_string(), "1.50");
        assert_eq!(Amount(-250_000).to_string(), "-0.25");
        assert_eq!(Amount(5_000_000).display_in("USD"), "$5.00");
        assert_eq!(Amount(-250_000).display_in("USD"), "-$0.25");
        assert_eq!(Amount(5_000_000).display_in("EUR"), "5.00 EUR");
    }

    #[test]
    fn deserializes_strings_as_units_and_integers_as_micros() {
        #[derive(Deserialize)]
        struct P {
            a: Amount,
            b: Amount,
        }
        let p: P = toml::from_str("a = \"3.75\"\nb = 3_750_000").expect("valid");
        assert_eq!((p.a, p.b), (Amount(3_750_000), Amount(3_750_000)));
        assert!(toml::from_str::<P>("a = 3.75\nb = 1").is_err());
        assert!(toml::from_str::<P>("a = -1\nb = 1").is_err());
    }

    proptest::proptest! {
        #[test]
        fn display_then_parse_round_trips(micros in 0i64..i64::MAX) {
            let a = Amount(micros);
            proptest::prop_assert_eq!(Amount::parse(&a.to_string()), Ok(a));
        }
    }
}
