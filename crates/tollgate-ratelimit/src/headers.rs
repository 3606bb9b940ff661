//! The `anthropic-ratelimit-*` response headers: written by the server side, read by
//! the pacing client.
//!
//! Each limited dimension is a triplet `anthropic-ratelimit-{stem}-{limit,remaining,reset}`
//! with integer limit and remaining and an RFC 3339 reset (whole seconds, rounded up):
//! the instant the bucket is full again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::limiter::{Dimension, Quota};

static REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("anthropic-ratelimit-requests-limit"),
    HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    HeaderName::from_static("anthropic-ratelimit-requests-reset"),
];
static INPUT_TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
];
static OUTPUT_TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("anthropic-ratelimit-output-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
];
static TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
];

/// The four header stems, in the order of [`Stem::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stem {
    Requests,
    InputTokens,
    OutputTokens,
    /// The most restrictive token limit in effect.
    Tokens,
}

impl Stem {
    pub(crate) const ALL: [Stem; 4] = [
        Stem::Requests,
        Stem::InputTokens,
        Stem::OutputTokens,
        Stem::Tokens,
    ];

    /// `[limit, remaining, reset]` header names.
    pub(crate) fn names(self) -> &'static [HeaderName; 3] {
        match self {
            Stem::Requests => &REQUESTS,
            Stem::InputTokens => &INPUT_TOKENS,
            Stem::OutputTokens => &OUTPUT_TOKENS,
            Stem::Tokens => &TOKENS,
        }
    }

    /// The stem of a dimension's own triplet (tokens per day only shows up in `tokens-*`).
    pub(crate) fn of(dim: Dimension) -> Option<Stem> {
        match dim {
            Dimension::Requests => Some(Stem::Requests),
            Dimension::InputTokens => Some(Stem::InputTokens),
            Dimension::OutputTokens => Some(Stem::OutputTokens),
            Dimension::TokensPerDay => None,
        }
    }
}

/// Write the triplet of each dimension in `quotas` (indexed like [`Dimension::ALL`];
/// tokens per day has none of its own) and `tokens-*` for the tightest token dimension
/// (fewest remaining, ties: the later reset). `wall` is the instant the quotas were
/// taken at.
///
/// Every value is formatted into one buffer that the header values share (one
/// allocation instead of one per header): this runs on every successful response.
pub(crate) fn write_all(headers: &mut HeaderMap, quotas: &[Option<Quota>; 4], wall: SystemTime) {
    batch(quotas, wall).insert_into(headers);
}

/// [`write_all`] over a response that may carry the upstream's triplets: ours replace
/// theirs, and theirs for dimensions we don't limit are removed (they describe the
/// upstream's pooled account, not the caller's key). Only names we don't write are
/// removed — an insert replaces the rest — since each `HeaderMap` lookup hashes a
/// 40-byte name and this runs on every successful response.
pub(crate) fn replace_all(headers: &mut HeaderMap, quotas: &[Option<Quota>; 4], wall: SystemTime) {
    let batch = batch(quotas, wall);
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("anthropic-ratelimit-"))
    {
        for stem in Stem::ALL {
            for name in stem.names() {
                if !batch.writes(name) {
                    headers.remove(name);
                }
            }
        }
    }
    batch.insert_into(headers);
}

fn batch(quotas: &[Option<Quota>; 4], wall: SystemTime) -> Batch {
    let mut batch = Batch::default();
    let mut tokens: Option<&Quota> = None;
    for dim in Dimension::ALL {
        let Some(q) = &quotas[dim.index()] else {
            continue;
        };
        if let Some(stem) = Stem::of(dim) {
            batch.triplet(stem, q, wall);
        }
        if dim != Dimension::Requests && tokens.is_none_or(|t| tighter(q, t)) {
            tokens = Some(q);
        }
    }
    if let Some(q) = tokens {
        batch.triplet(Stem::Tokens, q, wall);
    }
    batch
}

fn tighter(a: &Quota, b: &Quota) -> bool {
    (a.remaining, std::cmp::Reverse(a.reset_after))
        < (b.remaining, std::cmp::Reverse(b.reset_after))
}

/// Header values written back to back into one buffer, inserted as slices of it.
#[derive(Default)]
struct Batch {
    buf: BytesMut,
    /// Each value's name and where it ends in `buf`.
    ends: [Option<(&'static HeaderName, usize)>; 12],
    len: usize,
}

impl Batch {
    fn triplet(&mut self, stem: Stem, quota: &Quota, wall: SystemTime) {
        let [limit, remaining, reset] = stem.names();
        if self.buf.capacity() == 0 {
            self.buf.reserve(12 * 24);
        }
        let mut digits = [0u8; 20];
        self.push(limit, decimal(quota.limit, &mut digits));
        self.push(remaining, decimal(quota.remaining, &mut digits));
        let mut date = [0u8; 32];
        if let Some(at) = rfc3339_ceil_into(wall + quota.reset_after, &mut date) {
            self.push(reset, at);
        }
    }

    fn push(&mut self, name: &'static HeaderName, value: &[u8]) {
        let Some(slot) = self.ends.get_mut(self.len) else {
            return;
        };
        self.buf.extend_from_slice(value);
        *slot = Some((name, self.buf.len()));
        self.len += 1;
    }

    fn writes(&self, name: &HeaderName) -> bool {
        self.ends
            .iter()
            .flatten()
            .any(|(written, _)| std::ptr::eq(*written, name))
    }

    fn insert_into(self, headers: &mut HeaderMap) {
        let buf = self.buf.freeze();
        headers.reserve(self.len);
        let mut start = 0;
        for (name, end) in self.ends.into_iter().flatten() {
            if let Ok(value) = HeaderValue::from_maybe_shared(buf.slice(start..end)) {
                headers.insert(name.clone(), value);
            }
            start = end;
        }
    }
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Read one triplet, as `(limit, remaining, time until reset)` relative to `wall_now`.
/// `None` unless limit and remaining are integers; a missing or unreadable reset reads as
/// "now".
pub(crate) fn read(
    headers: &HeaderMap,
    stem: Stem,
    wall_now: SystemTime,
) -> Option<(u64, u64, Duration)> {
    let [limit, remaining, reset] = stem.names();
    let int = |name: &HeaderName| -> Option<u64> {
        headers.get(name)?.to_str().ok()?.trim().parse().ok()
    };
    let limit = int(limit)?;
    let remaining = int(remaining)?;
    let reset_after = headers
        .get(reset)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| OffsetDateTime::parse(v.trim(), &Rfc3339).ok())
        .map(SystemTime::from)
        .and_then(|at| at.duration_since(wall_now).ok())
        .unwrap_or(Duration::ZERO);
    Some((limit, remaining, reset_after))
}

/// `at` as RFC 3339 in UTC, whole seconds rounded up (`2026-11-23T17:30:07Z`), written
/// into `buf` without allocating: it runs four times on every successful response, and
/// the `time` crate's formatter was half of the header cost. Years beyond 9999 are not
/// written.
pub(crate) fn rfc3339_ceil_into(at: SystemTime, buf: &mut [u8; 32]) -> Option<&[u8]> {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    let mut date = [0u8; 20];
    let written = tollgate_core::clock::rfc3339_seconds(secs, &mut date)?;
    buf[..written.len()].copy_from_slice(written);
    Some(&buf[..written.len()])
}

#[cfg(test)]
fn rfc3339_ceil(at: SystemTime) -> String {
    let mut buf = [0; 32];
    String::from_utf8_lossy(rfc3339_ceil_into(at, &mut buf).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_is_rfc3339_rounded_up_to_the_second() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_000_000_001);
        assert_eq!(rfc3339_ceil(at), "2026-11-18T11:06:41Z");
        let exact = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339_ceil(exact), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn reset_formatting_agrees_with_the_time_crate() {
        let mut at = 0u64;
        // Every few days across 1970–2200, at odd times of day, and leap days.
        while at < 7_258_118_400 {
            let t = UNIX_EPOCH + Duration::from_secs(at);
            let expected = OffsetDateTime::from(t).format(&Rfc3339).expect("formats");
            assert_eq!(rfc3339_ceil(t), expected, "{at}");
            at += 86_400 * 3 + 3_671;
        }
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800); // 2024-02-29
        assert_eq!(rfc3339_ceil(leap), "2024-02-29T00:00:00Z");
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339_ceil(far), "");
    }

    #[test]
    fn decimals_are_written_exactly() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut buf = [0; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn tokens_show_the_tightest_token_dimension_and_values_share_one_buffer() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let q = |limit, remaining, secs| Quota {
            limit,
            remaining,
            reset_after: Duration::from_secs(secs),
        };
        let mut h = HeaderMap::new();
        let quotas = [
            Some(q(50, 49, 1)),
            Some(q(30_000, 29_000, 2)),
            Some(q(8000, 8000, 0)),
            Some(q(1_000_000, 900, 7)),
        ];
        write_all(&mut h, &quotas, wall);
        assert_eq!(h.len(), 12);
        assert_eq!(h["anthropic-ratelimit-input-tokens-remaining"], "29000");
        assert_eq!(
            h["anthropic-ratelimit-output-tokens-reset"],
            "2026-11-18T11:06:40Z"
        );
        assert_eq!(h["anthropic-ratelimit-tokens-limit"], "1000000");
        assert_eq!(h["anthropic-ratelimit-tokens-remaining"], "900");
        assert_eq!(
            h["anthropic-ratelimit-tokens-reset"],
            "2026-11-18T11:06:47Z"
        );
    }

    #[test]
    fn ours_replace_the_upstreams_triplets_and_theirs_for_unlimited_dimensions_go() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let mut h = HeaderMap::new();
        for stem in Stem::ALL {
            for name in stem.names() {
                h.insert(name.clone(), HeaderValue::from_static("upstream"));
            }
        }
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let requests = Quota {
            limit: 60,
            remaining: 12,
            reset_after: Duration::from_secs(1),
        };
        replace_all(&mut h, &[Some(requests), None, None, None], wall);
        assert_eq!(h.len(), 4, "{h:?}");
        assert_eq!(h["anthropic-ratelimit-requests-limit"], "60");
        assert_eq!(h["anthropic-ratelimit-requests-remaining"], "12");
        assert_eq!(
            h["anthropic-ratelimit-requests-reset"],
            "2026-11-18T11:06:41Z"
        );
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(
            h.get_all("anthropic-ratelimit-requests-limit")
                .iter()
                .count(),
            1
        );
    }

    #[test]
    fn a_written_triplet_reads_back() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let quota = Quota {
            limit: 60,
            remaining: 12,
            reset_after: Duration::from_millis(47_500),
        };
        let mut h = HeaderMap::new();
        write_all(&mut h, &[Some(quota), None, None, None], wall);
        assert_eq!(h["anthropic-ratelimit-requests-limit"], "60");
        assert_eq!(h["anthropic-ratelimit-requests-remaining"], "12");
        assert!(!h.contains_key("anthropic-ratelimit-tokens-limit"));
        assert_eq!(
            read(&h, Stem::Requests, wall),
            Some((60, 12, Duration::from_secs(48)))
        );
        assert_eq!(read(&h, Stem::InputTokens, wall), None);
        replace_all(&mut h, &[None; 4], wall);
        assert!(h.is_empty(), "nothing limited: every triplet goes");
    }
}
