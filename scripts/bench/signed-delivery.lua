-- wrk script: POSTs one signed issue_comment delivery with a unique X-GitHub-Delivery per
-- request, and counts the acknowledged (2xx) answers so the caller can check storage.
-- Environment: BENCH_BODY_FILE (payload), BENCH_SIGNATURE (sha256=...).
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
  body = f:read("*a")
  f:close()
  signature = os.getenv("BENCH_SIGNATURE")
  run_id = os.getenv("BENCH_RUN_ID") or "run"
  sent = 0
  acknowledged = 0
  refused = 0
end

function request()
  sent = sent + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "issue_comment",
    ["X-GitHub-Delivery"] = string.format("%s-%d-%d", run_id, thread_id, sent),
    ["X-Hub-Signature-256"] = signature,
  }
  return wrk.format("POST", "/webhook", headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    acknowledged = acknowledged + 1
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local acked, bad = 0, 0
  for _, t in ipairs(threads) do
    acked = acked + t:get("acknowledged")
    bad = bad + t:get("refused")
  end
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f acknowledged=%d refused=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    acked, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
