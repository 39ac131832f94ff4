-- scripts/bench.lua: the wrk script of `make bench` (scripts/bench); wrk 4.1 with LuaJIT.
--
--   BENCH_DIR=DIR BENCH_TOKEN=JWT wrk -t T -c C -d 20s --latency -s scripts/bench.lua http://127.0.0.1:PORT/
--
-- DIR holds push-0.txt .. push-(T-1).txt from `scripts/bench-gen pushes --threads T`. wrk thread i
-- loads only DIR/push-i.txt (one HTTP body per line) and sends its lines in order, cycling when it
-- reaches the end, as `POST /` with `Authorization: Bearer $BENCH_TOKEN` (one token for all
-- pushes, as Pub/Sub reuses its token). There is no response() callback (it would slow wrk down):
-- wrk counts non-2xx/3xx answers and socket errors itself.
--
-- done() writes $BENCH_RESULT (default DIR/wrk-result.txt), `key value` lines for scripts/bench
-- and scripts/bench-check:
--   thread I LINES GENERATED   thread I has LINES lines and built GENERATED requests: its lines
--                              0, 1, ... (GENERATED-1) mod LINES, in this order
--   requests N, duration_us N, non2xx N, err_connect/read/write/timeout N, bytes N,
--   latency_p50_us / p90 / p99 / p999 / max / mean / stdev
-- wrk builds one request of thread 0 before starting (to check the script's requests): that
-- one is not sent, so thread 0 builds its first request twice without moving on (line 0 is
-- never skipped; at worst it goes out twice, which the worker treats as a redelivery).

local threads = {}
local next_id = 0

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
   primed = (id ~= 0)
   head = "POST / HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port ..
          "\r\nContent-Type: application/json\r\nUser-Agent: CloudPubSub-Google" ..
          "\r\nAuthorization: Bearer " .. token .. "\r\nContent-Length: "
end

function request()
   local body = bodies[(generated % nlines) + 1]
   if primed then
      generated = generated + 1
   else
      primed = true -- wrk's check of the script: this request is not sent
   end
   return head .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
   local path = os.getenv("BENCH_RESULT") or (os.getenv("BENCH_DIR") .. "/wrk-result.txt")
   local out = assert(io.open(path, "w"))
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
   out:close()
end
