"""Balance refusals under `insufficient_status = 403`, through the official anthropic SDK.

Some relays answer an empty balance with 403; with that setting the SDK must raise
`PermissionDeniedError` (not `PaymentRequiredError`) and keep the helpful message. A
gateway of its own (same database, keys and mock upstream as the session's) runs with
the setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from conftest import CLIENT_TIMEOUT_S, PRICES, UPSTREAM_KEY, Proc, _free_port


@pytest.fixture(scope="module")
def forbidding_url(
    tollgate_bin: Path,
    mock_url: str,
    gateway_db: str,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A gateway that refuses unaffordable requests with 403 `permission_error`."""
    port = _free_port()
    work = tmp_path_factory.mktemp("forbidding")
    config = work / "tollgate.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database = "{gateway_db}"\n'
        "\n"
        "[retry]\n"
        "max_attempts = 1\n"
        "\n"
        "[balance]\n"
        "insufficient_status = 403\n"
        "\n"
        + PRICES
        + "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
    )
    proc = Proc(
        "tollgate serve (insufficient_status = 403)",
        [str(tollgate_bin), "serve", "--config", str(config)],
        work / "gateway.log",
    )
    try:
        proc.wait_http(port, "/healthz", expect_status=200)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_drained_account_raises_permission_denied_when_configured_403(forbidding_url, keys):
    c = anthropic.Anthropic(
        base_url=forbidding_url, api_key=keys["poor"], max_retries=2, timeout=CLIENT_TIMEOUT_S
    )
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "Hello, Claude"}],
        )
    e = info.value
    assert e.status_code == 403
    assert e.body["error"]["type"] == "permission_error"
    assert "insufficient balance" in e.message
    assert "top up or lower max_tokens" in e.message
    assert e.response.headers["x-should-retry"] == "false"
    assert e.response.headers["x-tollgate-origin"] == "gateway"


def test_affordable_request_is_served_under_the_403_setting(forbidding_url, keys):
    c = anthropic.Anthropic(
        base_url=forbidding_url, api_key=keys["good"], max_retries=0, timeout=CLIENT_TIMEOUT_S
    )
    message = c.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=[{"role": "user", "content": "Hello, Claude"}],
    )
    assert message.usage.output_tokens > 0
