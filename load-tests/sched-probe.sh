#!/usr/bin/env bash
# Scheduling stalls of the serving core, measured with `perf sched`.
#   load-tests/sched-probe.sh BINARY [RATE] [SECS] [MEMBERS]
# Serves MEMBERS (default 1,000,000) generated members pinned to CPU 0, sends
# checkouts (offers=1) at the fixed RATE (default 8000 req/s) for SECS
# (default 15) from the load generator pinned to CPU 1, records the
# scheduler with `perf sched record` meanwhile, and prints from
# `perf sched timehist` on CPU 0:
# - the event-log writer's run stretches (`wal-writer`) over 1 ms, and over
#   1 ms while an HTTP worker was runnable (waiting to run on that core);
# - the HTTP workers' scheduling delays (from waking to running): count,
#   over 1 ms, p99 and max;
# and the generator's latency figures for the step. Needs perf and root.
# Keep the machine quiet: other processes on CPU 0 show up as waits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1"); RATE=${2:-8000}; SECS=${3:-15}; N=${4:-1000000}
command -v perf >/dev/null || { echo "perf is needed" >&2; exit 1; }
WORK=${OFFER_ENGINE_LOAD_WORK:-/tmp/offer-engine-load}
OUT=${OUT:-$WORK/sched}
PORT=${PORT:-18496}
mkdir -p "$WORK" "$OUT"
cargo build --release --locked -q -p offer-engine-load
LOAD=${CARGO_TARGET_DIR:-$(pwd)/target}/release/offer-engine-load
MEMBERS=$WORK/members-$N-seed42.ndjson
[ -s "$MEMBERS" ] || "$BIN" gen-members --count "$N" --seed 42 --as-of 2026-11-30 --out "$MEMBERS" >/dev/null
DATA=$(mktemp -d "$WORK/sched-data.XXXXXX")
taskset -c 0 "$BIN" serve --addr "127.0.0.1:$PORT" --members "$MEMBERS" --data-dir "$DATA" >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
taskset -c 1 "$LOAD" wait-ready --url "http://127.0.0.1:$PORT" --timeout-secs 900 >/dev/null
sleep 10
taskset -c 1 "$LOAD" step --url "http://127.0.0.1:$PORT" --population "$N" --rate "$RATE" --secs 3 --connections 8 --mix offers=1 >/dev/null
perf sched record -a -o "$OUT/perf.data" -- sleep $((SECS + 2)) >/dev/null 2>&1 &
PERF=$!
sleep 1
taskset -c 1 "$LOAD" step --url "http://127.0.0.1:$PORT" --population "$N" --rate "$RATE" --secs "$SECS" --connections 8 --mix offers=1 >"$OUT/step.json"
wait $PERF
perf sched timehist -i "$OUT/perf.data" --cpu 0 2>/dev/null >"$OUT/timehist.txt"
python3 - "$OUT/timehist.txt" "$PID" <<'PY'
# timehist lines: time, [cpu], comm[tid/pid] (comm may hold spaces), wait,
# scheduling delay, run (ms). A run ends at `time`; the thread was runnable
# from (time - run - delay) until (time - run).
import re, sys
line = re.compile(r"^\s*([\d.]+)\s+\[(\d+)\]\s+(.*)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
pid = sys.argv[2]
writer, workers, names = [], [], {}
for l in open(sys.argv[1]):
    m = line.match(l)
    if not m or m.group(5) != pid:
        continue
    end, comm = float(m.group(1)) * 1e3, m.group(3).strip()
    delay, run = float(m.group(7)), float(m.group(8))
    names[comm] = names.get(comm, 0) + 1
    if comm == "wal-writer":
        writer.append((end - run, end, run))
    elif comm.startswith("actix"):
        workers.append((end - run - delay, end - run, delay))
long = [w for w in writer if w[2] > 1.0]
blocking = [w for w in long if any(r < w[1] and s >= w[1] - 1e-6 and s - r > 0 for r, s, _ in workers)]
d = sorted(x[2] for x in workers)
p = lambda q: d[min(len(d) - 1, int(len(d) * q))] if d else 0.0
print("threads of the server on CPU 0 (runs):", names)
print(f"wal-writer: {len(writer)} runs, {len(long)} over 1 ms, {len(blocking)} of them while an HTTP worker waited, longest {max((w[2] for w in writer), default=0):.3f} ms")
print(f"HTTP workers: {len(d)} runs, scheduling delay p50 {p(0.5):.3f} p99 {p(0.99):.3f} p99.9 {p(0.999):.3f} max {d[-1] if d else 0:.3f} ms, {sum(x > 1.0 for x in d)} over 1 ms")
PY
python3 - "$OUT/step.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = d["total"]
lat = t.get("latency_ms") or t.get("latency") or {}
print("checkouts:", t.get("ok"), "ok,", t.get("errors"), "errors; latency ms:", {k: lat[k] for k in ("p50", "p99", "p99_9", "max") if k in lat})
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
