#!/usr/bin/env bash
# JSON API read benchmark: `GET /api/v1/tasks/{id}` and filtered `GET /api/v1/tasks` pages
# against `bg-agent serve` (release build) with TASKS tasks and LOG_LINES log lines in a
# database of its own, CLIENTS concurrent clients (wrk connections) on loopback, bounded
# in time and requests; the baseline in the same run is `GET /healthz`. Also the server's
# resident memory: idle after start (VmRSS), and its peak (VmHWM) and current RSS after
# the load. Prints a summary table. Not a test: it checks nothing but that every answer
# was a 2xx (exit status 1 otherwise).
#
# Usage: scripts/bench-api.sh
#   TASKS=100000 LOG_LINES=1000000   the fixture (scripts/bench/api-seed.sql)
#   CLIENTS=50 THREADS=2             wrk connections (each one client) and threads
#   DURATION=10s WARMUP=3s           per measured kind (and its warm-up)
#   REQUESTS=0                       stop a kind after this many answers per thread (0: none)
#   THINK_MS=0                       each client's mean pause between requests (0: none,
#                                    every client sends its next request once answered)
#   KINDS="healthz task list-..."    what to measure (see scripts/bench/api-load.lua)
#   BG_AGENT_DB_MAX_CONNECTIONS      the server's pool (default: its own default, 16)
#   BG_AGENT_BIN, BG_AGENT_DEV_BIN   release binaries already built (else built here)
#   AFTER_SEED=file.sql              run once seeded (e.g. drop an index to compare)
# Needs: wrk (apt-get install wrk), psql, PostgreSQL at DATABASE_URL (a database of its own
# is created there and dropped afterwards). The server runs with `auth = none` (loopback),
# so no request asks GitHub anything; GitHub is the fake one (`bg-agent-dev github-fake`),
# which the server only talks to at start.
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS=${TASKS:-100000}
LOG_LINES=${LOG_LINES:-1000000}
CLIENTS=${CLIENTS:-50}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
REQUESTS=${REQUESTS:-0}
THINK_MS=${THINK_MS:-0}
KINDS=${KINDS:-"healthz task list-repo list-repo-state list-state list-creator list-template list-day list-search list-mixed list-all"}
PORT=${PORT:-39320}
GH_PORT=${GH_PORT:-39321}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is missing" >&2; exit 1; }
[[ -n "${DATABASE_URL:-}" ]] || { echo "set DATABASE_URL (a PostgreSQL server to create the bench database on)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "${BENCH_DB:-}" && -z "${KEEP_DB:-}" ]]; then
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building"
if [[ -z "${BG_AGENT_BIN:-}" || -z "${BG_AGENT_DEV_BIN:-}" ]]; then
  cargo build --release --quiet -p bg-agent -p bg-agent-dev
  BG_AGENT_BIN=${BG_AGENT_BIN:-${CARGO_TARGET_DIR:-target}/release/bg-agent}
  BG_AGENT_DEV_BIN=${BG_AGENT_DEV_BIN:-${CARGO_TARGET_DIR:-target}/release/bg-agent-dev}
fi
sync

BENCH_DB=bg_agent_api_bench_$$
psql "$DATABASE_URL" -qc "CREATE DATABASE $BENCH_DB" >/dev/null
DB_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$DATABASE_URL" "$BENCH_DB")

echo "== seeding $TASKS tasks, $LOG_LINES log lines"
DATABASE_URL=$DB_URL "$BG_AGENT_BIN" migrate > "$work/migrate.log" 2>&1 \
  || { cat "$work/migrate.log" >&2; exit 1; }
start=$(date +%s.%N)
psql "$DB_URL" -q -v tasks="$TASKS" -v log_lines="$LOG_LINES" -f scripts/bench/api-seed.sql
# AFTER_SEED: SQL run once seeded, e.g. to compare without an index
# (AFTER_SEED=<(echo 'DROP INDEX tasks_list_state_idx')).
[[ -n "${AFTER_SEED:-}" ]] && psql "$DB_URL" -q -v ON_ERROR_STOP=1 -f "$AFTER_SEED"
seeded=$(psql "$DB_URL" -Atc "SELECT (SELECT count(*) FROM tasks) || ' tasks, ' ||
  (SELECT count(*) FROM task_logs) || ' log lines, ' || (SELECT count(*) FROM task_events) ||
  ' events; database ' || pg_size_pretty(pg_database_size(current_database()))")
awk -v s="$start" -v e="$(date +%s.%N)" -v what="$seeded" 'BEGIN { printf "seeded in %.1f s: %s\n", e - s, what }'

wait_http() { # url log
  for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 did not come up; its log:" >&2; tail -20 "$2" >&2; return 1
}

"$BG_AGENT_DEV_BIN" github-fake --listen "127.0.0.1:$GH_PORT" > "$work/github.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$GH_PORT/_sim/state" "$work/github.log"
# It prints the App's id once its world is seeded, just after it starts listening.
for _ in $(seq 1 100); do grep -q ' App [0-9]' "$work/github.log" && break; sleep 0.1; done
app_id=$(sed -nE 's/.*App ([0-9]+) .*/\1/p' "$work/github.log" | head -1)
[[ -n "$app_id" ]] || { echo "the fake GitHub printed no App id:" >&2; cat "$work/github.log" >&2; exit 1; }

env DATABASE_URL="$DB_URL" BG_AGENT_LISTEN="127.0.0.1:$PORT" BG_AGENT_AUTH=none \
  GITHUB_APP_ID="$app_id" GITHUB_PRIVATE_KEY_PATH=crates/github-fake/dev-app-private-key.pem \
  GITHUB_API_URL="http://127.0.0.1:$GH_PORT" GITHUB_WEBHOOK_SECRET=bench-secret \
  RUST_LOG=${RUST_LOG:-warn} "$BG_AGENT_BIN" serve > "$work/bg-agent.log" 2>&1 &
server=$!
pids+=($server)
wait_http "http://127.0.0.1:$PORT/readyz" "$work/bg-agent.log"
curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/v1/tasks/1" \
  || { echo "GET /api/v1/tasks/1 failed:" >&2; curl -si "http://127.0.0.1:$PORT/api/v1/tasks/1" >&2
       tail -20 "$work/bg-agent.log" >&2; exit 1; }

kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$server/status"; }
# Idle: started, ready, one request served, then left alone (background loops only).
sleep 5
idle_rss=$(kb VmRSS)

run() { # kind duration
  BENCH_KIND=$1 BENCH_TASKS=$TASKS BENCH_THINK_MS=$THINK_MS BENCH_REQUESTS=$REQUESTS \
    wrk -t"$THREADS" -c"$CLIENTS" -d"$2" --timeout 5s -s scripts/bench/api-load.lua \
    "http://127.0.0.1:$PORT" 2>"$work/wrk.err" | grep '^RESULT' || { cat "$work/wrk.err" >&2; return 1; }
}

field() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$2"; }
fail=0
rows=()
for kind in $KINDS; do
  run "$kind" "$WARMUP" >/dev/null
  line=$(run "$kind" "$DURATION")
  rows+=("$(printf "%-16s %9.0f %8.2f %8.2f %8.2f %9.2f %7d" "$kind" \
    "$(field rps "$line")" "$(field p50_ms "$line")" "$(field p95_ms "$line")" \
    "$(field p99_ms "$line")" "$(field max_ms "$line")" \
    "$(( $(field non2xx "$line") + $(field errors "$line") ))")")
  if (( $(field non2xx "$line") + $(field errors "$line") > 0 )); then
    echo "FAIL: $kind: ${line#RESULT }"; fail=1
  fi
done
peak_rss=$(kb VmHWM)
after_rss=$(kb VmRSS)

echo
echo "== result: $seeded; $CLIENTS clients ($THREADS wrk threads), think time ${THINK_MS} ms, $DURATION per kind"
printf "%-16s %9s %8s %8s %8s %9s %7s\n" kind "req/s" "p50 ms" "p95 ms" "p99 ms" "max ms" "errors"
printf "%s\n" "${rows[@]}"
echo
awk -v i="$idle_rss" -v p="$peak_rss" -v a="$after_rss" 'BEGIN {
  printf "server RSS: idle %.1f MB, peak under load %.1f MB (VmHWM), after the load %.1f MB\n", i/1024, p/1024, a/1024 }'
echo "server warnings and errors (first 5):"
grep -E ' (ERROR|WARN) ' "$work/bg-agent.log" | head -5 || true
exit $fail
