"""The official `anthropic` Python SDK against the gateway's own rate limits.

A gateway of its own (memory backend) where keys issued with `--rpm 60` and the
configured `burst = 1` percent may send one request at once and one more a second: short
enough that the SDK's retry, which honours `retry-after-ms` up to 60 s, waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from conftest import CLIENT_TIMEOUT_S, UPSTREAM_KEY, Proc, _admin, _free_port

MODEL = "claude-sonnet-4-6"
HELLO = [{"role": "user", "content": "Hello, Claude"}]


@pytest.fixture(scope="module")
def paced(
    tollgate_bin: Path,
    mock_url: str,
    gateway_db: str,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str]]]:
    """(gateway URL, keys): a gateway whose keys refill one request a second, and two
    fresh keys of 60 RPM, one per test so that their buckets are their own."""
    issued = {}
    for name in ("refused", "retried"):
        out = _admin(
            tollgate_bin, gateway_db, "keys", "create", "--account", "sdk",
            "--name", f"sdk-rl-{name}", "--rpm", "60",
        )
        issued[name] = out.stdout.strip()
    port = _free_port()
    work = tmp_path_factory.mktemp("paced")
    config = work / "tollgate.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database = "{gateway_db}"\n'
        "billing = false\n"
        "\n"
        "[retry]\n"
        "max_attempts = 1\n"
        "\n"
        "# 1 % of 60 RPM: one request at once, then one a second.\n"
        "[ratelimit.default_key]\n"
        "burst = 1\n"
        "\n"
        "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
    )
    proc = Proc(
        "tollgate serve (rate limited)",
        [str(tollgate_bin), "serve", "--config", str(config)],
        work / "gateway.log",
    )
    try:
        proc.wait_http(port, "/healthz", expect_status=200)
        yield f"http://127.0.0.1:{port}", issued
    finally:
        proc.stop()


def sdk(url: str, key: str, max_retries: int) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=url, api_key=key, max_retries=max_retries, timeout=CLIENT_TIMEOUT_S
    )


def test_a_key_over_its_limit_gets_rate_limit_error_with_a_short_retry_after(paced):
    url, issued = paced
    c = sdk(url, issued["refused"], max_retries=0)
    c.messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as info:
        c.messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    e = info.value
    assert e.status_code == 429
    headers = e.response.headers
    assert headers["retry-after"] == "1"
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["x-should-retry"] == "true"
    assert headers["x-tollgate-origin"] == "gateway"
    assert headers["anthropic-ratelimit-requests-limit"] == "60"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "requests per minute for this key" in e.message


def test_the_sdk_with_two_retries_waits_out_the_retry_after_and_succeeds(paced):
    url, issued = paced
    c = sdk(url, issued["retried"], max_retries=2)
    c.messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    start = time.monotonic()
    # Refused at once (one request a second), retried by the SDK after retry-after-ms.
    raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=HELLO)
    waited = time.monotonic() - start
    message = raw.parse()
    assert message.type == "message" and message.content
    assert raw.retries_taken >= 1, "the first attempt should have been refused"
    # The SDK slept for the gateway's retry-after-ms (just under 1 s), not its own
    # default backoff (0.5 s, jittered down to 0.375 s).
    assert waited >= 0.5, f"answered after {waited:.3f} s"
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "60"
