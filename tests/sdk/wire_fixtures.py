"""Byte-level fixtures of the wire reference (shared/reference/anthropic-wire.md, section 11).

Copied verbatim from the reference, not from the mock's source, so that the tests check
the mock and the gateway against the document rather than against themselves.
Bodies are the exact bytes; headers exclude the framing ones (date, content-length,
transfer-encoding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fixture:
    name: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        return self.json["error"]["message"]

    @property
    def error_type(self) -> str:
        return self.json["error"]["type"]

    @property
    def request_id(self) -> str | None:
        return self.json.get("request_id")

F1 = Fixture(
    name='f1',
    status=401,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxAuth0000000000000001',
        'x-should-retry': 'false',
    },
    body=(
        b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CfxAuth0000000000000001"}'
    ),
)

F2 = Fixture(
    name='f2',
    status=402,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxBill0000000000000002',
        'x-should-retry': 'false',
    },
    body=(
        b'{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low to access the Claude API."},"request_id":"req_011CfxBill0000000000000002"}'
    ),
)

F3 = Fixture(
    name='f3',
    status=403,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxPerm0000000000000003',
        'x-should-retry': 'false',
    },
    body=(
        b'{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."},"request_id":"req_011CfxPerm0000000000000003"}'
    ),
)

F4 = Fixture(
    name='f4',
    status=413,
    headers={
        'content-type': 'application/json',
    },
    body=(
        b'{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}'
    ),
)

F5 = Fixture(
    name='f5',
    status=429,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxRate0000000000000004',
        'retry-after': '7',
        'x-should-retry': 'true',
        'anthropic-ratelimit-requests-limit': '1000',
        'anthropic-ratelimit-requests-remaining': '0',
        'anthropic-ratelimit-requests-reset': '2026-11-23T17:30:07Z',
        'anthropic-ratelimit-input-tokens-limit': '2000000',
        'anthropic-ratelimit-input-tokens-remaining': '1514000',
        'anthropic-ratelimit-input-tokens-reset': '2026-11-23T17:30:01Z',
        'anthropic-ratelimit-output-tokens-limit': '400000',
        'anthropic-ratelimit-output-tokens-remaining': '398000',
        'anthropic-ratelimit-output-tokens-reset': '2026-11-23T17:30:00Z',
        'anthropic-ratelimit-tokens-limit': '2400000',
        'anthropic-ratelimit-tokens-remaining': '1912000',
        'anthropic-ratelimit-tokens-reset': '2026-11-23T17:30:01Z',
    },
    body=(
        b'{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your organization\'s rate limit of 1,000 requests per minute."},"request_id":"req_011CfxRate0000000000000004"}'
    ),
)

F6 = Fixture(
    name='f6',
    status=429,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxCap00000000000000005',
    },
    body=(
        b'{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_011CfxCap00000000000000005"}'
    ),
)

F7_500 = Fixture(
    name='f7_500',
    status=500,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxApi00000000000000006',
        'x-should-retry': 'true',
    },
    body=(
        b'{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011CfxApi00000000000000006"}'
    ),
)

F7_529 = Fixture(
    name='f7_529',
    status=529,
    headers={
        'content-type': 'application/json',
        'request-id': 'req_011CfxOvl00000000000000007',
        'x-should-retry': 'true',
    },
    body=(
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CfxOvl00000000000000007"}'
    ),
)

F8 = Fixture(
    name='f8',
    status=200,
    headers={'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': 'req_011CfxSse00000000000000008'},
    body=(
        b'event: message_start\n'
        b'data: {"type":"message_start","message":{"id":"msg_01FxStream000000000000001","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}}\n'
        b'\n'
        b'event: content_block_start\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
        b'\n'
        b'event: ping\n'
        b'data: {"type":"ping"}\n'
        b'\n'
        b'event: content_block_delta\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n'
        b'\n'
        b'event: content_block_delta\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", world!"}}\n'
        b'\n'
        b'event: content_block_stop\n'
        b'data: {"type":"content_block_stop","index":0}\n'
        b'\n'
        b'event: message_delta\n'
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}\n'
        b'\n'
        b'event: message_stop\n'
        b'data: {"type":"message_stop"}\n'
        b'\n'
    ),
)

F9 = Fixture(
    name='f9',
    status=200,
    headers={'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': 'req_011CfxSse00000000000000008'},
    body=(
        b'event: message_start\n'
        b'data: {"type":"message_start","message":{"id":"msg_01FxStream000000000000002","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}\n'
        b'\n'
        b'event: content_block_start\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
        b'\n'
        b'event: content_block_delta\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Once upon a"}}\n'
        b'\n'
        b'event: error\n'
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CfxSseErr000000000008"}\n'
        b'\n'
    ),
)

# The error fixture the mock serves for each `x-mock-status` (section 11; F6 needs
# `x-mock-error-code: enforced_spend_limit_reached`).
BY_STATUS: dict[int, Fixture] = {
    401: F1,
    402: F2,
    403: F3,
    413: F4,
    429: F5,
    500: F7_500,
    529: F7_529,
}

assert len(F8.body) == 983 and len(F9.body) == 708
