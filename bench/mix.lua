-- The route mix for wrk, the same weights as ROUTE_MIX in bench/loadgen.py:
-- 30 % list, 40 % item by id, 25 % search, 5 % the failing route.
-- At the end, one line starting with "BENCH_JSON " carries the results.

local queries = {"drama", "live", "kids", "award", "season", "zzz"}
local paths = {}

init = function(args)
  math.randomseed(1)
  for i = 1, 2000 do
    local draw = math.random(100)
    local path
    if draw <= 30 then
      path = "/items?limit=20"
    elseif draw <= 70 then
      path = "/items/" .. math.random(0, 199)
    elseif draw <= 95 then
      path = "/search?q=" .. queries[math.random(#queries)]
    else
      path = "/fail"
    end
    paths[i] = wrk.format("GET", path)
  end
end

local index = 0

request = function()
  index = index % #paths + 1
  return paths[index]
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, ' ..
    '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
