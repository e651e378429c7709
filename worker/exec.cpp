// The exec handler: runs a command line in its own process group with bounded output capture.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "protocol/message.h"
#include "worker/handlers.h"

extern char** environ;

namespace taskmaster {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (pipe2(fd, O_CLOEXEC) != 0) throw std::runtime_error(std::string("exec: pipe: ") + std::strerror(errno));
  }
  ~Pipe() { close_both(); }
  void close_end(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
  void close_both() {
    close_end(0);
    close_end(1);
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

json run(const json& args, const TaskContext& ctx, const ExecLimits& limits) {
  if (!args.is_array() || args.empty())
    throw std::invalid_argument("exec: args must be a non-empty array of strings (an argv), got " + args.dump());
  std::vector<std::string> argv_s;
  for (const auto& a : args) {
    if (!a.is_string()) throw std::invalid_argument("exec: every argv element must be a string, got " + a.dump());
    const auto& s = a.get_ref<const std::string&>();
    if (s.find('\0') != std::string::npos) throw std::invalid_argument("exec: argv elements may not contain NUL");
    argv_s.push_back(s);
  }
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  Pipe out, err;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out.fd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err.fd[1], 2);
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
  pid_t pid = -1;
  // The children get the worker's environment without the shared key (TASKMASTER_KEY*).
  std::vector<char*> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "TASKMASTER_KEY", 14) != 0) env.push_back(*e);
  env.push_back(nullptr);
  const int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  out.close_end(1);
  err.close_end(1);
  if (rc != 0) throw std::runtime_error("exec: cannot run '" + argv_s[0] + "': " + std::strerror(rc));

  Capture cout_, cerr_;
  bool timed_out = false, stopped = false, exited = false;
  int status = 0;
  pollfd fds[2] = {{out.fd[0], POLLIN, 0}, {err.fd[0], POLLIN, 0}};
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
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (exited && open_fds == 0) break;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.deadline - now).count();
    // Once the command has exited, only read what is already buffered.
    const int n = ::poll(fds, 2, exited ? 0 : static_cast<int>(std::min<long long>(wait + 1, 50)));
    if (n < 0 && errno != EINTR) break;
    if (n == 0 && exited) break;  // the command is gone; children of it may hold the pipes open
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? cout_ : cerr_).add(buf, static_cast<std::size_t>(got), limits.max_output_bytes);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  // Whatever is left of its process group ends with it.
  ::kill(-pid, SIGKILL);
  if (!exited)
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  if (timed_out)
    throw std::runtime_error("exec: timed out after " + std::to_string(ctx.timeout.count()) + " ms; process group " + std::to_string(pid) +
                             " killed");
  if (stopped) throw std::runtime_error("exec: the worker is stopping; process group killed");
  json result = {{"exit_code", WIFEXITED(status) ? WEXITSTATUS(status) : -1},
                 {"signal", WIFSIGNALED(status) ? WTERMSIG(status) : 0},
                 {"stdout", protocol::sanitize_text(cout_.data, limits.max_output_bytes)},
                 {"stderr", protocol::sanitize_text(cerr_.data, limits.max_output_bytes)},
                 {"stdout_truncated", cout_.truncated},
                 {"stderr_truncated", cerr_.truncated}};
  return result;
}

}  // namespace

void add_exec_handler(HandlerRegistry& registry, ExecLimits limits) {
  registry.add("exec", [limits](const json& args, const TaskContext& ctx) { return run(args, ctx, limits); });
}

}  // namespace taskmaster
