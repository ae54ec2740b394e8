-- POST one JSON body to one path, both from the environment (scripts/bench-proxy):
--   BENCH_PATH  request path
--   BENCH_BODY  body; "{user}" in it becomes a random user id per request
--   BENCH_USERS how many distinct users (default 1000)
--   BENCH_LABEL printed first on the result line
--   BENCH_CONNS connections per wrk thread; at 1 each request is also timed here (below)
-- done() prints one line: label, requests/s, wrk's p50/p90/p99/p99.9 in µs, non-2xx, socket
-- errors; at one connection per thread also "exact" p50/p90/p99/p99.9/max.
--
-- Why both: wrk corrects its histogram for coordinated omission. After the run it adds, for
-- every response slower than twice the mean interval, synthetic samples at that latency
-- minus 1, 2, 3... mean intervals. At one connection the mean interval is the mean latency
-- (~0.25 ms here), so a single 5 ms stall of the VM adds ~20 samples, and two or three
-- such stalls in a run decide its p99. The exact figures are the latencies the requests
-- had, one sample each (LuaJIT's clock_gettime around each request).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY") or "{}"
local users = tonumber(os.getenv("BENCH_USERS") or "1000")
local exact = (os.getenv("BENCH_CONNS") or "") == "1"
local templated = body:find("{user}", 1, true) ~= nil
local headers = {["Content-Type"] = "application/json"}
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))

local threads = {}
function setup(thread) table.insert(threads, thread) end

-- Per thread: latency in whole µs -> count.
hist = {}
local started = 0

request = function()
  local b = body
  if templated then
    b = body:gsub("{user}", "u" .. math.random(1, users))
  end
  started = now_us()
  return wrk.format("POST", path, headers, b)
end

if exact then
  response = function()
    local us = math.floor(now_us() - started)
    hist[us] = (hist[us] or 0) + 1
  end
end

local function exact_line()
  local all, n = {}, 0
  for _, t in ipairs(threads) do
    for us, c in pairs(t:get("hist")) do
      all[#all + 1] = {us, c}
      n = n + c
    end
  end
  if n == 0 then return "" end
  table.sort(all, function(a, b) return a[1] < b[1] end)
  local function pct(p)
    local rank, acc = math.ceil(p / 100 * n), 0
    for _, e in ipairs(all) do
      acc = acc + e[2]
      if acc >= rank then return e[1] end
    end
    return all[#all][1]
  end
  return string.format(" exact_p50=%d exact_p90=%d exact_p99=%d exact_p999=%d exact_max=%d",
    pct(50), pct(90), pct(99), pct(99.9), all[#all][1])
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT %s rps=%.0f p50=%d p90=%d p99=%d p999=%d non2xx=%d socket=%d%s\n",
    os.getenv("BENCH_LABEL") or "-", summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), e.status, e.connect + e.read + e.write + e.timeout,
    exact and exact_line() or ""))
end
