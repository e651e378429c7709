// ChildProcess: a real process started by a test (a Child of common/process.h), with its stdout
// and stderr collected in the background, and stopped (by its PID only) when the object goes away.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/process.h"
#include "support/temp_dir.h"  // the tests' TempDir

namespace taskmaster::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ChildProcess {
 public:
  struct Options {
    std::optional<std::string> stdin_data;  // written to its stdin, then closed; else /dev/null
    std::vector<std::string> env;           // extra NAME=VALUE entries
  };
  explicit ChildProcess(std::vector<std::string> argv) : ChildProcess(std::move(argv), Options{}) {}
  ChildProcess(std::vector<std::string> argv, Options options);
  // SIGKILLs the process if it still runs, and reaps it.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return child_.pid(); }

  // The next whole line of stdout, waiting at most `timeout`; nullopt at EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Everything written to stdout / stderr so far.
  std::string out() const;
  std::string err() const;
  // Waits (at most `timeout`) until `pred(stderr so far)` holds.
  bool wait_for_err(const std::function<bool(const std::string&)>& pred, std::chrono::milliseconds timeout);

  // Waits (at most `timeout`) until stdout and stderr are both closed; true if they are.
  bool wait_eof(std::chrono::milliseconds timeout);

  void signal(int sig);
  // The exit code once it has exited (128 + N if killed by signal N), waiting at most `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();

 private:
  void reader(int fd, std::string* sink, bool* eof);

  Child child_;  // owns the pipes; destroyed after the threads that use them are joined
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string out_, err_;
  std::size_t out_read_ = 0;  // how much of out_ read_line has consumed
  bool out_eof_ = false, err_eof_ = false;
  std::atomic<bool> abandon_{false};  // the readers give up (a grandchild keeps the pipes open)
  std::thread out_thread_, err_thread_, in_thread_;
};

// Polls `pred` until it holds or `timeout` passes; then fails the test with `what`.
// This, and never a fixed sleep, is how system tests wait for something to happen.
void wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout, const std::string& what);

}  // namespace taskmaster::test
