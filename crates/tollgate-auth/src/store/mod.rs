//! Where keys and accounts live: the [`KeyLookup`] and [`KeyStore`] traits and their
//! implementations.
//!
//! - [`MemoryKeyStore`]: in-process, for tests, embedding and demos.
//! - `SqliteKeyStore` (feature `sqlite`) and `PostgresKeyStore` (feature `postgres`):
//!   through sqlx, with this crate's migrations embedded and run on connect.
//! - [`open`] picks one by URL.
//!
//! Stores hold only [`KeyHash`]es. Timestamps are kept in whole seconds by every store, so
//! records read back compare equal across stores.
//!
//! # Schema
//!
//! Two tables, `tollgate_accounts` and `tollgate_keys`, created by migrations numbered
//! from 1001 so they can share a database (and sqlx's `_sqlx_migrations` table) with the
//! migrations of other Tollgate crates; the migrator ignores versions it does not know.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tollgate_core::Limits;

pub use self::memory::MemoryKeyStore;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresKeyStore;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteKeyStore;
use crate::check::KeyFormat;
use crate::key::{KeyHash, SecretKey};
use crate::record::{Account, KeyRecord, NewKey};

/// A boxed, `Send` future: what every [`KeyStore`] method returns, so the trait stays
/// dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`KeyAuthLayer`](crate::KeyAuthLayer) needs of a store: find a key by its hash.
///
/// Implement this alone for a store that only looks keys up (keys from an environment
/// variable, a file, another service); implement [`KeyStore`] as well for a store the
/// `tollgate keys …` / `accounts …` commands can administer. Implementations must be cheap
/// to share (`Send + Sync`) and should keep only hashes. [`lookup`](KeyLookup::lookup) is
/// the only method on the request path, and the layer caches it.
///
/// # Example
///
/// A read-only store over keys of its own format:
///
/// ```
/// use tollgate_auth::{BoxFuture, KeyFormat, KeyHash, KeyLookup, KeyRecord, StoreError};
///
/// struct EnvKeys(Vec<KeyRecord>);
///
/// impl KeyLookup for EnvKeys {
///     fn lookup<'a>(&'a self, hash: &'a KeyHash) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
///         // KeyHash equality is constant-time.
///         let found = self.0.iter().find(|r| r.hash == *hash).cloned();
///         Box::pin(async move { Ok(found) })
///     }
///
///     // Keys such as "team-a.4f9c…" are not `tg-` keys: let every well-formed string
///     // reach `lookup`.
///     fn key_format(&self) -> KeyFormat {
///         KeyFormat::Any
///     }
/// }
/// # let _ = EnvKeys(Vec::new());
/// ```
pub trait KeyLookup: Send + Sync {
    /// The key whose SHA-256 is `hash`, with its account's status; `None` if unknown.
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>>;

    /// Record that the key was used at `at` (kept only if later than what is stored).
    /// Unknown ids are ignored: the key may have been deleted meanwhile. The layer calls
    /// it off the request path, at most once a minute per key. Default: nothing is
    /// recorded.
    fn touch(&self, key_id: i64, at: SystemTime) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = (key_id, at);
        Box::pin(std::future::ready(Ok(())))
    }

    /// What a presented key must look like before [`lookup`](KeyLookup::lookup) is
    /// asked, and how a wrong one is diagnosed. Default [`KeyFormat::Issued`]: the keys
    /// [`KeyStore::create`] issues (`tg-` and 32 letters or digits), with a 401 that
    /// names another vendor's key (`sk-ant-…`) or a cut-short key without a lookup.
    fn key_format(&self) -> KeyFormat {
        KeyFormat::Issued
    }
}

/// Administration of accounts and keys on top of [`KeyLookup`]: what the `tollgate keys`
/// and `tollgate accounts` commands and the gateway's stores need.
///
/// All methods are async and return boxed futures, so `Arc<dyn KeyStore>` works.
///
/// # Example
///
/// ```
/// use tollgate_auth::{KeyLookup, KeyStore, MemoryKeyStore, NewKey};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tollgate_auth::StoreError> {
/// let store = MemoryKeyStore::new();
/// store.create_account("acme").await?;
/// let (record, key) = store.create(NewKey::new("acme").name("ci-bot")).await?;
/// println!("your key (shown once): {}", key.expose());
///
/// let found = store.lookup(&key.hash()).await?.expect("just created");
/// assert_eq!(found.id, record.id);
/// # Ok(()) }
/// ```
pub trait KeyStore: KeyLookup {
    /// The key with id `key_id`, if any.
    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>>;

    /// Issue a new key: generates `tg-` and 32 random base62 characters, stores its hash,
    /// and returns the record with the key itself, which is never available again.
    ///
    /// Fails with [`StoreErrorKind::NotFound`] if the account does not exist and
    /// [`StoreErrorKind::InvalidInput`] for an empty model in `allowed_models`.
    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>>;

    /// Every key, or every key of `account`, by id.
    fn list<'a>(
        &'a self,
        account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>>;

    /// Revoke a key. Already-disabled keys stay disabled; an unknown id is
    /// [`StoreErrorKind::NotFound`].
    fn disable(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Replace a key's limits; an unknown id is [`StoreErrorKind::NotFound`].
    fn set_limits(&self, key_id: i64, limits: Limits) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Create an account. The id is 1–128 printable ASCII characters without spaces; an
    /// existing id is [`StoreErrorKind::Conflict`].
    fn create_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>>;

    /// Suspend an account: its keys get 403 until it is resumed.
    fn suspend_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Lift a suspension.
    fn resume_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The account `id`, if any.
    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>>;
}

impl<T: KeyLookup + ?Sized> KeyLookup for Arc<T> {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        (**self).lookup(hash)
    }

    fn touch(&self, key_id: i64, at: SystemTime) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).touch(key_id, at)
    }

    fn key_format(&self) -> KeyFormat {
        (**self).key_format()
    }
}

impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        (**self).key(key_id)
    }

    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        (**self).create(new)
    }

    fn list<'a>(
        &'a self,
        account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>> {
        (**self).list(account)
    }

    fn disable(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).disable(key_id)
    }

    fn set_limits(&self, key_id: i64, limits: Limits) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).set_limits(key_id, limits)
    }

    fn create_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>> {
        (**self).create_account(id)
    }

    fn suspend_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).suspend_account(id)
    }

    fn resume_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).resume_account(id)
    }

    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        (**self).account(id)
    }
}

// ===== open =====

/// Open the store a database URL names, running this crate's migrations:
///
/// - `sqlite:PATH`, `sqlite://PATH` (feature `sqlite`): the file is created if missing,
///   unless the URL sets `mode=` itself; `sqlite::memory:` is a private in-memory
///   database.
/// - `postgres://…` or `postgresql://…` (feature `postgres`).
///
/// # Errors
///
/// [`StoreErrorKind::InvalidInput`] for an unknown scheme or one whose feature is not
/// built in; [`StoreErrorKind::Unavailable`] when the database cannot be opened or
/// migrated. Messages never contain a password from the URL.
pub async fn open(url: &str) -> Result<Arc<dyn KeyStore>, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" => {
            #[cfg(feature = "sqlite")]
            {
                Ok(Arc::new(SqliteKeyStore::connect(url).await?))
            }
            #[cfg(not(feature = "sqlite"))]
            {
                Err(StoreError::new(
                    StoreErrorKind::InvalidInput,
                    "this build has no SQLite support; enable the `sqlite` feature of tollgate-auth (or use a postgres:// URL)",
                ))
            }
        }
        "postgres" | "postgresql" => {
            #[cfg(feature = "postgres")]
            {
                Ok(Arc::new(PostgresKeyStore::connect(url).await?))
            }
            #[cfg(not(feature = "postgres"))]
            {
                Err(StoreError::new(
                    StoreErrorKind::InvalidInput,
                    "this build has no PostgreSQL support; enable the `postgres` feature of tollgate-auth (or use a sqlite: URL)",
                ))
            }
        }
        _ => Err(StoreError::new(
            StoreErrorKind::InvalidInput,
            format!(
                "unsupported database URL {}; use sqlite:PATH (e.g. sqlite:tollgate.db) or postgres://USER@HOST/DB",
                redact_url(url)
            ),
        )),
    }
}

/// `url` with any password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

// ===== StoreError =====

/// What kind of failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The key or account named does not exist.
    NotFound,
    /// The account already exists.
    Conflict,
    /// An argument is not acceptable (bad account id, empty model name, URL scheme).
    InvalidInput,
    /// The database cannot be reached, opened or migrated; retrying later may work.
    Unavailable,
    /// The database answered something this crate cannot read (a corrupt row).
    Corrupt,
}

/// A store failure, with a message that says what happened and what to do.
///
/// ```
/// use tollgate_auth::{StoreError, StoreErrorKind};
///
/// let e = StoreError::new(StoreErrorKind::NotFound, "no key with id 7; list keys with `tollgate keys list`");
/// assert_eq!(e.kind(), StoreErrorKind::NotFound);
/// assert_eq!(e.to_string(), "no key with id 7; list keys with `tollgate keys list`");
/// ```
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StoreError {
    /// An error of `kind` whose message says what happened and what to do.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying error (available through [`std::error::Error::source`]).
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> StoreError {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn key_not_found(key_id: i64) -> StoreError {
        StoreError::new(
            StoreErrorKind::NotFound,
            format!("no key with id {key_id}; list keys with `tollgate keys list`"),
        )
    }

    pub(crate) fn account_not_found(id: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::NotFound,
            format!(
                "account {id:?} does not exist; create it first with `tollgate accounts create {id}`"
            ),
        )
    }

    pub(crate) fn account_exists(id: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::Conflict,
            format!("account {id:?} already exists; pick another id or use the existing account"),
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

// ===== validation shared by every store =====

pub(crate) fn validate_account_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::new(
            StoreErrorKind::InvalidInput,
            "an account id must be 1 to 128 printable ASCII characters without spaces (e.g. acme or team-42)",
        ))
    }
}

/// Limits must fit the `BIGINT` columns of the SQL stores, and a burst is 1–1000 percent
/// (as `[ratelimit]`'s); every store checks the same.
pub(crate) fn validate_limits(limits: &Limits) -> Result<(), StoreError> {
    if let Some(burst) = limits.burst.filter(|b| !(1..=1000).contains(b)) {
        return Err(StoreError::new(
            StoreErrorKind::InvalidInput,
            format!(
                "burst {burst} is out of range; use 1 to 1000 (percent of each limit usable at once), or none for the configured default"
            ),
        ));
    }
    let max = i64::MAX.unsigned_abs();
    let too_large = [limits.rpm, limits.itpm, limits.otpm, limits.tpd]
        .into_iter()
        .flatten()
        .find(|&n| n > max);
    match too_large {
        Some(n) => Err(StoreError::new(
            StoreErrorKind::InvalidInput,
            format!("limit {n} is too large to store; use at most {max}, or no limit"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn validate_new_key(new: &NewKey) -> Result<(), StoreError> {
    validate_account_id(&new.account_id)?;
    validate_limits(&new.limits)?;
    if let Some(models) = &new.allowed_models {
        if models.iter().any(|m| m.trim().is_empty()) {
            return Err(StoreError::new(
                StoreErrorKind::InvalidInput,
                "allowed models must not contain an empty model id; list them like claude-sonnet-4-6,claude-haiku-4-5",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact_url("sqlite:/tmp/a.db"), "sqlite:/tmp/a.db");
    }

    #[tokio::test]
    async fn open_rejects_an_unknown_scheme_naming_the_supported_ones() {
        let err = match open("mysql://root:pw@localhost/db").await {
            Err(e) => e,
            Ok(_) => panic!("mysql is not supported"),
        };
        assert_eq!(err.kind(), StoreErrorKind::InvalidInput);
        assert!(err.message().contains("sqlite:PATH"), "{err}");
        assert!(!err.message().contains("pw"), "{err}");
    }
}
