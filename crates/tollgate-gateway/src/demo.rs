//! `tollgate demo`: everything needed to try the gateway, in one process.

use std::net::SocketAddr;

use tollgate_auth::NewKey;
use tollgate_balance::Amount;
use tollgate_mock::{MockOptions, MockServer};

use crate::config::{Config, UpstreamConfig};
use crate::server::{Gateway, shutdown_signal};
use crate::stores::Stores;

/// The demo's account.
const DEMO_ACCOUNT: &str = "demo";

/// The key the demo's gateway sends to its mock upstream.
const MOCK_UPSTREAM_KEY: &str = "mock-upstream-key";

/// Run the demo until Ctrl-C.
///
/// # Errors
///
/// The listen address is taken, or the mock cannot start.
pub(crate) async fn run(
    listen: SocketAddr,
    print_config: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mock = MockServer::start(MockOptions::new().record(false).name("demo-mock")).await?;
    // A fresh SQLite file per demo run, removed when the demo stops.
    let dir = tempfile::Builder::new()
        .prefix("tollgate-demo-")
        .tempdir()?;
    let mut config = Config::with_upstreams(vec![UpstreamConfig::new(
        "mock",
        &mock.url(),
        MOCK_UPSTREAM_KEY,
    )]);
    config.listen = listen;
    config.database = Some(format!(
        "sqlite://{}",
        dir.path().join("tollgate-demo.db").display()
    ));
    if print_config {
        print!("{}", demo_config_toml(&config));
        return Ok(());
    }
    let stores = Stores::open(&config).await?;
    let keys = stores
        .keys
        .clone()
        .ok_or("the demo runs with key auth, but no key store was opened")?;
    keys.create_account(DEMO_ACCOUNT).await?;
    if let Some(ledger) = &stores.ledger {
        ledger.open_account(DEMO_ACCOUNT, "USD").await?;
        ledger
            .topup(DEMO_ACCOUNT, Amount::parse("5.00")?, "demo")
            .await?;
    }
    let (_, secret) = keys
        .create(NewKey::new(DEMO_ACCOUNT).name("demo key"))
        .await?;
    let gateway = Gateway::start_with(config.clone(), stores)
        .await
        .map_err(|e| {
            format!("{e}; pick another address with `tollgate demo --listen 127.0.0.1:PORT`")
        })?;
    let url = gateway.url();
    let key = secret.expose();
    let database = config.database.as_deref().unwrap_or_default();
    println!(
        r#"Tollgate demo: gateway on {url}, in front of a built-in mock upstream ({mock_url}).

Point any Anthropic client at it:

    export ANTHROPIC_BASE_URL={url}
    export ANTHROPIC_API_KEY={key}

Try it with curl:

    curl -s {url}/v1/messages -H "x-api-key: $ANTHROPIC_API_KEY" -H "anthropic-version: 2023-06-01" \
      -H "content-type: application/json" \
      -d '{{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{{"role":"user","content":"Hello"}}]}}'

Ask the mock for an error (the gateway passes it through byte for byte):

    curl -si {url}/v1/messages -H "x-api-key: $ANTHROPIC_API_KEY" -H "x-mock-status: 529" -H "content-type: application/json" \
      -d '{{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{{"role":"user","content":"Hello"}}]}}'

Or with the official Python SDK (pip install anthropic):

    python3 -c 'import anthropic; c = anthropic.Anthropic(); print(c.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[{{"role":"user","content":"Hello"}}]).content[0].text)'

The demo account holds $5.00; each request reserves its worst-case cost and is charged
what the upstream reports it used:

    tollgate accounts show demo --database {database}

A request without the key, or with a wrong one, gets a 401 that says why:

    curl -s {url}/v1/messages -H "x-api-key: sk-ant-oops" -H "content-type: application/json" \
      -d '{{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{{"role":"user","content":"Hello"}}]}}'

Keys and accounts live in {database}; manage them with
    tollgate keys list --database {database}

Metrics: {url}/metrics    Health: {url}/healthz    Config: tollgate demo --print-config
Press Ctrl-C to stop."#,
        mock_url = mock.url(),
    );
    shutdown_signal().await;
    gateway.shutdown().await?;
    mock.shutdown().await;
    drop(dir);
    Ok(())
}

/// The demo's configuration as a TOML file for `tollgate serve` (written out by hand:
/// it is also the documented starting point).
fn demo_config_toml(config: &Config) -> String {
    let upstream = &config.upstreams[0];
    format!(
        r#"# The configuration `tollgate demo` runs with. Its mock upstream and SQLite file are
# temporary: to use this with `tollgate serve --config FILE`, run
# `tollgate mock --listen 127.0.0.1:9000` and set base_url to http://127.0.0.1:9000 (or
# point it at https://api.anthropic.com with api_key_env = "NAME_OF_ENV_VAR"), set
# database to a file that stays (sqlite://tollgate.db), and create an account and a key:
#   tollgate accounts create demo --config FILE
#   tollgate accounts topup demo 5.00 --config FILE
#   tollgate keys create --account demo --config FILE
# Every option and its default: docs/configuration.md.

listen = "{listen}"
database = "{database}"

[[upstreams]]
name = "{name}"
base_url = "{base_url}"
api_key = "{MOCK_UPSTREAM_KEY}"
models = ["*"]
"#,
        listen = config.listen,
        database = config.database.as_deref().unwrap_or("sqlite://tollgate.db"),
        name = upstream.name,
        base_url = upstream.base_url,
    )
}
