#!/usr/bin/env bash
# Instructions per request of the server, counted by callgrind: a
# deterministic A/B measure on a shared, noisy machine where throughput
# differences under 10% drown in noise (load-tests/README.md).
#   load-tests/callgrind.sh BINARY [MIX] [REQUESTS]
# Runs BINARY serve under valgrind on 100,000 generated members, warms up,
# zeroes the counters, sends REQUESTS (default 3000) at a fixed rate with the
# load generator, dumps the counters and prints user-space instructions per
# request (kernel work, page faults and cache misses are not counted).
# The profile is kept as $OUT/last.callgrind for callgrind_annotate.
# Needs valgrind; SHA-256 runs in software under valgrind, so token signing
# looks several times dearer than with the CPU's SHA extensions.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1"); MIX=${2:-offers=1}; REQUESTS=${3:-3000}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
WORK=${OFFER_ENGINE_LOAD_WORK:-/tmp/offer-engine-load}
OUT=${OUT:-$WORK/callgrind}
PORT=${PORT:-18495}
RATE=150
mkdir -p "$WORK" "$OUT"
cargo build --release --locked -q -p offer-engine-load
LOAD=${CARGO_TARGET_DIR:-$(pwd)/target}/release/offer-engine-load
MEMBERS=$WORK/members-100000-seed42.ndjson
[ -s "$MEMBERS" ] || "$BIN" gen-members --count 100000 --seed 42 --as-of 2026-11-30 --out "$MEMBERS" >/dev/null
DATA=$(mktemp -d "$WORK/cg-data.XXXXXX")
rm -f "$OUT"/cg.out.*
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out.%p" "$BIN" serve \
  --addr "127.0.0.1:$PORT" --members "$MEMBERS" --data-dir "$DATA" >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$LOAD" wait-ready --url "http://127.0.0.1:$PORT" --timeout-secs 600 >/dev/null
sleep 5
"$LOAD" step --url "http://127.0.0.1:$PORT" --population 100000 --rate 100 --secs 10 --connections 8 --mix "$MIX" >/dev/null
callgrind_control -z "$PID" >/dev/null 2>&1
SECS=$(( (REQUESTS + RATE - 1) / RATE ))
RESULT=$("$LOAD" step --url "http://127.0.0.1:$PORT" --population 100000 --rate "$RATE" --secs "$SECS" --connections 8 --mix "$MIX")
callgrind_control -d "$PID" >/dev/null 2>&1
sleep 2
read -r OK ERRORS < <(echo "$RESULT" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["total"]["ok"], d["total"]["errors"] + d["not_sent"])')
F=$(ls -t "$OUT"/cg.out."$PID".* | head -1)
cp "$F" "$OUT/last.callgrind"
IR=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$(basename "$BIN") $MIX: $OK answered ($ERRORS errors), $IR instructions, $((IR / OK)) per request"
