-- wrk script: POSTs one signed issue_comment delivery with a unique X-GitHub-Delivery per
-- request, and counts the acknowledged (2xx) answers so the caller can check storage.
-- Environment: BENCH_BODY_FILE (payload), BENCH_SIGNATURE (sha256=...).
-- BENCH_DUPLICATES=N (concurrent duplicates): each thread sends every delivery id N times
-- in a row (on different connections, so at once), and every thread sends the same ids,
-- so each id arrives from N x threads senders at about the same time.
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
  duplicates = tonumber(os.getenv("BENCH_DUPLICATES") or "0")
  sent = 0
  acknowledged = 0
  refused = 0
end

function delivery_id()
  if duplicates > 0 then
    return string.format("%s-dup-%d", run_id, math.floor((sent - 1) / duplicates))
  end
  return string.format("%s-%d-%d", run_id, thread_id, sent)
end

function request()
  sent = sent + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "issue_comment",
    ["X-GitHub-Delivery"] = delivery_id(),
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
  local acked, bad, most, total = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    acked = acked + t:get("acknowledged")
    bad = bad + t:get("refused")
    most = math.max(most, t:get("sent"))
    total = total + t:get("sent")
  end
  -- Distinct delivery ids sent (with duplicates, every thread sent the ids 0..its last).
  local dup = tonumber(os.getenv("BENCH_DUPLICATES") or "0")
  local ids = total
  if dup > 0 then ids = math.floor((most - 1) / dup) + 1 end
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f acknowledged=%d refused=%d socket_errors=%d ids=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    acked, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    ids))
end
