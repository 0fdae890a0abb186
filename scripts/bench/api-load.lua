-- wrk script of scripts/bench-api.sh: GETs one kind of API request with random ids or
-- filters over the seeded tasks (scripts/bench/api-seed.sql), each connection one client
-- that waits BENCH_THINK_MS (uniformly 0..2x, mean BENCH_THINK_MS) between its requests,
-- and prints one RESULT line with the latency percentiles and the non-2xx answers.
-- Environment: BENCH_KIND (healthz, task, list-repo, list-state, list-repo-state,
-- list-creator, list-template, list-day, list-search, list-mixed, list-all), BENCH_TASKS
-- (ids are 1..BENCH_TASKS), BENCH_THINK_MS (0: send as fast as answered), BENCH_REQUESTS
-- (each thread stops after this many answers; 0: no limit, the duration bounds the run).
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
  table.insert(threads, thread)
end

local states = { "succeeded", "failed", "cancelled", "timed_out" }
local templates = { "npm-upgrade", "lint-fix", "add-tests", "docs", "bump-node" }
-- Search words from the seeded instructions (each in a tenth of them), a repository
-- name, and one task's ticket number (one match).
local words = { "lodash", "flaky", "undici", "typescript", "eslint", "snapshot", "repo-17" }

function init(args)
  kind = os.getenv("BENCH_KIND") or "task"
  tasks = tonumber(os.getenv("BENCH_TASKS") or "100000")
  think = tonumber(os.getenv("BENCH_THINK_MS") or "0")
  limit = tonumber(os.getenv("BENCH_REQUESTS") or "0")
  math.randomseed(os.time() * 100 + thread_id)
  answered = 0
  non2xx = 0
end

local function repo()
  local r = math.random(0, 199)
  return string.format("org-%d%%2Frepo-%d", r % 8, r)
end

local function day()
  -- One day among the seeded 28.
  local since = os.time() - math.random(2, 28) * 86400
  return string.format("since=%s&until=%s", os.date("!%Y-%m-%dT%H:%M:%SZ", since),
    os.date("!%Y-%m-%dT%H:%M:%SZ", since + 86400))
end

local function search()
  if math.random(1, 4) == 1 then
    return "q=ticket%20" .. math.random(1, tasks) .. "%29"
  end
  return "q=" .. words[math.random(#words)]
end

local filters = {
  ["list-all"] = function() return "" end,
  ["list-repo"] = function() return "repo=" .. repo() end,
  ["list-state"] = function() return "state=" .. states[math.random(#states)] end,
  ["list-repo-state"] = function()
    return "repo=" .. repo() .. "&state=" .. states[math.random(#states)]
  end,
  ["list-creator"] = function() return "creator=user-" .. math.random(1, 500) end,
  ["list-template"] = function() return "template=" .. templates[math.random(#templates)] end,
  ["list-day"] = day,
  ["list-search"] = search,
}
local mixed = { "list-repo", "list-state", "list-repo-state", "list-creator", "list-template",
  "list-day", "list-search" }

function request()
  if kind == "healthz" then
    return wrk.format("GET", "/healthz")
  elseif kind == "task" then
    return wrk.format("GET", "/api/v1/tasks/" .. math.random(1, tasks))
  end
  local k = kind
  if k == "list-mixed" then k = mixed[math.random(#mixed)] end
  return wrk.format("GET", "/api/v1/tasks?" .. filters[k]())
end

function delay()
  if think <= 0 then return 0 end
  return math.random(0, 2 * think)
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status >= 300 then
    non2xx = non2xx + 1
    if non2xx <= 3 then io.stderr:write("non-2xx ", status, ": ", body:sub(1, 200), "\n") end
  end
  if limit > 0 and answered >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.2f non2xx=%d errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad,
    e.connect + e.read + e.write + e.timeout))
end
