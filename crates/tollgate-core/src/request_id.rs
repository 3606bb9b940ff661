//! Request ids for responses the gateway answers itself.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh request id, `req_tg_` + 22 base62 characters, unique within the process and
/// unpredictable across processes.
///
/// Not a secret: it only has to be unique so an operator can find the request in logs.
/// It is a per-process random seed mixed with a counter, so it costs a few nanoseconds.
pub fn new_request_id() -> String {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = seed.build_hasher();
    h.write_u64(n);
    let hi = h.finish();
    h.write_u64(!n);
    let lo = h.finish();
    let mut v = (u128::from(hi) << 64) | u128::from(lo);
    let mut out = String::with_capacity(29);
    out.push_str("req_tg_");
    for _ in 0..22 {
        out.push(ALPHABET[(v % 62) as usize] as char);
        v /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert_eq!(id.len(), 29);
            assert!(id[7..].bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
}
