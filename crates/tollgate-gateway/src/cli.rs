//! The `tollgate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::admin;
use crate::config::Config;
use crate::demo;
use crate::log_writer::{LogGuard, LogWriter};
use crate::server::{Gateway, shutdown_signal};

/// Tollgate: a relay gateway for the Anthropic Messages API and OpenAI-compatible APIs.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A relay gateway for the Anthropic Messages API and OpenAI-compatible APIs: keys, balances, limits, retries and fallback in front of your upstream.",
    after_help = "Start with `tollgate demo`; run for real with `tollgate serve --config tollgate.toml`."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway from a configuration file.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
        /// Override the file's `listen` address.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Try it: a gateway in front of a built-in mock upstream, with everything set up.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Print the configuration the demo runs with (for `tollgate serve`) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Issue, list and disable API keys.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
        /// Where the keys live.
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Create, show and suspend accounts.
    Accounts {
        /// What to do with accounts.
        #[command(subcommand)]
        command: AccountsCommand,
        /// Where the accounts live.
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Run the scriptable mock upstream (for tests and benchmarks).
    Mock {
        /// Where the mock listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Record received requests (off by default: the mock is used for load).
        #[arg(long)]
        record: bool,
    },
}

/// Which database an admin command works on.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Database URL (`sqlite://tollgate.db`, `postgres://…`); default: `database` of the
    /// config file.
    #[arg(long, global = true, env = "TOLLGATE_DATABASE")]
    pub database: Option<String>,
    /// The config file to read `database` from when `--database` is not given.
    #[arg(long, global = true, default_value = "tollgate.toml")]
    pub config: PathBuf,
}

/// `tollgate keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once, on stdout, and only its hash is stored.
    Create {
        /// The account the key spends from (create it first with `accounts create`).
        #[arg(long)]
        account: String,
        /// A name for the key, shown in `keys list` and logs.
        #[arg(long)]
        name: Option<String>,
        /// Models the key may use, comma-separated; default: any.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Requests per minute for this key.
        #[arg(long)]
        rpm: Option<u64>,
        /// Input tokens per minute for this key.
        #[arg(long)]
        itpm: Option<u64>,
        /// Output tokens per minute for this key.
        #[arg(long)]
        otpm: Option<u64>,
        /// Tokens per day for this key.
        #[arg(long)]
        tpd: Option<u64>,
        /// Percent of each of this key's limits usable at once (1–1000); default: the
        /// gateway's `[ratelimit.default_key] burst`.
        #[arg(long)]
        burst: Option<u32>,
        /// When the key stops working, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys (never the keys themselves: id, name, account, prefix, status, dates).
    List {
        /// Only this account's keys.
        #[arg(long)]
        account: Option<String>,
    },
    /// Disable a key by id; takes effect within the gateway's auth cache TTL (5 s default).
    Disable {
        /// The key id shown by `keys list`.
        key_id: i64,
    },
}

/// `tollgate accounts …`
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account (with a zero balance).
    Create {
        /// The account id, e.g. `acme`.
        id: String,
        /// The currency its balance is kept in.
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Add to an account's balance.
    Topup {
        /// The account id.
        id: String,
        /// A decimal amount in currency units, e.g. `5.00` or `0.000003` (at most 6
        /// decimals: micro-units).
        amount: String,
    },
    /// Show an account: balance, open reservations, its keys and the last 20 ledger entries.
    Show {
        /// The account id.
        id: String,
    },
    /// Suspend an account: its keys get 403 until resumed.
    Suspend {
        /// The account id.
        id: String,
    },
    /// Lift a suspension.
    Resume {
        /// The account id.
        id: String,
    },
}

/// Parse the command line, run, and turn failures into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Written out when `main` returns: the last buffered access lines.
    let _log = init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`tollgate keys list | head`): not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = LogWriter::stderr();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .event_format(crate::log_format::LogFormat::new(ansi))
        .try_init();
    guard
}

/// `database = "memory"`: the key issued at start, once, on stdout (logs go to stderr,
/// so the key never lands in a log file that only collects stderr). The first line is
/// the key alone, for scripts: `tollgate serve … | head -n 1`.
fn print_issued_key(issued: &crate::stores::IssuedKey) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", issued.key.expose());
    let _ = writeln!(
        out,
        "(the key above spends from memory account {:?}; it is shown only now and lost, with every balance, when the gateway stops)",
        issued.account
    );
    let _ = out.flush();
}

/// Run one subcommand to completion.
///
/// # Errors
///
/// A message saying what failed and what to do.
pub async fn run(command: Command) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match command {
        Command::Serve { config, listen } => {
            let mut cfg = Config::load(&config)?;
            if let Some(listen) = listen {
                cfg.listen = listen;
            }
            let (stores, issued) = crate::stores::Stores::open_issuing(&cfg).await?;
            let (listen, upstreams) = (cfg.listen, cfg.upstreams.len());
            let gateway = Gateway::start_with(cfg, stores).await?;
            tracing::info!(listen = %listen, upstreams, "tollgate serving");
            if let Some(issued) = issued {
                print_issued_key(&issued);
            }
            gateway.run_until_signal().await?;
            Ok(())
        }
        Command::Demo {
            listen,
            print_config,
        } => demo::run(listen, print_config).await,
        Command::Keys { command, db } => admin::keys(command, &db).await,
        Command::Accounts { command, db } => admin::accounts(command, &db).await,
        Command::Mock { listen, record } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            eprintln!("tollgate mock upstream on http://{listen}");
            tollgate_mock::serve(
                listener,
                tollgate_mock::MockOptions::new().record(record),
                shutdown_signal(),
            )
            .await?;
            Ok(())
        }
    }
}
