-- wrk script for the bench's small-file phases: every thread works through its own list of
-- pre-signed request targets (written by bench.py) and sends each exactly once; the run ends
-- when the last answer is in, so it makes exactly N requests and its duration ends with the
-- last answer.
--
--   wrk -t T -c C -d CAP --timeout 30s -s signed.lua URL -- put|get LIST_PREFIX BODY_BYTES T [unique]
--
-- LIST_PREFIX.<thread index> holds one request target per line ("/upload/p?v=…" for put,
-- "/upload/p" for get). Counts answers other than 201 (put) / 200 (get) and, for get, bodies
-- of the wrong length; prints one line starting with "BENCH_JSON " from done().
--
-- With "unique", every body differs (its first 128 bytes name its path; an object store that
-- keeps one copy of equal blocks, as Garage does, would otherwise store one block for all of
-- them), and a GET checks its body byte for byte: it must be the body of one of the thread's
-- targets, and each of them must come back once ("wrong_body" counts the others). wrk does not
-- say which request an answer is for, so this checks that the answers are the uploaded bodies,
-- each once, not which connection got which.
--
-- No overshoot: delay() hands out the list's entries one by one; once a thread's list is
-- used up its idle connections are parked for a minute, so no request beyond the list
-- reaches the server and wrk's latency histogram holds only the listed requests.
-- No waiting for -d: wrk's main thread sleeps for the whole -d; the thread that gets the
-- last answer of the whole run wakes it with SIGINT (wrk's own "stop" signal), and the
-- duration is measured here with CLOCK_MONOTONIC from the first request to the last answer.

local ffi = require("ffi")
ffi.cdef [[
typedef unsigned long pthread_t;
pthread_t pthread_self(void);
int pthread_kill(pthread_t thread, int sig);
struct bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local SIGINT = 2
local ts = ffi.new("struct bench_timespec")

local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

-- setup() and done() run in wrk's main thread. wrk calls setup() for each thread just before
-- starting it, so setup() may only touch the thread it is given: the others already run.
local threads = {}

function setup(thread)
   thread:set("index", #threads)
   thread:set("main_thread", tonumber(ffi.C.pthread_self()))
   table.insert(threads, thread)
end

function init(args)
   mode = args[1]
   list_prefix = args[2]
   body_bytes = tonumber(args[3])
   thread_count = tonumber(args[4])
   targets = {}
   for line in io.lines(list_prefix .. "." .. index) do
      targets[#targets + 1] = line
   end
   total = #targets
   reserved, sent, answered, bad, wrong_length, wrong_body = 0, 0, 0, 0, 0, 0
   first_us, last_us = 0, 0
   statuses = {}
   -- Any content does; a fixed pattern keeps runs alike.
   body = string.rep("0123456789abcdef", math.floor(body_bytes / 16)) ..
          string.rep("z", body_bytes % 16)
   unique = args[5] == "unique" and body_bytes >= HEAD_BYTES
   if unique then
      rest = body:sub(HEAD_BYTES + 1)
      expected_heads, seen_heads = {}, {}
      for _, target in ipairs(targets) do
         expected_heads[head_of(target)] = true
      end
   end
   put_headers = { ["Content-Type"] = "application/octet-stream" }
end

-- The first HEAD_BYTES of a unique body: the path's 32-hex folder name first (LuaJIT tells
-- long strings apart by a few sampled bytes, the first four among them), then the path.
HEAD_BYTES = 128

function head_of(target)
   local path = target:gsub("%?.*$", "")
   local hex = path:match("%x+/") or ""
   local head = hex .. path
   return (head .. string.rep(" ", HEAD_BYTES)):sub(1, HEAD_BYTES)
end

function build(target)
   if target == nil then
      -- Not reached (delay() hands out exactly `total`); harmless if it ever is.
      return wrk.format("OPTIONS", "/", nil, nil)
   end
   if mode == "put" then
      if unique then
         return wrk.format("PUT", target, put_headers, head_of(target) .. rest)
      end
      return wrk.format("PUT", target, put_headers, body)
   end
   return wrk.format("GET", target, nil, nil)
end

function delay()
   if reserved >= total then
      return 60000
   end
   reserved = reserved + 1
   return 0
end

function request()
   if tonumber(ffi.C.pthread_self()) == main_thread then
      -- wrk calls request() once in its main thread to check the script before the run:
      -- show it the first request without using it up.
      return build(targets[1])
   end
   if sent == 0 then
      first_us = now_us()
   end
   sent = sent + 1
   return build(targets[sent])
end

-- This thread is through: mark it, and if every thread is, wake wrk's main thread.
local function finish()
   last_us = now_us()
   local mark = io.open(list_prefix .. ".done." .. index, "w")
   mark:write("done\n")
   mark:close()
   for i = 0, thread_count - 1 do
      local f = io.open(list_prefix .. ".done." .. i, "r")
      if f == nil then
         return
      end
      f:close()
   end
   ffi.C.pthread_kill(main_thread, SIGINT)
end

function response(status, headers, body)
   answered = answered + 1
   statuses[status] = (statuses[status] or 0) + 1
   if mode == "put" then
      if status ~= 201 then bad = bad + 1 end
   elseif status ~= 200 then
      bad = bad + 1
   elseif #body ~= body_bytes then
      wrong_length = wrong_length + 1
   elseif unique then
      local head = body:sub(1, HEAD_BYTES)
      if not expected_heads[head] or seen_heads[head] or body:sub(HEAD_BYTES + 1) ~= rest then
         wrong_body = wrong_body + 1
      else
         seen_heads[head] = true
      end
   end
   if answered == total then
      finish()
   end
end

local function json_number_map(t)
   local parts = {}
   for k, v in pairs(t) do
      parts[#parts + 1] = string.format('"%s": %d', tostring(k), v)
   end
   return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
   local sent_all, answered_all, bad_all, wrong_all, wrong_body_all, expected = 0, 0, 0, 0, 0, 0
   local first, last = math.huge, 0
   local statuses_all = {}
   for _, thread in ipairs(threads) do
      expected = expected + thread:get("total")
      sent_all = sent_all + thread:get("sent")
      answered_all = answered_all + thread:get("answered")
      bad_all = bad_all + thread:get("bad")
      wrong_all = wrong_all + thread:get("wrong_length")
      wrong_body_all = wrong_body_all + thread:get("wrong_body")
      local f, l = thread:get("first_us"), thread:get("last_us")
      if f > 0 and f < first then first = f end
      if l > last then last = l end
      for k, v in pairs(thread:get("statuses")) do
         statuses_all[k] = (statuses_all[k] or 0) + v
      end
   end
   -- A thread that never finished (lost answers, -d reached) leaves wrk's own duration.
   local duration = summary.duration
   if answered_all == expected and last > first then
      duration = last - first
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"expected": %d, "sent": %d, "answered": %d, "non_2xx": %d, ' ..
      '"wrong_length": %d, "wrong_body": %d, "statuses": %s, "duration_us": %d, "wrk_duration_us": %d, ' ..
      '"requests": %d, "bytes_read": %d, "errors": {"connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, ' ..
      '"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
      expected, sent_all, answered_all, bad_all, wrong_all, wrong_body_all, json_number_map(statuses_all),
      duration, summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max))
end
