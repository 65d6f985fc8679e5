-- wrk script for scripts/bench_http.py: each connection thread posts its own share
-- of pre-built requests (one per line of BENCH_REQUESTS: "PATH<TAB>JSON"), never the
-- same one twice, and keeps every 2xx response body so the receipts can be checked
-- against what was stored.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local stride = tonumber(os.getenv("BENCH_THREADS"))
  paths, bodies, receipts, statuses = {}, {}, {}, {}
  local n = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if n % stride == id then
      local tab = line:find("\t", 1, true)
      table.insert(paths, line:sub(1, tab - 1))
      table.insert(bodies, line:sub(tab + 1))
    end
    n = n + 1
  end
  next_index, exhausted = 1, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function request()
  local i = next_index
  if i > #bodies then
    if os.getenv("BENCH_WRAP") then
      i = 1
    else
      exhausted = exhausted + 1
      return wrk.format("GET", "/v1/health", {}, nil)
    end
  end
  next_index = i + 1
  return wrk.format(nil, paths[i], nil, bodies[i])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 or status == 201 then
    receipts[#receipts + 1] = body
  end
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  out:write(string.format('{"requests": %d, "duration_us": %d, "p99_us": %d, "p50_us": %d, ',
    summary.requests, summary.duration, latency:percentile(99.0), latency:percentile(50.0)))
  out:write(string.format('"errors": %d, "timeouts": %d}\n',
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout))
  for _, thread in ipairs(threads) do
    local st = thread:get("statuses")
    for code, count in pairs(st) do
      out:write(string.format('{"status": %d, "count": %d}\n', code, count))
    end
    out:write(string.format('{"exhausted": %d}\n', thread:get("exhausted")))
    for _, r in ipairs(thread:get("receipts")) do
      out:write(r, "\n")
    end
  end
  out:close()
end
