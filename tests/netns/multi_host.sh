#!/usr/bin/env bash
# Multi-host test: the topology of compose.yaml, with network namespaces for hosts.
#   master (10.200.0.1)   worker 1 (.2)   worker 2 (.3)   client (.4), all on one bridge.
# 1. A job submitted from the client host runs on both worker hosts; every result is right.
# 2. Worker 1's link goes down mid-job: the master presumes it dead, its tasks finish on worker 2.
# Needs root and iproute2; exits 77 (skipped) otherwise. Everything it makes is removed on exit.
# Usage: multi_host.sh TASKMASTER_BINARY
set -euo pipefail
tm=$(realpath "$1")
[[ $(id -u) == 0 ]] || { echo "skipped: needs root for network namespaces"; exit 77; }
command -v ip >/dev/null || { echo "skipped: no ip (iproute2)"; exit 77; }

id=tm$$
work=$(mktemp -d)
pids=()
made=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${made[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }
# Polls a condition until it holds or the deadline passes.
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out waiting for: $what"
    sleep 0.1  # wait_until's polling interval
  done
}

ip netns add "${id}br" || { echo "skipped: cannot make network namespaces here"; exit 77; }
made+=("${id}br")
# Entering a namespace remounts / as a slave mount: a chroot or container without its own mount
# namespace refuses ("mount --make-rslave /" failed).
ip -n "${id}br" link set lo up || { echo "skipped: cannot enter network namespaces here"; exit 77; }
ip -n "${id}br" link add br0 type bridge
ip -n "${id}br" link set br0 up
n=1
for host in m w1 w2 c; do
  ns=${id}$host
  ip netns add "$ns"
  made+=("$ns")
  ip link add "v${id}$host" type veth peer name "b${id}$host"
  ip link set "v${id}$host" netns "$ns"
  ip link set "b${id}$host" netns "${id}br"
  ip -n "${id}br" link set "b${id}$host" master br0 up
  ip -n "$ns" addr add "10.200.0.$n/24" dev "v${id}$host"
  ip -n "$ns" link set "v${id}$host" up
  ip -n "$ns" link set lo up
  n=$((n + 1))
done

export TASKMASTER_KEY_FILE=$work/key
"$tm" keygen --out "$work/key" >/dev/null 2>&1
endpoint=tcp://10.200.0.1:5555
ip netns exec "${id}m" "$tm" master --bind "$endpoint" --data-dir "$work/data" >"$work/master.out" 2>"$work/master.log" &
pids+=($!)
wait_until 20 "the master's endpoint line" test -s "$work/master.out"
[[ $(head -n 1 "$work/master.out") == "$endpoint" ]] || fail "master bound $(head -n 1 "$work/master.out")"
for w in w1 w2; do
  ip netns exec "${id}$w" "$tm" worker --connect "$endpoint" -j 2 --name "$w" 2>"$work/$w.log" &
  pids+=($!)
done
client() { ip netns exec "${id}c" "$tm" "$@" --connect "$endpoint"; }
workers_connected() { [[ $(client status --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))') == "$1" ]]; }
wait_until 30 "both workers connected" workers_connected 2

# 1. A job from the client host, spread over both worker hosts.
seq 1 400 | client submit square --each --wait --json >"$work/job1.out" 2>"$work/job1.log" || fail "job 1 failed"
python3 - "$work/job1.out" <<'PY' || fail "job 1 results"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 400, len(rows)
assert sorted(r["args"] for r in rows) == list(range(1, 401))
assert all(r["status"] == "done" and r["result"] == r["args"] ** 2 for r in rows)
used = {r["worker"] for r in rows}
assert used == {"w1", "w2"}, used
print("job 1: 400 results from", sorted(used))
PY

# 2. Worker 1's host drops off the network mid-job.
printf '0.2\n%.0s' $(seq 1 40) | client submit sleep --each >"$work/job2.id" 2>"$work/job2.log" || fail "job 2 submit"
job2=$(cat "$work/job2.id")
running_on_w1() { client status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if any(w["id"]=="w1" and w["in_flight"]>0 for w in s["workers"]) else 1)'; }
wait_until 30 "worker 1 holding tasks" running_on_w1
down_at=$SECONDS
ip -n "${id}w1" link set "v${id}w1" down
client wait "$job2" --json >"$work/job2.out" 2>>"$work/job2.log" || fail "job 2 did not complete"
python3 - "$work/job2.out" <<'PY' || fail "job 2 results"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 40 and all(r["status"] == "done" for r in rows), rows
again = [r for r in rows if r["attempts"] > 1]
assert again and all(r["worker"] == "w2" for r in again), again
print(f"job 2: 40 results; {len(again)} tasks of the lost host finished on w2")
PY
lost=$(client status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["workers_lost"])')
[[ $lost -ge 1 ]] || fail "the master did not notice worker 1's loss"
echo "multi_host: ok (worker 1 lost; job finished $((SECONDS - down_at)) s after its link went down)"
