#!/usr/bin/env bash
# bench/e2e.sh — Tollgate's end-to-end benchmark: one bounded run on loopback (127.0.0.1
# only) that measures the same workload against
#   (1) the mock upstream directly            (the floor)
#   (2) a bare hyper reverse proxy (bench/proxy) in front of it   (the baseline)
#   (3) tollgate, full stack, memory stores (database = "memory"; plus a diagnostic
#       variant with RUST_LOG=warn: no access log)
#   (4) tollgate, full stack, SQLite keys + ledger
#   (5) tollgate, full stack, PostgreSQL keys + ledger and Redis rate limits: a throw-away
#       PostgreSQL cluster (initdb/pg_ctl, its own port and directory) and a private
#       redis-server, both started and removed by this script
#   (6) LiteLLM proxy 1.104.0 in a venv, same mock
# and writes docs/BENCHMARKS.md (table, ratios to the bare proxy, targets met/missed).
#
#   bench/e2e.sh                         # everything, ~5 min of measurement
#   BENCH_DURATION=5 BENCH_LITELLM=0 bench/e2e.sh
#
# Environment (all optional):
#   BENCH_DURATION     seconds per measured point (default 8); a 1 s warm-up precedes each
#   BENCH_CONCURRENCY  closed-loop concurrency levels (default "1 16 64")
#   BENCH_ROUNDS       alternating rounds of (2), (3) and (3b) per level, best kept (default 2)
#   BENCH_LITELLM      1 (default): install (bounded) and measure LiteLLM; 0: skip
#   BENCH_PGREDIS      1 (default): measure slot (5) if initdb/pg_ctl and redis-server exist
#   BENCH_PORT_BASE    first of the 127.0.0.1 ports used (default 19100; uses 9)
#   BENCH_OUT          the markdown written (default docs/BENCHMARKS.md)
#   BENCH_KEEP         1: keep the scratch dir (logs, configs, databases)
#   CARGO_TARGET_DIR   where the release binaries are built (default ./target)
#   TOLLGATE_BENCH_CACHE  venv location for LiteLLM/matplotlib (~/.cache/tollgate-bench)
#
# First run only: installs wrk (apt-get) and oha (cargo install oha --locked, minutes),
# builds the release binaries, creates the LiteLLM venv (bounded to 5 min). None of that
# counts against the measurement budget (BENCH_BUDGET seconds, default 600).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${BENCH_DURATION:-8}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
ROUNDS=${BENCH_ROUNDS:-2}
LITELLM=${BENCH_LITELLM:-1}
PORT_BASE=${BENCH_PORT_BASE:-19100}
OUT=${BENCH_OUT:-$ROOT/docs/BENCHMARKS.md}
CACHE=${TOLLGATE_BENCH_CACHE:-$HOME/.cache/tollgate-bench}
BUDGET=${BENCH_BUDGET:-600}
HOST=127.0.0.1

PGREDIS=${BENCH_PGREDIS:-1}
MOCK_PORT=$PORT_BASE
PROXY_PORT=$((PORT_BASE + 1))
TG_PORT=$((PORT_BASE + 2))        # (3) full stack, memory stores
TG_SQLITE_PORT=$((PORT_BASE + 3)) # (4) full stack, SQLite keys + ledger
TG_PG_PORT=$((PORT_BASE + 4))     # (5) full stack, PostgreSQL + Redis
LITELLM_PORT=$((PORT_BASE + 5))   # (6)
TG_QUIET_PORT=$((PORT_BASE + 6))  # (3b) diagnostic: memory stores, RUST_LOG=warn (no access log)
PG_PORT=$((PORT_BASE + 7))        # the throw-away PostgreSQL cluster of (5)
REDIS_PORT=$((PORT_BASE + 8))     # the private redis-server of (5)

WORK=$(mktemp -d /tmp/tollgate-e2e.XXXXXX)
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
PIDS=()

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.5
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    done
    # LiteLLM's workers are children of its master: end its process group.
    if [ -n "${LITELLM_PGID:-}" ]; then kill -KILL -- "-$LITELLM_PGID" 2>/dev/null || true; fi
    if [ -n "${PG_DIR:-}" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "scratch dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

emit() { printf '%s\n' "$1" >>"$RESULTS"; }
note() { # note KEY TEXT — a run-specific note for the report
    python3 -c 'import json,sys; print(json.dumps({"kind":"note","key":sys.argv[1],"text":sys.argv[2]}))' "$1" "$2" >>"$RESULTS"
}

# ---------------------------------------------------------------------------------------
# 1. Tools and builds (not counted against the budget)
# ---------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk (apt-get)"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
OHA=$(command -v oha || true)
if [ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ]; then OHA="$HOME/.cargo/bin/oha"; fi
if [ -z "$OHA" ]; then
    log "installing oha (cargo install oha --locked; takes minutes the first time)"
    if CARGO_TARGET_DIR="$TARGET_DIR/oha-install" cargo install oha --locked >"$WORK/oha-install.log" 2>&1; then
        OHA="$HOME/.cargo/bin/oha"
    else
        log "oha failed to install; fixed-rate latency is skipped (see $WORK/oha-install.log)"
        note oha "oha failed to install (cargo install oha --locked); the fixed-rate latency table is missing."
    fi
fi

log "building the release gateway and the bare proxy (CARGO_TARGET_DIR=$TARGET_DIR)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --bin tollgate)
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --manifest-path "$BENCH/proxy/Cargo.toml"
TG="$TARGET_DIR/release/tollgate"
PROXY="$TARGET_DIR/release/tollgate-bench-proxy"

# LiteLLM: a venv in the cache dir, install bounded to 5 minutes.
VENV="$CACHE/venv"
LITELLM_STATE=skipped
LITELLM_REASON="BENCH_LITELLM=0"
if [ "$LITELLM" = 1 ]; then
    if [ ! -x "$VENV/bin/litellm" ]; then
        log "installing LiteLLM 1.104.0 into $VENV (bounded: 5 min)"
        mkdir -p "$CACHE"
        python3 -m venv "$VENV"
        if timeout 300 "$VENV/bin/pip" install -q 'litellm[proxy]==1.104.0' >"$WORK/litellm-install.log" 2>&1; then
            LITELLM_STATE=installed
            LITELLM_REASON=""
        else
            LITELLM_STATE=failed
            LITELLM_REASON="pip install 'litellm[proxy]==1.104.0' failed or took over 5 min: $(tail -n 1 "$WORK/litellm-install.log" | cut -c1-200)"
        fi
    else
        LITELLM_STATE=installed
        LITELLM_REASON=""
    fi
fi
# matplotlib for the plot, only if it comes quickly.
PLOT_PY=""
if [ -x "$VENV/bin/python" ]; then
    if "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null ||
        timeout 120 "$VENV/bin/pip" install -q matplotlib >/dev/null 2>&1; then
        PLOT_PY="$VENV/bin/python"
    fi
fi

# ---------------------------------------------------------------------------------------
# 2. Helpers
# ---------------------------------------------------------------------------------------
busy_now() { # processes using > 20 % CPU right now (not ours), as "name pct%, ..."
    top -b -n2 -d0.5 2>/dev/null | awk '/^top -/ {n++} n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 20 {print $12 " " $9 "%"}' |
        head -n 6 | paste -sd, - || true
}
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_START=$(busy_now)
elapsed() { echo $(($(date +%s) - START)); }
over_budget() { [ "$(elapsed)" -ge "$BUDGET" ]; }

for port in $MOCK_PORT $PROXY_PORT $TG_PORT $TG_SQLITE_PORT $TG_PG_PORT $LITELLM_PORT $TG_QUIET_PORT $PG_PORT $REDIS_PORT; do
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
        echo "e2e: port $HOST:$port is taken; set BENCH_PORT_BASE" >&2
        exit 1
    fi
done

# The workload: a 2 KB (2048-byte) Messages request, non-streaming.
BODY="$WORK/body.json"
python3 - "$BODY" <<'PY'
import json, sys
base = {"model": "claude-sonnet-4-6", "max_tokens": 256,
        "messages": [{"role": "user", "content": ""}]}
pad = 2048 - len(json.dumps(base, separators=(",", ":")))
base["messages"][0]["content"] = ("lorem ipsum dolor sit amet " * 100)[:pad]
text = json.dumps(base, separators=(",", ":"))
assert len(text) == 2048, len(text)
open(sys.argv[1], "w").write(text)
PY

start() { # start NAME CMD... — background process, logs in $WORK/NAME.log
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}

wait_ok() { # wait_ok URL SECONDS [curl args] — until a 200
    local url=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    return 1
}

post_ok() { # post_ok PORT SECONDS [curl args] — until a POST /v1/messages gives 200
    local port=$1 secs=$2
    shift 2
    wait_ok "http://$HOST:$port/v1/messages" "$secs" -X POST -H 'content-type: application/json' \
        -H 'anthropic-version: 2023-06-01' --data-binary "@$BODY" "$@"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

SAMPLER_PID=""
sampler_start() { # sample VmRSS of PID every 100 ms into $WORK/rss.samples
    : >"$WORK/rss.samples"
    (while kill -0 "$1" 2>/dev/null; do rss_kib "$1" >>"$WORK/rss.samples"; sleep 0.1; done) &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
}
sampler_max() { # stop the sampler, print the largest sample (KiB)
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    sort -n "$WORK/rss.samples" | tail -n 1
}

# run_wrk TARGET PORT CONCURRENCY [KIND] — warm-up 1 s, then DURATION s; emits a result.
# Auth comes from the environment: BENCH_KEY (x-api-key), BENCH_BEARER.
run_wrk() {
    local target=$1 port=$2 c=$3 kind=${4:-closed} out
    export BENCH_BODY_FILE="$BODY"
    wrk -t1 -c"$c" -d1s --timeout 5s -s "$BENCH/wrk-post.lua" "http://$HOST:$port/v1/messages" >/dev/null 2>&1 || true
    ${BENCH_AFTER_WARMUP:-}
    out=$(wrk -t1 -c"$c" -d"${DURATION}s" --timeout 5s -s "$BENCH/wrk-post.lua" \
        "http://$HOST:$port/v1/messages" 2>&1 | sed -n 's/^WRKJSON //p')
    if [ -z "$out" ]; then
        log "wrk gave no result for $target c=$c"
        out='{"rps":0,"p50_us":0,"p99_us":0,"status_err":-1}'
    fi
    emit "{\"kind\":\"$kind\",\"target\":\"$target\",\"c\":$c,\"wrk\":$out}"
    log "$kind $target c=$c: $out"
}

# ---------------------------------------------------------------------------------------
# 3. Start everything
# ---------------------------------------------------------------------------------------
log "starting the mock on $HOST:$MOCK_PORT"
start mock "$TG" mock --listen "$HOST:$MOCK_PORT"
post_ok "$MOCK_PORT" 20 || { echo "e2e: the mock did not start; see $WORK/mock.log" >&2; exit 1; }

log "starting the bare proxy on $HOST:$PROXY_PORT"
start proxy "$PROXY" "$HOST:$PROXY_PORT" "$HOST:$MOCK_PORT"
post_ok "$PROXY_PORT" 20 || { echo "e2e: the proxy did not start; see $WORK/proxy.log" >&2; exit 1; }

# A database with one account (topped up far beyond the run) and one key.
make_db() { # make_db URL — prints the key
    "$TG" accounts create bench --database "$1" >/dev/null
    "$TG" accounts topup bench 1000000 --database "$1" >/dev/null
    "$TG" keys create --account bench --name bench --database "$1"
}

# The same full stack for (3), (4), (5): key auth, a per-key rate limit high enough never
# to refuse (so the limiter decides every request: RPM and input tokens, both before the
# request goes upstream), billing, retry with max_attempts = 1.
gateway_config() { # gateway_config PORT DATABASE [EXTRA TOML]
    cat <<EOF
listen = "$HOST:$1"
shutdown_grace_ms = 1000
database = "$2"

[memory]
account = "bench"
balance = "1000000"

[retry]
max_attempts = 1

[ratelimit.default_key]
rpm = 1000000000
itpm = 1000000000000
${3:-}

[[upstreams]]
name = "mock"
base_url = "http://$HOST:$MOCK_PORT"
api_key = "mock-upstream-key"
EOF
}

start_gateway() { # start_gateway NAME PORT CONFIG [ENV=VALUE...] — waits for /healthz
    local name=$1 port=$2 config=$3
    shift 3
    env "$@" "$TG" serve --config "$config" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PIDS+=($!)
    eval "PID_$name=$!"
    wait_ok "http://$HOST:$port/healthz" 30 || { echo "e2e: tollgate ($name) did not start; see $WORK/$name.log" >&2; exit 1; }
}

# (3) and (3b): memory stores; the key is the first line the gateway prints on stdout.
gateway_config "$TG_PORT" memory >"$WORK/memory.toml"
start_gateway tg_mem "$TG_PORT" "$WORK/memory.toml"
KEY_MEM=$(head -n 1 "$WORK/tg_mem.out")
gateway_config "$TG_QUIET_PORT" memory >"$WORK/quiet.toml"
start_gateway tg_quiet "$TG_QUIET_PORT" "$WORK/quiet.toml" RUST_LOG=warn
KEY_QUIET=$(head -n 1 "$WORK/tg_quiet.out")
RSS_START=$(rss_kib "$PID_tg_mem")

# (4): SQLite keys + ledger.
SQLITE_URL="sqlite://$WORK/sqlite.db"
KEY_SQLITE=$(make_db "$SQLITE_URL")
gateway_config "$TG_SQLITE_PORT" "$SQLITE_URL" >"$WORK/sqlite.toml"
start_gateway tg_sqlite "$TG_SQLITE_PORT" "$WORK/sqlite.toml"

# (5): a throw-away PostgreSQL cluster and a private Redis, never the shared services.
PG_STATE=skipped
PG_REASON="BENCH_PGREDIS=0"
PG_DIR=""
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
PG_USER=""
as_pg() { if [ -n "$PG_USER" ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }
if [ "$PGREDIS" = 1 ]; then
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] || ! command -v redis-server >/dev/null; then
        PG_STATE=skipped
        PG_REASON="needs initdb/pg_ctl (/usr/lib/postgresql/*/bin) and redis-server"
    else
        # initdb refuses to run as root: then the cluster runs as postgres (or nobody).
        if [ "$(id -u)" = 0 ]; then PG_USER=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody); fi
        PG_DIR=$(mktemp -d /tmp/tollgate-e2e-pg.XXXXXX)
        if [ -n "$PG_USER" ]; then chown "$PG_USER" "$PG_DIR"; fi
        log "starting a throw-away PostgreSQL ($PG_BIN) on $HOST:$PG_PORT and redis-server on $HOST:$REDIS_PORT"
        if as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U bench --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 &&
            as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w -t 30 \
                -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=$HOST" start >"$WORK/pg_ctl.log" 2>&1 &&
            "$PG_BIN/createdb" -h "$HOST" -p "$PG_PORT" -U bench tollgate >>"$WORK/pg_ctl.log" 2>&1; then
            start redis redis-server --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no
            for ((i = 0; i < 50; i++)); do
                redis-cli -h "$HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
                sleep 0.1
            done
            PG_URL="postgres://bench@$HOST:$PG_PORT/tollgate"
            KEY_PG=$(make_db "$PG_URL")
            gateway_config "$TG_PG_PORT" "$PG_URL" "
[ratelimit.backend]
kind = \"redis\"
url = \"redis://$HOST:$REDIS_PORT\"" >"$WORK/pgredis.toml"
            start_gateway tg_pg "$TG_PG_PORT" "$WORK/pgredis.toml"
            PG_STATE=running
            PG_REASON=""
        else
            PG_STATE=failed
            PG_REASON="the throw-away PostgreSQL did not start: $(cat "$WORK/initdb.log" "$WORK/pg_ctl.log" 2>/dev/null | tail -n 2 | tr '\n' ' ' | cut -c1-200)"
        fi
    fi
fi
note pgredis "$PG_STATE: ${PG_REASON:-}"
redis_calls() { # "COMMANDS SCRIPT_CALLS" Redis has executed so far (INFO commandstats), INFO aside
    redis-cli -h "$HOST" -p "$REDIS_PORT" info commandstats 2>/dev/null | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" {n += $3}
            $1 ~ /^cmdstat_(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)$/ {s += $3}
            END {print n + 0, s + 0}'
}
redis_mark() { redis_calls >"$WORK/redis.mark"; }

post_ok "$TG_PORT" 10 -H "x-api-key: $KEY_MEM" || {
    echo "e2e: a request through tollgate failed:" >&2
    curl -s -X POST "http://$HOST:$TG_PORT/v1/messages" -H 'content-type: application/json' \
        -H "x-api-key: $KEY_MEM" --data-binary "@$BODY" >&2 || true
    exit 1
}
post_ok "$TG_QUIET_PORT" 10 -H "x-api-key: $KEY_QUIET" || { echo "e2e: tollgate (quiet) failed" >&2; exit 1; }
post_ok "$TG_SQLITE_PORT" 10 -H "x-api-key: $KEY_SQLITE" || { echo "e2e: tollgate (SQLite) failed" >&2; exit 1; }
if [ "$PG_STATE" = running ]; then
    post_ok "$TG_PG_PORT" 10 -H "x-api-key: $KEY_PG" || { echo "e2e: tollgate (PostgreSQL + Redis) failed; see $WORK/tg_pg.log" >&2; exit 1; }
fi
sleep 1
RSS_IDLE=$(rss_kib "$PID_tg_mem")

# ---------------------------------------------------------------------------------------
# 4. Closed loop: throughput and latency at each concurrency
# ---------------------------------------------------------------------------------------
log "closed loop, ${DURATION}s per point, concurrency: $CONCURRENCY"
RSS_LOAD=0
for c in $CONCURRENCY; do
    BENCH_KEY="" BENCH_BEARER="" run_wrk mock "$MOCK_PORT" "$c"
    # The headline ratio, (3) over (2), is measured in alternating rounds; the report
    # keeps each target's best round (the one least disturbed by the rest of the machine).
    for _round in $(seq 1 "$ROUNDS"); do
        BENCH_KEY="" BENCH_BEARER="" run_wrk proxy "$PROXY_PORT" "$c"
        sampler_start "$PID_tg_mem"
        BENCH_KEY="$KEY_MEM" BENCH_BEARER="" run_wrk tollgate "$TG_PORT" "$c"
        m=$(sampler_max)
        [ "${m:-0}" -gt "$RSS_LOAD" ] && RSS_LOAD=$m
        BENCH_KEY="$KEY_QUIET" BENCH_BEARER="" run_wrk tollgate-quiet "$TG_QUIET_PORT" "$c"
    done
    BENCH_KEY="$KEY_SQLITE" BENCH_BEARER="" run_wrk tollgate-sqlite "$TG_SQLITE_PORT" "$c"
    if [ "$PG_STATE" = running ]; then
        # Redis commands during the measured run (not its warm-up) per request.
        BENCH_AFTER_WARMUP=redis_mark BENCH_KEY="$KEY_PG" BENCH_BEARER="" run_wrk tollgate-pgredis "$TG_PG_PORT" "$c"
        sleep 0.2 # output-token charges are sent after each body ends
        read -r n1 s1 <<<"$(redis_calls)"
        read -r n0 s0 <"$WORK/redis.mark"
        reqs=$(tail -n 1 "$RESULTS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["wrk"].get("requests", 0))')
        emit "{\"kind\":\"redis\",\"c\":$c,\"commands\":$((n1 - n0)),\"scripts\":$((s1 - s0)),\"requests\":${reqs:-0}}"
        log "redis c=$c: $((n1 - n0)) commands, $((s1 - s0)) script calls for $reqs requests"
    fi
done

# LiteLLM, in front of the same mock: started only now and stopped right after, so that
# its workers never share the CPU with the other measurements.
LITELLM_PGID=""
if [ "$LITELLM_STATE" = installed ]; then
    LITELLM_MASTER="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: claude-sonnet-4-6
    litellm_params:
      model: anthropic/claude-sonnet-4-6
      api_base: http://$HOST:$MOCK_PORT
      api_key: mock-upstream-key
litellm_settings:
  num_retries: 0
  telemetry: false
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
EOF
    log "starting LiteLLM (2 workers) on $HOST:$LITELLM_PORT"
    LITELLM_MASTER_KEY="$LITELLM_MASTER" LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
        setsid "$VENV/bin/litellm" --config "$WORK/litellm.yaml" --host "$HOST" --port "$LITELLM_PORT" \
        --num_workers 2 >"$WORK/litellm.log" 2>&1 &
    PIDS+=($!)
    LITELLM_PGID=$!
    disown "$LITELLM_PGID" 2>/dev/null || true
    if post_ok "$LITELLM_PORT" 120 -H "x-api-key: $LITELLM_MASTER" -H "authorization: Bearer $LITELLM_MASTER"; then
        LITELLM_STATE=running
    else
        LITELLM_STATE=failed
        LITELLM_REASON="LiteLLM installed but did not answer POST /v1/messages with 200 within 120 s: $(grep -iE 'error|exception' "$WORK/litellm.log" | tail -n 1 | cut -c1-200)"
    fi
fi
if [ "$LITELLM_STATE" = running ]; then
    for c in $CONCURRENCY; do
        if over_budget; then
            log "over budget: LiteLLM c=$c skipped"
        else
            BENCH_KEY="$LITELLM_MASTER" BENCH_BEARER="$LITELLM_MASTER" run_wrk litellm "$LITELLM_PORT" "$c"
        fi
    done
fi
note litellm "$LITELLM_STATE: ${LITELLM_REASON:-}"
if [ -n "$LITELLM_PGID" ]; then kill -TERM -- "-$LITELLM_PGID" 2>/dev/null || true; sleep 1; kill -KILL -- "-$LITELLM_PGID" 2>/dev/null || true; fi

# ---------------------------------------------------------------------------------------
# 5. Capacity with a 20 ms mock (closed loop, 128 connections)
# ---------------------------------------------------------------------------------------
if ! over_budget; then
    log "20 ms mock, 128 connections"
    export BENCH_MOCK_LATENCY_MS=20
    BENCH_KEY="" run_wrk mock "$MOCK_PORT" 128 slow
    BENCH_KEY="" run_wrk proxy "$PROXY_PORT" 128 slow
    sampler_start "$PID_tg_mem"
    BENCH_KEY="$KEY_MEM" run_wrk tollgate "$TG_PORT" 128 slow
    m=$(sampler_max)
    [ "${m:-0}" -gt "$RSS_LOAD" ] && RSS_LOAD=$m
    unset BENCH_MOCK_LATENCY_MS
fi

# ---------------------------------------------------------------------------------------
# 6. Fixed arrival rate (oha, latency-corrected): added latency without queueing effects
# ---------------------------------------------------------------------------------------
RATE=${BENCH_RATE:-1000}
if [ -n "$OHA" ] && ! over_budget; then
    log "fixed rate $RATE req/s (oha), ${DURATION}s per target"
    for t in "mock $MOCK_PORT" "proxy $PROXY_PORT" "tollgate $TG_PORT"; do
        set -- $t
        hdr=()
        [ "$1" = tollgate ] && hdr=(-H "x-api-key: $KEY_MEM")
        if "$OHA" -z "${DURATION}s" -c 16 -q "$RATE" --latency-correction --no-tui \
            --output-format json -m POST -H 'content-type: application/json' \
            -H 'anthropic-version: 2023-06-01' "${hdr[@]}" -D "$BODY" \
            "http://$HOST:$2/v1/messages" >"$WORK/oha-$1.json" 2>"$WORK/oha-$1.err"; then
            python3 - "$1" "$WORK/oha-$1.json" >>"$RESULTS" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(json.dumps({"kind": "rate", "target": sys.argv[1], "rps": s["requestsPerSec"],
    "p50_us": p["p50"] * 1e6, "p99_us": p["p99"] * 1e6,
    "non200": sum(v for k, v in codes.items() if k != "200"),
    # oha cancels the requests still in flight when the duration ends ("aborted due to
    # deadline", the mock included): those are not the target's errors.
    "errors": sum(v for k, v in d.get("errorDistribution", {}).items()
                  if k != "aborted due to deadline")}))
PY
            log "rate $1: $(tail -n 1 "$RESULTS")"
        else
            log "oha failed for $1: $(tail -n 1 "$WORK/oha-$1.err")"
            note "oha-$1" "oha failed against $1: $(tail -n 1 "$WORK/oha-$1.err" | cut -c1-200)"
        fi
    done
fi

# ---------------------------------------------------------------------------------------
# 7. Streaming: 500-event streams, sequential timing and 512 at once
# ---------------------------------------------------------------------------------------
log "streaming: 500 events, 100 sequential streams per target; 512 concurrent"
for t in "mock $MOCK_PORT" "proxy $PROXY_PORT" "tollgate $TG_PORT"; do
    set -- $t
    hdr=()
    [ "$1" = tollgate ] && hdr=("x-api-key: $KEY_MEM")
    r=$(python3 "$BENCH/sse.py" seq "$HOST:$2" 100 500 "${hdr[@]}" 2>>"$WORK/sse.err")
    emit "{\"kind\":\"sse\",\"target\":\"$1\",\"r\":$r}"
    log "sse $1: $r"
done
for t in "proxy $PROXY_PORT" "tollgate $TG_PORT"; do
    set -- $t
    hdr=()
    [ "$1" = tollgate ] && hdr=("x-api-key: $KEY_MEM") && sampler_start "$PID_tg_mem"
    r=$(python3 "$BENCH/sse.py" concurrent "$HOST:$2" 512 500 "${hdr[@]}" 2>>"$WORK/sse.err")
    if [ "$1" = tollgate ]; then
        m=$(sampler_max)
        emit "{\"kind\":\"mem\",\"what\":\"sse512\",\"kib\":${m:-0}}"
        [ "${m:-0}" -gt "$RSS_LOAD" ] && RSS_LOAD=$m
    fi
    emit "{\"kind\":\"sse512\",\"target\":\"$1\",\"r\":$r}"
    log "sse x512 $1: $r"
done

# ---------------------------------------------------------------------------------------
# 8. Memory after the load, and the report
# ---------------------------------------------------------------------------------------
sleep 5
RSS_AFTER=$(rss_kib "$PID_tg_mem")
RSS_HWM=$(hwm_kib "$PID_tg_mem")
emit "{\"kind\":\"mem\",\"what\":\"summary\",\"start_kib\":$RSS_START,\"idle_kib\":$RSS_IDLE,\"load_kib\":$RSS_LOAD,\"after_kib\":$RSS_AFTER,\"hwm_kib\":$RSS_HWM}"
log "gateway RSS KiB: start $RSS_START, idle $RSS_IDLE, load max $RSS_LOAD, after $RSS_AFTER, HWM $RSS_HWM"

# Rate-limit state per key: 1M distinct keys checked once by the memory backend, in its
# own process (VmRSS before and after; crates/tollgate-ratelimit/tests/memory_cost.rs).
log "rate-limit state with 1M keys (memory backend, release test)"
if (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo test -q --release -p tollgate-ratelimit \
    --test memory_cost -- --ignored --nocapture) >"$WORK/keys.log" 2>&1; then
    KEY_BYTES=$(sed -n 's/.* = \([0-9]*\) bytes\/key.*/\1/p' "$WORK/keys.log" | head -n 1)
    if [ -n "$KEY_BYTES" ]; then
        emit "{\"kind\":\"keys\",\"keys\":1000000,\"bytes_per_key\":$KEY_BYTES}"
        log "rate-limit state: $KEY_BYTES bytes/key at 1M keys"
    fi
else
    note keys "the 1M-key measurement failed: $(tail -n 1 "$WORK/keys.log" | cut -c1-200)"
fi

# The machine and the run.
BUSY_END=$(busy_now)
python3 - >>"$RESULTS" <<PY
import json, subprocess
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
print(json.dumps({"kind": "meta",
  "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"),
  "nproc": sh("nproc"),
  "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip(),
  "mem": sh("free -m | awk '/^Mem:/ {print \$2\" MiB\"}'"),
  "kernel": sh("uname -r"),
  "loadavg_start": "$LOAD_START",
  "loadavg_end": sh("cut -d' ' -f1-3 /proc/loadavg"),
  "busy_start": "$BUSY_START", "busy_end": "$BUSY_END",
  "rev": sh("git -C '$ROOT' rev-parse --short HEAD") + (" (with uncommitted changes)" if sh("git -C '$ROOT' status --porcelain --untracked-files=no") else ""),
  "rustc": sh("rustc --version"),
  "wrk": sh("wrk -v 2>&1 | head -n1"),
  "oha": sh("'${OHA:-oha}' --version 2>/dev/null"),
  "duration": $DURATION, "rounds": $ROUNDS, "concurrency": "$CONCURRENCY", "rate": $RATE,
  "elapsed_s": $(elapsed)}))
PY

mkdir -p "$BENCH/results"
cp "$RESULTS" "$BENCH/results/last-run.jsonl"
PLOT_ARG=""
if [ -n "$PLOT_PY" ] && "$PLOT_PY" "$BENCH/plot.py" "$RESULTS" "$BENCH/results/latency.png" 2>"$WORK/plot.err"; then
    PLOT_ARG="$BENCH/results/latency.png"
fi
python3 "$BENCH/report.py" "$RESULTS" "$BENCH/notes.md" "$PLOT_ARG" >"$OUT"
log "wrote $OUT (measurement took $(elapsed) s)"
