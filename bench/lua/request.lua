-- The bench's wrk script: method, body and bearer token from the environment (BENCH_METHOD,
-- BENCH_BODY, BENCH_TOKEN), and with BENCH_MANY_CLIENTS=1 a random X-Forwarded-For on every
-- request (a new client address each time, as a rotating-address flood sends). done() prints one
-- JSON line the bench reads: requests, duration, errors and latency percentiles in microseconds.
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local token = os.getenv("BENCH_TOKEN")
local many = os.getenv("BENCH_MANY_CLIENTS") == "1"

wrk.method = method
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local fixed = nil
local headers = {}
function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
  fixed = wrk.format()
  -- wrk.format replaces wrk.headers with the table it is given: carry them over once.
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
end

function request()
  if not many then
    return fixed
  end
  local ip = math.random(1, 223) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  headers["X-Forwarded-For"] = ip
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"durationUs":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"timeouts":%d,"non2xx":%d,"p50Us":%d,"p99Us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
