-- scripts/bench.lua: the wrk script of `make bench` (scripts/bench); wrk 4.1 with LuaJIT.
--
--   BENCH_DIR=DIR BENCH_TOKEN=JWT wrk -t T -c C -d 20s --latency -s scripts/bench.lua http://127.0.0.1:PORT/
--
-- DIR holds push-0.txt .. push-(N-1).txt from `scripts/bench-gen pushes --threads N`. wrk thread i
-- (numbered from $BENCH_THREAD_BASE, default 0) loads only DIR/push-i.txt (one HTTP body per line)
-- and sends its lines in order, cycling when it reaches the end, as `POST /` with
-- `Authorization: Bearer $BENCH_TOKEN` (one token for all pushes, as Pub/Sub reuses its token).
-- Two wrk processes can share one data set: `-t 1` with BENCH_THREAD_BASE=0 and `-t 1` with
-- BENCH_THREAD_BASE=1 send the two halves of a 2-thread data set. There is no response()
-- callback (it would slow wrk down): wrk counts non-2xx/3xx answers and socket errors itself.
-- With BENCH_LOAD_THREADS=T (wrk's -t), each thread's first request waits until all T threads have
-- loaded their pushes ($BENCH_RESULT.loaded, made by the last and removed by done(): scripts/bench
-- starts its measurements when it appears): wrk starts a thread as soon as it has loaded its own
-- file, and its clock only once all have.
--
-- Paced (BENCH_THREAD_RATE=R, pushes per second per wrk thread; unset or 0: closed loop): each
-- thread gives its requests send times R apart (t0, t0 + 1/R, ...; t0 its first request), and a
-- connection that is free waits (wrk's delay(), whole milliseconds) for the next unclaimed send
-- time. So the rate is fixed whatever the latency, as long as a connection is free: a send time
-- that passed before any connection was free goes out at once and is counted as behind schedule
-- (then the latency wrk reports misses the wait: see late_* below). Latency is measured by wrk
-- from the moment the request is written, as in closed loop.
--
-- done() writes $BENCH_RESULT (default DIR/wrk-result.txt), `key value` lines for scripts/bench
-- and scripts/bench-check:
--   thread I LINES GENERATED   thread I has LINES lines and built GENERATED requests: its lines
--                              0, 1, ... (GENERATED-1) mod LINES, in this order
--   requests N, duration_us N, non2xx N, err_connect/read/write/timeout N, bytes N,
--   latency_p50_us / p90 / p99 / p999 / max / mean / stdev
--   paced only: paced_rate (R x threads), late_sends (sends more than 1 ms behind their time),
--   late_max_us (the most behind), late_first_ms / late_last_ms (when the first and the last of
--   them went out, from the thread's first send; -1: none)
-- wrk builds one request of its first thread before starting (to check the script's requests):
-- that one is not sent, so that thread builds its first request twice without moving on (line 0
-- is never skipped; at worst it goes out twice, which the worker treats as a redelivery).

local threads = {}
local base_id = tonumber(os.getenv("BENCH_THREAD_BASE") or "0") or error("bench.lua: BENCH_THREAD_BASE is not a number")
local next_id = base_id
local thread_rate = tonumber(os.getenv("BENCH_THREAD_RATE") or "0") or error("bench.lua: BENCH_THREAD_RATE is not a number")
local threads_here = tonumber(os.getenv("BENCH_LOAD_THREADS") or "0") or error("bench.lua: BENCH_LOAD_THREADS is not a number")
local result_path = os.getenv("BENCH_RESULT") or ((os.getenv("BENCH_DIR") or ".") .. "/wrk-result.txt")
local loaded_path = result_path .. ".loaded"

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } pw_bench_timespec;
   int clock_gettime(int clock, pw_bench_timespec *ts);
   int usleep(unsigned int usec);
]]

-- Thread state: the first request waits until the last thread has loaded its pushes (wrk starts
-- each thread once it has loaded its own, and its clock once all have), so all send from one moment.
local function wait_all_loaded()
   started = true
   if threads_here < 2 or id == base_id + threads_here - 1 then return end
   for _ = 1, 120000 do
      local f = io.open(loaded_path, "r")
      if f then f:close(); return end
      ffi.C.usleep(500)
   end
   error("bench.lua: the other wrk threads did not load their pushes within 60 s")
end

-- Main Lua state: called once per thread before its init(); gives each thread its id.
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- Thread state: load this thread's pushes and build the constant part of the request.
function init(args)
   local dir = os.getenv("BENCH_DIR") or error("bench.lua: BENCH_DIR is not set")
   local token = os.getenv("BENCH_TOKEN") or error("bench.lua: BENCH_TOKEN is not set")
   local path = dir .. "/push-" .. id .. ".txt"
   local f = io.open(path, "r") or error("bench.lua: cannot open " .. path)
   bodies = {}
   local n = 0
   for line in f:lines() do
      n = n + 1
      bodies[n] = line
   end
   f:close()
   if n == 0 then error("bench.lua: " .. path .. " is empty") end
   nlines = n
   generated = 0
   primed = (id ~= base_id)
   late_sends, late_max_us, late_first_ms, late_last_ms = 0, 0, -1, -1
   started = false
   if threads_here >= 1 and id == base_id + threads_here - 1 then
      local m = assert(io.open(loaded_path, "w"))
      m:close()
   end
   head = "POST / HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port ..
          "\r\nContent-Type: application/json\r\nUser-Agent: CloudPubSub-Google" ..
          "\r\nAuthorization: Bearer " .. token .. "\r\nContent-Length: "
end

function request()
   local body = bodies[(generated % nlines) + 1]
   if primed then
      if not started then wait_all_loaded() end
      generated = generated + 1
   else
      primed = true -- wrk's check of the script: this request is not sent
   end
   return head .. #body .. "\r\n\r\n" .. body
end

if thread_rate > 0 then
   -- Defined only when pacing: wrk calls delay() before every request once the script has one.
   local ts = ffi.new("pw_bench_timespec")
   local interval_us = 1e6 / thread_rate
   local next_us, first_us = nil, nil
   local function now_us()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
   end

   function delay()
      if not started then wait_all_loaded() end
      local now = now_us()
      next_us = next_us or now
      first_us = first_us or now
      local at = next_us
      next_us = at + interval_us
      local wait = at - now
      if wait < -1000 then
         late_sends = late_sends + 1
         if -wait > late_max_us then late_max_us = -wait end
         late_last_ms = (now - first_us) / 1000
         if late_first_ms < 0 then late_first_ms = late_last_ms end
      end
      return wait > 0 and math.floor(wait / 1000) or 0
   end
end

function done(summary, latency, requests)
   os.remove(loaded_path)
   local out = assert(io.open(result_path, "w"))
   for _, t in ipairs(threads) do
      out:write(string.format("thread %d %d %d\n", t:get("id"), t:get("nlines"), t:get("generated")))
   end
   local e = summary.errors
   out:write(string.format("requests %d\nduration_us %d\nbytes %d\n", summary.requests, summary.duration, summary.bytes))
   out:write(string.format("non2xx %d\nerr_connect %d\nerr_read %d\nerr_write %d\nerr_timeout %d\n",
                           e.status, e.connect, e.read, e.write, e.timeout))
   out:write(string.format("latency_p50_us %d\nlatency_p90_us %d\nlatency_p99_us %d\nlatency_p999_us %d\n",
                           latency:percentile(50), latency:percentile(90), latency:percentile(99),
                           latency:percentile(99.9)))
   out:write(string.format("latency_max_us %d\nlatency_mean_us %.1f\nlatency_stdev_us %.1f\n",
                           latency.max, latency.mean, latency.stdev))
   if thread_rate > 0 then
      local n, m, first, last = 0, 0, -1, -1
      for _, t in ipairs(threads) do
         n = n + t:get("late_sends")
         m = math.max(m, t:get("late_max_us"))
         local f = t:get("late_first_ms")
         if f >= 0 and (first < 0 or f < first) then first = f end
         last = math.max(last, t:get("late_last_ms"))
      end
      out:write(string.format("paced_rate %.1f\nlate_sends %d\nlate_max_us %d\nlate_first_ms %d\nlate_last_ms %d\n",
                              thread_rate * #threads, n, m, first, last))
   end
   out:close()
end
