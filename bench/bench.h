// `taskmaster bench`: the standard workload of ../shared/PEERS.md against a master it starts itself
// (a fresh one per configuration, with a fresh key: authentication and encryption on) or an
// existing one (--connect), one line of figures per configuration. Figures only: nothing here
// passes or fails on time; a run fails only when a result is wrong, missing or duplicated.
//
// Configurations (--only picks some, in this order):
//   zmq_ceiling  raw ZeroMQ ventilator -> W worker processes -> sink, square(n), verified (PEERS.md row (b))
//   relay_floor  raw two-hop relay with our sockets and CURVE: client DEALER -> ROUTER relay process ->
//                DEALER worker processes and back, no rules, no journal: the latency floor (p50/p99 of
//                sequential round trips) and throughput ceiling (one task per message) of a broker
//   throughput   W worker processes (-j 1 each); N tasks submitted as fast as the client takes them,
//                then every result collected and verified; tasks/s, master peak RSS and CPU
//   latency      one worker; 100 warm-up then 2,000 sequential submit-and-wait round trips; p50/p99
//   ack          2,000 sequential one-task submissions (no worker): SUBMIT to ACCEPTED, p50/p99;
//                with --durable this is the submission-to-durable latency
//   cli          `taskmaster submit square --each --wait --json` with N lines on stdin, timed as a
//                whole process, its output verified
//   memory       N tasks queued and no worker: the master's RSS growth per queued task
//   backlog      throughput (W = the first --workers, N = the first --n) with 1,000 or 1,000,000
//                tasks already queued (on another queue, which no worker serves)
//   big_hello    one worker with the largest HELLO (1024 functions x 1024 queues), then 10,000 tasks:
//                how long dispatching them takes, and a STATUS's round trip meanwhile
//   workers2000  2,000 simulated workers connected: the master's idle CPU, then how N tasks spread
//   exec         1,000 x `true` (quick: 200) through `taskmaster run --each` on one worker with 2 slots
//                (--allow-exec), beside `xargs -P2 -n1 true` on the same input in the same run: each
//                one's wall time and per-task cost, and the overhead per task (ours - xargs) / N
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/expected.h"
#include "protocol/auth.h"

namespace taskmaster::bench {

inline const std::vector<std::string> kConfigs = {"zmq_ceiling", "relay_floor", "throughput", "latency", "ack",         "cli",
                                                  "memory",      "backlog",     "big_hello",  "jobs",    "workers2000", "exec"};

// Every list or count left empty (or 0) takes the default of the mode: the full benchmark, or the
// small smoke test of --quick (well under a minute).
struct Options {
  std::vector<std::string> only;  // configurations to run; empty: all of kConfigs
  std::vector<unsigned> workers;  // W: {2, 4}; quick {2}
  std::vector<std::uint64_t> n;   // N of throughput and cli: {20000, 200000}; quick {2000}
  unsigned worker_threads = 1;    // -j of each worker process (PEERS.md: 1)
  unsigned repeat = 1;            // runs per configuration; the RESULT line is their median
  bool quick = false;
  bool durable = false;  // masters journal to a temporary --data-dir
  std::string connect;   // an existing master; "" = start one per configuration
  // With `connect`: the keys (nullopt: --insecure), and the key options passed on to the processes
  // started here (workers, `taskmaster submit`), e.g. {"--key-file", PATH}.
  std::optional<protocol::CurveKeys> curve;
  std::vector<std::string> key_args;
  bool insecure = false;               // own master: no key (to see what encryption costs)
  std::uint64_t latency_trips = 0;     // 2000; quick 200 (after warm-up ones: 100; quick 20)
  std::uint64_t memory_n = 0;          // 1000000; quick 20000
  std::vector<std::uint64_t> backlog;  // {1000, 1000000}; quick {1000, 20000}
  std::size_t sim_workers = 0;         // 2000; quick 50
  std::uint64_t sim_n = 0;             // tasks spread over them: 20000; quick 1000
  double idle_s = 0;                   // idle CPU window: 5 s; quick 1 s
  std::uint64_t ceiling_n = 0;         // 200000; quick 20000
  std::chrono::seconds timeout{600};   // bound on each configuration
  std::string exe;                     // the taskmaster binary; "" = this process's own
};

// Fills every default left open (see Options). Fails on an unknown configuration name or a
// contradiction.
Expected<Options> resolve(Options o);

// Errors of a run whose results were wrong, missing or duplicated start with this.
inline constexpr std::string_view kVerificationFailed = "verification failed";
inline bool is_verification_failure(const Error& e) { return e.message.find(kVerificationFailed) != std::string::npos; }

// Runs the configurations of `o` (resolved first). Each RESULT line (and with repeat > 1, each
// DETAIL line) is passed to `emit` as soon as it is known; progress goes to the log (stderr).
// Fails at the first configuration that cannot run or does not verify.
Status run(const Options& o, const std::function<void(const std::string& line)>& emit);

}  // namespace taskmaster::bench
