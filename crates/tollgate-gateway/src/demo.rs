//! `tollgate demo`: everything needed to try the gateway, in one process.

use std::net::SocketAddr;

use tollgate_auth::NewKey;
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
        print!(
            "# The configuration `tollgate demo` runs with. Its mock upstream listens on an\n\
             # ephemeral port that is gone when the demo stops: to use this file with\n\
             # `tollgate serve --config FILE`, run `tollgate mock --listen 127.0.0.1:9000` and\n\
             # set base_url to http://127.0.0.1:9000, or point it at https://api.anthropic.com\n\
             # with api_key_env = \"NAME_OF_ENV_VAR\" instead of api_key.\n\n{}",
            toml::to_string_pretty(&config)?
        );
        return Ok(());
    }
    let stores = Stores::open(&config).await?;
    let keys = stores
        .keys
        .clone()
        .ok_or("the demo runs with key auth, but no key store was opened")?;
    keys.create_account(DEMO_ACCOUNT).await?;
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

A request without the key, or with a wrong one, gets a 401 that says why:

    curl -s {url}/v1/messages -H "x-api-key: sk-ant-oops" -H "content-type: application/json" -d '{{}}'

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
