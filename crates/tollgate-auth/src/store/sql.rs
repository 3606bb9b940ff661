//! What the SQLite and PostgreSQL stores share: row conversion and error mapping.

use tollgate_core::Limits;

use super::{StoreError, StoreErrorKind, validate_limits};
use crate::key::KeyHash;
use crate::record::{AccountStatus, KeyRecord, KeyStatus, from_unix};

/// The `SELECT` list and join every key query uses; `$tail` adds `WHERE`/`ORDER BY`.
macro_rules! select_keys {
    ($tail:literal) => {
        concat!(
            "SELECT k.id, k.account_id, k.name, k.prefix, k.hash, k.allowed_models, ",
            "k.rpm, k.itpm, k.otpm, k.tpd, k.burst, k.status, a.status AS account_status, ",
            "k.created_at, k.expires_at, k.last_used_at ",
            "FROM tollgate_keys k JOIN tollgate_accounts a ON a.id = k.account_id ",
            $tail
        )
    };
}
pub(super) use select_keys;

/// A key row as read, before checking.
pub(super) struct RawKey {
    pub(super) id: i64,
    pub(super) account_id: String,
    pub(super) name: Option<String>,
    pub(super) prefix: String,
    pub(super) hash: Vec<u8>,
    pub(super) allowed_models: Option<Vec<String>>,
    pub(super) limits: [Option<i64>; 5],
    pub(super) status: String,
    pub(super) account_status: String,
    pub(super) created_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) last_used_at: Option<i64>,
}

impl RawKey {
    pub(super) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let id = self.id;
        let corrupt = |what: &str| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "key {id} has an unreadable {what} in the database; fix or disable that row (tollgate keys disable {id})"
                ),
            )
        };
        let hash = KeyHash::from_slice(&self.hash).ok_or_else(|| corrupt("hash"))?;
        let status = KeyStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?;
        let account_status =
            AccountStatus::parse(&self.account_status).ok_or_else(|| corrupt("account status"))?;
        let limit = |v: Option<i64>| -> Result<Option<u64>, StoreError> {
            v.map(|n| u64::try_from(n).map_err(|_| corrupt("limit")))
                .transpose()
        };
        let [rpm, itpm, otpm, tpd, burst] = self.limits;
        Ok(KeyRecord {
            id,
            account_id: self.account_id,
            name: self.name,
            prefix: self.prefix,
            hash,
            allowed_models: self.allowed_models,
            limits: Limits {
                rpm: limit(rpm)?,
                itpm: limit(itpm)?,
                otpm: limit(otpm)?,
                tpd: limit(tpd)?,
                burst: burst
                    .map(|n| u32::try_from(n).map_err(|_| corrupt("burst")))
                    .transpose()?,
            },
            status,
            account_status,
            created_at: from_unix(self.created_at),
            expires_at: self.expires_at.map(from_unix),
            last_used_at: self.last_used_at.map(from_unix),
        })
    }
}

/// The limits as the four nullable `BIGINT` columns and the nullable `burst`.
pub(super) fn limits_to_db(limits: &Limits) -> Result<[Option<i64>; 5], StoreError> {
    validate_limits(limits)?;
    let one = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    Ok([
        one(limits.rpm),
        one(limits.itpm),
        one(limits.otpm),
        one(limits.tpd),
        limits.burst.map(i64::from),
    ])
}

/// A database failure while `doing` something.
pub(super) fn db_error(e: sqlx::Error, doing: &str) -> StoreError {
    let kind = match &e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::new(
        kind,
        format!(
            "key store error while {doing}: {e}; check that the database is running and reachable"
        ),
    )
    .with_source(e)
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

pub(super) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}
