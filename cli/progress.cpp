#include "cli/progress.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace taskmaster::cli {

using namespace std::chrono;

namespace {

constexpr milliseconds kRedraw{100};  // at most 10 redraws a second
constexpr seconds kRateWindow{5};     // the rate is of the last few seconds
constexpr const char* kClear = "\r\033[K";

// The one progress line of this process, for say() from other threads.
std::mutex active_mutex;
Progress* active_progress = nullptr;
std::condition_variable wake;

std::string count_text(double v) {
  char buf[32];
  if (v >= 100) std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (v >= 10) std::snprintf(buf, sizeof buf, "%.1f", v);
  else std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::size_t terminal_width() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

void write_stderr(const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const auto n = ::write(STDERR_FILENO, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::string outcome_counts(const ProgressCounts& c) {
  std::string s = std::to_string(c.done) + " done, " + std::to_string(c.failed) + " failed";
  if (c.cancelled) s += ", " + std::to_string(c.cancelled) + " cancelled";
  return s;
}

}  // namespace

std::string eta_text(double seconds) {
  const auto s = static_cast<long long>(std::ceil(std::max(0.0, seconds)));
  char buf[48];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm %02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lldh %02lldm", s / 3600, s / 60 % 60);
  return buf;
}

std::string format_progress(const ProgressCounts& c, std::optional<double> rate, std::size_t width) {
  std::string s = "job " + std::to_string(c.job) + ": " + outcome_counts(c) + " of " + std::to_string(c.total);
  if (!c.sealed) s += " so far";
  const std::uint64_t finished = c.done + c.failed + c.cancelled;
  if (rate) {
    s += ", " + count_text(*rate) + "/s";
    if (c.sealed && finished < c.total) s += *rate > 0 ? ", ETA " + eta_text(static_cast<double>(c.total - finished) / *rate) : ", ETA -";
  }
  if (width > 0 && s.size() >= width) s.resize(width - 1);  // never wrap: \r would not clear a wrapped line
  return s;
}

std::string format_progress_summary(const ProgressCounts& c, double seconds) {
  const std::uint64_t finished = c.done + c.failed + c.cancelled;
  char tail[96];
  std::snprintf(tail, sizeof tail, " in %.1f s", seconds);
  std::string s = "taskmaster: job " + std::to_string(c.job) + ": " + outcome_counts(c) + tail;
  if (seconds > 0) s += " (" + count_text(static_cast<double>(finished) / seconds) + "/s)";
  return s;
}

bool progress_terminal() {
  if (::isatty(STDERR_FILENO) != 1) return false;
  const char* term = std::getenv("TERM");
  return term && *term && std::strcmp(term, "dumb") != 0;
}

Progress::Progress(bool wanted) : active_(wanted && progress_terminal()) {
  if (!active_) return;
  struct stat out {
  }, err{};
  shares_terminal_ = ::isatty(STDOUT_FILENO) == 1 && ::fstat(STDOUT_FILENO, &out) == 0 && ::fstat(STDERR_FILENO, &err) == 0 &&
                     out.st_rdev == err.st_rdev;
}

Progress::~Progress() { finish(nullptr); }

void Progress::start(protocol::JobId job) {
  if (!active_) return;
  {
    std::lock_guard lock(mutex_);
    if (thread_.joinable()) return;
    counts_.job = job;
    started_ = steady_clock::now();
    thread_ = std::thread(&Progress::run, this);
  }
  std::lock_guard a(active_mutex);  // (never while holding mutex_: say() takes them the other way)
  active_progress = this;
}

void Progress::update(const JobSummary& s) {
  if (!active_) return;
  std::lock_guard lock(mutex_);
  counts_.total = std::max(s.total, known_);
  counts_.done = s.done;
  counts_.failed = s.dead;
  counts_.cancelled = s.cancelled;
  counts_.sealed = s.sealed;
}

void Progress::at_least(std::uint64_t total) {
  if (!active_) return;
  std::lock_guard lock(mutex_);
  known_ = std::max(known_, total);
  counts_.total = std::max(counts_.total, known_);
}

void Progress::around(const std::function<void()>& write, bool on_stderr) {
  if (!active_) {
    write();
    return;
  }
  std::lock_guard lock(mutex_);
  if (on_stderr || shares_terminal_) clear_locked();
  write();
  std::fflush(stdout);
  std::fflush(stderr);
}

void Progress::clear_locked() {
  if (!drawn_) return;
  write_stderr(kClear);
  drawn_ = false;
}

void Progress::draw_locked() {
  const auto now = steady_clock::now();
  const std::uint64_t finished = counts_.done + counts_.failed + counts_.cancelled;
  samples_.emplace_back(now, finished);
  while (samples_.size() > 2 && now - samples_.front().first > kRateWindow) samples_.pop_front();
  std::optional<double> rate;
  const double span = duration<double>(now - samples_.front().first).count();
  if (span >= 0.5) rate = static_cast<double>(finished - samples_.front().second) / span;
  const std::string line = format_progress(counts_, rate, terminal_width());
  if (drawn_ && line == last_) return;
  write_stderr(kClear + line);
  last_ = line;
  drawn_ = true;
}

void Progress::run() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    draw_locked();
    wake.wait_for(lock, kRedraw, [&] { return stop_; });
  }
}

void Progress::finish(const JobSummary* summary) {
  if (!active_) return;
  {
    std::lock_guard a(active_mutex);
    if (active_progress == this) active_progress = nullptr;
  }
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mutex_);
  clear_locked();
  if (summary && counts_.job) {
    counts_.done = summary->done;
    counts_.failed = summary->dead;
    counts_.cancelled = summary->cancelled;
    write_stderr(format_progress_summary(counts_, duration<double>(steady_clock::now() - started_).count()) + "\n");
  }
  active_ = false;
}

void say(const std::string& line) {
  std::lock_guard a(active_mutex);
  if (active_progress) active_progress->around([&] { write_stderr(line + "\n"); }, /*on_stderr=*/true);
  else write_stderr(line + "\n");
}

}  // namespace taskmaster::cli
