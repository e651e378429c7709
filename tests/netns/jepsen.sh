#!/usr/bin/env bash
# Jepsen-style test on network namespace hosts (RELIABILITY.md §4.2, R3, R13, R15):
#   master m (10.200.6.1)   workers w1 w2 w3 (.2 .3 .4)   client c (.5), on one bridge.
# For TASKMASTER_JEPSEN_SECONDS (default 90) a steady submitting load runs while a nemesis kills,
# pauses and partitions master and workers and fills the master's disk; then everything heals and
# every acknowledged task must have exactly one outcome. jepsen.py has the load, the nemesis and the
# checker; this script makes the hosts and the master's small tmpfs (skipping the full-disk fault
# where mount is refused) and removes them on exit.
# Needs root, iproute2 and nft; exits 77 (skipped) otherwise.
# Usage: jepsen.sh TASKMASTER_BINARY
set -euo pipefail
here=$(dirname "$(realpath "$0")")
source "$here/lib.sh"
netns_init "$1" nft
netns_hosts 10.200.6 m w1 w2 w3 c

disk=$work/disk
mkdir -p "$disk"
disk_arg=()
if mount -t tmpfs -o size=64m tmpfs "$disk" 2>"$work/mount.err"; then
  mounts+=("$disk")
  disk_arg=(--disk "$disk")
else
  echo "jepsen: the full-disk fault is skipped: cannot mount a tmpfs here ($(cat "$work/mount.err"))"
fi
hosts=$(for h in m w1 w2 w3 c; do printf '%s=%s,' "$h" "${ip_of[$h]}"; done)
python3 "$here/jepsen.py" --tm "$tm" --id "$id" --work "$work" --data-dir "$disk/data" "${disk_arg[@]}" \
  --hosts "${hosts%,}" --seconds "${TASKMASTER_JEPSEN_SECONDS:-90}" &
pid[jepsen]=$!
bg_pids+=($!)
code=0
wait "${pid[jepsen]}" || code=$?
((code == 0)) || fail "jepsen.py exited $code (seed and counts above; history in $work/history.jsonl)"
