"""Session fixtures: the `tollgate` mock upstream and gateway as real processes.

The binary is `$TOLLGATE_BIN` (default `target/debug/tollgate`, resolved against the
current directory, then the repository root). Both processes listen on free ports of
127.0.0.1, their stderr goes to files in a temporary directory and is shown when one
of them does not come up within the readiness bound.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]

#: Client key the SDKs send; the gateway accepts any key for now and strips it.
ACCOUNT = "sdk"
# The OpenAI tests use an OpenAI model id; the gateway bills only priced models.
PRICES = (
    "[balance.prices.models.\"gpt-4o-mini\"]\n"
    'input = "0.15"\n'
    'output = "0.60"\n'
    'cache_write_5m = "0.15"\n'
    'cache_write_1h = "0.15"\n'
    'cache_read = "0.075"\n'
    "\n"
)
#: Key the gateway sends upstream.
UPSTREAM_KEY = "upstream-secret"
#: Bound on each process's readiness wait.
READY_TIMEOUT_S = 20.0
#: Time given to a process between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0
#: Per-request timeout of the SDK clients, so that a hang fails instead of blocking.
CLIENT_TIMEOUT_S = 30.0


def _binary() -> Path:
    raw = os.environ.get("TOLLGATE_BIN", "target/debug/tollgate")
    path = Path(raw)
    if not path.is_absolute():
        path = path if path.exists() else REPO / path
    if not path.exists():
        pytest.exit(
            f"tollgate binary not found at {path} (TOLLGATE_BIN={raw!r}); "
            "build it with `cargo build -p tollgate-gateway` or point TOLLGATE_BIN at it",
            returncode=1,
        )
    return path.resolve()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A started subprocess with its stderr in a file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.args = args
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def wait_http(self, port: int, path: str, expect_status: int | None) -> None:
        """Poll `GET path` until it answers (with `expect_status`, if given)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with code {self.popen.returncode} before it was ready\n"
                    f"command: {' '.join(self.args)}\n--- output ---\n{self.output()}",
                    pytrace=False,
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", path)
                res = conn.getresponse()
                res.read()
                conn.close()
                if expect_status is None or res.status == expect_status:
                    return
                last = f"GET {path} answered {res.status}"
            except OSError as e:
                last = f"GET {path} failed: {e}"
            time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"{self.name} not ready within {READY_TIMEOUT_S:.0f} s ({last})\n"
            f"command: {' '.join(self.args)}\n--- output ---\n{self.output()}",
            pytrace=False,
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log_file.close()


@pytest.fixture(scope="session")
def tollgate_bin() -> Path:
    return _binary()


@pytest.fixture(scope="session")
def mock_url(tollgate_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    work = tmp_path_factory.mktemp("mock")
    proc = Proc(
        "tollgate mock",
        [str(tollgate_bin), "mock", "--listen", f"127.0.0.1:{port}"],
        work / "mock.log",
    )
    try:
        # The mock has no health endpoint; any answer to GET /v1/models means it is up.
        proc.wait_http(port, "/v1/models", expect_status=None)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def _admin(tollgate_bin: Path, database: str, *args: str) -> subprocess.CompletedProcess:
    """Run `tollgate ARGS --database URL`; fail the test with its stderr if it fails."""
    out = subprocess.run(
        [str(tollgate_bin), *args, "--database", database],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        pytest.fail(f"tollgate {' '.join(args)} failed:\n{out.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def gateway_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite://{tmp_path_factory.mktemp('db') / 'tollgate.db'}"


@pytest.fixture(scope="session")
def keys(tollgate_bin: Path, gateway_db: str) -> dict[str, str]:
    """Keys issued with the CLI, as an operator would: a good one, a revoked one, and
    one scoped to claude-haiku-4-5."""
    _admin(tollgate_bin, gateway_db, "accounts", "create", ACCOUNT)
    _admin(tollgate_bin, gateway_db, "accounts", "topup", ACCOUNT, "100.00")
    # An account that cannot afford a request, for the 402 test.
    _admin(tollgate_bin, gateway_db, "accounts", "create", "sdk-poor")
    _admin(tollgate_bin, gateway_db, "accounts", "topup", "sdk-poor", "0.000100")

    def create(*extra: str, account: str = ACCOUNT) -> tuple[str, int]:
        out = _admin(tollgate_bin, gateway_db, "keys", "create", "--account", account, *extra)
        key = out.stdout.strip()
        assert key.startswith("tg-") and len(key) == 35, out.stdout
        key_id = int(re.search(r"Created key (\d+)", out.stderr).group(1))
        return key, key_id

    good, _ = create("--name", "sdk-good")
    revoked, revoked_id = create("--name", "sdk-revoked")
    _admin(tollgate_bin, gateway_db, "keys", "disable", str(revoked_id))
    scoped, _ = create("--name", "sdk-scoped", "--models", "claude-haiku-4-5")
    limited, _ = create("--name", "sdk-limited", "--rpm", "1")
    poor, _ = create("--name", "sdk-poor", account="sdk-poor")
    return {"good": good, "revoked": revoked, "scoped": scoped, "limited": limited, "poor": poor}


@pytest.fixture(scope="session")
def gateway_url(
    tollgate_bin: Path,
    mock_url: str,
    gateway_db: str,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    port = _free_port()
    work = tmp_path_factory.mktemp("gateway")
    config = work / "tollgate.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database = "{gateway_db}"\n'
        "\n"
        "# These tests look at single upstream answers; the resilient gateway retries.\n"
        "[retry]\n"
        "max_attempts = 1\n"
        "\n"
        + PRICES
        +
        "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
    )
    proc = Proc(
        "tollgate serve",
        [str(tollgate_bin), "serve", "--config", str(config)],
        work / "gateway.log",
    )
    try:
        proc.wait_http(port, "/healthz", expect_status=200)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def resilient_url(
    tollgate_bin: Path,
    mock_url: str,
    gateway_db: str,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A gateway with the default retry policy and two routes: `down` (nothing listens
    there) first, then the mock."""
    port = _free_port()
    dead = _free_port()
    work = tmp_path_factory.mktemp("resilient")
    config = work / "tollgate.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database = "{gateway_db}"\n'
        "\n"
        "[retry]\n"
        "base_delay_ms = 50\n"
        "\n"
        + PRICES
        +
        "[[upstreams]]\n"
        'name = "down"\n'
        f'base_url = "http://127.0.0.1:{dead}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
        "\n"
        "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
    )
    proc = Proc(
        "tollgate serve (resilient)",
        [str(tollgate_bin), "serve", "--config", str(config)],
        work / "gateway.log",
    )
    try:
        proc.wait_http(port, "/healthz", expect_status=200)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def gateway_port(gateway_url: str) -> int:
    return int(gateway_url.rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def client(gateway_url: str, keys: dict[str, str]) -> anthropic.Anthropic:
    """Anthropic SDK against the gateway, no client retries."""
    return anthropic.Anthropic(
        base_url=gateway_url, api_key=keys["good"], max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def retrying_client(gateway_url: str, keys: dict[str, str]) -> anthropic.Anthropic:
    """Anthropic SDK against the gateway with the SDK's default two retries."""
    return anthropic.Anthropic(
        base_url=gateway_url, api_key=keys["good"], max_retries=2, timeout=CLIENT_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def oai(gateway_url: str, keys: dict[str, str]) -> openai.OpenAI:
    """OpenAI SDK against the gateway's `/v1`, no client retries."""
    return openai.OpenAI(
        base_url=gateway_url + "/v1",
        api_key=keys["good"],
        max_retries=0,
        timeout=CLIENT_TIMEOUT_S,
    )


@pytest.fixture
def scenario() -> str:
    """A fresh `x-mock-scenario` id, so fail-times counters never leak between tests."""
    return f"sdk-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def raw(gateway_port: int, keys: dict[str, str]):
    """Plain HTTP/1.1 to the gateway, for what the SDKs won't send (bad JSON, missing fields).

    `raw(method, path, body=None, headers=None)` returns status, lowercase headers and
    the de-chunked body bytes.
    """

    def request(
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", gateway_port, timeout=CLIENT_TIMEOUT_S)
        try:
            all_headers = {
                "content-type": "application/json",
                "authorization": f"Bearer {keys['good']}",
                "anthropic-version": "2023-06-01",
            }
            all_headers.update(headers or {})
            conn.request(method, path, body=body, headers=all_headers)
            res = conn.getresponse()
            data = res.read()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, data
        finally:
            conn.close()

    return request
