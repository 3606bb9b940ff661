"""The official `openai` Python SDK (3.54.0) against the gateway's `/v1/chat/completions`.

Pins the OpenAI dialect (wire reference section 9): completion and stream shapes, upstream
errors relayed in OpenAI shape with the section 9.1 status/type/code mapping, and the
gateway's own errors rendered as `{"error":{"message","type","param","code"}}`.
"""

from __future__ import annotations

import json

import openai
import pytest

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello"}]
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def chat(oai: openai.OpenAI, headers: dict[str, str] | None = None, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", HELLO)
    return oai.chat.completions.create(extra_headers=headers or {}, **kw)


def assert_openai_envelope(raw_body: bytes) -> dict:
    envelope = json.loads(raw_body)
    assert set(envelope) == {"error"}, envelope
    assert set(envelope["error"]) == OPENAI_ERROR_KEYS, envelope
    assert isinstance(envelope["error"]["message"], str) and envelope["error"]["message"]
    return envelope["error"]


# ---------------------------------------------------------------------------- success


def test_chat_completion_round_trip(oai):
    raw = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, extra_headers={"x-mock-output-tokens": "4"}
    )
    completion = raw.parse()

    assert raw.headers["x-tollgate-origin"] == "upstream"
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert raw.headers.get("x-request-id")


def test_chat_completion_max_tokens_cut_gives_finish_reason_length(oai):
    completion = chat(oai, {"x-mock-output-tokens": "10"}, max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_chat_stream_with_usage_reads_to_the_end(oai):
    stream = chat(
        oai,
        {"x-mock-output-tokens": "5"},
        stream=True,
        stream_options={"include_usage": True},
    )
    assert stream.response.headers["x-tollgate-origin"] == "upstream"
    text = []
    finish = None
    usage = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == MODEL
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.content:
                text.append(delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage

    assert len(text) == 5 and "".join(text).strip()
    assert finish == "stop"
    assert usage is not None, "no usage chunk despite include_usage"
    assert usage.completion_tokens == 5
    assert usage.prompt_tokens > 0


def test_chat_stream_error_chunk_raises_api_error(oai):
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in chat(
            oai,
            {"x-mock-stream-error-after": "2", "x-mock-output-tokens": "8"},
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    e = info.value

    assert len(seen) == 2
    # Wire reference section 9: APIError without a status, type/code from the chunk.
    assert not isinstance(e, openai.APIStatusError)
    assert e.type == "overloaded_error"
    assert e.code == "overloaded_error"


# --------------------------------------------------------------- upstream errors

# Anthropic-side status -> (status on the wire, SDK class, type, code): section 9.1.
UPSTREAM_ERRORS = {
    400: (400, openai.BadRequestError, "invalid_request_error", None),
    401: (401, openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
    402: (429, openai.RateLimitError, "insufficient_quota", "insufficient_quota"),
    403: (403, openai.PermissionDeniedError, "permission_error", None),
    404: (404, openai.NotFoundError, "invalid_request_error", "model_not_found"),
    409: (409, openai.ConflictError, "invalid_request_error", "conflict"),
    413: (413, openai.APIStatusError, "invalid_request_error", "request_too_large"),
    429: (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
    500: (500, openai.InternalServerError, "server_error", None),
    504: (504, openai.InternalServerError, "server_error", "timeout"),
    529: (503, openai.InternalServerError, "service_unavailable_error", "server_is_overloaded"),
}


@pytest.mark.parametrize("status", sorted(UPSTREAM_ERRORS))
def test_upstream_error_comes_back_openai_shaped(oai, status):
    wire_status, cls, error_type, code = UPSTREAM_ERRORS[status]
    with pytest.raises(openai.APIStatusError) as info:
        chat(oai, {"x-mock-status": str(status)})
    e = info.value

    assert type(e) is cls, f"{status}: got {type(e).__name__}, want {cls.__name__}"
    assert e.status_code == wire_status
    assert e.type == error_type
    assert e.code == code
    assert e.param is None
    assert isinstance(e.body, dict) and e.body["message"]
    assert e.response.headers["x-tollgate-origin"] == "upstream"
    assert e.request_id == e.response.headers.get("x-request-id") and e.request_id
    assert_openai_envelope(e.response.content)


def test_upstream_429_keeps_retry_after(oai):
    with pytest.raises(openai.RateLimitError) as info:
        chat(oai, {"x-mock-status": "429"})
    e = info.value
    assert e.body["code"] == "rate_limit_exceeded"
    assert e.code == "rate_limit_exceeded"
    assert e.response.headers["retry-after"] == "7"


def test_upstream_billing_error_says_do_not_retry(oai):
    with pytest.raises(openai.RateLimitError) as info:
        chat(oai, {"x-mock-status": "402"})
    assert info.value.response.headers.get("x-should-retry") == "false"


def test_upstream_529_is_503_and_retried_by_the_sdk(gateway_url, keys, scenario):
    client = openai.OpenAI(
        base_url=gateway_url + "/v1", api_key=keys["good"], max_retries=1, timeout=30
    )
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=HELLO,
        extra_headers={"x-mock-fail-times": "1", "x-mock-scenario": scenario},
    )
    assert raw.parse().choices[0].message.content
    assert raw.retries_taken <= 1


# ---------------------------------------------------------------- gateway errors


def test_missing_messages_is_refused_by_the_gateway_in_openai_shape(oai):
    with pytest.raises(openai.APIStatusError) as info:
        oai.post("/chat/completions", body={"model": MODEL}, cast_to=object)
    e = info.value

    assert type(e) is openai.BadRequestError
    assert e.status_code == 400
    assert e.response.headers["x-tollgate-origin"] == "gateway"
    error = assert_openai_envelope(e.response.content)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages:"), error
    assert e.type == "invalid_request_error"


def test_invalid_json_is_refused_by_the_gateway_in_openai_shape(raw):
    status, headers, data = raw(
        "POST", "/v1/chat/completions", b'{"model": "gpt-4o-mini",\n "messages": [}'
    )
    assert status == 400
    assert headers["x-tollgate-origin"] == "gateway"
    error = assert_openai_envelope(data)
    assert error["type"] == "invalid_request_error"
    assert "line 2 column" in error["message"], error
