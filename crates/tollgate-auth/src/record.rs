//! What stores keep about keys and accounts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_core::{Limits, Principal};

use crate::key::KeyHash;

/// Whether a key may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// The key authenticates.
    Active,
    /// The key was revoked ([`KeyStore::disable`](crate::KeyStore::disable)); requests
    /// with it get 401.
    Disabled,
}

impl KeyStatus {
    /// `active` or `disabled`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
        }
    }

    /// The status named by its stored string.
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "active" => Some(KeyStatus::Active),
            "disabled" => Some(KeyStatus::Disabled),
            _ => None,
        }
    }
}

/// Whether an account's keys may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// The account's keys authenticate.
    Active,
    /// Every key of the account gets 403 until the account is resumed.
    Suspended,
}

impl AccountStatus {
    /// `active` or `suspended`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
        }
    }

    /// The status named by its stored string.
    pub fn parse(s: &str) -> Option<AccountStatus> {
        match s {
            "active" => Some(AccountStatus::Active),
            "suspended" => Some(AccountStatus::Suspended),
            _ => None,
        }
    }
}

/// An account: the identity keys belong to. Balances live in the balance crate, keyed by
/// the same id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The account id, chosen by the operator (e.g. `acme`).
    pub id: String,
    /// Active or suspended.
    pub status: AccountStatus,
    /// When it was created (whole seconds).
    pub created_at: SystemTime,
}

/// Everything a store knows about one key. It never holds the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Numeric id, the key's name in logs, metrics and admin commands.
    pub id: i64,
    /// The account the key belongs to.
    pub account_id: String,
    /// A human name (e.g. `ci-bot`).
    pub name: Option<String>,
    /// The first characters of the key (`tg-` and 4 more), for people to tell keys apart.
    pub prefix: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Models the key may use; `None` means any.
    pub allowed_models: Option<Vec<String>>,
    /// The key's own limits.
    pub limits: Limits,
    /// Active or disabled.
    pub status: KeyStatus,
    /// The status of the key's account.
    pub account_status: AccountStatus,
    /// When it was created (whole seconds).
    pub created_at: SystemTime,
    /// When it stops working, if ever (whole seconds).
    pub expires_at: Option<SystemTime>,
    /// When it was last used, recorded at most once per interval (whole seconds).
    pub last_used_at: Option<SystemTime>,
}

impl KeyRecord {
    /// Whether the key has expired at wall time `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The [`Principal`] a request authenticated by this key carries.
    pub fn principal(&self) -> Principal {
        Principal {
            key_id: self.id,
            account_id: Arc::from(self.account_id.as_str()),
            name: self.name.as_deref().map(Arc::from),
            allowed_models: self.allowed_models.clone().map(Arc::from),
            limits: self.limits,
        }
    }
}

/// What to create a key with. Everything but the account is optional.
///
/// ```
/// use tollgate_auth::NewKey;
/// use tollgate_core::Limits;
///
/// let new = NewKey::new("acme")
///     .name("ci-bot")
///     .allowed_models(["claude-haiku-4-5"])
///     .limits(Limits { rpm: Some(60), ..Limits::default() });
/// assert_eq!(new.account_id, "acme");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewKey {
    /// The account the key belongs to; it must exist.
    pub account_id: String,
    /// A human name.
    pub name: Option<String>,
    /// Models the key may use; `None` means any.
    pub allowed_models: Option<Vec<String>>,
    /// The key's own limits.
    pub limits: Limits,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
}

impl NewKey {
    /// A key for `account_id` with no name, no model scope, no limits of its own and no
    /// expiry.
    pub fn new(account_id: impl Into<String>) -> NewKey {
        NewKey {
            account_id: account_id.into(),
            ..NewKey::default()
        }
    }

    /// Set the human name.
    pub fn name(mut self, name: impl Into<String>) -> NewKey {
        self.name = Some(name.into());
        self
    }

    /// Scope the key to these models.
    pub fn allowed_models<I, M>(mut self, models: I) -> NewKey
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.allowed_models = Some(models.into_iter().map(Into::into).collect());
        self
    }

    /// Set the key's own limits.
    pub fn limits(mut self, limits: Limits) -> NewKey {
        self.limits = limits;
        self
    }

    /// Make the key stop working at `at`.
    pub fn expires_at(mut self, at: SystemTime) -> NewKey {
        self.expires_at = Some(at);
        self
    }
}

/// Seconds since the Unix epoch (negative before it); stores keep whole seconds.
pub(crate) fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // Round toward negative infinity so truncation is the same on both sides.
            if d.subsec_nanos() > 0 {
                -secs - 1
            } else {
                -secs
            }
        }
    }
}

/// The inverse of [`to_unix`].
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `t` truncated to whole seconds, as every store keeps it.
pub(crate) fn whole_seconds(t: SystemTime) -> SystemTime {
    from_unix(to_unix(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_round_trip_and_truncate_downward() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(to_unix(t), 1);
        assert_eq!(
            from_unix(to_unix(t)),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1)
        );
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1_500);
        assert_eq!(to_unix(before), -2);
        assert_eq!(
            from_unix(-2),
            SystemTime::UNIX_EPOCH - Duration::from_secs(2)
        );
    }
}
