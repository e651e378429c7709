#!/usr/bin/env bash
# Partitions heal: multi-host faults with network namespaces (RELIABILITY.md R6, R7, R8, R13, R14, R16).
#   master m (PREFIX.1)   workers w1 w2 w3 (.2 .3 .4)   client c (.5)   [relay r (.6)], on one bridge.
# Every scenario checks that each task submitted has exactly one outcome, done, with the right result
# (lost 0, duplicated 0, unexpected 0), from the --json output of submit --wait / wait.
#
#   worker-cut [SECONDS]  w1's link down mid-job for SECONDS (default: the worker timeout + 2): the job
#                         completes on w2 and w3; w1 rejoins within the worker timeout plus its reconnect
#                         backoff cap once the link is up; its late results are counted stale or unheld.
#   worker-cut-long       the same for TASKMASTER_NETNS_LONG_CUT_SECONDS (default 120): the job ends
#                         during the cut.
#   master-cut            the master's link down 20 s while workers work and a client waits
#                         (submit --wait --retry-timeout 60): all rejoin, the job completes.
#   loss                  10% packet loss into w1 and into the master from w1 (nft, input hooks), at the
#                         default heartbeat settings: the job completes and no worker is presumed dead.
#   delay-restart         w1 reaches the master through a relay adding 50 ms each way; the master is
#                         killed (-9) and later stopped (SIGTERM) and started again behind it: w1 never
#                         exits, no task dies "timed out" although it ran.
# Needs root, iproute2 and nft; exits 77 (skipped) otherwise. Everything it makes is removed on exit.
# Usage: partitions.sh TASKMASTER_BINARY SCENARIO [SECONDS]
set -euo pipefail
here=$(dirname "$(realpath "$0")")
source "$here/lib.sh"
scenario=${2:?usage: partitions.sh TASKMASTER_BINARY SCENARIO [SECONDS]}
netns_init "$1" nft

# The master's liveness settings in the scenarios that cut links (the loss scenario keeps the defaults).
hb=(--heartbeat-interval 0.5 --worker-timeout 2)
worker_timeout=2
# The cap of a worker's reconnect backoff (README: "workers reconnect with backoff").
backoff_cap=${TASKMASTER_RECONNECT_CAP_SECONDS:-2}
# Slack on top of timeout + cap for the handshake and this script's polling (0.1 s) on a busy machine.
slack=1

# start_workers [ENDPOINT_OF_W1]: w1 w2 w3, 2 slots each, each with its own name.
start_workers() {
  local w ep
  for w in w1 w2 w3; do
    ep=$endpoint
    [[ $w == w1 ]] && ep=${1:-$endpoint}
    start_bg "$w" "$w" "$tm" worker --connect "$ep" -j 2 --name "$w" "${w1_extra[@]}"
    w1_extra=()
  done
  wait_until 30 "three workers connected" status_is 'len(s["workers"]) == 3'
}
w1_extra=()

# done_at_least N: the master counts at least N tasks done in the default queue.
done_at_least() { status_is "s['queues'].get('default', {}).get('done', 0) >= $1"; }
exited() { ! running "$1"; }

# finish NAME SECONDS WHAT: waits for a background client to end; fails unless it exited 0.
finish() {
  wait_until "$2" "$3" exited "$1"
  stop_bg "$1"
  ((stopped_code == 0)) || fail "$3: the client exited $stopped_code"
}

# The workers still run the processes started first (none exited, none was restarted).
workers_alive() {
  local w
  for w in w1 w2 w3; do running "$w" || { stop_bg "$w"; fail "worker $w exited by itself (code $stopped_code)"; }; done
}

# rejoined WORKER...: the master lists every one of them; fails at once if a process has exited.
rejoined() {
  local w names=""
  for w in "$@"; do
    running "$w" || { stop_bg "$w"; fail "worker $w exited (code $stopped_code): $(tail -n 1 "$work/$w.log")"; }
    names+="'$w',"
  done
  status_is "{$names} <= {w['id'] for w in s['workers']}"
}

# wait_rejoin HOST... : polls until every HOST is listed again; $rejoin_ms is how long that took.
# Fails if it took longer than the worker timeout plus the backoff cap (plus $slack and $arp_slack).
arp_slack=0
wait_rejoin() {
  local from bound=$(((worker_timeout + backoff_cap + slack + arp_slack) * 1000))
  from=$(now_ms)
  wait_until $((bound / 1000 + 15)) "$* listed again (the bound is $bound ms)" rejoined "$@"
  rejoin_ms=$(($(now_ms) - from))
  ((rejoin_ms <= bound)) || fail "$* rejoined after $rejoin_ms ms; the bound is $bound ms (worker timeout $worker_timeout s + backoff cap $backoff_cap s + $slack s + $arp_slack s)"
}

# expect_lost MIN: the master counted at least MIN workers lost ($lost), and no worker exited.
expect_lost() {
  lost=$(counter workers_lost)
  ((lost >= $1)) || fail "workers_lost is $lost, not at least $1: the master did not notice the silence"
  workers_alive
}

# hold_until MS: sleeps until now_ms reaches MS (the duration of a fault, not a wait for a state).
hold_until() {
  local left=$(($1 - $(now_ms)))
  ((left <= 0)) || sleep "$((left / 1000)).$(printf %03d $((left % 1000)))"
}

late_results() { status_py "s['counters']['stale_results'] + s['counters']['unheld_results']"; }

# a, b: w1's link down for CUT seconds mid-job.
worker_cut() {
  local cut=$1 down_at detect_ms lost late
  netns_hosts 10.200.1 m w1 w2 w3 c
  master_start "${hb[@]}"
  start_workers
  sleep_input "$work/job.in" 200 0.2
  bg_stdin=$work/job.in start_bg job c "$tm" submit sleep --each --wait --json --connect "$endpoint"
  wait_until 30 "w1 holding tasks" holds_tasks w1
  link_down w1
  down_at=$(now_ms)
  wait_until $((worker_timeout + slack + 5)) "the master presuming w1 dead" eval '! listed w1'
  detect_ms=$(($(now_ms) - down_at))
  if ((cut > 30)); then
    # A long cut: the job ends on w2 and w3 while w1 is away.
    finish job "$cut" "the job on w2 and w3 during the cut"
    echo "the job ended $(($(now_ms) - down_at)) ms into the cut"
  fi
  hold_until $((down_at + cut * 1000))
  link_up w1
  wait_rejoin w1
  running job && finish job 90 "the job after w1's return"
  check_once "$work/job.in" "$work/job.out" "job" --require-retried
  wait_until 20 "w1's late results counted (stale_results + unheld_results)" eval '(($(late_results) >= 1))'
  late=$(late_results)
  expect_lost 1
  echo "worker-cut $cut s: w1 presumed dead after $detect_ms ms, rejoined $rejoin_ms ms after the link came up;" \
    "workers_lost $lost, late results $late"
}

# c: the master's link down 20 s while the workers work and a client waits.
master_cut() {
  local cut=20 job_ms
  netns_hosts 10.200.3 m w1 w2 w3 c
  master_start "${hb[@]}"
  start_workers
  sleep_input "$work/job.in" 300 0.1
  bg_stdin=$work/job.in start_bg job c "$tm" submit sleep --each --wait --json --retry-timeout 60 --connect "$endpoint"
  wait_until 30 "60 tasks done" done_at_least 60
  wait_until 10 "every worker holding tasks" status_is 'all(w["in_flight"] > 0 for w in s["workers"]) and len(s["workers"]) == 3'
  link_down m
  hold_until $(($(now_ms) + cut * 1000))
  link_up m
  # With the master's link down (the workers' up) a connection attempt waits for ARP, which fails
  # after 3 solicitations 1 s apart (the kernel's defaults): that much more.
  arp_slack=3
  wait_rejoin w1 w2 w3
  local up_at=$(now_ms)
  finish job 90 "the job after the master's return"
  job_ms=$(($(now_ms) - up_at))
  check_once "$work/job.in" "$work/job.out" "job"
  expect_lost 3
  echo "master-cut $cut s: every worker listed again $rejoin_ms ms after the link came up; the client's job" \
    "ended $job_ms ms after that; workers_lost $lost, late results $(late_results)"
}

# d: 10% loss into w1 and into the master from w1, default heartbeats.
loss() {
  local w1_done lost dropped_w1 dropped_m
  netns_hosts 10.200.4 m w1 w2 w3 c
  master_start
  start_workers
  nft_drop w1 loss numgen random mod 100 '<' 10 counter drop
  nft_drop m loss ip saddr "${ip_of[w1]}" numgen random mod 100 '<' 10 counter drop
  sleep_input "$work/job.in" 900 0.1
  local t0=$(now_ms)
  bg_stdin=$work/job.in start_bg job c "$tm" submit sleep --each --wait --json --connect "$endpoint"
  finish job 120 "the job under 10% loss"
  local job_ms=$(($(now_ms) - t0))
  check_once "$work/job.in" "$work/job.out" "job"
  lost=$(counter workers_lost)
  ((lost == 0)) || fail "workers_lost is $lost: a worker was presumed dead because of 10% loss"
  w1_done=$(grep -c '"worker":"w1"' "$work/job.out" || true)
  ((w1_done > 0)) || fail "w1 finished no task"
  dropped_w1=$(nft_dropped w1 loss)
  dropped_m=$(nft_dropped m loss)
  ((dropped_w1 > 0 && dropped_m > 0)) || fail "the loss rules dropped nothing ($dropped_w1, $dropped_m)"
  workers_alive
  echo "loss 10%: job of 900 in $job_ms ms; w1 finished $w1_done of 900 (a third would be even);" \
    "packets dropped: $dropped_w1 into w1, $dropped_m into the master; workers_lost 0"
}

# e: w1 behind a 50 ms relay (each way); the master restarted three times behind it.
delay_restart() {
  local relay_ep round sig down restarted_at rejoin
  netns_hosts 10.200.5 m w1 w2 w3 c r
  master_start "${hb[@]}"
  start_bg relay r python3 "$here/delay_relay.py" --listen "${ip_of[r]}:5555" --to "${ip_of[m]}:5555" --delay-ms 50 --max-seconds 600
  wait_until 20 "the relay listening" grep -qs listening "$work/relay.out"
  relay_ep=tcp://${ip_of[r]}:5555
  # w1 also serves a queue of its own: jobs there run only on the worker behind the relay.
  w1_extra=(--queue default --queue viarelay)
  start_workers "$relay_ep"
  sleep_input "$work/job.in" 300 0.2
  bg_stdin=$work/job.in start_bg job c "$tm" submit sleep --each --wait --json --max-attempts 5 --timeout 10 \
    --retry-timeout 60 --connect "$endpoint"
  # 1: kill -9 while w1 runs tasks; 2: SIGTERM while it runs tasks, the master down 1.5 s;
  # 3: once the job is over and w1 idle, kill -9 and down 1.5 s.
  for round in 1 2 3; do
    sig=KILL down=0
    ((round == 2)) && sig=TERM
    ((round >= 2)) && down=1500
    if ((round < 3)); then
      wait_until 60 "$((round * 80)) tasks of the job done" done_at_least $((round * 80))
      wait_until 10 "w1 holding tasks" holds_tasks w1
    else
      finish job 120 "the job across two restarts"
      check_once "$work/job.in" "$work/job.out" "job"
    fi
    stop_bg master "$sig"
    hold_until $(($(now_ms) + down))
    master_start "${hb[@]}"
    restarted_at=$(now_ms)
    if ((round == 3)); then
      # Queued before w1 says hello to the restarted master: tasks only w1 serves, one attempt each.
      # A lease dropped by a resent HELLO would make them die "timed out after 4 s" although w1 ran them.
      sleep_input "$work/only.in" 20 0.21
      bg_stdin=$work/only.in start_bg only c "$tm" submit sleep --each --wait --json --queue viarelay \
        --max-attempts 1 --timeout 4 --connect "$endpoint"
    fi
    wait_until 30 "w1 listed after restart $round" rejoined w1
    rejoin=$(($(now_ms) - restarted_at))
    echo "restart $round (SIG$sig, down $down ms): w1 listed $rejoin ms after the master was back"
  done
  finish only 60 "the w1-only job"
  check_once "$work/only.in" "$work/only.out" "w1-only job"
  running relay || fail "the relay exited"
  workers_alive
  echo "delay-restart: 50 ms each way to w1, master restarted 3 times (KILL, TERM, KILL); late results $(late_results)"
}

case $scenario in
  worker-cut) worker_cut "${3:-$((worker_timeout + 2))}" ;;
  worker-cut-long) worker_cut "${3:-${TASKMASTER_NETNS_LONG_CUT_SECONDS:-120}}" ;;
  master-cut) master_cut ;;
  loss) loss ;;
  delay-restart) delay_restart ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
echo "partitions $scenario: ok"
