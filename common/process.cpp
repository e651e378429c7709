#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace taskmaster {

using namespace std::chrono;
using Clock = Child::Clock;

namespace {

// Every child started and not yet reaped, so that stop_every_child can stop them all.
std::mutex registry_mutex;
std::set<pid_t> registry;

void register_child(pid_t pid) {
  std::lock_guard lock(registry_mutex);
  registry.insert(pid);
}

void unregister_child(pid_t pid) {
  std::lock_guard lock(registry_mutex);
  registry.erase(pid);
}

int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// Waits for `pid` until `deadline`; true once it is reaped (or is not our child any more).
bool reap(pid_t pid, Clock::time_point deadline, int* status) {
  for (;;) {
    const pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) {
      *status = 0;
      return true;  // ECHILD: reaped elsewhere
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));  // no child-exit fd to block on: poll, bounded by the deadline
  }
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

Child::Child(std::vector<std::string> argv, Options options) : log_path_(std::move(options.log_path)) {
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<char*> args, envs;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : options.env) envs.push_back(e.data());
  envs.push_back(nullptr);
  const int log = log_path_.empty() ? ::open("/dev/null", O_WRONLY | O_CLOEXEC)
                                    : ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  const auto close_all = [&] {
    for (int fd : {log, null_in, in[0], in[1], out[0], out[1], err[0], err[1]})
      if (fd >= 0) ::close(fd);
  };
  if (log < 0 || null_in < 0 || (options.pipe_stdin && ::pipe2(in, O_CLOEXEC) != 0) ||
      (options.pipe_stdout && ::pipe2(out, O_CLOEXEC) != 0) || (options.pipe_stderr && ::pipe2(err, O_CLOEXEC) != 0)) {
    const int open_errno = errno;
    close_all();
    throw std::runtime_error(std::string("cannot start ") + argv[0] + ": " + std::strerror(open_errno));
  }
  const pid_t parent = ::getpid();
  const int death_signal = options.parent_death_signal;
  const pid_t pid = ::fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(s, SIG_DFL);
    if (death_signal != 0) {
      ::prctl(PR_SET_PDEATHSIG, death_signal);
      if (::getppid() != parent) ::_exit(127);
    }
    ::dup2(options.pipe_stdin ? in[0] : null_in, 0);
    ::dup2(options.pipe_stdout ? out[1] : log, 1);
    ::dup2(options.pipe_stderr ? err[1] : log, 2);
    ::execve(args[0], args.data(), envs.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(log);
  ::close(null_in);
  close_fd(in[0]);
  close_fd(out[1]);
  close_fd(err[1]);
  if (pid < 0) {
    close_fd(in[1]);
    close_fd(out[0]);
    close_fd(err[0]);
    throw std::runtime_error(std::string("cannot start ") + argv[0] + ": " + std::strerror(fork_errno));
  }
  pid_ = pid;
  register_child(pid_);
  stdin_fd_ = in[1];
  stdout_fd_ = out[0];
  stderr_fd_ = err[0];
}

Child::~Child() {
  stop();
  close_fd(stdin_fd_);
  close_fd(stdout_fd_);
  close_fd(stderr_fd_);
}

void Child::close_stdin() { close_fd(stdin_fd_); }

std::optional<std::string> Child::read_line(Clock::time_point deadline) {
  for (;;) {
    if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    const auto now = Clock::now();
    if (now >= deadline || stdout_fd_ < 0) return std::nullopt;
    pollfd p{stdout_fd_, POLLIN, 0};
    const auto left = duration_cast<milliseconds>(deadline - now).count() + 1;
    if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000))) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;  // EOF: it exited or closed stdout
    buffered_.append(buf, static_cast<std::size_t>(n));
  }
}

std::optional<int> Child::wait(Clock::time_point deadline) {
  if (status_) return status_;
  int st = 0;
  if (!reap(pid_, deadline, &st)) return std::nullopt;
  status_ = exit_code_of(st);
  unregister_child(pid_);
  return status_;
}

void Child::signal(int sig) {
  if (!status_ && pid_ > 0) ::kill(pid_, sig);
}

int Child::stop(milliseconds grace) {
  if (status_ || pid_ <= 0) return status_.value_or(-1);
  ::kill(pid_, SIGTERM);
  if (auto code = wait(Clock::now() + grace)) return *code;
  ::kill(pid_, SIGKILL);
  return wait(Clock::now() + seconds(10)).value_or(-1);
}

void stop_all(const std::vector<Child*>& children, milliseconds grace) {
  for (auto* c : children)
    if (c && c->running()) ::kill(c->pid(), SIGTERM);
  const auto deadline = Clock::now() + grace;
  for (auto* c : children)
    if (c && !c->wait(deadline)) ::kill(c->pid(), SIGKILL);
  for (auto* c : children)
    if (c) c->wait(Clock::now() + seconds(10));
}

void stop_every_child(milliseconds grace) {
  std::vector<pid_t> pids;
  {
    std::lock_guard lock(registry_mutex);
    pids.assign(registry.begin(), registry.end());
  }
  for (pid_t p : pids) ::kill(p, SIGTERM);
  const auto deadline = Clock::now() + grace;
  int st = 0;
  for (pid_t p : pids)
    if (!reap(p, deadline, &st)) {
      ::kill(p, SIGKILL);
      reap(p, Clock::now() + seconds(10), &st);
    }
}

std::vector<std::string> environment(const std::vector<std::string>& drop, const std::vector<std::string>& add) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool dropped = false;
    for (const auto& d : drop) dropped = dropped || name == d;
    if (!dropped) env.push_back(entry);
  }
  env.insert(env.end(), add.begin(), add.end());
  return env;
}

}  // namespace taskmaster
