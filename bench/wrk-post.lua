-- wrk script for bench/e2e.sh: POST /v1/messages with the body in $BENCH_BODY_FILE,
-- optional x-api-key ($BENCH_KEY), bearer ($BENCH_BEARER) and mock latency
-- ($BENCH_MOCK_LATENCY_MS); prints one "WRKJSON {...}" line with the results.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["x-api-key"] = key end
local bearer = os.getenv("BENCH_BEARER")
if bearer and bearer ~= "" then wrk.headers["authorization"] = "Bearer " .. bearer end
local lat = os.getenv("BENCH_MOCK_LATENCY_MS")
if lat and lat ~= "" then wrk.headers["x-mock-latency-ms"] = lat end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect_err":%d,"read_err":%d,"write_err":%d,"status_err":%d,"timeout_err":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
