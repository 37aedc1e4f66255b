-- wrk script: realistic crmOpportunity events (shaped like morph_webhooks.testing.opportunity_event),
-- every request with its own idempotency key.
--
--   wrk -t1 -c16 -d10s -s benchmarks/lua/events.lua 'http://127.0.0.1:8000/webhooks/morph/?token=...' \
--       -- <mode> <nonce> [min_age] [file]
--
-- mode     "new": every request creates a new opportunity.
--          "mixed": 70% new opportunities, 20% updates of opportunities this thread created
--          earlier (newer updatedAt, another stage and amount), 10% exact re-sends of an earlier
--          request (same key and body: the app must answer "duplicate").
--          "resend": only exact re-sends of the requests in <file>, which run.py wrote and
--          already delivered once to the endpoint under test (one request a line: key, connector,
--          owner and body, separated by tabs), taken in turn.
-- nonce    unique per wrk run (run.py draws it), so ids and keys never collide with another run.
-- min_age  updates and re-sends only pick requests sent at least this many requests earlier by
--          the same thread, i.e. long since answered: a re-send is then a duplicate, not a
--          concurrent twin, and an update finds its opportunity already stored.
--
-- done() prints one line "BENCH_JSON {...}" that run.py reads. There is no request quota: a
-- thread that stops itself still leaves wrk waiting out -d, so run.py interrupts wrk (SIGINT, after
-- which wrk reports as usual) once the request log holds enough events.

local CONNECTORS = { "hubspot", "salesforce", "pipedrive" }
local OWNERS = { "tenant_1", "tenant_2" }
local STAGES = {
  "appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin",
  "contractsent", "closedwon", "closedlost",
}
local CURRENCIES = { "EUR", "USD", "GBP" }
-- 2025-01-01T00:00:00Z. Each request of a thread is one second later than the previous one, so
-- an update is always newer than the create it follows.
local EPOCH = 1735689600
local RING = 4096

local BODY = '{"event":"crmOpportunity::%s","data":{"object":"resource","model":"crmOpportunity",'
  .. '"id":"%s","fields":{"name":"%s","amount":%d,"currency":"%s",'
  .. '"stage":{"object":"resourceRef","model":"crmStage","id":"%s"},'
  .. '"pipeline":{"object":"resourceRef","model":"crmPipeline","id":"pipeline_sales"},'
  .. '"owner":{"object":"resourceRef","model":"genericUser","id":"user_%d"},'
  .. '"contacts":[{"object":"resourceRef","model":"genericContact","id":"contact_%d"}],'
  .. '"companies":[{"object":"resourceRef","model":"genericCompany","id":"company_%d"}],'
  .. '"engagements":[]},"createdAt":"%s","updatedAt":"%s","rawResource":null,"warnings":[]}}'

-- Setup and done run in their own Lua state: these two only live there.
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local function pick(list)
  return list[math.random(#list)]
end

local function timestamp(seconds)
  return os.date("!%Y-%m-%dT%H:%M:%S", EPOCH + seconds) .. string.format(".%03dZ", math.random(0, 999))
end

local function ring_put(ring, count, value)
  ring[(count - 1) % RING + 1] = value
end

local function ring_pick(ring, count)
  local age = math.random(min_age, math.min(count, RING))
  return ring[(count - age) % RING + 1]
end

local function event(action, opp, updated_at)
  local body = string.format(
    BODY, action, opp.id, "Deal " .. opp.id, math.random(1000, 500000), opp.currency, pick(STAGES),
    math.random(1, 50), math.random(1, 5000), math.random(1, 2000), opp.created_at, updated_at
  )
  -- Unique by construction (nonce, thread, counter); the random part gives it a realistic length.
  local key = string.format("%s-%d-%d-%08x%08x", nonce, tid, counter,
    math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  local headers = {
    ["Content-Type"] = "application/json",
    ["x-conector-id"] = opp.connector,
    ["x-owner-id"] = opp.owner,
    ["x-idempotency-key"] = key,
  }
  return wrk.format("POST", nil, headers, body)
end

function init(args)
  mode = args[1] or "new"
  nonce = args[2] or tostring(os.time())
  min_age = tonumber(args[3] or "64") or 64
  if mode == "resend" then
    prepared = {}
    for line in io.lines(args[4]) do
      local key, connector, owner, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      table.insert(prepared, wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["x-conector-id"] = connector,
        ["x-owner-id"] = owner,
        ["x-idempotency-key"] = key,
      }, body))
    end
  end
  -- LuaJIT's math.random, seeded per thread so that threads draw different payloads.
  math.randomseed(os.time() * 1000 + tid * 7919)
  counter = 0
  created, updates, resends = 0, 0, 0
  opportunities, sent = {}, {}
end

function request()
  counter = counter + 1
  if mode == "resend" then
    resends = resends + 1
    -- Threads start at different places in the list, so that they do not send the same key at once.
    return prepared[(counter + tid * 997) % #prepared + 1]
  end
  local roll = math.random(100)
  local req
  if mode == "mixed" and roll > 90 and counter > min_age then
    resends = resends + 1
    req = ring_pick(sent, counter - 1)
  elseif mode == "mixed" and roll > 70 and created >= min_age then
    updates = updates + 1
    req = event("updated", ring_pick(opportunities, created), timestamp(counter))
  else
    created = created + 1
    local now = timestamp(counter)
    local opp = {
      id = string.format("opp-%s-%d-%d", nonce, tid, counter),
      connector = pick(CONNECTORS),
      owner = pick(OWNERS),
      currency = pick(CURRENCIES),
      created_at = now,
    }
    ring_put(opportunities, created, opp)
    req = event("created", opp, now)
  end
  -- Any request sent may be re-sent later; its ring slot is its request number.
  ring_put(sent, counter, req)
  return req
end

function done(summary, latency, requests)
  local created_total, updates_total, resends_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    created_total = created_total + thread:get("created")
    updates_total = updates_total + thread:get("updates")
    resends_total = resends_total + thread:get("resends")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,'
      .. '"max_us":%.0f,"mean_us":%.1f,"generated":{"new":%d,"updates":%d,"resends":%d},'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, created_total, updates_total, resends_total,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout
  ))
end
