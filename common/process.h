// Child: a process started with fork + execve and stopped by its PID only. The one child-process
// library: the `taskmaster bench` command (bench/process.h) and the tests (tests/support/process.h)
// both start their processes with it. Every child started and not yet reaped is registered, so
// that stop_every_child() can stop them all (an interrupted benchmark).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace taskmaster {

// How long a process has to exit after SIGTERM before it gets SIGKILL.
inline constexpr std::chrono::milliseconds kStopGrace{5000};

class Child {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    std::vector<std::string> env;  // the whole environment (NAME=VALUE)
    std::string log_path;          // its stderr goes here (appended); "" = /dev/null
    bool pipe_stdin = false;       // stdin_fd() is the write end; else stdin is /dev/null
    bool pipe_stdout = false;      // stdout_fd() is the read end; else stdout goes to the log too
    bool pipe_stderr = false;      // stderr_fd() is the read end; else stderr goes to the log
    int parent_death_signal = 0;   // sent to it if this thread dies without stopping it (0: none)
  };
  // Starts argv[0] (a path) with fork + execve, with no signal blocked and SIGINT, SIGTERM, SIGHUP
  // and SIGPIPE at their defaults. Throws std::runtime_error if it cannot (a program that cannot
  // be executed exits 127).
  Child(std::vector<std::string> argv, Options options);
  // Stops it (SIGTERM, then SIGKILL after kStopGrace) if it still runs, and closes its pipes.
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  int stdin_fd() const { return stdin_fd_; }
  int stdout_fd() const { return stdout_fd_; }
  int stderr_fd() const { return stderr_fd_; }
  void close_stdin();

  // The next line of stdout (without the newline), waiting until `deadline`; nullopt at EOF or
  // when time is up. REQUIRES: pipe_stdout, and nothing else reads stdout_fd().
  std::optional<std::string> read_line(Clock::time_point deadline);

  // The exit code once it has exited (128 + N if killed by signal N), waiting until `deadline`.
  std::optional<int> wait(Clock::time_point deadline);
  bool running() { return !wait(Clock::now()).has_value(); }
  // Sends `sig` unless it has been reaped.
  void signal(int sig);
  // SIGTERM, then SIGKILL if it has not exited after `grace`. Returns its exit code.
  int stop(std::chrono::milliseconds grace = kStopGrace);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
  int stdin_fd_ = -1, stdout_fd_ = -1, stderr_fd_ = -1;
  std::string buffered_;  // stdout read but not yet returned by read_line
};

// Stops several children at once: SIGTERM to all, then SIGKILL to those still running after
// `grace`. Children that are null or already reaped are skipped.
void stop_all(const std::vector<Child*>& children, std::chrono::milliseconds grace = kStopGrace);

// Stops (by PID: SIGTERM, then SIGKILL after `grace`) and reaps every Child started and not yet
// reaped, whichever thread owns it. For a process about to exit.
void stop_every_child(std::chrono::milliseconds grace = kStopGrace);

// The environment of this process, without the variables named in `drop`, plus `add`.
std::vector<std::string> environment(const std::vector<std::string>& drop, const std::vector<std::string>& add);

}  // namespace taskmaster
