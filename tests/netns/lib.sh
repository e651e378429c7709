# Shared by the network-namespace tests (sourced, not run): hosts as namespaces on one bridge,
# processes started by PID, faults (link down, nft loss and partitions), polling with deadlines,
# and cleanup of everything made, on success and on failure.
#
#   source lib.sh; netns_init TASKMASTER_BINARY [nft]
#   netns_hosts 10.200.1 m w1 w2 c       # bridge namespace + one namespace per host: .1 .2 .3 .4
#   start_bg NAME ns HOST CMD...          # in the background, output in $work/NAME.{out,log}; PID in ${pid[NAME]}
#
# Globals: tm (the binary), id (the prefix of every name made), work (a temporary directory),
# ip_of[HOST], pid[NAME], TASKMASTER_KEY_FILE (a fresh key).

# netns_init TASKMASTER_BINARY [nft]: exits 77 (skipped) where namespaces (or nft) are unusable.
netns_init() {
  tm=$(realpath "$1")
  [[ $(id -u) == 0 ]] || skip "needs root for network namespaces"
  command -v ip >/dev/null || skip "no ip (iproute2)"
  if [[ ${2:-} == nft ]]; then
    command -v nft >/dev/null || skip "no nft (Debian package nftables; scripts/setup.sh installs it)"
  fi
  id=tm$$
  work=$(mktemp -d)
  declare -gA ip_of=() pid=()
  bg_pids=()
  made=()
  mounts=()
  trap netns_cleanup EXIT
  trap 'exit 1' INT TERM HUP  # so that a signal runs the cleanup too (SIGKILL cannot)
  # Entering a namespace remounts / as a slave mount: a chroot or container without its own mount
  # namespace refuses ("mount --make-rslave /" failed).
  ip netns add "${id}br" 2>/dev/null || skip "cannot make network namespaces here"
  made+=("${id}br")
  ip -n "${id}br" link set lo up 2>/dev/null || skip "cannot enter network namespaces here"
  if [[ ${2:-} == nft ]]; then
    ip netns exec "${id}br" nft list tables >/dev/null 2>&1 || skip "nft does not work in a network namespace here"
  fi
  ip -n "${id}br" link add br0 type bridge
  ip -n "${id}br" link set br0 up
  export TASKMASTER_KEY_FILE=$work/key
  "$tm" keygen --out "$work/key" >/dev/null 2>&1
}

skip() { echo "skipped: $*"; exit 77; }

# Stops every process started here (by PID), deletes every namespace made, removes $work.
netns_cleanup() {
  local p ns
  for p in "${bg_pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${bg_pids[@]}"; do
    # A process that ignores SIGTERM for 10 s gets SIGKILL.
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for ns in "${made[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work"
}

# fail MESSAGE: says why, shows the end of every log, exits 1. With TASKMASTER_NETNS_KEEP=DIR the
# logs and outputs are copied there first.
fail() {
  echo "FAIL: $*" >&2
  local f
  for f in "$work"/*.log; do [[ -s $f ]] && { echo "--- $f" >&2; tail -n 25 "$f" >&2; }; done
  if [[ -n ${TASKMASTER_NETNS_KEEP:-} ]]; then
    mkdir -p "$TASKMASTER_NETNS_KEEP"
    cp "$work"/*.log "$work"/*.out "$work"/*.in "$work"/*.jsonl "$TASKMASTER_NETNS_KEEP"/ 2>/dev/null || true
  fi
  exit 1
}

# Polls a condition until it holds or the deadline passes.
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out waiting for: $what"
    sleep 0.1  # wait_until's polling interval
  done
}

# Milliseconds since the epoch (EPOCHREALTIME: no process per call).
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# netns_hosts PREFIX HOST...: one namespace per host, on the bridge, addresses PREFIX.1, PREFIX.2, ...
# PREFIX must be inside 10.200.0.0/16.
netns_hosts() {
  local prefix=$1 n=1 host ns
  [[ $prefix == 10.200.* ]] || fail "addresses only in 10.200.0.0/16, not $prefix"
  shift
  for host in "$@"; do
    ns=${id}$host
    ip netns add "$ns"
    made+=("$ns")
    ip link add "v${id}$host" type veth peer name "b${id}$host"
    ip link set "v${id}$host" netns "$ns"
    ip link set "b${id}$host" netns "${id}br"
    ip -n "${id}br" link set "b${id}$host" master br0 up
    ip -n "$ns" addr add "$prefix.$n/24" dev "v${id}$host"
    ip -n "$ns" link set "v${id}$host" up
    ip -n "$ns" link set lo up
    ip_of[$host]=$prefix.$n
    n=$((n + 1))
  done
}

# Runs a command on a host.
on() { local host=$1; shift; ip netns exec "${id}$host" "$@"; }

# start_bg NAME HOST CMD...: runs CMD on HOST in the background; stdin from $bg_stdin (default
# /dev/null), stdout to $work/NAME.out, stderr to $work/NAME.log (appended: a restarted process
# keeps one log). ${pid[NAME]} is its PID (ip netns exec execs the command: it is the command's own).
start_bg() {
  local name=$1 host=$2
  shift 2
  ip netns exec "${id}$host" "$@" <"${bg_stdin:-/dev/null}" >"$work/$name.out" 2>>"$work/$name.log" &
  pid[$name]=$!
  bg_pids+=($!)
}

# stop_bg NAME [SIGNAL]: signals the process, waits for it, sets $stopped_code to its exit code.
stop_bg() {
  local p=${pid[$1]}
  kill -CONT "$p" 2>/dev/null || true
  kill "-${2:-TERM}" "$p" 2>/dev/null || true
  stopped_code=0
  wait "$p" 2>/dev/null || stopped_code=$?
}

running() { kill -0 "${pid[$1]}" 2>/dev/null; }

# The link of a host to the bridge: link_down HOST / link_up HOST.
link_down() { ip -n "${id}$1" link set "v${id}$1" down; }
link_up() { ip -n "${id}$1" link set "v${id}$1" up; }

# nft_drop HOST NAME RULE...: a rule in the input hook of HOST (its own table, one per NAME), so
# that packets arriving at HOST vanish. An output-hook drop would give the sender EPERM, not loss.
#   nft_drop w1 loss numgen random mod 100 '<' 10 drop
#   nft_drop m cut ip saddr 10.200.1.2 drop
nft_drop() {
  local host=$1 name=$2
  shift 2
  on "$host" nft add table inet "$name"
  on "$host" nft add chain inet "$name" input '{ type filter hook input priority 0; policy accept; }'
  on "$host" nft add rule inet "$name" input "$@"
}
nft_clear() { on "$1" nft delete table inet "$2"; }
# Packets that a host's rule has dropped so far (its counter).
nft_dropped() { on "$1" nft list table inet "$2" | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -n 1; }

# The master of a scenario: master_start [OPTIONS...] binds tcp://${ip_of[m]}:5555 on host m, with
# its journal in $work/data, and waits for its endpoint line. $endpoint is what workers connect to.
master_start() {
  endpoint=tcp://${ip_of[m]}:5555
  rm -f "$work/master.out"  # a restart: not the last master's line
  start_bg master m "$tm" master --bind "$endpoint" --data-dir "$work/data" "$@"
  wait_until 20 "the master's endpoint line" test -s "$work/master.out"
  [[ $(head -n 1 "$work/master.out") == "$endpoint" ]] || fail "master bound $(head -n 1 "$work/master.out")"
}

# A client command from host c: client ARGS... (with --connect $endpoint).
client() { on c "$tm" "$@" --connect "$endpoint"; }

# status_py PYTHON-EXPRESSION: evaluates it with s = `taskmaster status --json` (fails quietly,
# status 1, if the master does not answer within 2 s). Prints the value.
status_py() {
  local json
  json=$(client status --json --connect-timeout 2 --retry-timeout 2 2>/dev/null) || return 1
  python3 -c 'import json,sys; s=json.loads(sys.argv[1]); v=eval(sys.argv[2]); print(int(v) if isinstance(v,bool) else v)' "$json" "$1"
}
# Whether a python condition on the status holds: status_is 'EXPR'.
status_is() { [[ $(status_py "$1" 2>/dev/null) == 1 ]]; }
# The workers the master lists now, by name: "w1 w2 w3".
workers_listed() { status_py '" ".join(sorted(w["id"] for w in s["workers"]))'; }
listed() { status_is "any(w['id'] == '$1' for w in s['workers'])"; }
holds_tasks() { status_is "any(w['id'] == '$1' and w['in_flight'] > 0 for w in s['workers'])"; }
counter() { status_py "s['counters']['$1']"; }

# sleep_input FILE N SECONDS: N lines of distinct sleep args around SECONDS (0.2 -> 0.2000001,
# 0.2000002, ...). `sleep` returns its args, so every result names its own task.
sleep_input() {
  python3 -c 'import sys; n, s = int(sys.argv[1]), float(sys.argv[2]); print("\n".join(f"{s + i * 1e-7:.7f}" for i in range(1, n + 1)))' \
    "$2" "$3" >"$1"
}

# check_once INPUT OUTPUT WHAT [ARGS for check_outcomes.py]: every line of INPUT has exactly one
# outcome in OUTPUT (JSON lines of submit --wait --json / wait --json), done, with its args as result.
check_once() {
  local input=$1 output=$2 what=$3
  shift 3
  python3 "$(dirname "${BASH_SOURCE[0]}")/check_outcomes.py" --what "$what" --input "$input" "$@" "$output" || fail "$what: outcomes"
}
