#!/usr/bin/env bash
# Webhook flood: what a flood of large junk bodies (no valid signature) makes the server hold.
# A release-built bg-agent on loopback gets N concurrent POST /webhook of SIZE bytes each,
# sent slowly enough that they are all in flight together, while its RSS is sampled
# (VmRSS; VmHWM is the peak the kernel saw). Twice in one run: with the default limit on
# bodies received before the signature is checked (BG_AGENT_WEBHOOK_CONCURRENCY), and with
# the limit effectively off (a limit above N). After each flood a signed delivery must still
# be acknowledged. Bounded: N requests per round, each with a deadline.
#
# Usage: scripts/bench-webhook-flood.sh     (N=64 SIZE=26214400 RATE=8388608 bytes/s/connection;
#        NO_BUILD=1 uses the release binary as built)
# Needs: python3, openssl, curl; PostgreSQL at DATABASE_URL or its server programs installed
# (an embedded cluster is used when DATABASE_URL is unset).
set -euo pipefail
cd "$(dirname "$0")/.."

export N=${N:-64} SIZE=${SIZE:-26214400} RATE=${RATE:-8388608} DEADLINE=${DEADLINE:-60}
PORT=${PORT:-39320}
SECRET=bench-secret
FIXTURE=tests/fixtures/webhooks/issue_comment.created.json
TARGET=${CARGO_TARGET_DIR:-target}

work=$(mktemp -d)
chmod 755 "$work" # the embedded cluster runs as the postgres user when we are root
server=
cleanup() {
  if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [[ -n "${BENCH_DB:-}" ]]; then
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ -z "${NO_BUILD:-}" ]]; then
  echo "== building"
  cargo build --release --quiet -p bg-agent
fi

if [[ -n "${DATABASE_URL:-}" ]]; then
  BENCH_DB=bg_agent_flood_$$
  psql "$DATABASE_URL" -qc "CREATE DATABASE $BENCH_DB" >/dev/null
  db=(DATABASE_URL="$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$DATABASE_URL" "$BENCH_DB")")
else
  db=(BG_AGENT_DATA_DIR="$work/data")
fi
signature="sha256=$(openssl dgst -sha256 -hmac "$SECRET" < "$FIXTURE" | awk '{print $NF}')"

round() { # name concurrency
  env "${db[@]}" GITHUB_WEBHOOK_SECRET=$SECRET BG_AGENT_LISTEN=127.0.0.1:$PORT \
    BG_AGENT_WEBHOOK_CONCURRENCY="$2" RUST_LOG=warn \
    "$TARGET/release/bg-agent" serve > "$work/$1.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.1; done
  local result
  result=$(python3 scripts/bench/webhook-flood.py "$server" "http://127.0.0.1:$PORT/webhook" | grep '^RESULT')
  local after
  after=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/webhook" \
    -H 'content-type: application/json' -H 'x-github-event: issue_comment' \
    -H "x-github-delivery: after-flood-$1-$$" -H "x-hub-signature-256: $signature" \
    --data-binary @"$FIXTURE")
  echo "$1 (BG_AGENT_WEBHOOK_CONCURRENCY=$2): ${result#RESULT } signed_delivery_after=$after"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  [[ $after == 202 ]] || { echo "FAIL: a signed delivery after the flood got $after"; exit 1; }
}

echo "== $N concurrent junk bodies of $SIZE bytes at $RATE bytes/s each"
round limited 8
round unlimited 100000
