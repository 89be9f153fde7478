#!/usr/bin/env bash
# A local offer-engine cluster in one command (see docs/cluster.md, Operations):
#   load-tests/cluster.sh up        three nats-servers (JetStream, routes, one cluster
#                                   name) and three replicas on 8081-8083, sharing one
#                                   members file and one token key; Prometheus too if
#                                   installed. Waits for every /readyz, prints the URLs
#                                   and stays in the foreground: Ctrl-C stops everything.
#   load-tests/cluster.sh up -d     the same, in the background; `down` stops it
#   load-tests/cluster.sh down      stops what `up -d` started (by its pid files)
#   load-tests/cluster.sh status    each replica's /readyz cluster section
#   load-tests/cluster.sh bench     the cluster benchmark (load-tests/README.md, Cluster)
# Options: --members N (population, default 100000), --fresh (wipe the work dir's
# NATS stores and data dirs first), --no-prometheus; bench: --step-secs S (10),
# --rounds R (2), --out DIR (bench adds a local-log server on HTTP_PORT+3).
# Environment: CLUSTER_WORK (/tmp/offer-engine-cluster), NATS_PORT (14221: client
# ports 14221-14223), ROUTE_PORT (15221), HTTP_PORT (8081), PROM_PORT (9090),
# STREAM (OFFERS), OFFER_ENGINE (a binary to use instead of building target/release).
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CMD=${1:-help}
[ $# -gt 0 ] && shift
WORK=${CLUSTER_WORK:-/tmp/offer-engine-cluster}
NATS_PORT=${NATS_PORT:-14221}
ROUTE_PORT=${ROUTE_PORT:-15221}
HTTP_PORT=${HTTP_PORT:-8081}
PROM_PORT=${PROM_PORT:-9090}
STREAM=${STREAM:-OFFERS}
MEMBERS=100000
DETACH=0
FRESH=0
PROMETHEUS=1
STEP_SECS=10
ROUNDS=2
OUT=""
ARGS_SEEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    -d|--detach) DETACH=1 ;;
    --members) MEMBERS="$2"; shift ;;
    --fresh) FRESH=1 ;;
    --no-prometheus) PROMETHEUS=0 ;;
    --step-secs) STEP_SECS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) CMD=help ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PIDS=$WORK/pids
LOGS=$WORK/logs
NATS_URLS=nats://127.0.0.1:$NATS_PORT,nats://127.0.0.1:$((NATS_PORT + 1)),nats://127.0.0.1:$((NATS_PORT + 2))
ROUTES=nats://127.0.0.1:$ROUTE_PORT,nats://127.0.0.1:$((ROUTE_PORT + 1)),nats://127.0.0.1:$((ROUTE_PORT + 2))
# Set by `bench`: a CPU list every server-side process is pinned to.
PIN=""

# Only ever run in the background (`pinned CMD &`): `exec` makes the pid in
# $! the server's own, not a subshell's, so the pid files stop the servers.
pinned() { if [ -n "$PIN" ]; then exec taskset -c "$PIN" "$@"; else exec "$@"; fi; }

port_free() { ! ss -ltn 2>/dev/null | awk '{print $4}' | grep -q ":$1\$"; }

need_ports() {
  local p
  for p in "$@"; do
    if ! port_free "$p"; then
      echo "port $p is in use (another cluster? \`load-tests/cluster.sh down\`, or set NATS_PORT / ROUTE_PORT / HTTP_PORT / PROM_PORT)" >&2
      exit 1
    fi
  done
}

build() {
  if [ -n "${OFFER_ENGINE:-}" ]; then
    BIN=$OFFER_ENGINE
  else
    echo "== cargo build --release (a no-op when up to date)"
    cargo build --release --locked -p offer-engine "$@"
    BIN=$ROOT/target/release/offer-engine
  fi
}

members_file() {
  MFILE=$WORK/members-$MEMBERS.ndjson
  if [ ! -s "$MFILE" ]; then
    echo "== generate $MEMBERS members -> $MFILE"
    "$BIN" gen-members --count "$MEMBERS" --seed 42 --as-of "$(date -u +%F)" --out "$MFILE.tmp"
    mv "$MFILE.tmp" "$MFILE"
  fi
}

# The token key every replica shares (an accept carries a token another replica signed).
token_key() {
  if [ ! -s "$WORK/token-key" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token-key")
  fi
  cat "$WORK/token-key"
}

start_nats() {
  local i
  for i in 0 1 2; do
    mkdir -p "$WORK/nats$i"
    # -n must be unique: JetStream's Raft peers are named by it.
    pinned nats-server -js -n "n$i" -a 127.0.0.1 -p $((NATS_PORT + i)) -sd "$WORK/nats$i" \
      --cluster_name offer-engine-local --cluster "nats://127.0.0.1:$((ROUTE_PORT + i))" \
      --routes "$ROUTES" -l "$LOGS/nats$i.log" >/dev/null 2>&1 &
    echo $! >"$PIDS/nats$i.pid"
  done
}

start_replicas() {
  local i key
  key=$(token_key)
  for i in 0 1 2; do
    OFFER_ENGINE__SECURITY__TOKEN_KEY=$key OFFER_ENGINE__CLUSTER__REPLICAS=3 \
      pinned "$BIN" serve --addr "127.0.0.1:$((HTTP_PORT + i))" --nats "$NATS_URLS" --stream "$STREAM" \
      --members "$MFILE" --data-dir "$WORK/replica$((i + 1))" >"$LOGS/replica$((i + 1)).log" 2>&1 &
    echo $! >"$PIDS/replica$((i + 1)).pid"
  done
}

start_prometheus() {
  [ "$PROMETHEUS" = 1 ] || return 0
  if ! command -v prometheus >/dev/null; then
    echo "   (prometheus is not installed: no scraping; the replicas' /metrics are there)"
    return 0
  fi
  # Job "offer-engine": the dashboard's and the alerts' selectors use it.
  cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $ROOT/dashboards/alerts.yml
scrape_configs:
  - job_name: offer-engine
    static_configs:
      - targets: ["127.0.0.1:$HTTP_PORT", "127.0.0.1:$((HTTP_PORT + 1))", "127.0.0.1:$((HTTP_PORT + 2))"]
        labels:
          env: local-cluster
EOF
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$LOGS/prometheus.log" 2>&1 &
  echo $! >"$PIDS/prometheus.pid"
}

wait_ready() { # URL SECONDS
  local until=$(( $(date +%s) + $2 ))
  until curl -fsS -o /dev/null "$1/readyz" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$until" ]; then
      echo "$1 not ready after $2 s; logs in $LOGS" >&2
      return 1
    fi
    sleep 0.5
  done
}

# Stops the processes named by the pid files (TERM, then KILL after 15 s):
# only what this script started.
stop_all() {
  local f pid n
  [ -d "$PIDS" ] || return 0
  # Replicas and the local server first (they write a snapshot at shutdown), NATS last.
  for f in "$PIDS"/replica*.pid "$PIDS"/local.pid "$PIDS"/prometheus.pid "$PIDS"/nats*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      n=0
      while kill -0 "$pid" 2>/dev/null && [ $n -lt 150 ]; do sleep 0.1; n=$((n + 1)); done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

up() {
  if ls "$PIDS"/*.pid >/dev/null 2>&1; then
    echo "a cluster from $WORK seems to run (pid files in $PIDS); \`load-tests/cluster.sh down\` first" >&2
    exit 1
  fi
  need_ports $NATS_PORT $((NATS_PORT + 1)) $((NATS_PORT + 2)) $ROUTE_PORT $((ROUTE_PORT + 1)) $((ROUTE_PORT + 2)) \
    $HTTP_PORT $((HTTP_PORT + 1)) $((HTTP_PORT + 2))
  if [ "$PROMETHEUS" = 1 ] && command -v prometheus >/dev/null; then need_ports "$PROM_PORT"; fi
  command -v nats-server >/dev/null || { echo "nats-server is needed (apt-get install nats-server)" >&2; exit 1; }
  build "$@"
  mkdir -p "$WORK" "$PIDS" "$LOGS"
  if [ "$FRESH" = 1 ]; then rm -rf "$WORK"/nats? "$WORK"/replica? "$WORK"/prometheus; fi
  members_file
  trap 'echo; echo "== stopping"; stop_all; exit 130' INT TERM
  echo "== nats-server x3 (JetStream, cluster offer-engine-local), client ports $NATS_PORT-$((NATS_PORT + 2))"
  start_nats
  echo "== replicas x3 on $HTTP_PORT-$((HTTP_PORT + 2)), stream $STREAM, $MFILE"
  start_replicas
  start_prometheus
  local i
  for i in 0 1 2; do wait_ready "http://127.0.0.1:$((HTTP_PORT + i))" 900 || { stop_all; exit 1; }; done
  echo
  echo "Ready."
  for i in 0 1 2; do echo "  replica $((i + 1)): http://127.0.0.1:$((HTTP_PORT + i))  (log $LOGS/replica$((i + 1)).log)"; done
  echo "  NATS:      $NATS_URLS"
  [ -f "$PIDS/prometheus.pid" ] && echo "  Prometheus: http://127.0.0.1:$PROM_PORT (job offer-engine, alerts from dashboards/alerts.yml)"
  echo "  work dir:  $WORK (token key in $WORK/token-key)"
  if [ "$DETACH" = 1 ]; then
    trap - INT TERM
    echo "Stop with: load-tests/cluster.sh down"
    return 0
  fi
  echo "Ctrl-C stops everything."
  # Wait on the children; a replica that exits ends the wait too.
  while true; do
    for f in "$PIDS"/*.pid; do
      [ -f "$f" ] || continue
      if ! kill -0 "$(cat "$f")" 2>/dev/null; then
        echo "$(basename "$f" .pid) exited (see $LOGS); stopping everything" >&2
        stop_all
        exit 1
      fi
    done
    sleep 1
  done
}

status() {
  local i
  for i in 0 1 2; do
    printf 'replica %d  ' $((i + 1))
    curl -fsS "http://127.0.0.1:$((HTTP_PORT + i))/readyz" 2>/dev/null | (command -v jq >/dev/null && jq -c .cluster || cat) || echo "not answering"
  done
}

bench() {
  local ncpu
  ncpu=$(nproc)
  command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
  [ "$ncpu" -ge 2 ] || { echo "bench needs 2 CPUs (servers on CPU 0, generator on CPU 1)" >&2; exit 1; }
  build -p offer-engine-load
  local LOAD=$ROOT/target/release/offer-engine-load
  [ -n "${OFFER_ENGINE:-}" ] && LOAD=$(dirname "$OFFER_ENGINE")/offer-engine-load
  mkdir -p "$WORK"
  members_file
  WORK=$WORK/bench
  PIDS=$WORK/pids
  LOGS=$WORK/logs
  OUT=${OUT:-load-tests/results/$(date -u +%F)-cluster}
  local LOCAL_PORT=$((HTTP_PORT + 3))
  need_ports $NATS_PORT $((NATS_PORT + 1)) $((NATS_PORT + 2)) $ROUTE_PORT $((ROUTE_PORT + 1)) $((ROUTE_PORT + 2)) \
    $HTTP_PORT $((HTTP_PORT + 1)) $((HTTP_PORT + 2)) "$LOCAL_PORT"
  # A fresh stream and data dirs: the population is published once, as on a first start.
  rm -rf "$WORK"/nats? "$WORK"/replica? "$WORK"/local
  mkdir -p "$WORK" "$PIDS" "$LOGS" "$OUT"
  trap 'stop_all' EXIT
  trap 'exit 130' INT TERM
  # Every server-side process (3 nats-servers, 3 replicas, the local-log
  # server) on CPU 0, the generator on CPU 1: the cluster's processes share
  # one core, so more replicas add work on that core, never cores.
  PIN=0
  PROMETHEUS=0
  echo "== cluster (CPU 0) and the local-log server (CPU 0, port $LOCAL_PORT), $MEMBERS members"
  start_nats
  start_replicas
  OFFER_ENGINE__SECURITY__TOKEN_KEY=$(token_key) pinned "$BIN" serve --addr "127.0.0.1:$LOCAL_PORT" \
    --members "$MFILE" --data-dir "$WORK/local" >"$LOGS/local.log" 2>&1 &
  echo $! >"$PIDS/local.pid"
  local i
  for i in 0 1 2 3; do wait_ready "http://127.0.0.1:$((HTTP_PORT + i))" 900; done
  local cluster_pids
  cluster_pids=$(cat "$PIDS"/nats?.pid "$PIDS"/replica?.pid | paste -sd, -)
  echo "== benchmark (generator on CPU 1); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  taskset -c 1 "$LOAD" cluster \
    --local "http://127.0.0.1:$LOCAL_PORT" --local-pid "$(cat "$PIDS/local.pid")" \
    --replicas "http://127.0.0.1:$HTTP_PORT,http://127.0.0.1:$((HTTP_PORT + 1)),http://127.0.0.1:$((HTTP_PORT + 2))" \
    --cluster-pids "$cluster_pids" --population "$MEMBERS" --step-secs "$STEP_SECS" --rounds "$ROUNDS" \
    --extra "machine=$ncpu CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))" \
    --extra "pinning=servers (3 nats-server, 3 replicas, the local-log server) on CPU 0, generator on CPU 1" \
    --extra "nats_server=$(nats-server --version 2>/dev/null | head -1)" \
    --extra "git=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --command "load-tests/cluster.sh bench $ARGS_SEEN" --out "$OUT"
  echo "== $OUT/summary.md written"
}

case "$CMD" in
  up) up ;;
  down) stop_all; echo "stopped (work dir $WORK kept; \`up --fresh\` starts from empty)" ;;
  status) status ;;
  bench) bench ;;
  help|*) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' ;;
esac
