-- POST one JSON body to one path, both from the environment (scripts/bench-proxy):
--   BENCH_PATH  request path
--   BENCH_BODY  body; "{user}" in it becomes a random user id per request
--   BENCH_USERS how many distinct users (default 1000)
--   BENCH_LABEL printed first on the result line
-- done() prints one line: label, requests/s, p50/p90/p99/p99.9 in µs, non-2xx, socket errors.
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY") or "{}"
local users = tonumber(os.getenv("BENCH_USERS") or "1000")
local templated = body:find("{user}", 1, true) ~= nil
local headers = {["Content-Type"] = "application/json"}
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))

request = function()
  local b = body
  if templated then
    b = body:gsub("{user}", "u" .. math.random(1, users))
  end
  return wrk.format("POST", path, headers, b)
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT %s rps=%.0f p50=%d p90=%d p99=%d p999=%d non2xx=%d socket=%d\n",
    os.getenv("BENCH_LABEL") or "-", summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), e.status, e.connect + e.read + e.write + e.timeout))
end
