//! Gateway keys: how they look, how they are generated, and the hash stores keep.

use std::fmt;
use std::hash::{Hash, Hasher};

use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key issued by Tollgate starts with this.
pub const KEY_PREFIX: &str = "tg-";

/// Number of random base62 characters after [`KEY_PREFIX`].
pub const KEY_RANDOM_CHARS: usize = 32;

/// Total length of an issued key: `tg-` and 32 characters.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_RANDOM_CHARS;

/// Length of the displayable prefix kept with each key (`tg-` and 4 characters, e.g.
/// `tg-Ab3x`), enough for a person to tell keys apart in `keys list`.
pub const DISPLAY_PREFIX_LEN: usize = 7;

// ===== KeyHash =====

/// SHA-256 of a key: all a store ever holds.
///
/// Equality is constant-time ([`subtle::ConstantTimeEq`]), so comparing a presented
/// key's hash with a stored one leaks nothing through timing. `Debug` shows only the
/// first 4 bytes.
///
/// ```
/// use tollgate_auth::KeyHash;
///
/// let h = KeyHash::of("tg-example");
/// assert_eq!(h, KeyHash::of("tg-example"));
/// assert_ne!(h, KeyHash::of("tg-Example"));
/// assert_eq!(h.to_hex().len(), 64);
/// ```
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The SHA-256 of `key`'s bytes.
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// A hash from its 32 raw bytes (as read back from a store).
    pub fn from_bytes(bytes: [u8; 32]) -> KeyHash {
        KeyHash(bytes)
    }

    /// A hash from a slice; `None` unless it is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<KeyHash> {
        <[u8; 32]>::try_from(bytes).ok().map(KeyHash)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl ConstantTimeEq for KeyHash {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for KeyHash {}

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

// ===== SecretKey =====

/// A freshly issued key: `tg-` and 32 random base62 characters from the operating
/// system's CSPRNG.
///
/// It exists only between [`KeyStore::create`](crate::KeyStore::create) and the moment it
/// is shown to its owner; stores keep only its [`KeyHash`]. `Debug` shows only the
/// display prefix, and there is no `Display`: reading the key takes an explicit
/// [`SecretKey::expose`].
///
/// ```
/// use tollgate_auth::SecretKey;
///
/// let key = SecretKey::generate();
/// assert!(key.expose().starts_with("tg-"));
/// assert_eq!(key.expose().len(), 35);
/// assert!(!format!("{key:?}").contains(key.expose()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// Generate a new key.
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails, which on supported platforms
    /// means the system is unusable anyway.
    pub fn generate() -> SecretKey {
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str(KEY_PREFIX);
        key.extend(
            Alphanumeric
                .sample_iter(OsRng.unwrap_err())
                .take(KEY_RANDOM_CHARS)
                .map(char::from),
        );
        SecretKey(key)
    }

    /// The key itself, to show once to its owner or to send in a request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its SHA-256, as stores keep it.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The display prefix (`tg-` and 4 characters) stores keep beside the hash.
    pub fn prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LEN]
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}…)", self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_keys_are_tg_and_32_base62_characters() {
        let key = SecretKey::generate();
        let key = key.expose();
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with(KEY_PREFIX));
        assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn generated_keys_differ() {
        let keys: HashSet<String> = (0..1000)
            .map(|_| SecretKey::generate().expose().to_owned())
            .collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn secret_key_debug_shows_only_the_prefix() {
        let key = SecretKey::generate();
        let debug = format!("{key:?}");
        assert_eq!(debug, format!("SecretKey({}…)", &key.expose()[..7]));
        assert!(!debug.contains(&key.expose()[7..]));
    }

    #[test]
    fn key_hash_is_sha256() {
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            KeyHash::from_slice(KeyHash::of("abc").as_bytes()),
            Some(KeyHash::of("abc"))
        );
        assert_eq!(KeyHash::from_slice(&[0; 31]), None);
    }
}
