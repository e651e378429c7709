#include "bench/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace taskmaster::bench {

using namespace std::chrono;

namespace {

std::function<void()> registry_cleanup;  // set by the InterruptGuard
std::mutex registry_mutex;               // guards registry_cleanup
std::atomic<bool> aborting{false};

}  // namespace

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
  std::function<void()> cleanup;
  {
    std::lock_guard lock(registry_mutex);
    cleanup = registry_cleanup;
  }
  stop_every_child(kStopGrace);
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

void raise_fd_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace taskmaster::bench
