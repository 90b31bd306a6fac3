-- bench/post.lua: the request every HTTP window of bench/run sends.
--
-- POST of the ~200-byte JSON body in $BENCH_BODY_FILE (bench/body.json, a
-- push-event-like webhook) with Content-Type: application/json, over wrk's persistent (keep-alive)
-- connections.  Environment:
--   BENCH_API_KEY=KEY    sends St2-Api-Key: KEY (bwcd windows)
--   BENCH_CONN_CLOSE=1   sends Connection: close (one TCP connection per request)
--   BENCH_COUNT_STATUS=1 counts every answer by status (202, 503 and whether
--                        the 503 carried Retry-After, anything else): the
--                        overload check needs to know how many requests were
--                        *accepted*, not just answered (bwcd windows).
-- wrk keeps one Lua state per thread, so the counters are globals there,
-- read back in done().  Without counting, s202 is every answer that was not
-- a non-2xx error (and sother the non-2xx ones).
-- done() prints one line that bench.py parses:
--   WRKRESULT reqs=.. dur_us=.. p50_us=.. p90_us=.. p99_us=.. max_us=.. connect=.. read=..
--             write=.. status=.. timeout=.. s202=.. s503=.. s503_retry_after=.. sother=.. body_bytes=..

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then
  wrk.headers["St2-Api-Key"] = key
end
if os.getenv("BENCH_CONN_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end
local bodyFile = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set")
local f = assert(io.open(bodyFile, "rb"))
wrk.body = f:read("*a")
f:close()

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  s202, s503, s503ra, sother = 0, 0, 0, 0
end

-- Defined only when asked for: a response() callback makes wrk parse every
-- answer's headers into a Lua table, which costs the load CPU about as much
-- as the rest of wrk's work (webhook's ~16k req/s would then be client-bound).
if os.getenv("BENCH_COUNT_STATUS") == "1" then
  function response(status, headers, body)
    if status == 202 then
      s202 = s202 + 1
    elseif status == 503 then
      s503 = s503 + 1
      if headers["Retry-After"] or headers["retry-after"] then
        s503ra = s503ra + 1
      end
    else
      sother = sother + 1
    end
  end
end

function done(summary, latency, requests)
  local a, b, c, d = 0, 0, 0, 0
  if os.getenv("BENCH_COUNT_STATUS") ~= "1" then
    -- not counted: every answer that was not an error was a 2xx
    a = summary.requests - summary.errors.status
    d = summary.errors.status
  end
  for _, t in ipairs(threads) do
    a = a + (t:get("s202") or 0)
    b = b + (t:get("s503") or 0)
    c = c + (t:get("s503ra") or 0)
    d = d + (t:get("sother") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT reqs=%d dur_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d s202=%d s503=%d s503_retry_after=%d sother=%d body_bytes=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    a, b, c, d, #wrk.body))
end
