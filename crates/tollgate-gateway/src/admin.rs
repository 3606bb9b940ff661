//! The admin subcommands: `keys …` and `accounts …`.

use std::sync::Arc;
use std::time::SystemTime;

use tollgate_auth::{KeyRecord, KeyStatus, KeyStore, NewKey, format_rfc3339, parse_rfc3339};
use tollgate_balance::{Amount, Ledger};
use tollgate_core::Limits;

use crate::cli::{AccountsCommand, DatabaseArgs, KeysCommand};
use crate::stores::{open_keys, open_ledger};

type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// `println!` that fails with the I/O error instead of panicking when stdout is closed
/// early (`tollgate accounts show acme | head`); `cli::main` exits quietly on that.
macro_rules! out {
    () => {
        out!("")
    };
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(
            &mut std::io::stdout().lock(),
            format_args!("{}\n", format_args!($($arg)*)),
        )?
    };
}

/// The database URL: `--database`, else the config file's `database`.
fn database_url(db: &DatabaseArgs) -> Result<String, String> {
    let url = configured_url(db)?;
    if url == crate::config::MEMORY_DATABASE {
        return Err("database = \"memory\" lives inside the running gateway: the admin commands cannot reach it. Use the key `tollgate serve` printed at start, and set the account and its balance in the [memory] table (docs/configuration.md)".into());
    }
    Ok(url)
}

fn configured_url(db: &DatabaseArgs) -> Result<String, String> {
    if let Some(url) = &db.database {
        return Ok(url.clone());
    }
    let path = &db.config;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "no --database given and {} cannot be read ({e}); pass --database sqlite://tollgate.db or --config FILE",
            path.display()
        )
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match table.get("database") {
        Some(toml::Value::String(url)) => Ok(url.clone()),
        Some(_) => Err(format!(
            "{}: database: must be a string URL",
            path.display()
        )),
        None => Err(format!(
            "{}: has no `database`; pass --database sqlite://tollgate.db",
            path.display()
        )),
    }
}

async fn store(db: &DatabaseArgs) -> Result<Arc<dyn KeyStore>, String> {
    open_keys(&database_url(db)?).await
}

pub(crate) async fn keys(command: KeysCommand, db: &DatabaseArgs) -> CliResult {
    let store = store(db).await?;
    match command {
        KeysCommand::Create {
            account,
            name,
            models,
            rpm,
            itpm,
            otpm,
            tpd,
            burst,
            expires,
        } => {
            if store.account(&account).await?.is_none() {
                return Err(format!(
                    "account {account:?} does not exist; create it with `tollgate accounts create {account}`"
                )
                .into());
            }
            let mut new = NewKey::new(&account).limits(Limits {
                rpm,
                itpm,
                otpm,
                tpd,
                burst,
            });
            if let Some(name) = name {
                new = new.name(&name);
            }
            if let Some(models) = models {
                let models: Vec<String> = models
                    .into_iter()
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect();
                if models.is_empty() {
                    return Err("--models lists no model; omit it to allow every model".into());
                }
                new = new.allowed_models(models);
            }
            if let Some(expires) = expires {
                let at =
                    parse_rfc3339(&expires).map_err(|e| format!("--expires {expires:?}: {e}"))?;
                if at <= SystemTime::now() {
                    return Err(format!("--expires {expires:?} is in the past").into());
                }
                new = new.expires_at(at);
            }
            let (record, secret) = store.create(new).await?;
            eprintln!(
                "Created key {} ({}…) for account {}. It is shown once, below; only its hash is stored.",
                record.id, record.prefix, record.account_id
            );
            out!("{}", secret.expose());
            Ok(())
        }
        KeysCommand::List { account } => {
            let keys = store.list(account.as_deref()).await?;
            print_keys(&keys)?;
            Ok(())
        }
        KeysCommand::Disable { key_id } => {
            store.disable(key_id).await?;
            eprintln!(
                "Disabled key {key_id}; running gateways refuse it within their auth cache TTL (5 s by default)."
            );
            Ok(())
        }
    }
}

async fn ledger(db: &DatabaseArgs) -> Result<Arc<dyn Ledger>, String> {
    open_ledger(&database_url(db)?).await
}

pub(crate) async fn accounts(command: AccountsCommand, db: &DatabaseArgs) -> CliResult {
    let store = store(db).await?;
    match command {
        AccountsCommand::Create { id, currency } => {
            let account = store.create_account(&id).await?;
            ledger(db).await?.open_account(&id, &currency).await?;
            eprintln!(
                "Created account {} with a zero {currency} balance; add to it with `tollgate accounts topup {} AMOUNT`.",
                account.id, account.id
            );
            Ok(())
        }
        AccountsCommand::Topup { id, amount } => {
            let amount = Amount::parse(&amount).map_err(|e| format!("amount {amount:?}: {e}"))?;
            if amount <= Amount::ZERO {
                return Err("the amount must be positive".into());
            }
            let ledger = ledger(db).await?;
            let entry = ledger.topup(&id, amount, "tollgate accounts topup").await?;
            let balance = ledger.balance(&id).await?;
            eprintln!(
                "Added {} to {id}; balance is now {} {}.",
                amount,
                Amount::from_micros(entry.balance_after.micros()),
                balance.currency
            );
            Ok(())
        }
        AccountsCommand::Show { id } => {
            let Some(account) = store.account(&id).await? else {
                return Err(format!("account {id:?} does not exist").into());
            };
            let ledger = ledger(db).await?;
            let balance = ledger.balance(&id).await?;
            out!("account    {}", account.id);
            out!("status     {}", account.status.as_str());
            out!("created    {}", format_rfc3339(account.created_at));
            out!("balance    {} {}", balance.balance, balance.currency);
            out!("reserved   {} {}", balance.reserved, balance.currency);
            out!("available  {} {}", balance.available(), balance.currency);
            out!();
            print_keys(&store.list(Some(&id)).await?)?;
            out!();
            let history = ledger.history(&id, 20).await?;
            if history.is_empty() {
                out!("(no ledger entries)");
            } else {
                out!(
                    "{:<20}  {:<8}  {:>14}  {:>14}  {:<20}  REQUEST",
                    "TIME",
                    "KIND",
                    "AMOUNT",
                    "BALANCE",
                    "MODEL"
                );
                for e in history {
                    out!(
                        "{:<20}  {:<8}  {:>14}  {:>14}  {:<20}  {}",
                        format_rfc3339(e.at),
                        format!("{:?}", e.kind).to_lowercase(),
                        e.amount.to_string(),
                        e.balance_after.to_string(),
                        e.model.as_deref().unwrap_or("-"),
                        e.request_id.as_deref().unwrap_or("-"),
                    );
                }
            }
            Ok(())
        }
        AccountsCommand::Suspend { id } => {
            store.suspend_account(&id).await?;
            eprintln!("Suspended account {id}; its keys get 403 within the auth cache TTL.");
            Ok(())
        }
        AccountsCommand::Resume { id } => {
            store.resume_account(&id).await?;
            eprintln!("Resumed account {id}.");
            Ok(())
        }
    }
}

fn print_keys(keys: &[KeyRecord]) -> CliResult {
    if keys.is_empty() {
        out!("(no keys)");
        return Ok(());
    }
    out!(
        "{:>5}  {:<16}  {:<12}  {:<10}  {:<8}  {:<20}  {:<20}  {:<20}  MODELS",
        "ID",
        "NAME",
        "ACCOUNT",
        "PREFIX",
        "STATUS",
        "CREATED",
        "LAST USED",
        "EXPIRES"
    );
    for k in keys {
        let when = |t: Option<SystemTime>| t.map(format_rfc3339).unwrap_or_else(|| "-".into());
        let status = match (k.status, k.expires_at) {
            (KeyStatus::Disabled, _) => "disabled",
            (_, Some(at)) if at <= SystemTime::now() => "expired",
            _ => "active",
        };
        out!(
            "{:>5}  {:<16}  {:<12}  {:<10}  {:<8}  {:<20}  {:<20}  {:<20}  {}",
            k.id,
            k.name.as_deref().unwrap_or("-"),
            k.account_id,
            format!("{}…", k.prefix),
            status,
            format_rfc3339(k.created_at),
            when(k.last_used_at),
            when(k.expires_at),
            k.allowed_models
                .as_ref()
                .map(|m| m.join(","))
                .unwrap_or_else(|| "*".into()),
        );
    }
    Ok(())
}
