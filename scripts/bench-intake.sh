#!/usr/bin/env bash
# Webhook intake benchmark: bg-agent (every delivery durably stored in PostgreSQL) against a
# minimal Probot app (verifies and acknowledges, stores nothing), same machine, same load,
# loopback only, bounded in time. Checks afterwards that every delivery bg-agent
# acknowledged is in PostgreSQL, and that bg-agent served more requests per second at a
# lower p99. Then a concurrent-duplicates run against bg-agent alone: every delivery id sent
# by DUPLICATES x THREADS senders at once (a redelivery racing its original, a retrying
# proxy) must get no non-2xx answer and be stored once. Exit status 1 if a check fails.
#
# Usage: scripts/bench-intake.sh   (DURATION=10s CONNECTIONS=32 THREADS=2 ROUNDS=3 DUPLICATES=4)
# Needs: wrk (apt-get install wrk), node + npm, PostgreSQL at DATABASE_URL or its server
# programs installed (an embedded cluster is used when DATABASE_URL is unset).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
DUPLICATES=${DUPLICATES:-4}
BG_PORT=${BG_PORT:-39310}
PROBOT_PORT=${PROBOT_PORT:-39311}
SECRET=bench-secret
FIXTURE=tests/fixtures/webhooks/issue_comment.created.json

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v node >/dev/null || { echo "node is missing" >&2; exit 1; }

work=$(mktemp -d)
# The embedded cluster runs as the postgres user when we are root: it must reach its data dir.
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "${BENCH_DB:-}" ]]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building"
# BG_AGENT_BIN: a release binary already built (otherwise it is built here).
if [[ -z "${BG_AGENT_BIN:-}" ]]; then
  cargo build --release --quiet -p bg-agent
  BG_AGENT_BIN=${CARGO_TARGET_DIR:-target}/release/bg-agent
fi
(cd scripts/bench/probot-app && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# The build leaves hundreds of MB of dirty pages; written back during a round, they would
# slow every fsync (bg-agent's commits), which is noise from the build, not the server.
sync

# A database of its own, on the given server or on an embedded cluster.
if [[ -n "${DATABASE_URL:-}" ]]; then
  ADMIN_URL=$DATABASE_URL
  BENCH_DB=bg_agent_bench_$$
  psql "$ADMIN_URL" -qc "CREATE DATABASE $BENCH_DB" >/dev/null
  BG_DATABASE_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$ADMIN_URL" "$BENCH_DB")
  count_rows() { psql "$BG_DATABASE_URL" -Atc "SELECT count(*) FROM deliveries WHERE guid LIKE '$1-%'"; }
  export_db=(DATABASE_URL="$BG_DATABASE_URL")
else
  export_db=(BG_AGENT_DATA_DIR="$work/data")
  count_rows() {
    local sock; sock=$(ls -d "$work"/data/postgres/run 2>/dev/null || ls -d /tmp/bg-agent-pg-* | head -1)
    psql -h "$sock" -U bg_agent -d bg_agent -Atc "SELECT count(*) FROM deliveries WHERE guid LIKE '$1-%'"
  }
fi

signature="sha256=$(openssl dgst -sha256 -hmac "$SECRET" < "$FIXTURE" | awk '{print $NF}')"
export BENCH_BODY_FILE=$FIXTURE BENCH_SIGNATURE=$signature

wait_http() { # url
  for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "server at $1 did not come up; its log:" >&2; tail -20 "$work/bg-agent.log" >&2; return 1
}

env "${export_db[@]}" GITHUB_WEBHOOK_SECRET=$SECRET BG_AGENT_LISTEN=127.0.0.1:$BG_PORT RUST_LOG=info \
  "$BG_AGENT_BIN" serve > "$work/bg-agent.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$BG_PORT/readyz"

openssl genrsa 2048 2>/dev/null > "$work/key.pem"
PRIVATE_KEY="$(cat "$work/key.pem")" WEBHOOK_SECRET=$SECRET PORT=$PROBOT_PORT \
  node scripts/bench/probot-app/server.js > "$work/probot.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/probot.log" && break; sleep 0.1; done

run() { # name port run-id duration
  BENCH_RUN_ID=$3 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$4" --timeout 5s \
    -s scripts/bench/signed-delivery.lua "http://127.0.0.1:$2/webhook" | grep '^RESULT'
}

echo "== warm-up ($WARMUP each)"
run bg-agent $BG_PORT warm-bg "$WARMUP" >/dev/null
run probot $PROBOT_PORT warm-probot "$WARMUP" >/dev/null

declare -A rps p99
fail=0
for round in $(seq 1 "$ROUNDS"); do
  for name in probot bg-agent; do
    port=$([[ $name == bg-agent ]] && echo $BG_PORT || echo $PROBOT_PORT)
    id="r$round-$name-$$"
    line=$(run $name $port "$id" "$DURATION")
    echo "round $round $name: ${line#RESULT }"
    r=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line")
    p=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line")
    acked=$(sed -E 's/.*acknowledged=([0-9]+).*/\1/' <<<"$line")
    rps[$name]="${rps[$name]:-} $r"; p99[$name]="${p99[$name]:-} $p"
    if [[ $name == bg-agent ]]; then
      stored=$(count_rows "$id")
      # wrk stops with requests in flight: the server may have stored a few it did not count.
      if (( stored < acked )); then
        echo "  FAIL: $acked acknowledged but only $stored stored"; fail=1
      else
        echo "  stored: $stored rows for $acked acknowledged deliveries"
      fi
    fi
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
bg_rps=$(median <<<"${rps[bg-agent]}"); pb_rps=$(median <<<"${rps[probot]}")
bg_p99=$(median <<<"${p99[bg-agent]}"); pb_p99=$(median <<<"${p99[probot]}")
echo
echo "== result (median of $ROUNDS rounds, $CONNECTIONS connections, $DURATION each)"
printf "%-10s %10s %10s\n" "" "req/s" "p99 ms"
printf "%-10s %10.0f %10.2f\n" bg-agent "$bg_rps" "$bg_p99" probot "$pb_rps" "$pb_p99"
awk -v a="$bg_rps" -v b="$pb_rps" -v c="$bg_p99" -v d="$pb_p99" \
  'BEGIN { printf "ratio: bg-agent/probot throughput %.2fx, p99 %.2fx\n", a/b, c/d }'
if ! awk -v a="$bg_rps" -v b="$pb_rps" -v c="$bg_p99" -v d="$pb_p99" 'BEGIN { exit !(a > b && c < d) }'; then
  echo "FAIL: bg-agent must serve more req/s than Probot at a lower p99"; fail=1
fi
echo
echo "== concurrent duplicates (each id from $DUPLICATES x $THREADS senders at once, $DURATION)"
id="dup-$$"
line=$(BENCH_DUPLICATES=$DUPLICATES run bg-agent $BG_PORT "$id" "$DURATION")
echo "bg-agent: ${line#RESULT }"
refused=$(sed -E 's/.*refused=([0-9]+).*/\1/' <<<"$line")
ids=$(sed -E 's/.*ids=([0-9]+).*/\1/' <<<"$line")
stored=$(count_rows "$id")
# Requests still in flight when wrk stops (at most one per connection) may leave the last
# ids unsent; every other id must be there, once (the GUID is the primary key).
if (( refused > 0 )); then
  echo "  FAIL: $refused non-2xx answers to concurrent duplicates"; fail=1
elif (( stored > ids || stored < ids - CONNECTIONS )); then
  echo "  FAIL: $stored rows stored for $ids distinct ids"; fail=1
else
  echo "  0 non-2xx; stored: $stored rows for $ids distinct ids"
fi
grep -E ' (ERROR|WARN) ' "$work/bg-agent.log" | grep -v 'development secret' | head -5 || true
exit $fail
