// The processes a benchmark starts (a master, its workers, a `taskmaster submit`: each a Child of
// common/process.h, started with parent_death_signal SIGTERM), and what /proc says about them.
// Every process started here is stopped by its PID: when its Child goes away,
// and, through the InterruptGuard, when the benchmark is interrupted (SIGINT, SIGTERM, SIGHUP) or
// runs out of time. A child also gets SIGTERM if the benchmark process dies without cleaning up
// (PR_SET_PDEATHSIG), so nothing outlives a `kill -9` of the benchmark either.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/expected.h"
#include "common/process.h"

namespace taskmaster::bench {

using Clock = std::chrono::steady_clock;

// Child, stop_all, kStopGrace and environment come from common/process.h (the children are started there).
// The options of every child of the benchmark: it gets SIGTERM if the benchmark dies without
// stopping it (a master stops, a worker drains).
inline Child::Options child_options(std::vector<std::string> env, std::string log_path, bool pipe_stdin, bool pipe_stdout) {
  return {std::move(env), std::move(log_path), pipe_stdin, pipe_stdout, false, SIGTERM};
}

// Runs a started child to completion: writes `input` to its stdin (then closes it) while reading
// all of its stdout, until it exits or `deadline` passes (then it is stopped and this fails).
// Returns {exit code, stdout}. REQUIRES: pipe_stdin and pipe_stdout.
struct Finished {
  int code = -1;
  std::string out;
};
Expected<Finished> run_to_end(Child& child, const std::string& input, Clock::time_point deadline);

// Stops every child still registered and exits the process with `code` (after `cleanup` of the
// InterruptGuard). Used by the guard's signal thread and by the per-configuration watchdog.
[[noreturn]] void abort_run(const std::string& why, int code);

// While one exists, SIGINT, SIGTERM and SIGHUP stop every child the benchmark started (by PID),
// run `cleanup` (e.g. removing the temporary directory), and exit 130. It blocks those signals in
// the calling thread and every thread started after it, so create it before any other thread
// (ZeroMQ contexts included).
class InterruptGuard {
 public:
  explicit InterruptGuard(std::function<void()> cleanup);
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct Impl;
  Impl* impl_;
};

// Fails the run (abort_run, exit 5) if it is still armed after `limit`: the bound on one
// configuration, so that a hung master or a lost task never makes the benchmark hang.
class Watchdog {
 public:
  Watchdog(std::string what, std::chrono::milliseconds limit);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  struct Impl;
  Impl* impl_;
};

// What /proc says about a process (all its threads).
struct ProcStats {
  double cpu_s = 0;             // utime + stime
  std::uint64_t rss_bytes = 0;  // VmRSS
  std::uint64_t hwm_bytes = 0;  // VmHWM: peak resident set
};
std::optional<ProcStats> read_proc(pid_t pid);
// This process's CPU time (all threads), from getrusage.
double own_cpu_s();

// The last `lines` lines of a log file, for error messages ("" if unreadable).
std::string tail_of(const std::string& path, std::size_t lines = 15);

// Raises this process's open-file limit to its hard limit (children inherit it): 2,000 connections
// need more than the usual 1,024 descriptors.
void raise_fd_limit();

}  // namespace taskmaster::bench
