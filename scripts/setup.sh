#!/usr/bin/env bash
# Installs everything taskmaster needs to build and test, from Debian 12's packages.
#   scripts/setup.sh            what the build and every test need
#   scripts/setup.sh --build    only what building the taskmaster binary needs (the Dockerfile's build stage)
# Idempotent: packages already present are not touched, so a second run is quick.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

build=(
  cmake ninja-build g++ pkg-config
  # libraries
  libzmq3-dev cppzmq-dev nlohmann-json3-dev libcli11-dev libsodium-dev libsqlite3-dev libssl-dev
  libmicrohttpd-dev prometheus-cpp-dev  # the master's --http: its server, and the metrics' registry and text format
)
tests=(
  doctest-dev
  clang-format  # scripts/format.sh (the layout check of scripts/test.sh)
  # fuzzing and sanitizers (clang), wire capture, syscall traces, network namespaces, deploy checks
  clang libclang-rt-14-dev tcpdump strace iproute2 nftables procps sqlite3 util-linux python3 python3-yaml
  # the metrics' format check (Prometheus' own parser), and the dashboard in a real browser
  python3-prometheus-client curl chromium libcpp-httplib-dev  # (cpp-httplib: the system tests' HTTP client)
  tmux         # a real terminal for the progress line's tests
  python3-zmq  # the Python module (python/taskmaster) and its tests
  groff-base man-db  # the man page's check (tests/install/install_check.sh: groff's lint, man -l)
)
case "${1:-}" in
  "") packages=("${build[@]}" "${tests[@]}") ;;
  --build) packages=("${build[@]}") ;;
  *) echo "usage: $0 [--build]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
