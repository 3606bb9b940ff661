//! Unique ids and timestamps, cheap enough for every request.
//!
//! An id is 20 base62 characters: 8 from a per-process random seed, 12 from a scrambled
//! global counter. The scramble is a bijection on `u64` and 62^12 > 2^64, so ids never
//! repeat within a process, and the seed keeps two processes apart.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static COUNTER: AtomicU64 = AtomicU64::new(0);

struct Seed {
    prefix: [u8; 8],
    mask: u64,
}

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(unix_now().as_nanos());
        hasher.write_u32(std::process::id());
        let a = hasher.finish();
        hasher.write_u64(a);
        let mask = hasher.finish();
        let mut prefix = [0u8; 8];
        let mut x = a;
        for c in &mut prefix {
            *c = BASE62[(x % 62) as usize];
            x /= 62;
        }
        Seed { prefix, mask }
    })
}

/// A fresh id: `prefix` followed by 20 base62 characters.
pub(crate) fn fresh(prefix: &str) -> String {
    let seed = seed();
    let n = COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ seed.mask;
    let mut out = String::with_capacity(prefix.len() + 20);
    out.push_str(prefix);
    out.extend(seed.prefix.iter().map(|&c| char::from(c)));
    let mut digits = [b'0'; 12];
    let mut x = n;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(x % 62) as usize];
        x /= 62;
    }
    out.extend(digits.iter().map(|&c| char::from(c)));
    out
}

/// Time since the Unix epoch (zero if the clock is before it).
pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `secs` since the epoch as RFC 3339 UTC, e.g. `2026-11-23T17:30:07Z`.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_455_007), "2026-11-23T17:30:07Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn fresh_ids_are_unique_and_alphanumeric() {
        let a = fresh("req_mock_");
        let b = fresh("req_mock_");
        assert_ne!(a, b);
        assert_eq!(a.len(), "req_mock_".len() + 20);
        assert!(
            a["req_mock_".len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }
}
