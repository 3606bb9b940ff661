//! The gateway's stores, opened once at start from `database`.

use std::sync::Arc;

use tollgate_auth::KeyStore;
use tollgate_balance::Ledger;

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
        let keys = match (&config.database, config.auth.enabled) {
            (Some(url), true) => Some(open_keys(url).await?),
            _ => None,
        };
        let ledger = match (&config.database, config.auth.enabled && config.billing) {
            (Some(url), true) => Some(open_ledger(url).await?),
            _ => None,
        };
        Ok(Stores { keys, ledger })
    }
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
