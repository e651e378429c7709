#!/usr/bin/env bash
# Multi-host test: the topology of compose.yaml, with network namespaces for hosts.
#   master (10.200.0.1)   worker 1 (.2)   worker 2 (.3)   client (.4), all on one bridge.
# 1. A job submitted from the client host runs on both worker hosts; every result is right.
# 2. Worker 1's link goes down mid-job: the master presumes it dead, its tasks finish on worker 2.
# Needs root and iproute2; exits 77 (skipped) otherwise. Everything it makes is removed on exit.
# Usage: multi_host.sh TASKMASTER_BINARY
set -euo pipefail
source "$(dirname "$(realpath "$0")")/lib.sh"
netns_init "$1"
netns_hosts 10.200.0 m w1 w2 c
master_start
for w in w1 w2; do
  start_bg "$w" "$w" "$tm" worker --connect "$endpoint" -j 2 --name "$w"
done
wait_until 30 "both workers connected" status_is 'len(s["workers"]) == 2'

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

# 2. Worker 1's host drops off the network mid-job. Tasks of a second each, so that what worker 1
# holds when the check below sees it is still running when its link goes down, however slow the
# status polling is on a loaded machine (with 0.2 s tasks it could finish them all in between).
printf '1\n%.0s' $(seq 1 40) | client submit sleep --each >"$work/job2.id" 2>"$work/job2.log" || fail "job 2 submit"
job2=$(cat "$work/job2.id")
wait_until 30 "worker 1 holding tasks" holds_tasks w1
down_at=$SECONDS
link_down w1
client wait "$job2" --json >"$work/job2.out" 2>>"$work/job2.log" || fail "job 2 did not complete"
python3 - "$work/job2.out" <<'PY' || fail "job 2 results"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 40 and all(r["status"] == "done" for r in rows), rows
again = [r for r in rows if r["attempts"] > 1]
assert again and all(r["worker"] == "w2" for r in again), again
print(f"job 2: 40 results; {len(again)} tasks of the lost host finished on w2")
PY
lost=$(counter workers_lost)
[[ $lost -ge 1 ]] || fail "the master did not notice worker 1's loss"
echo "multi_host: ok (worker 1 lost; job finished $((SECONDS - down_at)) s after its link went down)"
