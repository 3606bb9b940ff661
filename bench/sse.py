#!/usr/bin/env python3
"""Streaming measurements for bench/e2e.sh: 500-event /v1/messages streams through one
target. Stdlib only, raw sockets and a small HTTP/1.1 decoder (chunked or sized bodies),
so that no client library buffering hides when bytes arrive.

  sse.py seq HOST:PORT RUNS TOKENS [HEADER:VALUE ...]
      RUNS streams one after the other on one keep-alive connection (after 3 warm-ups):
      time to the message_start event, time to message_stop, per-event gap
      (last - first) / deltas, and the deltas received.
  sse.py concurrent HOST:PORT N TOKENS [HEADER:VALUE ...]
      N streams at once, each checked for all TOKENS deltas and a message_stop.

Prints one JSON object.
"""
import asyncio
import json
import re
import socket
import sys
import time

START, STOP, DELTA = b"event: message_start", b"event: message_stop", b"event: content_block_delta"


class Response:
    """Incremental HTTP/1.1 response decoder."""

    def __init__(self):
        self.raw = bytearray()
        self.pos = 0
        self.head = None
        self.status = 0
        self.chunked = False
        self.length = None
        self.body = bytearray()
        self.done = False

    def feed(self, data):
        self.raw += data
        if self.head is None:
            i = self.raw.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head = bytes(self.raw[:i]).lower()
            self.pos = i + 4
            self.status = int(self.head.split(b" ", 2)[1])
            self.chunked = b"transfer-encoding: chunked" in self.head
            m = re.search(rb"content-length:\s*(\d+)", self.head)
            self.length = int(m.group(1)) if m else None
        if self.chunked:
            while True:
                j = self.raw.find(b"\r\n", self.pos)
                if j < 0:
                    return
                size = int(bytes(self.raw[self.pos:j]).split(b";")[0], 16)
                if size == 0:
                    self.done = len(self.raw) >= j + 4
                    return
                if len(self.raw) < j + 2 + size + 2:
                    return
                self.body += self.raw[j + 2:j + 2 + size]
                self.pos = j + 2 + size + 2
        else:
            self.body = self.raw[self.pos:]
            self.done = self.length is not None and len(self.body) >= self.length


def build_request(host, port, tokens, headers, close=False):
    body = json.dumps({
        "model": "claude-sonnet-4-6", "max_tokens": tokens + 16, "stream": True,
        "messages": [{"role": "user", "content": "x" * 1900}],
    }).encode()
    return (
        "POST /v1/messages HTTP/1.1\r\n"
        f"host: {host}:{port}\r\ncontent-type: application/json\r\n"
        "anthropic-version: 2023-06-01\r\n"
        + ("connection: close\r\n" if close else "")
        + f"x-mock-output-tokens: {tokens}\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 2)


def seq(host, port, runs, tokens, headers):
    request = build_request(host, port, tokens, headers)

    def connect():
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    sock = connect()
    firsts, lasts, gaps, counts, errors = [], [], [], [], 0
    for i in range(runs + 3):
        try:
            r = Response()
            t0 = time.perf_counter()
            sock.sendall(request)
            t_first = t_last = None
            seen = 0
            while not r.done:
                chunk = sock.recv(262144)
                if not chunk:
                    raise ConnectionError("closed mid-stream")
                now = time.perf_counter()
                r.feed(chunk)
                window = r.body[max(0, seen - 32):]
                seen = len(r.body)
                if t_first is None and START in window:
                    t_first = now
                if t_last is None and STOP in window:
                    t_last = now
            if r.status != 200 or t_first is None or t_last is None:
                raise ConnectionError(f"status {r.status}, body {bytes(r.body[:200])!r}")
            if i >= 3:
                n = r.body.count(DELTA)
                firsts.append((t_first - t0) * 1e6)
                lasts.append((t_last - t0) * 1e6)
                counts.append(n)
                gaps.append((t_last - t_first) * 1e6 / max(n, 1))
        except Exception as e:  # noqa: BLE001 - count it, go on with a new connection
            errors += 1
            sys.stderr.write(f"sse.py seq: {e}\n")
            sock.close()
            sock = connect()
    sock.close()
    return {
        "first_p50_us": pct(firsts, 50), "first_p99_us": pct(firsts, 99),
        "last_p50_us": pct(lasts, 50), "last_p99_us": pct(lasts, 99),
        "gap_p50_us": pct(gaps, 50),
        "events_min": min(counts) if counts else 0, "events_max": max(counts) if counts else 0,
        "runs": len(firsts), "errors": errors,
    }


async def one(host, port, request, tokens):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        r = Response()
        while not r.done:
            chunk = await reader.read(262144)
            if not chunk:
                break
            r.feed(chunk)
        return r.status == 200 and r.done and STOP in r.body and r.body.count(DELTA) == tokens
    finally:
        writer.close()


async def concurrent(host, port, n, tokens, headers):
    request = build_request(host, port, tokens, headers, close=True)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(host, port, request, tokens) for _ in range(n)),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for e in errors[:3]:
        sys.stderr.write(f"sse.py concurrent: {e!r}\n")
    complete = sum(1 for r in results if r is True)
    return {"streams": n, "complete": complete, "short": n - complete - len(errors),
            "errors": len(errors), "seconds": round(time.perf_counter() - t0, 2)}


def main():
    mode, addr, n, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    headers = sys.argv[5:]
    if mode == "seq":
        out = seq(host, int(port), n, tokens, headers)
    else:
        out = asyncio.run(concurrent(host, int(port), n, tokens, headers))
    print(json.dumps(out))


main()
