-- wrk script: replay pre-signed requests, each exactly once (a signature nonce is single-use).
--
--   wrk -t1 -c32 -d60s -s bench/replay.lua URL -- POOL RECORD_SIZE FIRST COUNT
--
-- POOL holds raw HTTP/1.1 requests of RECORD_SIZE bytes each, back to back (meter_bench.py
-- writes it); records FIRST .. FIRST+COUNT-1 are sent. Once COUNT are sent, connections that
-- come free get an empty request (wrk then writes nothing and leaves them idle), so the server
-- sees exactly COUNT requests and the ledger can be checked against the 200s counted here.
-- When the COUNT-th response is in, the thread stops and wakes wrk's main thread, which would
-- otherwise sleep out the whole -d. Time is taken from the first request to the last response
-- (LuaJIT FFI, CLOCK_MONOTONIC), so wrk's start-up (reading POOL) is not in it.
-- Needs -t1: the counters are per thread.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } replay_timespec;
int clock_gettime(int clk_id, replay_timespec *tp);
int getpid(void);
int tgkill(int tgid, int tid, int sig);
]])
local CLOCK_MONOTONIC, SIGINT = 1, 2
local ts = ffi.new("replay_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
local pool, size, first, count

-- Globals, so done() (in wrk's main Lua state) can read them with thread:get().
sent, ok, bad, started, finished = 0, 0, 0, 0, 0
statuses = ""

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  pool = f:read("*a")
  f:close()
  size, first, count = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  assert(#pool >= (first + count) * size, "the request pool is smaller than FIRST + COUNT")
end

local verified = false

function request()
  if not verified then
    -- wrk calls request() once before connecting, to count the requests it returns
    -- (pipelining): that one is never sent, so it must not use up a record.
    verified = true
    return pool:sub(first * size + 1, (first + 1) * size)
  end
  if sent >= count then
    return ""
  end
  if sent == 0 then
    started = now()
  end
  local at = (first + sent) * size
  sent = sent + 1
  return pool:sub(at + 1, at + size)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 5 then
      statuses = statuses .. " " .. status
    end
  end
  if ok + bad == count then
    finished = now()
    wrk.thread:stop()
    local pid = ffi.C.getpid()
    ffi.C.tgkill(pid, pid, SIGINT) -- the main thread's id is the process id
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  io.write(string.format(
    'REPLAY {"sent": %d, "ok": %d, "bad": %d, "seconds": %.6f, "statuses": "%s", '
      .. '"p50_ms": %.3f, "p99_ms": %.3f, "socket_errors": %d}\n',
    t:get("sent"), t:get("ok"), t:get("bad"), t:get("finished") - t:get("started"),
    t:get("statuses"), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write
  ))
end
