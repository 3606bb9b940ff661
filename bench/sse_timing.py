#!/usr/bin/env python3
"""Time a streamed /v1/messages through one target: time to first event, time to last
event, events received. Stdlib only; one keep-alive connection, requests one after the
other, raw socket so that no client-side buffering hides when bytes arrive.

usage: sse_timing.py HOST:PORT RUNS OUTPUT_TOKENS [HEADER:VALUE ...]
prints one JSON object: {"first_p50_us":…, "first_p99_us":…, "last_p50_us":…,
"last_p99_us":…, "gap_p50_us":…, "events_min":…, "events_max":…, "errors":…}
"""
import json
import socket
import sys
import time

def main():
    host, port = sys.argv[1].rsplit(":", 1)
    runs, tokens = int(sys.argv[2]), int(sys.argv[3])
    extra = [h for h in sys.argv[4:]]
    body = json.dumps({
        "model": "claude-sonnet-4-6",
        "max_tokens": tokens + 16,
        "stream": True,
        "messages": [{"role": "user", "content": "x" * 1900}],
    }).encode()
    head = (
        "POST /v1/messages HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "content-type: application/json\r\n"
        "anthropic-version: 2023-06-01\r\n"
        f"x-mock-output-tokens: {tokens}\r\n"
        + "".join(f"{h}\r\n" for h in extra)
        + f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body

    def connect():
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    sock = connect()
    firsts, lasts, gaps, counts, errors = [], [], [], [], 0
    for i in range(runs + 3):  # 3 warm-up requests, not counted
        try:
            t0 = time.perf_counter()
            sock.sendall(request)
            buf = b""
            t_first = t_last = None
            while True:
                chunk = sock.recv(262144)
                if not chunk:
                    raise ConnectionError("closed mid-stream")
                now = time.perf_counter()
                if t_first is None and b"event: message_start" in chunk:
                    t_first = now
                buf += chunk
                if b"event: message_stop" in buf and buf.endswith(b"0\r\n\r\n"):
                    t_last = now
                    break
                if b"event: error" in buf:
                    raise ConnectionError("error event")
                if t_first is None and b"event: message_start" in buf:
                    t_first = now  # split across reads
            if not buf.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(buf[:200])
            if i >= 3:
                firsts.append((t_first - t0) * 1e6)
                lasts.append((t_last - t0) * 1e6)
                n = buf.count(b"event: content_block_delta")
                counts.append(n)
                gaps.append((t_last - t_first) * 1e6 / max(n, 1))
        except Exception as e:  # noqa: BLE001 - count and go on with a new connection
            errors += 1
            sys.stderr.write(f"sse_timing: {e}\n")
            sock.close()
            sock = connect()
    sock.close()

    def pct(xs, p):
        if not xs:
            return None
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 1)

    print(json.dumps({
        "first_p50_us": pct(firsts, 50), "first_p99_us": pct(firsts, 99),
        "last_p50_us": pct(lasts, 50), "last_p99_us": pct(lasts, 99),
        "gap_p50_us": pct(gaps, 50),
        "events_min": min(counts) if counts else 0,
        "events_max": max(counts) if counts else 0,
        "runs": len(firsts), "errors": errors,
    }))

main()
