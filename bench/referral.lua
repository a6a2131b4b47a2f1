-- wrk script of bench/run: POSTs a ~2 KB canonical v2 referral with a unique
-- referral_id per request (the id is the gateway's idempotency key).
--
-- Read from the environment, because wrk decides whether to call `delay` and
-- `response` when it loads the script, before any argument reaches `init`:
--   BENCH_TEMPLATE      minified referral JSON whose referral_id is the string @ID@
--   BENCH_PREFIX        8 hex digits naming this run, so ids never repeat across runs
--   BENCH_THREAD_RATE   if set, requests per second this thread sends: each request
--                       takes the next slot of a fixed schedule, 1000 / rate ms apart,
--                       and its connection waits for that slot (a connection whose
--                       answer came late finds its slot already passed and sends at
--                       once, so the offered rate holds while the latency is below
--                       connections / rate); without it, wrk's closed loop
--   BENCH_ACCEPTED_LOG  if set, each thread appends "REFERRAL_ID UNIX_NANOSECONDS"
--                       to BENCH_ACCEPTED_LOG.THREAD for every 202 it receives
-- `done` prints one line, "BENCH-JSON {...}", with the counts and the latency
-- percentiles in microseconds, for bench/run to read.

local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local before, after
local prefix = os.getenv("BENCH_PREFIX") or "00000000"
local counter = 0

function init(args)
  local file = assert(io.open(assert(os.getenv("BENCH_TEMPLATE"), "BENCH_TEMPLATE"), "rb"))
  local template = file:read("*a")
  file:close()
  local at = assert(string.find(template, "@ID@", 1, true), "no @ID@ in the template")
  before = string.sub(template, 1, at - 1)
  after = string.sub(template, at + 4)
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer dev-key-konexio-saint-denis"
  wrk.headers["Content-Type"] = "application/vnd.passerelle.referral.v2+json"
  if accepted_path then
    accepted_log = assert(io.open(accepted_path .. "." .. thread_index, "w"))
  end
end

function request()
  counter = counter + 1
  local id = string.format("%s-%04x-4000-8000-%012x", prefix, thread_index, counter)
  return wrk.format(nil, nil, nil, before .. id .. after)
end

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long seconds; long nanoseconds; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *time);
]]
local now = ffi.new("bench_timespec")

local thread_rate = tonumber(os.getenv("BENCH_THREAD_RATE") or "")
if thread_rate and thread_rate > 0 then
  local interval_ms = 1000 / thread_rate
  local next_slot_ms
  function delay()
    ffi.C.clock_gettime(1, now) -- CLOCK_MONOTONIC
    local now_ms = tonumber(now.seconds) * 1000 + tonumber(now.nanoseconds) / 1e6
    next_slot_ms = (next_slot_ms or now_ms) + interval_ms
    local wait = next_slot_ms - now_ms
    if wait < 0 then return 0 end
    return math.floor(wait + 0.5)
  end
end

accepted_path = os.getenv("BENCH_ACCEPTED_LOG")
if accepted_path and accepted_path ~= "" then
  local recorded = 0
  function response(status, headers, body)
    if status == 202 then
      ffi.C.clock_gettime(0, now) -- CLOCK_REALTIME, the receiver's clock too
      local id = string.match(body, '"referral_id":"([^"]+)"')
      if id then
        accepted_log:write(id, " ", string.format("%d%09d", tonumber(now.seconds), tonumber(now.nanoseconds)), "\n")
        recorded = recorded + 1
        -- wrk has no per-thread end hook (its exit flushes C streams, but be safe).
        if recorded % 256 == 0 then accepted_log:flush() end
      end
    end
  end
else
  accepted_path = nil
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
