// Named functions that run a command (`taskmaster worker --function NAME -- CMD ARGS...`): once per
// task, or with `lines`, one long-lived process per running task slot fed one JSON line per task.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "protocol/message.h"
#include "worker/handlers.h"
#include "worker/subprocess.h"

namespace taskmaster {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kStderrTail = 2000;  // bytes of stderr quoted in a failure

std::string tail_of(const std::string& s) {
  std::string t = s.size() > kStderrTail ? s.substr(s.size() - kStderrTail) : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return protocol::sanitize_text(t, kStderrTail + 8);
}

// The result a command's standard output stands for: its JSON if it parses, else its text without
// the final newline (as $(...) in a shell).
json result_of(std::string out, const std::string& name) {
  if (out.size() > protocol::kMaxResultBytes)
    throw std::runtime_error(name + ": the output is more than the " + std::to_string(protocol::kMaxResultBytes) +
                             " bytes a result may be");
  json parsed = json::parse(out, nullptr, false);
  if (!parsed.is_discarded()) return parsed;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return protocol::sanitize_text(out, protocol::kMaxResultBytes);
}

// Every "{}" in each argument replaced by the args: a JSON string bare, anything else as JSON.
std::vector<std::string> substituted(const std::vector<std::string>& argv, const json& args, const std::string& name) {
  const std::string value = args.is_string() ? args.get<std::string>() : args.dump();
  if (value.find('\0') != std::string::npos) throw PermanentError(name + ": the args hold a NUL, which a command argument cannot");
  std::vector<std::string> out;
  for (const auto& a : argv) {
    std::string s;
    std::size_t from = 0;
    for (auto at = a.find("{}"); at != std::string::npos; at = a.find("{}", from)) {
      s.append(a, from, at - from);
      s += value;
      from = at + 2;
    }
    s.append(a, from);
    out.push_back(std::move(s));
  }
  return out;
}

void fail_on_status(const std::string& name, int status, const std::string& err) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  const std::string tail = tail_of(err);
  throw std::runtime_error(name + ": the command failed with " + subprocess::describe_status(status) + (tail.empty() ? "" : ": " + tail));
}

json run_once(const std::string& name, const CommandFunction& f, const json& args, const TaskContext& ctx) {
  const std::string input = args.dump() + "\n";
  const auto r = subprocess::run(substituted(f.argv, args, name), &input, ctx, protocol::kMaxResultBytes + 1, name);
  fail_on_status(name, r.status, r.err);
  return result_of(r.out, name);
}

// One long-lived process of a `lines` function: its stdin a socket (written with MSG_NOSIGNAL, so a
// process that died costs no SIGPIPE), its stdout a pipe, its stderr the worker's.
class LineProcess {
 public:
  LineProcess(const std::vector<std::string>& argv, const std::string& name) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error(name + ": socketpair: " + std::strerror(errno));
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      throw std::runtime_error(name + ": pipe: " + std::strerror(errno));
    }
    in_ = sv[0];
    out_ = p[0];
    try {
      pid_ = subprocess::spawn(argv, sv[1], p[1], 2, name);
    } catch (...) {
      ::close(sv[1]);
      ::close(p[1]);
      close_fds();
      throw;
    }
    ::close(sv[1]);
    ::close(p[1]);
    ::fcntl(in_, F_SETFL, ::fcntl(in_, F_GETFL) | O_NONBLOCK);
  }
  ~LineProcess() {
    close_fds();
    if (reaped_) return;
    ::kill(-pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  LineProcess(const LineProcess&) = delete;
  LineProcess& operator=(const LineProcess&) = delete;

  // Sends `line` and reads one line back. Throws std::runtime_error when the process ends, at the
  // deadline, or when the worker stops; the process is of no use after that.
  std::string call(const std::string& line, const TaskContext& ctx, const std::string& name) {
    std::size_t sent = 0;
    char buf[65536];
    for (;;) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string reply = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        if (sent == line.size()) return reply;
        throw std::runtime_error(name + ": the process wrote a line before it read the task");
      }
      if (buffer_.size() > protocol::kMaxResultBytes)
        throw std::runtime_error(name + ": the output line is more than the " + std::to_string(protocol::kMaxResultBytes) +
                                 " bytes a result may be");
      const auto now = Clock::now();
      if (now >= ctx.deadline)
        throw std::runtime_error(name + ": timed out after " + std::to_string(ctx.timeout.count()) + " ms; the process is restarted");
      if (ctx.should_stop()) throw std::runtime_error(name + ": the worker is stopping");
      pollfd fds[2] = {{out_, POLLIN, 0}, {in_, static_cast<short>(sent < line.size() ? POLLOUT : 0), 0}};
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.deadline - now).count();
      const int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(wait + 1, 50)));
      if (n < 0 && errno != EINTR) throw std::runtime_error(name + ": poll: " + std::strerror(errno));
      if (n <= 0) continue;
      if (sent < line.size() && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
        const ssize_t k = ::send(in_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (k > 0) sent += static_cast<std::size_t>(k);
        else if (errno != EAGAIN && errno != EINTR) throw std::runtime_error(name + ": the process " + ended());
      }
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        const ssize_t got = ::read(out_, buf, sizeof buf);
        if (got > 0) buffer_.append(buf, static_cast<std::size_t>(got));
        else if (got == 0 || errno != EINTR) throw std::runtime_error(name + ": the process " + ended() + "; it is restarted");
      }
    }
  }

 private:
  // How it ended ("exited with exit code 1"), once its output is closed.
  std::string ended() {
    int status = 0;
    const auto until = Clock::now() + std::chrono::seconds(1);
    while (Clock::now() < until) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        ::kill(-pid_, SIGKILL);  // what it left in its process group
        reaped_ = true;
        return "ended with " + subprocess::describe_status(status);
      }
      if (r < 0) break;
      ::usleep(1000);
    }
    return "closed its output";
  }
  void close_fds() {
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    in_ = out_ = -1;
  }

  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
  std::string buffer_;
  bool reaped_ = false;
};

// The idle processes of a `lines` function; a call takes one (or starts one), so there are at most
// as many as tasks run at once.
class LinePool {
 public:
  LinePool(std::string name, CommandFunction f) : name_(std::move(name)), f_(std::move(f)) {}

  json call(const json& args, const TaskContext& ctx) {
    std::unique_ptr<LineProcess> p;
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        p = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!p) p = std::make_unique<LineProcess>(f_.argv, name_);
    // A failed call throws and `p` (killed, reaped) goes with it; the next call starts a new one.
    const std::string reply = p->call(args.dump() + "\n", ctx, name_);
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(p));
    }
    return result_of(reply, name_);
  }

 private:
  const std::string name_;
  const CommandFunction f_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<LineProcess>> idle_;
};

}  // namespace

void add_command_handler(HandlerRegistry& registry, const std::string& name, CommandFunction function) {
  if (function.argv.empty() || function.argv.front().empty()) throw std::invalid_argument("function '" + name + "': the command is empty");
  if (function.lines) {
    auto pool = std::make_shared<LinePool>(name, std::move(function));
    registry.add(name, [pool](const json& args, const TaskContext& ctx) { return pool->call(args, ctx); });
  } else {
    registry.add(name, [name, f = std::move(function)](const json& args, const TaskContext& ctx) { return run_once(name, f, args, ctx); });
  }
}

}  // namespace taskmaster

namespace taskmaster {

std::map<std::string, CommandFunction> parse_function_file(std::string_view text) {
  const json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) throw std::invalid_argument("not valid JSON");
  if (!doc.is_object())
    throw std::invalid_argument(R"(expected an object of NAME: ["CMD", "ARG", ...] or NAME: {"command": [...], "lines": true})");
  std::map<std::string, CommandFunction> out;
  for (const auto& [name, v] : doc.items()) {
    if (!protocol::is_valid_name(name)) throw std::invalid_argument("invalid function name '" + name + "'");
    CommandFunction f;
    const json* command = &v;
    if (v.is_object()) {
      for (const auto& [key, value] : v.items())
        if (key != "command" && key != "lines") throw std::invalid_argument(name + ": unknown key '" + key + "' (command, lines)");
      if (!v.contains("command")) throw std::invalid_argument(name + ": no \"command\"");
      command = &v["command"];
      if (v.contains("lines")) {
        if (!v["lines"].is_boolean()) throw std::invalid_argument(name + ": \"lines\" must be true or false");
        f.lines = v["lines"].get<bool>();
      }
    }
    f.argv = subprocess::argv_of(*command, name);
    out[name] = std::move(f);
  }
  return out;
}

}  // namespace taskmaster
