#!/usr/bin/env python3
"""Open N streamed /v1/messages at once through one target and count the deltas each
one receives: the "no lost frame at N concurrent streams" check. Stdlib only.

usage: sse_concurrent.py HOST:PORT N OUTPUT_TOKENS [HEADER:VALUE ...]
prints {"streams":N,"complete":…,"short":…,"errors":…,"seconds":…}
"""
import asyncio
import json
import sys
import time

async def one(host, port, request, tokens):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        buf = bytearray()
        while True:
            chunk = await reader.read(262144)
            if not chunk:
                break
            buf += chunk
            if buf.endswith(b"0\r\n\r\n") and b"event: message_stop" in buf:
                break
        ok = buf.startswith(b"HTTP/1.1 200") and b"event: message_stop" in buf
        return ok and buf.count(b"event: content_block_delta") == tokens
    finally:
        writer.close()

async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    n, tokens = int(sys.argv[2]), int(sys.argv[3])
    body = json.dumps({
        "model": "claude-sonnet-4-6", "max_tokens": tokens + 16, "stream": True,
        "messages": [{"role": "user", "content": "x" * 1900}],
    }).encode()
    request = (
        "POST /v1/messages HTTP/1.1\r\n"
        f"host: {host}:{port}\r\ncontent-type: application/json\r\n"
        "anthropic-version: 2023-06-01\r\nconnection: close\r\n"
        f"x-mock-output-tokens: {tokens}\r\n"
        + "".join(f"{h}\r\n" for h in sys.argv[4:])
        + f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(one(host, int(port), request, tokens) for _ in range(n)), return_exceptions=True
    )
    errors = sum(1 for r in results if isinstance(r, BaseException))
    complete = sum(1 for r in results if r is True)
    print(json.dumps({
        "streams": n, "complete": complete, "short": n - complete - errors,
        "errors": errors, "seconds": round(time.perf_counter() - t0, 2),
    }))

asyncio.run(main())
