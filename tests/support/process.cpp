#include "support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <doctest/doctest.h>

extern char** environ;

namespace taskmaster::test {

ChildProcess::ChildProcess(std::vector<std::string> argv, Options options) : argv_(std::move(argv)) {
  // A child that exits before reading all its input must not take the test runner with it.
  static const bool ignore_sigpipe = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
  (void)ignore_sigpipe;
  int out[2], err[2], in[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) throw std::runtime_error("pipe failed");
  if (options.stdin_data && pipe2(in, O_CLOEXEC)) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (options.stdin_data) posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  // The test runner may block signals; the child starts with none blocked and default handlers.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  for (auto& e : options.env) env_strings.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  const int rc = posix_spawn(&pid_, args[0], &fa, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  ::close(err[1]);
  if (options.stdin_data) ::close(in[0]);
  if (rc != 0) {
    ::close(out[0]);
    ::close(err[0]);
    throw std::runtime_error("cannot start " + argv_[0] + ": " + std::strerror(rc));
  }
  out_thread_ = std::thread(&ChildProcess::reader, this, out[0], &out_, &out_eof_);
  err_thread_ = std::thread(&ChildProcess::reader, this, err[0], &err_, &err_eof_);
  if (options.stdin_data) {
    in_thread_ = std::thread([fd = in[1], data = std::move(*options.stdin_data)] {
      std::size_t done = 0;
      while (done < data.size()) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n <= 0 && errno != EINTR) break;
        if (n > 0) done += static_cast<std::size_t>(n);
      }
      ::close(fd);
    });
  }
}

ChildProcess::~ChildProcess() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    wait(10s);
  }
  // Something the process started may still hold its pipes open: do not wait for it forever.
  if (!wait_eof(5s)) abandon_ = true;
  if (in_thread_.joinable()) in_thread_.join();
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
}

void ChildProcess::reader(int fd, std::string* sink, bool* eof) {
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) == 0) {
      if (abandon_) {
        std::lock_guard lock(mutex_);
        *eof = true;
        break;
      }
      continue;
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    std::lock_guard lock(mutex_);
    if (n <= 0) {
      *eof = true;
      changed_.notify_all();
      break;
    }
    sink->append(buf, static_cast<std::size_t>(n));
    changed_.notify_all();
  }
  ::close(fd);
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  std::optional<std::string> line;
  changed_.wait_for(lock, timeout, [&] {
    const auto nl = out_.find('\n', out_read_);
    if (nl != std::string::npos) {
      line = out_.substr(out_read_, nl - out_read_);
      out_read_ = nl + 1;
      return true;
    }
    return out_eof_;
  });
  return line;
}

std::string ChildProcess::out() const {
  std::lock_guard lock(mutex_);
  return out_;
}

std::string ChildProcess::err() const {
  std::lock_guard lock(mutex_);
  return err_;
}

bool ChildProcess::wait_for_err(const std::function<bool(const std::string&)>& pred, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return pred(err_) || err_eof_; }) && pred(err_);
}

bool ChildProcess::wait_eof(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return out_eof_ && err_eof_; });
}

void ChildProcess::signal(int sig) {
  if (!status_) ::kill(pid_, sig);
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (Clock::now() >= deadline) return std::nullopt;
    // No child-exit fd to block on here: check again shortly (bounded by the deadline above).
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10ms);
  }
}

bool ChildProcess::running() { return !wait(0ms).has_value(); }

void wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout, const std::string& what) {
  const auto deadline = Clock::now() + timeout;
  std::mutex m;
  std::condition_variable never;
  while (!pred()) {
    if (Clock::now() >= deadline) FAIL("timed out after " << timeout.count() << " ms waiting for: " << what);
    std::unique_lock lock(m);
    never.wait_for(lock, 20ms);  // wait_until's polling interval
  }
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "taskmaster-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace taskmaster::test
