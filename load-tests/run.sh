#!/usr/bin/env bash
# Reproduces the whole performance record of issue 6 (see load-tests/README.md):
#   load-tests/run.sh            1,000,000 members
#   load-tests/run.sh --10m      1,000,000 and 10,000,000 members
#   load-tests/run.sh --smoke    20,000 members, 2-second steps (cheap; for CI)
# Builds the release binaries, generates the members (cached), starts the
# real server pinned to CPU 0 on loopback, runs the generator pinned to
# CPU 1, records resident memory after loading, and writes
# load-tests/results/<date>/{population-N.json,results.json,summary.md}.
# Load goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SMOKE=0
POPS=(1000000)
STEP_SECS=${STEP_SECS:-10}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18480}
WORK=${OFFER_ENGINE_LOAD_WORK:-/tmp/offer-engine-load}
OUT=""
AS_OF=$(date -u +%F)
ARGS_SEEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --10m) POPS=(1000000 10000000) ;;
    --only-10m) POPS=(10000000) ;;
    --members) POPS=("$2"); shift ;;
    --step-secs) STEP_SECS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
WARMUP=3
if [ "$SMOKE" = 1 ]; then
  POPS=(20000); STEP_SECS=2; ROUNDS=1; WARMUP=1
  OUT=${OUT:-$WORK/smoke-results}
fi
OUT=${OUT:-load-tests/results/$(date -u +%F)}
mkdir -p "$OUT" "$WORK"

NCPU=$(nproc)
if [ "$NCPU" -lt 2 ]; then
  echo "run.sh needs 2 CPUs (server on CPU 0, generator on CPU 1); this machine has $NCPU" >&2
  exit 1
fi
if ! command -v taskset >/dev/null; then
  echo "taskset (util-linux) is needed to pin the server and the generator" >&2
  exit 1
fi

echo "== build (release)"
cargo build --release --locked -p offer-engine -p offer-engine-load
SERVER=$ROOT/target/release/offer-engine
LOAD=$ROOT/target/release/offer-engine-load

SERVER_PID=""
DATA_DIR=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$DATA_DIR" ]; then rm -rf "$DATA_DIR"; fi
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

for N in "${POPS[@]}"; do
  FILE=$WORK/members-$N-seed42-$AS_OF.ndjson
  if [ ! -s "$FILE" ]; then
    echo "== generate $N members -> $FILE"
    "$SERVER" gen-members --count "$N" --seed 42 --as-of "$AS_OF" --out "$FILE.tmp"
    mv "$FILE.tmp" "$FILE"
  fi
  RAW=$(stat -c %s "$FILE")
  if ss -ltn 2>/dev/null | awk '{print $4}' | grep -q ":$PORT\$"; then
    echo "port $PORT is in use; set PORT=..." >&2
    exit 1
  fi
  DATA_DIR=$(mktemp -d "$WORK/data.XXXXXX")
  LOG=$OUT/server-$N.log
  echo "== serve $N members (CPU 0), data dir $DATA_DIR"
  STARTED=$(date +%s.%N)
  taskset -c 0 "$SERVER" serve --addr "127.0.0.1:$PORT" --members "$FILE" --data-dir "$DATA_DIR" >"$LOG" 2>&1 &
  SERVER_PID=$!
  taskset -c 1 "$LOAD" wait-ready --url "http://127.0.0.1:$PORT" --timeout-secs 1800
  READY=$(date +%s.%N)
  # Settle: the first start writes a snapshot after loading; wait until the
  # resident size stops moving (3 samples 1 s apart within 0.5%).
  prev=0; stable=0
  for _ in $(seq 1 120); do
    cur=$(rss_kib "$SERVER_PID")
    if [ "$prev" -gt 0 ] && [ $(( (cur > prev ? cur - prev : prev - cur) * 200 )) -le "$prev" ]; then
      stable=$((stable + 1))
    else
      stable=0
    fi
    [ "$stable" -ge 2 ] && break
    prev=$cur
    sleep 1
  done
  RSS=$(rss_kib "$SERVER_PID"); HWM=$(hwm_kib "$SERVER_PID")
  LOAD_SECS=$(echo "$READY - $STARTED" | bc -l 2>/dev/null || echo 0)
  echo "   ready after ${LOAD_SECS}s; VmRSS $((RSS / 1024)) MiB, peak $((HWM / 1024)) MiB; raw records $((RAW / 1048576)) MiB;" \
       "$(( RSS * 1024 / N )) resident bytes per member"
  echo "== load test ($STEP_SECS s steps, generator on CPU 1)"
  taskset -c 1 "$LOAD" run --url "http://127.0.0.1:$PORT" --population "$N" \
    --server-pid "$SERVER_PID" --members-file "$FILE" \
    --step-secs "$STEP_SECS" --rounds "$ROUNDS" --warmup-secs "$WARMUP" \
    --extra "ready_secs=$LOAD_SECS" --extra "settled_rss_kib=$RSS" --extra "peak_rss_kib=$HWM" \
    --out "$OUT/population-$N.json"
  echo "== stop the server"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
  rm -rf "$DATA_DIR"; DATA_DIR=""
done

"$LOAD" summarize --dir "$OUT" --command "load-tests/run.sh ${ARGS_SEEN}"
echo "== $OUT/summary.md"
cat "$OUT/summary.md"
