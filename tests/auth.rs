//! Key auth in the gateway, over real sockets: every refusal says why, never echoes the
//! key, and the upstream never sees the client's credential.

mod common;

use tollgate::auth::{KeyStore, NewKey};
use tollgate::gateway::UpstreamConfig;

use common::{Client, MESSAGE, body_json, config, start_mock, start_with_keys};

async fn refusal(
    client: &Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value, String) {
    let res = client.post(url, "/v1/messages", headers, MESSAGE).await;
    let status = res.status().as_u16();
    assert_eq!(res.headers()["x-tollgate-origin"], "gateway");
    assert_eq!(res.headers()["x-should-retry"], "false");
    let headers = format!("{:?}", res.headers());
    let json = body_json(res).await;
    (status, json, headers)
}

#[tokio::test]
async fn every_refusal_over_a_socket_says_why_without_echoing_the_key() {
    let mock = start_mock().await;
    let (gw, client, _keys) = start_with_keys(config(UpstreamConfig::new(
        "m",
        &mock.url(),
        common::UPSTREAM_KEY,
    )))
    .await;
    let anonymous = Client::anonymous();
    let good = client.key().to_string();
    let unknown = format!("tg-{}", "Z".repeat(32));
    // (Whitespace around a header value is trimmed by HTTP/1 parsing itself, so that
    // diagnosis is pinned by the auth crate's own tests, not over a socket.)
    let zero_width = format!("{}\u{200b}{}", &good[..10], &good[10..]);
    let bearer_two_spaces = format!("Bearer  {good}");
    // (request headers, what the message must say, what it must not echo)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![], "no API key", ""),
        (
            vec![("x-api-key", "sk-ant-api03-abcdefghijklmnop")],
            "Anthropic API key",
            "sk-ant-api03-abcdefghijklmnop",
        ),
        (
            vec![("x-api-key", &unknown)],
            "not known to this gateway",
            &unknown,
        ),
        (
            vec![("authorization", &bearer_two_spaces)],
            "2 spaces",
            &good,
        ),
        (
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            "Basic",
            "dXNlcjpwYXNz",
        ),
    ];
    for (headers, hint, secret) in cases {
        let (status, json, head) = refusal(&anonymous, &gw.url(), &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(json["error"]["type"], "authentication_error");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(hint), "{hint:?} not in {message:?}");
        if !secret.is_empty() {
            assert!(!json.to_string().contains(secret), "key echoed in {json}");
            assert!(!head.contains(secret), "key echoed in headers {head}");
        }
    }
    // A zero-width character is named, with its position, not echoed.
    let res = anonymous
        .post(
            &gw.url(),
            "/v1/messages",
            &[("x-api-key", &zero_width)],
            MESSAGE,
        )
        .await;
    // HeaderValue carries the UTF-8 bytes; the gateway names the character.
    assert_eq!(res.status(), 401);
    let json = body_json(res).await;
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("U+200B"),
        "{json}"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "no refused request reached the upstream"
    );
}

#[tokio::test]
async fn disabled_and_scoped_keys_are_refused_and_good_ones_served() {
    let mock = start_mock().await;
    let (gw, client, keys) = start_with_keys(config(UpstreamConfig::new(
        "m",
        &mock.url(),
        common::UPSTREAM_KEY,
    )))
    .await;
    let (record, disabled) = keys
        .create(NewKey::new(common::ACCOUNT))
        .await
        .expect("key");
    keys.disable(record.id).await.expect("disable");
    let (_, scoped) = keys
        .create(NewKey::new(common::ACCOUNT).allowed_models(["claude-haiku-4-5"]))
        .await
        .expect("key");

    let (status, json, _) = refusal(&Client::with_key(disabled.expose()), &gw.url(), &[]).await;
    assert_eq!(status, 401);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled")
    );

    let (status, json, _) = refusal(&Client::with_key(scoped.expose()), &gw.url(), &[]).await;
    assert_eq!(status, 403);
    assert_eq!(json["error"]["type"], "permission_error");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("claude-sonnet-4-6") && message.contains("claude-haiku-4-5"),
        "{message}"
    );

    let res = client.post(&gw.url(), "/v1/messages", &[], MESSAGE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(mock.request_count(), 1);
    let sent = &mock.received()[0];
    assert_eq!(sent.header("x-api-key"), Some(common::UPSTREAM_KEY));
}

#[tokio::test]
async fn suspended_account_is_refused_with_403() {
    let mock = start_mock().await;
    let (gw, client, keys) = start_with_keys(config(UpstreamConfig::new(
        "m",
        &mock.url(),
        common::UPSTREAM_KEY,
    )))
    .await;
    keys.suspend_account(common::ACCOUNT)
        .await
        .expect("suspend");
    let (status, json, _) = refusal(&client, &gw.url(), &[]).await;
    assert_eq!(status, 403);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("suspended")
    );
}

#[tokio::test]
async fn chat_completions_refusals_are_openai_shaped() {
    let mock = start_mock().await;
    let (gw, _client, _keys) = start_with_keys(config(UpstreamConfig::new(
        "m",
        &mock.url(),
        common::UPSTREAM_KEY,
    )))
    .await;
    let res = Client::anonymous()
        .post(
            &gw.url(),
            "/v1/chat/completions",
            &[],
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(res.status(), 401);
    let json = body_json(res).await;
    assert_eq!(json["error"]["code"], "invalid_api_key");
    assert!(json.get("type").is_none());
}

#[tokio::test]
async fn keys_issued_by_the_cli_work_against_a_sqlite_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .args(["--database", &url])
            .output()
            .expect("tollgate runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    run(&["accounts", "create", "acme"]);
    run(&["accounts", "topup", "acme", "5.00"]);
    let key = run(&[
        "keys",
        "create",
        "--account",
        "acme",
        "--name",
        "ci",
        "--models",
        "claude-sonnet-4-6",
    ]);
    let key = key.trim().to_string();
    assert!(key.starts_with("tg-") && key.len() == 35, "{key:?}");
    let listed = run(&["keys", "list"]);
    assert!(
        listed.contains("acme") && listed.contains("ci") && !listed.contains(&key),
        "{listed}"
    );

    let mock = start_mock().await;
    let mut cfg = config(UpstreamConfig::new("m", &mock.url(), common::UPSTREAM_KEY));
    cfg.database = Some(url.clone());
    let gw = tollgate::gateway::Gateway::start(cfg)
        .await
        .expect("gateway");
    let res = Client::with_key(&key)
        .post(&gw.url(), "/v1/messages", &[], MESSAGE)
        .await;
    assert_eq!(res.status(), 200);

    let out = std::process::Command::new(bin)
        .args(["keys", "create", "--account", "nobody", "--database", &url])
        .output()
        .expect("tollgate runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("accounts create nobody"));
    gw.shutdown().await.expect("shutdown");
}

#[test]
fn cli_output_into_a_closed_pipe_exits_quietly() {
    // `tollgate keys list | head -1`: the reader goes away before we write.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keys", "list", "--database", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tollgate runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("tollgate exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}
