-- One benchmark scenario for wrk. The request is built once (no Lua per request, so wrk
-- stays as cheap as it can on the machine it shares with the server); headers come from
-- wrk's --header. Set by run_benchmarks.py:
--   BENCH_METHOD  GET or POST        BENCH_BODY    a JSON body (then Content-Type is JSON)
--   BENCH_RESULT  where done() writes the summary as JSON

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local errors = summary.errors
  local out = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
  -- errors.status counts the responses whose status is 400 or more (wrk's own rule).
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
  out:close()
end
