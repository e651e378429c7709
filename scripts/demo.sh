#!/usr/bin/env bash
# The example job, on one machine: a local master, two workers, ten random numbers squared.
# Builds first (installing what is missing). Stops everything it started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh taskmaster
tm=build/cli/taskmaster

pids=()
work=$(mktemp -d)
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# One shared key, made for this run: it authenticates every process and encrypts all traffic.
"$tm" keygen --out "$work/key" >/dev/null 2>&1
export TASKMASTER_KEY_FILE=$work/key

# The master picks a free port and prints the endpoint it bound as its first line.
"$tm" master --bind tcp://127.0.0.1:0 --data-dir "$work/data" >"$work/master.out" 2>"$work/master.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/master.out ]] && break; sleep 0.1; done
endpoint=$(head -n 1 "$work/master.out")
[[ $endpoint == tcp://* ]] || { echo "demo: the master did not start:" >&2; cat "$work/master.log" >&2; exit 1; }
echo "master listening on $endpoint"

for i in 1 2; do
  "$tm" worker --connect "$endpoint" -j 2 2>"$work/worker$i.log" &
  pids+=($!)
done
echo "2 workers started"

numbers=$(for _ in $(seq 10); do echo $((RANDOM % 10001)); done)
for n in $numbers; do echo "put task $n"; done
echo "results (n -> n*n):"
# One task per line of stdin; --wait prints each outcome as it arrives.
printf '%s\n' $numbers | "$tm" submit square --each --wait --connect "$endpoint"
echo "demo: done; stopping the master and the workers"
