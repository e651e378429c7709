#include "support/process.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <doctest/doctest.h>

namespace taskmaster::test {

namespace {

Child::Options child_options(const ChildProcess::Options& options) {
  Child::Options o;
  o.env = environment({}, options.env);  // the test runner's, plus the extra entries
  o.pipe_stdin = options.stdin_data.has_value();
  o.pipe_stdout = true;
  o.pipe_stderr = true;
  return o;
}

// A child that exits before reading all its input must not take the test runner with it.
bool ignore_sigpipe() {
  static const bool ignored = ::signal(SIGPIPE, SIG_IGN) != SIG_ERR;
  return ignored;
}

}  // namespace

ChildProcess::ChildProcess(std::vector<std::string> argv, Options options)
    : child_((ignore_sigpipe(), std::move(argv)), child_options(options)) {
  out_thread_ = std::thread(&ChildProcess::reader, this, child_.stdout_fd(), &out_, &out_eof_);
  err_thread_ = std::thread(&ChildProcess::reader, this, child_.stderr_fd(), &err_, &err_eof_);
  if (options.stdin_data) {
    in_thread_ = std::thread([this, fd = child_.stdin_fd(), data = std::move(*options.stdin_data)] {
      std::size_t done = 0;
      while (done < data.size()) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n <= 0 && errno != EINTR) break;
        if (n > 0) done += static_cast<std::size_t>(n);
      }
      child_.close_stdin();
    });
  }
}

ChildProcess::~ChildProcess() {
  if (running()) {
    child_.signal(SIGKILL);
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
  // The fd is closed by child_ once this thread is joined.
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

void ChildProcess::signal(int sig) { child_.signal(sig); }

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) { return child_.wait(Clock::now() + timeout); }

bool ChildProcess::running() { return child_.running(); }

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

}  // namespace taskmaster::test
