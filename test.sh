#!/usr/bin/env bash
# The test command: installs what the test suite needs when it is missing,
# then runs every test. A test whose external tool is missing fails (naming
# the tool and its install line); nothing is skipped.
#
#   ./test.sh                 # everything (cargo test --all-targets --locked)
#   ./test.sh --test api      # extra arguments go to cargo test
#
# External tools (Debian/Ubuntu; apt-get and pip are used only for what is
# missing, with sudo when not root):
#   prometheus, promtool  tests/prometheus.rs       apt-get install prometheus
#   schemathesis          tests/schemathesis.rs     python3 -m pip install --user schemathesis
#   curl                  tests/readme_examples.rs  apt-get install curl
#   chromium              tests/api/console.rs      apt-get install chromium
#   nats-server           tests/cluster.rs          apt-get install nats-server
# OFFER_ENGINE_TEST_NO_INSTALL=1 only checks them and fails naming the
# install line of each one missing.
set -euo pipefail
cd "$(dirname "$0")"

# pip --user puts its scripts here.
export PATH="$HOME/.local/bin:$PATH:/usr/sbin"

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$apt_updated" = 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    apt_updated=1
  fi
  # Quiet unless it fails (dpkg prints every file otherwise).
  local log
  log=$(mktemp)
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
pip_install() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip || return 1
  fi
  python3 -m pip install --user --quiet "$@" \
    || python3 -m pip install --user --quiet --break-system-packages "$@"
}

missing=()
# need TOOL INSTALL-LINE INSTALLER ARGS...: installs TOOL when it is not on PATH.
need() {
  local tool=$1 line=$2
  shift 2
  if command -v "$tool" >/dev/null 2>&1; then
    return 0
  fi
  if [ "${OFFER_ENGINE_TEST_NO_INSTALL:-0}" != 1 ]; then
    echo "== $tool is missing: $line"
    "$@" || true
    hash -r
  fi
  if ! command -v "$tool" >/dev/null 2>&1; then
    missing+=("$tool (install: $line)")
  fi
}

need prometheus "apt-get install prometheus" apt_install prometheus
need promtool "apt-get install prometheus" apt_install prometheus
need schemathesis "python3 -m pip install --user schemathesis" pip_install schemathesis
need curl "apt-get install curl" apt_install curl
need chromium "apt-get install chromium" apt_install chromium
need nats-server "apt-get install nats-server" apt_install nats-server

if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: the tests need these tools and they are not on PATH:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  echo "test.sh: not running the tests (they would fail on them)." >&2
  exit 1
fi
echo "== tools: $(prometheus --version 2>&1 | sed -n 1p); $(schemathesis --version 2>&1 | sed -n 1p); $(curl --version | sed -n 1p | cut -d' ' -f1-2); $(chromium --version 2>&1 | sed -n 1p); nats-server $(nats-server --version 2>&1 | sed -n 1p)"

echo "== cargo test --all-targets --locked $*"
exec cargo test --all-targets --locked "$@"
