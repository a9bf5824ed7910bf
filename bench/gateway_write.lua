-- wrk script: POST /write with the seed body and a fresh, unique timestamp per request.
-- Each thread numbers its requests; the timestamp is now (at thread start) plus the request number in
-- microseconds, and thread k writes to its own battery, so no two requests name the same point.
-- The path comes after `--` on wrk's command line (default /write), e.g. `-- /write?ack=broker`.
local counter = 0
local path = "/write"
local thread_id = 0
local start = os.time()
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  start = os.time()
  path = args[1] or "/write"
  wrk.headers["Content-Type"] = "application/json"
  wrk.method = "POST"
end

function request()
  counter = counter + 1
  local seconds = start - 3600 + math.floor(counter / 1000000)
  local stamp = os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%06dZ", counter % 1000000)
  local body = string.format(
    '{"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "%s", "battery": "bench-%d"}',
    stamp, thread_id)
  return wrk.format(nil, path, nil, body)
end
