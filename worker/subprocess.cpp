#include "worker/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "protocol/json_doc.h"

extern char** environ;

namespace taskmaster::subprocess {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

struct Pipe {
  Fd r, w;
  explicit Pipe(std::string_view what) {
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) != 0) throw std::runtime_error(std::string(what) + ": pipe: " + std::strerror(errno));
    r.fd = fd[0];
    w.fd = fd[1];
  }
};

struct Capture {
  std::string data;
  bool truncated = false;
  void add(const char* p, std::size_t n, std::size_t limit) {
    const std::size_t room = limit > data.size() ? limit - data.size() : 0;
    data.append(p, std::min(n, room));
    if (n > room) truncated = true;
  }
};

// The input as a file the child reads from its start: no pipe to feed, no SIGPIPE, no deadlock.
int input_file(const std::string& input, std::string_view what) {
  const int fd = ::memfd_create("taskmaster-input", MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error(std::string(what) + ": memfd_create: " + std::strerror(errno));
  std::size_t done = 0;
  while (done < input.size()) {
    const ssize_t n = ::write(fd, input.data() + done, input.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error(std::string(what) + ": writing its input: " + std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

}  // namespace

std::vector<std::string> argv_of(const json& args, std::string_view what) {
  if (!args.is_array() || args.empty())
    throw PermanentError(std::string(what) + ": args must be a non-empty array of strings (an argv), got " + args.dump());
  std::vector<std::string> argv;
  for (const auto& a : args) {
    if (!a.is_string()) throw PermanentError(std::string(what) + ": every argv element must be a string, got " + a.dump());
    const auto& s = a.get_ref<const std::string&>();
    if (s.find('\0') != std::string::npos) throw PermanentError(std::string(what) + ": argv elements may not contain NUL");
    argv.push_back(s);
  }
  return argv;
}

pid_t spawn(const std::vector<std::string>& argv_s, int in, int out, int err, std::string_view what) {
  std::vector<char*> argv;
  for (const auto& s : argv_s) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const int fds[3] = {in, out, err};
  for (int target = 0; target < 3; ++target) {
    if (fds[target] < 0) posix_spawn_file_actions_addopen(&fa, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0);
    else posix_spawn_file_actions_adddup2(&fa, fds[target], target);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so a timeout kills everything it started; default signal handling and
  // an empty mask, whatever the worker blocks for itself.
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT}) sigaddset(&defaults, s);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // The children get the worker's environment without the shared key (TASKMASTER_KEY*).
  std::vector<char*> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "TASKMASTER_KEY", 14) != 0) env.push_back(*e);
  env.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error(std::string(what) + ": cannot run '" + argv_s[0] + "': " + std::strerror(rc));
  return pid;
}

int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  const long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    return static_cast<int>(fd);
  }
#else
  (void)pid;
#endif
  return -1;
}

Output run(const std::vector<std::string>& argv, const std::string* input, const TaskContext& ctx, std::size_t max_output_bytes,
           std::string_view what) {
  Pipe out(what), err(what);
  Fd in;
  if (input) in.fd = input_file(*input, what);
  const pid_t pid = spawn(argv, in.fd, out.w.fd, err.w.fd, what);
  in.reset();
  out.w.reset();
  err.w.reset();
  Fd pidfd(open_pidfd(pid));

  Capture cout_, cerr_;
  bool timed_out = false, stopped = false, exited = false;
  int status = 0;
  pollfd fds[3] = {{out.r.fd, POLLIN, 0}, {err.r.fd, POLLIN, 0}, {pidfd.fd, POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  for (;;) {
    const auto now = Clock::now();
    if (now >= ctx.deadline) {
      timed_out = true;
      break;
    }
    if (ctx.should_stop()) {
      stopped = true;
      break;
    }
    if (!exited && pidfd.fd < 0 && ::waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (exited && open_fds == 0) break;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.deadline - now).count();
    // A pidfd says when it exits; without one, look again every few milliseconds. Either way wake up
    // now and then to see whether the worker stops. Once it has exited, only read what is buffered.
    const long long cap = pidfd.fd >= 0 ? 50 : 2;
    const int n = ::poll(fds, pidfd.fd >= 0 ? 3 : 2, exited ? 0 : static_cast<int>(std::min<long long>(wait + 1, cap)));
    if (n < 0 && errno != EINTR) break;
    if (n == 0 && exited) break;  // the command is gone; children of it may hold the pipes open
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? cout_ : cerr_).add(buf, static_cast<std::size_t>(got), max_output_bytes);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
    if (!exited && pidfd.fd >= 0 && (fds[2].revents & POLLIN)) {
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      exited = true;
      fds[2].fd = -1;
    }
  }
  // Whatever is left of its process group ends with it.
  ::kill(-pid, SIGKILL);
  if (!exited)
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  if (timed_out)
    throw std::runtime_error(std::string(what) + ": timed out after " + std::to_string(ctx.timeout.count()) + " ms; process group " +
                             std::to_string(pid) + " killed");
  if (stopped) throw std::runtime_error(std::string(what) + ": the worker is stopping; process group killed");
  return {status, std::move(cout_.data), std::move(cerr_.data), cout_.truncated, cerr_.truncated};
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::strsignal(WTERMSIG(status));
    return "killed by signal " + std::to_string(WTERMSIG(status)) + (name ? std::string(" (") + name + ")" : std::string());
  }
  return "status " + std::to_string(status);
}

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t n = protocol::utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string base64(std::string_view s) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((s.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= s.size(); i += 3) {
    const auto v = (static_cast<std::uint32_t>(static_cast<unsigned char>(s[i])) << 16) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + 1])) << 8) | static_cast<unsigned char>(s[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kAlphabet[(v >> k) & 63];
  }
  if (i < s.size()) {
    std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(s[i])) << 16;
    if (i + 1 < s.size()) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < s.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace taskmaster::subprocess
