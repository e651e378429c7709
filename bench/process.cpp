#include "bench/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace taskmaster::bench {

using namespace std::chrono;

namespace {

// Every child started and not yet reaped, so that an interrupted run can stop them all.
std::mutex registry_mutex;
std::set<pid_t> registry;
std::function<void()> registry_cleanup;  // set by the InterruptGuard
std::atomic<bool> aborting{false};

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
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  if (log < 0 || null_in < 0 || (options.pipe_stdin && ::pipe2(in, O_CLOEXEC) != 0) ||
      (options.pipe_stdout && ::pipe2(out, O_CLOEXEC) != 0))
    throw std::runtime_error(std::string("cannot start ") + argv[0] + ": " + std::strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(s, SIG_DFL);
    // If the benchmark dies without stopping us, we get SIGTERM (a master stops, a worker drains).
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(options.pipe_stdin ? in[0] : null_in, 0);
    ::dup2(options.pipe_stdout ? out[1] : log, 1);
    ::dup2(log, 2);
    ::execve(args[0], args.data(), envs.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(log);
  ::close(null_in);
  if (options.pipe_stdin) ::close(in[0]);
  if (options.pipe_stdout) ::close(out[1]);
  if (pid < 0) {
    if (options.pipe_stdin) ::close(in[1]);
    if (options.pipe_stdout) ::close(out[0]);
    throw std::runtime_error(std::string("cannot start ") + argv[0] + ": " + std::strerror(fork_errno));
  }
  pid_ = pid;
  register_child(pid_);
  stdin_fd_ = in[1];
  stdout_fd_ = out[0];
}

Child::~Child() {
  stop();
  close_stdin();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

void Child::close_stdin() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

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

Expected<Finished> run_to_end(Child& child, const std::string& input, Clock::time_point deadline) {
  Finished f;
  std::size_t written = 0;
  ::fcntl(child.stdin_fd(), F_SETFL, O_NONBLOCK);
  if (input.empty()) child.close_stdin();
  bool out_open = true;
  char buf[65536];
  while (out_open) {
    if (Clock::now() >= deadline) {
      child.stop();
      return make_error(ErrorCode::Unreachable, "the command did not finish in time");
    }
    pollfd p[2] = {{child.stdout_fd(), POLLIN, 0}, {child.stdin_fd(), POLLOUT, 0}};
    const int count = child.stdin_fd() >= 0 ? 2 : 1;
    if (::poll(p, count, 200) < 0 && errno != EINTR) return make_error(ErrorCode::Internal, std::string("poll: ") + std::strerror(errno));
    if (count == 2 && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = ::write(child.stdin_fd(), input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<std::size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) child.close_stdin();
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::read(child.stdout_fd(), buf, sizeof buf);
      if (n > 0) f.out.append(buf, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EINTR) out_open = false;
    }
  }
  child.close_stdin();
  auto code = child.wait(deadline);
  if (!code) {
    child.stop();
    return make_error(ErrorCode::Unreachable, "the command did not exit in time");
  }
  f.code = *code;
  return f;
}

[[noreturn]] void abort_run(const std::string& why, int code) {
  if (aborting.exchange(true)) {
    for (;;) std::this_thread::sleep_for(seconds(1));  // the first caller exits the process
  }
  std::fprintf(stderr, "taskmaster bench: %s; stopping every process it started\n", why.c_str());
  std::vector<pid_t> pids;
  std::function<void()> cleanup;
  {
    std::lock_guard lock(registry_mutex);
    pids.assign(registry.begin(), registry.end());
    cleanup = registry_cleanup;
  }
  for (pid_t p : pids) ::kill(p, SIGTERM);
  const auto deadline = Clock::now() + kStopGrace;
  int st = 0;
  for (pid_t p : pids)
    if (!reap(p, deadline, &st)) {
      ::kill(p, SIGKILL);
      reap(p, Clock::now() + seconds(10), &st);
    }
  if (cleanup) cleanup();
  std::fflush(stdout);
  ::_exit(code);
}

struct InterruptGuard::Impl {
  sigset_t old_mask;
  struct sigaction old_pipe;
  std::atomic<bool> done{false};
  std::thread thread;
};

InterruptGuard::InterruptGuard(std::function<void()> cleanup) : impl_(new Impl) {
  {
    std::lock_guard lock(registry_mutex);
    registry_cleanup = std::move(cleanup);
  }
  // A child that dies while we write to its stdin must be an error, not the end of the benchmark.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &impl_->old_pipe);
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, &impl_->old_mask);
  impl_->thread = std::thread([this, set] {
    while (!impl_->done) {
      timespec tick{0, 100 * 1000 * 1000};
      const int sig = sigtimedwait(&set, nullptr, &tick);
      if (sig > 0) abort_run(std::string("interrupted by ") + strsignal(sig), 128 + sig);
    }
  });
}

InterruptGuard::~InterruptGuard() {
  impl_->done = true;
  impl_->thread.join();
  pthread_sigmask(SIG_SETMASK, &impl_->old_mask, nullptr);
  sigaction(SIGPIPE, &impl_->old_pipe, nullptr);
  {
    std::lock_guard lock(registry_mutex);
    registry_cleanup = nullptr;
  }
  delete impl_;
}

struct Watchdog::Impl {
  std::mutex mutex;
  std::condition_variable cv;
  bool disarmed = false;
  std::thread thread;
};

Watchdog::Watchdog(std::string what, milliseconds limit) : impl_(new Impl) {
  impl_->thread = std::thread([this, what = std::move(what), limit] {
    std::unique_lock lock(impl_->mutex);
    if (!impl_->cv.wait_for(lock, limit, [&] { return impl_->disarmed; }))
      abort_run(what + " did not finish within " + std::to_string(limit.count() / 1000) + " s (--timeout)", 5);
  });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->disarmed = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
  delete impl_;
}

std::optional<ProcStats> read_proc(pid_t pid) {
  ProcStats s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  // After "pid (comm) " come fields 3 (state) onwards; utime and stime are fields 14 and 15.
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (fields >> field); ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  s.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %llu kB", &kb) == 1) s.rss_bytes = kb * 1024;
    if (std::sscanf(line.c_str(), "VmHWM: %llu kB", &kb) == 1) s.hwm_bytes = kb * 1024;
  }
  return s;
}

double own_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

std::string tail_of(const std::string& path, std::size_t lines) {
  std::ifstream in(path);
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (last.size() > lines) last.pop_front();
  }
  std::string out;
  for (auto& l : last) out += "  | " + l + "\n";
  return out;
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

void raise_fd_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace taskmaster::bench
