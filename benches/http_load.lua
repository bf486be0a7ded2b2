-- wrk script of benches/http_load.sh: POST /v1/events, one event per request, over keep-alive.
--
-- Each request appends one event of type `FundsDeposited` to one of 1000 aggregates
-- (`account-0000` … `account-0999`, taken in turn, each thread starting at its own offset) with
-- the same 256-byte JSON `data` (from HTTP_LOAD_DATA, which http_load.sh also gives Redis as
-- the XADD field value). No `expected_version`, so concurrent appends never conflict.
--
-- The `response` hook counts 2xx and non-2xx answers per thread; `done` prints one line
--   HTTP_LOAD requests=… ok2xx=… non2xx=… duration_us=… p50_us=… p99_us=… …
-- that http_load.sh parses, plus the first non-2xx answer seen, if any.

local AGGREGATES = 1000

local data = os.getenv("HTTP_LOAD_DATA")
if data == nil or data == "" then
  local head = '{"account":"acct-0001","amount":1999,"currency":"EUR","memo":"'
  data = head .. string.rep("x", 256 - #head - 2) .. '"}'
end

local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("id", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local requests = {}
local cursor = 0
ok2xx = 0
non2xx = 0
first_bad = ""

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for i = 0, AGGREGATES - 1 do
    local body = string.format('{"type":"FundsDeposited","aggregate_id":"account-%04d","data":%s}', i, data)
    requests[i] = wrk.format("POST", "/v1/events", headers, body)
  end
  -- Threads start half the aggregate range apart.
  cursor = (id * 500) % AGGREGATES
end

function request()
  local r = requests[cursor]
  cursor = (cursor + 1) % AGGREGATES
  return r
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
  else
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

function done(summary, latency, reqs)
  local ok, bad, sample = 0, 0, ""
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("ok2xx")
    bad = bad + thread:get("non2xx")
    local fb = thread:get("first_bad")
    if sample == "" and fb ~= nil and fb ~= "" then
      sample = fb
    end
  end
  local e = summary.errors
  io.write(string.format(
    "HTTP_LOAD requests=%d ok2xx=%d non2xx=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, ok, bad, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
  if sample ~= "" then
    io.write("HTTP_LOAD_FIRST_NON_2XX " .. sample:gsub("\n", " ") .. "\n")
  end
end
