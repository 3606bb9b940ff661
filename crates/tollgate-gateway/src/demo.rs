//! `tollgate demo`: everything needed to try the gateway, in one process.

use std::net::SocketAddr;

use tollgate_mock::{MockOptions, MockServer};

use crate::cli::start;
use crate::config::{Config, UpstreamConfig};
use crate::server::shutdown_signal;

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
    let mut config = Config::with_upstreams(vec![UpstreamConfig::new(
        "mock",
        &mock.url(),
        MOCK_UPSTREAM_KEY,
    )]);
    config.listen = listen;
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
    let gateway = start(config).await.map_err(|e| {
        format!("{e}; pick another address with `tollgate demo --listen 127.0.0.1:PORT`")
    })?;
    let url = gateway.url();
    let key = "tg-demo";
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

    curl -si {url}/v1/messages -H "x-mock-status: 529" -H "content-type: application/json" \
      -d '{{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{{"role":"user","content":"Hello"}}]}}'

Or with the official Python SDK (pip install anthropic):

    python3 -c 'import anthropic; c = anthropic.Anthropic(); print(c.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[{{"role":"user","content":"Hello"}}]).content[0].text)'

Metrics: {url}/metrics    Health: {url}/healthz    Config: tollgate demo --print-config
Press Ctrl-C to stop."#,
        mock_url = mock.url(),
    );
    shutdown_signal().await;
    gateway.shutdown().await?;
    mock.shutdown().await;
    Ok(())
}
