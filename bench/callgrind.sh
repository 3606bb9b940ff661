#!/usr/bin/env bash
# bench/callgrind.sh — instructions (Ir) and allocations per request of the release
# `tollgate serve` with memory stores, under valgrind's callgrind: stable under load, unlike
# wall-clock. Loopback only, about 10 s.
#
#   bench/callgrind.sh [TOLLGATE_BINARY]   # default $CARGO_TARGET_DIR/release/tollgate
#
# The tollgate mock is the upstream (not instrumented); 300 keep-alive POST /v1/messages
# (2 KB body) warm up with instrumentation off, then 1,000 are counted. MAXATT sets
# retry.max_attempts (default 1, as in bench/e2e.sh). Prints Ir and malloc calls per request;
# the profile stays in the scratch dir it names, for callgrind_annotate.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TG=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate}
D=$(mktemp -d /tmp/tollgate-callgrind.XXXXXX)
MP=${BENCH_PORT_BASE:-19370}
GP=$((MP + 1))
"$TG" mock --listen "127.0.0.1:$MP" >"$D/mock.log" 2>&1 &
MOCK=$!
GW=""
trap 'kill $MOCK $GW 2>/dev/null || true' EXIT
cat >"$D/memory.toml" <<T
listen = "127.0.0.1:$GP"
shutdown_grace_ms = 1000
database = "memory"
[memory]
account = "bench"
balance = "1000000"
[retry]
max_attempts = ${MAXATT:-1}
[ratelimit.default_key]
rpm = 1000000000
itpm = 1000000000000
[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:$MP"
api_key = "mock-upstream-key"
T
cat >"$D/client.py" <<'PY'
import http.client, json, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": [{"role": "user", "content": ""}]}
pad = 2048 - len(json.dumps(base, separators=(",", ":")))
base["messages"][0]["content"] = ("lorem ipsum dolor sit amet " * 100)[:pad]
body = json.dumps(base, separators=(",", ":")).encode()
c = http.client.HTTPConnection("127.0.0.1", port)
h = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": key}
for _ in range(n):
    c.request("POST", "/v1/messages", body, h)
    r = c.getresponse()
    d = r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}: {d[:200]!r}")
PY
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$D/callgrind.out.%p" \
    "$TG" serve --config "$D/memory.toml" >"$D/gateway.out" 2>"$D/gateway.log" &
GW=$!
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$GP/healthz" && break; sleep 0.2; done
KEY=$(head -n 1 "$D/gateway.out")
python3 "$D/client.py" "$GP" 300 "$KEY"
callgrind_control -i on "$GW" >/dev/null
python3 "$D/client.py" "$GP" 1000 "$KEY"
callgrind_control -d "$GW" >/dev/null
kill "$GW"
wait "$GW" 2>/dev/null || true
OUT=$(ls "$D"/callgrind.out.*.1)
IR=$(awk '/^summary:/ {print $2}' "$OUT")
MALLOCS=$(callgrind_annotate --tree=caller "$OUT" 2>/dev/null | grep -B3 '\*  .*malloc\.c:malloc \[' |
    grep -o '([0-9,]*x)' | tr -d '(x,)' | paste -sd+ | bc)
echo "Ir/request: $((IR / 1000)); malloc calls/request: $((${MALLOCS:-0} / 1000)); profile: $OUT"
