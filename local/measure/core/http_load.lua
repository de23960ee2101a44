-- wrk script for `python -m local loadtest` (local/measure/core/http_load.py): every request POSTs the raw
-- image in $LOADTEST_BODY with $LOADTEST_CONTENT_TYPE. Answers are counted by status, and each
-- answer is timed: wrk's own latency histogram mixes 503s with answers, so this script times each
-- request itself (LuaJIT's FFI to clock_gettime), which needs one connection per wrk thread
-- (-t N -c N): a thread's request() and response() then alternate for its one connection.
-- done() prints one line "LOADTEST_RESULT {json}" for the caller to parse.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } loadtest_timespec;
int clock_gettime(int clock_id, loadtest_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now = ffi.new("loadtest_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
  return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("LOADTEST_BODY"), "rb"))
  local body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = os.getenv("LOADTEST_CONTENT_TYPE") or "image/jpeg"
  prepared = wrk.format()
  statuses = {}
  ok_ms = {}
  refused_ms = {}
  retry_after = 0
  sent_at = 0
end

function request()
  sent_at = now_ms()
  return prepared
end

function response(status, headers, body)
  local ms = now_ms() - sent_at
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 200 then
    ok_ms[#ok_ms + 1] = string.format("%.3f", ms)
  elseif status == 503 then
    refused_ms[#refused_ms + 1] = string.format("%.3f", ms)
    if headers["retry-after"] or headers["Retry-After"] then
      retry_after = retry_after + 1
    end
  end
end

function done(summary, latency, requests)
  local statuses_all, ok_all, refused_all, retry_all = {}, {}, {}, 0
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("statuses")) do
      statuses_all[key] = (statuses_all[key] or 0) + count
    end
    for _, ms in ipairs(thread:get("ok_ms")) do ok_all[#ok_all + 1] = ms end
    for _, ms in ipairs(thread:get("refused_ms")) do refused_all[#refused_all + 1] = ms end
    retry_all = retry_all + thread:get("retry_after")
  end
  local parts = {}
  for key, count in pairs(statuses_all) do parts[#parts + 1] = string.format('"%s": %d', key, count) end
  local e = summary.errors
  io.write(string.format(
    'LOADTEST_RESULT {"duration_us": %d, "requests": %d, "statuses": {%s}, "ok_ms": [%s], "refused_ms": [%s], '
    .. '"retry_after": %d, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}}\n',
    summary.duration, summary.requests, table.concat(parts, ", "), table.concat(ok_all, ","),
    table.concat(refused_all, ","), retry_all, e.connect, e.read, e.write, e.timeout, e.status))
end
