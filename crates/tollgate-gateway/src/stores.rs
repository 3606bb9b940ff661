//! The gateway's stores, opened once at start from `database`.

use std::sync::Arc;

use tollgate_auth::{KeyStore, MemoryKeyStore, NewKey, SecretKey};
use tollgate_balance::{Amount, Ledger, MemoryLedger};

use crate::config::Config;

/// Everything the layers keep state in. Cheap to clone.
#[derive(Clone, Default)]
pub struct Stores {
    /// Keys and accounts; `None` when key auth is off.
    pub keys: Option<Arc<dyn KeyStore>>,
    /// Balances and the ledger; `None` when billing is off.
    pub ledger: Option<Arc<dyn Ledger>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("keys", &self.keys.as_ref().map(|_| "KeyStore"))
            .field("ledger", &self.ledger.as_ref().map(|_| "Ledger"))
            .finish()
    }
}

impl Stores {
    /// Open the stores `config` asks for (running their migrations).
    ///
    /// # Errors
    ///
    /// The database cannot be opened; the message says what to check.
    pub async fn open(config: &Config) -> Result<Stores, String> {
        Ok(Stores::open_issuing(config).await?.0)
    }

    /// Like [`Stores::open`], and with `database = "memory"` also the key issued at start
    /// for `[memory] account` (the only way to reach a gateway with memory stores: show
    /// it to the operator once, as `serve` does on stdout).
    ///
    /// # Errors
    ///
    /// The database cannot be opened, or the memory stores cannot be set up.
    pub async fn open_issuing(config: &Config) -> Result<(Stores, Option<IssuedKey>), String> {
        if config.memory_stores() {
            return open_memory(config).await;
        }
        let keys = match (&config.database, config.auth.enabled) {
            (Some(url), true) => Some(open_keys(url).await?),
            _ => None,
        };
        let ledger = match (&config.database, config.auth.enabled && config.billing) {
            (Some(url), true) => Some(open_ledger(url).await?),
            _ => None,
        };
        Ok((Stores { keys, ledger }, None))
    }
}

/// The key `database = "memory"` issued at start. `Debug` never shows the key.
#[derive(Debug)]
pub struct IssuedKey {
    /// The account it spends from (`[memory] account`).
    pub account: String,
    /// The key itself: print it once, never log it.
    pub key: SecretKey,
}

/// Fresh memory stores holding `[memory] account` with its balance, and one key for it.
async fn open_memory(config: &Config) -> Result<(Stores, Option<IssuedKey>), String> {
    if !config.auth.enabled {
        return Ok((Stores::default(), None));
    }
    let m = &config.memory;
    let keys = MemoryKeyStore::new();
    keys.create_account(&m.account)
        .await
        .map_err(|e| e.to_string())?;
    let (_, key) = keys
        .create(NewKey::new(m.account.as_str()).name("memory"))
        .await
        .map_err(|e| e.to_string())?;
    let ledger = if config.billing {
        let ledger = MemoryLedger::new();
        ledger
            .open_account(&m.account, &m.currency)
            .await
            .map_err(|e| e.to_string())?;
        let balance = Amount::parse(&m.balance).map_err(|e| format!("memory.balance: {e}"))?;
        if balance > Amount::ZERO {
            ledger
                .topup(
                    &m.account,
                    balance,
                    "memory store: [memory] balance at start",
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Some(Arc::new(ledger) as Arc<dyn Ledger>)
    } else {
        None
    };
    let stores = Stores {
        keys: Some(Arc::new(keys)),
        ledger,
    };
    let issued = IssuedKey {
        account: m.account.clone(),
        key,
    };
    Ok((stores, Some(issued)))
}

/// Open the key store at `url`.
///
/// # Errors
///
/// The database cannot be opened or migrated.
pub async fn open_keys(url: &str) -> Result<Arc<dyn KeyStore>, String> {
    tollgate_auth::open(url).await.map_err(|e| e.to_string())
}

/// Open the ledger at `url`.
///
/// # Errors
///
/// The database cannot be opened or migrated.
pub async fn open_ledger(url: &str) -> Result<Arc<dyn Ledger>, String> {
    tollgate_balance::open(url).await.map_err(|e| e.to_string())
}
