//! `database = "memory"`: the `tollgate serve` binary creates the `[memory]` account,
//! issues one key, prints it once on stdout, and serves requests with it over a real
//! socket; balances are enforced from memory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, MESSAGE, UPSTREAM_KEY, body_json, start_mock};

/// A `tollgate serve` child process, killed when dropped.
struct Served {
    child: Child,
    url: String,
    key: String,
    rest_of_stdout: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Start `tollgate serve` with `extra` appended to a config pointing at `mock_url`, read
/// the key it prints, and wait until it answers /healthz.
async fn serve(dir: &std::path::Path, mock_url: &str, extra: &str) -> Served {
    let port = free_port();
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
database = "memory"
shutdown_grace_ms = 1000
{extra}

[retry]
max_attempts = 1

[[upstreams]]
name = "mock"
base_url = "{mock_url}"
api_key = "{UPSTREAM_KEY}"
"#
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tollgate starts");
    let stdout = child.stdout.take().expect("stdout");
    let (key, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let key = lines.next().and_then(Result::ok).unwrap_or_default();
        let rest = lines.next().and_then(Result::ok).unwrap_or_default();
        (key, rest)
    })
    .await
    .expect("reader");
    let url = format!("http://127.0.0.1:{port}");
    let served = Served {
        child,
        url,
        key,
        rest_of_stdout: rest,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "tollgate serve did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served
}

#[tokio::test]
async fn memory_database_issues_a_key_at_start_that_spends_the_configured_balance() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = serve(
        dir.path(),
        &mock.url(),
        "[memory]\naccount = \"bench\"\nbalance = \"5.00\"",
    )
    .await;
    assert!(
        gw.key.starts_with("tg-") && gw.key.len() == 35,
        "first stdout line is the key alone: {:?}",
        gw.key
    );
    assert!(
        gw.rest_of_stdout.contains("\"bench\"") && !gw.rest_of_stdout.contains(&gw.key),
        "{:?}",
        gw.rest_of_stdout
    );
    // The config file never holds the key.
    let config = std::fs::read_to_string(dir.path().join("tollgate.toml")).expect("config");
    assert!(!config.contains(&gw.key));

    let res = Client::with_key(&gw.key)
        .post(&gw.url, "/v1/messages", &[], MESSAGE)
        .await;
    assert_eq!(res.status(), 200);
    let json = body_json(res).await;
    assert_eq!(json["type"], "message");

    let res = Client::with_key("tg-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .post(&gw.url, "/v1/messages", &[], MESSAGE)
        .await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn memory_database_without_a_balance_refuses_the_key_with_402() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = serve(dir.path(), &mock.url(), "").await;
    let res = Client::with_key(&gw.key)
        .post(&gw.url, "/v1/messages", &[], MESSAGE)
        .await;
    assert_eq!(res.status(), 402);
    assert!(gw.rest_of_stdout.contains("\"default\""));
}

#[tokio::test]
async fn admin_commands_explain_that_a_memory_database_is_out_of_reach() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keys", "list", "--database", "memory"])
        .output()
        .expect("tollgate runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the running gateway"), "{err}");
}
