// The processes a benchmark starts (a master, its workers, a `taskmaster submit`), and what /proc
// says about them. Every process started here is stopped by its PID: when its Child goes away,
// and, through the InterruptGuard, when the benchmark is interrupted (SIGINT, SIGTERM, SIGHUP) or
// runs out of time. A child also gets SIGTERM if the benchmark process dies without cleaning up
// (PR_SET_PDEATHSIG), so nothing outlives a `kill -9` of the benchmark either.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/expected.h"

namespace taskmaster::bench {

using Clock = std::chrono::steady_clock;

// How long a process has to exit after SIGTERM before it gets SIGKILL.
inline constexpr std::chrono::milliseconds kStopGrace{5000};

class Child {
 public:
  struct Options {
    std::vector<std::string> env;  // the whole environment (NAME=VALUE)
    std::string log_path;          // its stderr goes here (appended); "" = /dev/null
    bool pipe_stdin = false;       // stdin_fd() is the write end; else stdin is /dev/null
    bool pipe_stdout = false;      // stdout_fd() is the read end; else stdout goes to the log too
  };
  // Starts argv[0] (a path) with fork + execve. Throws std::runtime_error if it cannot.
  Child(std::vector<std::string> argv, Options options);
  // Stops it (SIGTERM, then SIGKILL after kStopGrace) if it still runs.
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  int stdin_fd() const { return stdin_fd_; }
  int stdout_fd() const { return stdout_fd_; }
  void close_stdin();

  // The next line of stdout (without the newline), waiting until `deadline`; nullopt at EOF or
  // when time is up. REQUIRES: pipe_stdout.
  std::optional<std::string> read_line(Clock::time_point deadline);

  // The exit code once it has exited (128 + N if killed by signal N), waiting until `deadline`.
  std::optional<int> wait(Clock::time_point deadline);
  bool running() { return !wait(Clock::now()).has_value(); }
  // SIGTERM, then SIGKILL if it has not exited after `grace`. Returns its exit code.
  int stop(std::chrono::milliseconds grace = kStopGrace);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
  int stdin_fd_ = -1, stdout_fd_ = -1;
  std::string buffered_;  // stdout read but not yet returned by read_line
};

// Stops several children at once: SIGTERM to all, then SIGKILL to those still running after
// `grace`. Children that are null or already reaped are skipped.
void stop_all(const std::vector<Child*>& children, std::chrono::milliseconds grace = kStopGrace);

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
  double cpu_s = 0;            // utime + stime
  std::uint64_t rss_bytes = 0;  // VmRSS
  std::uint64_t hwm_bytes = 0;  // VmHWM: peak resident set
};
std::optional<ProcStats> read_proc(pid_t pid);
// This process's CPU time (all threads), from getrusage.
double own_cpu_s();

// The last `lines` lines of a log file, for error messages ("" if unreadable).
std::string tail_of(const std::string& path, std::size_t lines = 15);

// The environment of this process, without the variables named in `drop`, plus `add`.
std::vector<std::string> environment(const std::vector<std::string>& drop, const std::vector<std::string>& add);

// Raises this process's open-file limit to its hard limit (children inherit it): 2,000 connections
// need more than the usual 1,024 descriptors.
void raise_fd_limit();

}  // namespace taskmaster::bench
