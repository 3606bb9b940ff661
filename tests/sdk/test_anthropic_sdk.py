"""The official `anthropic` Python SDK (2.12.0) against the gateway, in front of the mock.

What is pinned here is what a client of Tollgate sees: success shapes, the SDK exception
class for every upstream status (wire reference section 4.1), byte-faithful upstream errors
and SSE (sections 5, 11), gateway-originated errors (413 / 400) and SDK retry behaviour
through the gateway (section 7).
"""

from __future__ import annotations

import json
import re

import anthropic
import pytest

import wire_fixtures as wire

MODEL = "claude-sonnet-4-6"
HELLO = [{"role": "user", "content": "Hello, Claude"}]
RATELIMIT_HEADERS = [name for name in wire.F5.headers if name.startswith("anthropic-ratelimit-")]


def create(client: anthropic.Anthropic, headers: dict[str, str] | None = None, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 64)
    kw.setdefault("messages", HELLO)
    return client.messages.create(extra_headers=headers or {}, **kw)


# ---------------------------------------------------------------------------- success


def test_message_round_trip_returns_text_model_and_usage(client):
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=HELLO,
        extra_headers={"x-mock-output-tokens": "5"},
    )
    msg = raw.parse()

    assert raw.status_code == 200
    assert raw.headers["x-tollgate-origin"] == "upstream"
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == MODEL
    assert msg.stop_reason == "end_turn"
    assert len(msg.content) == 1 and msg.content[0].type == "text"
    assert msg.content[0].text.strip() != ""
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens == 5
    assert msg._request_id and msg._request_id == raw.headers["request-id"]


def test_message_round_trip_echoes_any_requested_model(client):
    msg = create(client, model="claude-haiku-4-5-20251001")
    assert msg.model == "claude-haiku-4-5-20251001"


def test_max_tokens_below_output_stops_with_max_tokens(client):
    msg = create(client, {"x-mock-output-tokens": "10"}, max_tokens=3)
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 3


def test_stream_helper_reads_generated_stream_to_the_end(client):
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=HELLO,
        extra_headers={"x-mock-output-tokens": "6"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers

    assert headers["x-tollgate-origin"] == "upstream"
    assert headers["content-type"].startswith("text/event-stream")
    assert text != "" and final.content[0].text == text
    assert final.model == MODEL
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens == 6


def test_stream_replay_of_f8_gives_hello_world_and_usage(client):
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=HELLO, extra_headers={"x-mock-fixture": "f8"}
    ) as stream:
        final = stream.get_final_message()
        request_id = stream.request_id

    assert final.id == "msg_01FxStream000000000000001"
    assert final.content[0].text == "Hello, world!"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 472
    assert final.usage.output_tokens == 15
    assert final.usage.cache_creation_input_tokens == 0
    assert final.usage.cache_read_input_tokens == 0
    assert request_id == wire.F8.headers["request-id"]


def test_stream_f8_bytes_are_relayed_verbatim(raw):
    body = json.dumps({"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True})
    status, headers, data = raw(
        "POST", "/v1/messages", body.encode(), {"x-mock-fixture": "f8"}
    )
    assert status == 200
    assert data == wire.F8.body
    assert headers["content-type"] == wire.F8.headers["content-type"]
    assert headers["request-id"] == wire.F8.headers["request-id"]
    assert headers["x-tollgate-origin"] == "upstream"


def test_count_tokens_round_trip(client):
    res = client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert isinstance(res.input_tokens, int) and res.input_tokens > 0


def test_models_list_round_trip(client):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids
    assert all(m.type == "model" and m.display_name for m in page.data)
    assert page.has_more is False
    assert page.first_id == ids[0] and page.last_id == ids[-1]


def test_models_retrieve_round_trip(client):
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.type == "model"


# --------------------------------------------------------------- upstream errors

# HTTP status -> (SDK class, error.type), per wire reference section 4.1.
UPSTREAM_ERRORS = {
    400: (anthropic.BadRequestError, "invalid_request_error"),
    401: (anthropic.AuthenticationError, "authentication_error"),
    402: (anthropic.PaymentRequiredError, "billing_error"),
    403: (anthropic.PermissionDeniedError, "permission_error"),
    404: (anthropic.NotFoundError, "not_found_error"),
    409: (anthropic.ConflictError, "conflict_error"),
    413: (anthropic.ContentTooLargeError, "request_too_large"),
    429: (anthropic.RateLimitError, "rate_limit_error"),
    500: (anthropic.InternalServerError, "api_error"),
    504: (anthropic.GatewayTimeoutError, "timeout_error"),
    529: (anthropic.OverloadedError, "overloaded_error"),
}


@pytest.mark.parametrize("status", sorted(UPSTREAM_ERRORS))
def test_upstream_error_raises_the_sdk_class_for_its_status(client, status):
    cls, error_type = UPSTREAM_ERRORS[status]
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client, {"x-mock-status": str(status)})
    e = info.value

    assert type(e) is cls, f"{status}: got {type(e).__name__}, want {cls.__name__}"
    assert e.status_code == status
    assert e.type == error_type
    assert e.response.headers["x-tollgate-origin"] == "upstream"
    fixture = wire.BY_STATUS.get(status)
    if fixture is not None:
        # Byte-faithful passthrough of the wire reference's fixture.
        assert e.response.content == fixture.body
        assert e.api_message == fixture.message
        assert e.body == fixture.json
        assert e.request_id == fixture.headers.get("request-id")
        for name, value in fixture.headers.items():
            assert e.response.headers.get(name) == value, name
    else:
        assert e.api_message
        assert e.request_id, "request-id header missing"
        assert e.body["request_id"] == e.request_id


def test_upstream_413_without_request_id_stays_without_one(client):
    with pytest.raises(anthropic.ContentTooLargeError) as info:
        create(client, {"x-mock-status": "413"})
    e = info.value
    assert e.request_id is None
    assert "request_id" not in e.body


def test_upstream_429_keeps_retry_after_and_ratelimit_headers(client):
    with pytest.raises(anthropic.RateLimitError) as info:
        create(client, {"x-mock-status": "429"})
    headers = info.value.response.headers

    assert headers["retry-after"] == "7"
    assert headers["x-should-retry"] == "true"
    assert len(RATELIMIT_HEADERS) == 12
    for name in RATELIMIT_HEADERS:
        assert headers.get(name) == wire.F5.headers[name], name


def test_upstream_spend_cap_429_raises_enforced_spend_limit_class(client):
    with pytest.raises(anthropic.RateLimitError) as info:
        create(
            client,
            {"x-mock-status": "429", "x-mock-error-code": "enforced_spend_limit_reached"},
        )
    e = info.value
    assert type(e) is anthropic.EnforcedSpendLimitReachedError
    assert e.error_code == "enforced_spend_limit_reached"
    assert e.response.content == wire.F6.body
    assert e.request_id == wire.F6.request_id
    assert "retry-after" not in e.response.headers
    # The cap lifts next month: the gateway tells the SDK not to retry (wire §4.1).
    assert e.response.headers["x-should-retry"] == "false"


def test_spend_cap_429_is_not_retried_by_the_sdk(retrying_client, scenario):
    # Two scripted spend-cap 429s, then success: a retry would succeed, so success here
    # would mean the SDK retried a response that said x-should-retry: false.
    with pytest.raises(anthropic.RateLimitError):
        create(
            retrying_client,
            {
                "x-mock-status": "429",
                "x-mock-error-code": "enforced_spend_limit_reached",
                "x-mock-fail-times": "2",
                "x-mock-scenario": scenario,
            },
        )


def test_upstream_html_error_page_becomes_an_envelope_keeping_the_status(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client, {"x-mock-status": "500", "x-mock-error-format": "html"})
    e = info.value
    assert type(e) is anthropic.InternalServerError
    assert e.status_code == 500
    assert e.type == "api_error"
    assert e.response.headers["content-type"].startswith("application/json")


def test_f9_mid_stream_error_raises_api_status_error_after_partial_text(client):
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=MODEL, max_tokens=64, messages=HELLO, extra_headers={"x-mock-fixture": "f9"}
        ) as stream:
            for text in stream.text_stream:
                seen.append(text)
    e = info.value

    assert "".join(seen) == "Once upon a"
    # Wire reference 5.1: a plain APIStatusError with the 200's status, not OverloadedError.
    assert type(e) is anthropic.APIStatusError
    assert e.status_code == 200
    assert e.type == "overloaded_error"
    assert e.body == json.loads(wire.F9.body.split(b"event: error\ndata: ")[1])
    assert e.request_id == wire.F9.headers["request-id"]


def test_generated_mid_stream_error_raises_after_n_deltas(client):
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=MODEL,
            max_tokens=64,
            messages=HELLO,
            extra_headers={"x-mock-stream-error-after": "2", "x-mock-output-tokens": "8"},
        ) as stream:
            for text in stream.text_stream:
                seen.append(text)
    e = info.value

    assert len(seen) == 2
    assert type(e) is anthropic.APIStatusError
    assert e.status_code == 200
    assert e.type == "overloaded_error"


# ---------------------------------------------------------------- gateway errors

LIMIT_RE = re.compile(r"33554432|33,554,432|32 ?MiB|32 ?MB", re.IGNORECASE)


def test_body_over_32_mib_is_refused_by_the_gateway_with_413(client):
    huge = "a" * (33 * 1024 * 1024)
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client, messages=[{"role": "user", "content": huge}])
    e = info.value

    assert type(e) is anthropic.ContentTooLargeError
    assert e.status_code == 413
    assert e.type == "request_too_large"
    assert LIMIT_RE.search(e.api_message), e.api_message
    assert e.response.headers["x-tollgate-origin"] == "gateway"
    assert e.response.headers.get("x-should-retry") == "false"


def test_missing_max_tokens_is_refused_by_the_gateway_with_400(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        client.post(
            "/v1/messages",
            body={"model": MODEL, "messages": HELLO},
            cast_to=object,
        )
    e = info.value

    assert type(e) is anthropic.BadRequestError
    assert e.type == "invalid_request_error"
    assert e.api_message.startswith("max_tokens: field required"), e.api_message
    assert e.response.headers["x-tollgate-origin"] == "gateway"
    assert e.response.headers.get("x-should-retry") == "false"
    assert e.body["type"] == "error"
    if "request_id" in e.body:
        assert e.body["request_id"] == e.request_id


def test_invalid_json_is_refused_by_the_gateway_naming_line_and_column(raw):
    body = b'{"model": "claude-sonnet-4-6", "max_tokens": 16,\n "messages": [}'
    status, headers, data = raw("POST", "/v1/messages", body)

    assert status == 400
    assert headers["x-tollgate-origin"] == "gateway"
    assert headers["content-type"].startswith("application/json")
    envelope = json.loads(data)
    assert envelope["type"] == "error"
    assert envelope["error"]["type"] == "invalid_request_error"
    assert re.search(r"line 2 column \d+", envelope["error"]["message"]), envelope


# ------------------------------------------------------------------------ retries


def test_sdk_retries_passed_through_529s_and_succeeds(retrying_client, scenario):
    raw = retrying_client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=HELLO,
        extra_headers={"x-mock-fail-times": "2", "x-mock-scenario": scenario},
    )
    msg = raw.parse()
    assert raw.status_code == 200
    assert msg.content[0].text
    # The SDK's own retries did the work (a gateway retry layer would only lower this).
    assert 0 <= raw.retries_taken <= 2


def test_529s_beyond_the_retry_budget_surface_as_overloaded(client, scenario):
    with pytest.raises(anthropic.OverloadedError):
        create(client, {"x-mock-fail-times": "1", "x-mock-scenario": scenario})
    # The scenario's one failure is spent; the next call succeeds.
    assert create(client, {"x-mock-fail-times": "1", "x-mock-scenario": scenario}).content


def test_passed_through_401_says_do_not_retry_and_is_not_retried(retrying_client, scenario):
    # The scenario fails once with F1; if the SDK retried, its second attempt would succeed.
    with pytest.raises(anthropic.AuthenticationError) as info:
        create(
            retrying_client,
            {"x-mock-status": "401", "x-mock-fail-times": "1", "x-mock-scenario": scenario},
        )
    e = info.value
    assert e.response.headers["x-should-retry"] == "false"
    assert e.response.content == wire.F1.body
    assert e.response.headers["x-tollgate-origin"] == "upstream"


# ---------------------------------------------------------------------------- key auth


def test_revoked_key_raises_authentication_error_saying_disabled(gateway_url, keys):
    c = anthropic.Anthropic(base_url=gateway_url, api_key=keys["revoked"], max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        create(c)
    e = info.value
    assert "disabled" in e.message
    assert keys["revoked"] not in e.message
    assert e.response.headers["x-tollgate-origin"] == "gateway"
    assert e.response.headers["x-should-retry"] == "false"


def test_anthropic_key_sent_to_the_gateway_is_told_to_use_the_gateway_key(gateway_url):
    c = anthropic.Anthropic(base_url=gateway_url, api_key="sk-ant-api03-not-for-here", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        create(c)
    assert "Anthropic API key" in info.value.message
    assert "sk-ant-api03-not-for-here" not in info.value.message


def test_model_outside_the_key_scope_raises_permission_denied(gateway_url, keys):
    c = anthropic.Anthropic(base_url=gateway_url, api_key=keys["scoped"], max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        create(c, model="claude-sonnet-4-6")
    assert "claude-sonnet-4-6" in info.value.message
    assert "claude-haiku-4-5" in info.value.message
    # ...and the model it is scoped to works.
    assert create(c, model="claude-haiku-4-5").model == "claude-haiku-4-5"


def test_good_key_works_with_the_legacy_x_api_key_header_too(gateway_url, keys):
    c = anthropic.Anthropic(
        base_url=gateway_url,
        api_key=None,
        auth_token=None,
        default_headers={"x-api-key": keys["good"]},
        max_retries=0,
    )
    assert create(c).content[0].text


# ---------------------------------------------------------------------------- retry and fallback


def test_gateway_retries_an_upstream_that_fails_twice(resilient_url, keys, scenario):
    # max_retries=0: any retrying here is the gateway's.
    c = anthropic.Anthropic(base_url=resilient_url, api_key=keys["good"], max_retries=0)
    raw = c.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=HELLO,
        extra_headers={"x-mock-fail-times": "2", "x-mock-scenario": scenario},
    )
    assert raw.parse().content[0].text
    assert raw.retries_taken == 0
    assert raw.headers["x-tollgate-route"] == "mock"
    assert int(raw.headers["x-tollgate-attempts"]) >= 3


def test_dead_first_route_fails_over_with_served_by_headers(resilient_url, keys):
    c = anthropic.Anthropic(base_url=resilient_url, api_key=keys["good"], max_retries=0)
    raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=HELLO)
    message = raw.parse()
    assert message.model == MODEL
    assert raw.headers["x-tollgate-route"] == "mock"
    assert raw.headers["x-tollgate-model"] == MODEL


def test_stream_failing_before_content_is_retried_invisibly_by_the_gateway(
    resilient_url, keys, scenario
):
    c = anthropic.Anthropic(base_url=resilient_url, api_key=keys["good"], max_retries=0)
    with c.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=HELLO,
        extra_headers={
            "x-mock-stream-error-after": "0",
            "x-mock-fail-times": "1",
            "x-mock-scenario": scenario,
        },
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


# ---------------------------------------------------------------------------- balance and limits


def test_drained_account_raises_payment_required_with_what_to_do(gateway_url, keys):
    c = anthropic.Anthropic(base_url=gateway_url, api_key=keys["poor"], max_retries=2)
    with pytest.raises(anthropic.PaymentRequiredError) as info:
        create(c)
    e = info.value
    assert e.status_code == 402
    assert "insufficient balance" in e.message and "top up" in e.message
    assert e.response.headers["x-should-retry"] == "false"
    assert e.response.headers["x-tollgate-origin"] == "gateway"


def test_key_over_its_rpm_raises_rate_limit_error_with_retry_after(gateway_url, keys):
    c = anthropic.Anthropic(base_url=gateway_url, api_key=keys["limited"], max_retries=0)
    create(c)  # the one request a minute
    with pytest.raises(anthropic.RateLimitError) as info:
        create(c)
    e = info.value
    assert int(e.response.headers["retry-after"]) >= 1
    assert "retry-after-ms" in e.response.headers
    assert e.response.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert e.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "requests per minute" in e.message
