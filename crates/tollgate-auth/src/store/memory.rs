use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use tollgate_core::{Clock, Limits, SystemClock};

use super::{
    BoxFuture, KeyLookup, KeyStore, StoreError, validate_account_id, validate_limits,
    validate_new_key,
};
use crate::key::{KeyHash, SecretKey};
use crate::record::{Account, AccountStatus, KeyRecord, KeyStatus, NewKey, whole_seconds};

/// An in-process [`KeyStore`]: for tests, embedding and demos. Nothing survives the
/// process.
///
/// Clones share the same data.
#[derive(Clone, Debug)]
pub struct MemoryKeyStore {
    state: Arc<RwLock<State>>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<String, Account>,
    /// Records by id; `account_status` is filled in when read.
    keys: BTreeMap<i64, KeyRecord>,
    by_hash: HashMap<KeyHash, i64>,
    next_id: i64,
}

impl State {
    fn record(&self, key: &KeyRecord) -> KeyRecord {
        let mut record = key.clone();
        record.account_status = self
            .accounts
            .get(&key.account_id)
            .map_or(AccountStatus::Suspended, |a| a.status);
        record
    }

    fn key_mut(&mut self, key_id: i64) -> Result<&mut KeyRecord, StoreError> {
        self.keys
            .get_mut(&key_id)
            .ok_or_else(|| StoreError::key_not_found(key_id))
    }

    fn set_account_status(&mut self, id: &str, status: AccountStatus) -> Result<(), StoreError> {
        let account = self
            .accounts
            .get_mut(id)
            .ok_or_else(|| StoreError::account_not_found(id))?;
        account.status = status;
        Ok(())
    }
}

impl MemoryKeyStore {
    /// An empty store using the system clock for timestamps.
    pub fn new() -> MemoryKeyStore {
        MemoryKeyStore {
            state: Arc::new(RwLock::new(State {
                next_id: 1,
                ..State::default()
            })),
            clock: Arc::new(SystemClock),
        }
    }

    /// Take creation timestamps from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> MemoryKeyStore {
        self.clock = clock;
        self
    }
}

impl Default for MemoryKeyStore {
    fn default() -> Self {
        MemoryKeyStore::new()
    }
}

impl KeyLookup for MemoryKeyStore {
    fn lookup<'a>(
        &'a self,
        hash: &'a KeyHash,
    ) -> BoxFuture<'a, Result<Option<KeyRecord>, StoreError>> {
        let state = self.state.read();
        let found = state
            .by_hash
            .get(hash)
            .and_then(|id| state.keys.get(id))
            .map(|k| state.record(k));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn touch(&self, key_id: i64, at: SystemTime) -> BoxFuture<'_, Result<(), StoreError>> {
        if let Some(k) = self.state.write().keys.get_mut(&key_id) {
            let at = whole_seconds(at);
            if k.last_used_at.is_none_or(|prev| prev < at) {
                k.last_used_at = Some(at);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl KeyStore for MemoryKeyStore {
    fn key(&self, key_id: i64) -> BoxFuture<'_, Result<Option<KeyRecord>, StoreError>> {
        let state = self.state.read();
        let found = state.keys.get(&key_id).map(|k| state.record(k));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn create(&self, new: NewKey) -> BoxFuture<'_, Result<(KeyRecord, SecretKey), StoreError>> {
        let result = validate_new_key(&new).and_then(|()| {
            let mut state = self.state.write();
            let account_status = state
                .accounts
                .get(&new.account_id)
                .ok_or_else(|| StoreError::account_not_found(&new.account_id))?
                .status;
            let secret = SecretKey::generate();
            let id = state.next_id;
            state.next_id += 1;
            let record = KeyRecord {
                id,
                account_id: new.account_id,
                name: new.name,
                prefix: secret.prefix().to_owned(),
                hash: secret.hash(),
                allowed_models: new.allowed_models,
                limits: new.limits,
                status: KeyStatus::Active,
                account_status,
                created_at: whole_seconds(self.clock.wall()),
                expires_at: new.expires_at.map(whole_seconds),
                last_used_at: None,
            };
            state.by_hash.insert(record.hash, id);
            state.keys.insert(id, record.clone());
            Ok((record, secret))
        });
        Box::pin(std::future::ready(result))
    }

    fn list<'a>(
        &'a self,
        account: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<KeyRecord>, StoreError>> {
        let state = self.state.read();
        let records = state
            .keys
            .values()
            .filter(|k| account.is_none_or(|a| k.account_id == a))
            .map(|k| state.record(k))
            .collect();
        Box::pin(std::future::ready(Ok(records)))
    }

    fn disable(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = self
            .state
            .write()
            .key_mut(key_id)
            .map(|k| k.status = KeyStatus::Disabled);
        Box::pin(std::future::ready(result))
    }

    fn set_limits(&self, key_id: i64, limits: Limits) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = validate_limits(&limits).and_then(|()| {
            self.state
                .write()
                .key_mut(key_id)
                .map(|k| k.limits = limits)
        });
        Box::pin(std::future::ready(result))
    }

    fn create_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, StoreError>> {
        let result = validate_account_id(id).and_then(|()| {
            let mut state = self.state.write();
            if state.accounts.contains_key(id) {
                return Err(StoreError::account_exists(id));
            }
            let account = Account {
                id: id.to_owned(),
                status: AccountStatus::Active,
                created_at: whole_seconds(self.clock.wall()),
            };
            state.accounts.insert(id.to_owned(), account.clone());
            Ok(account)
        });
        Box::pin(std::future::ready(result))
    }

    fn suspend_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self
            .state
            .write()
            .set_account_status(id, AccountStatus::Suspended);
        Box::pin(std::future::ready(result))
    }

    fn resume_account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self
            .state
            .write()
            .set_account_status(id, AccountStatus::Active);
        Box::pin(std::future::ready(result))
    }

    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Account>, StoreError>> {
        let found = self.state.read().accounts.get(id).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
