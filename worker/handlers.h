// What a worker can run: named functions (handlers) and the built-in ones.
// Register your own with HandlerRegistry::add; examples/custom_worker.cpp shows a whole program.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/message.h"

namespace taskmaster {

// What a handler knows about the attempt it runs.
struct TaskContext {
  protocol::TaskId task = 0;
  protocol::JobId job = 0;
  std::uint32_t attempt = 0;
  std::chrono::milliseconds timeout{0};            // the task's timeout
  std::chrono::steady_clock::time_point deadline;  // when the master gives up on this attempt
  const std::atomic<bool>* stopping = nullptr;     // set when the worker must stop at once

  bool should_stop() const { return stopping && stopping->load(std::memory_order_relaxed); }
};

// Thrown by a handler for an error that retrying cannot fix (args it rejects as invalid): the
// attempt fails as permanent (PROTOCOL.md §6.5.1) and the master gives the task up at once instead of
// using its remaining attempts. Any other exception is an ordinary failure.
class PermanentError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Runs one task: takes the args, returns the result. Throwing any std::exception fails the attempt
// with the exception's message (the master retries it while attempts remain).
// Called on a pool thread; several calls may run at once, so a handler must be thread-safe.
using Handler = std::function<nlohmann::json(const nlohmann::json& args, const TaskContext& context)>;

class HandlerRegistry {
 public:
  // Registers `handler` as `name`, replacing any handler of that name.
  // Throws std::invalid_argument if the name is not a valid protocol name ([A-Za-z0-9_.:-]{1,128}).
  void add(std::string name, Handler handler);
  const Handler* find(std::string_view name) const;
  std::vector<std::string> names() const;
  bool empty() const { return handlers_.empty(); }

 private:
  std::map<std::string, Handler, std::less<>> handlers_;
};

// square (64-bit integer n -> n*n; overflow is an error), echo (args -> args),
// sleep (seconds -> seconds, wakes early and fails at the task's deadline), fail (always fails).
void add_builtin_handlers(HandlerRegistry& registry);

// Limits of the exec handler.
struct ExecLimits {
  std::size_t max_output_bytes = 256 * 1024;  // kept of stdout and of stderr each; the rest is dropped
};

// exec: args is an argv array of strings; runs it without a shell in its own process group, stdin
// from /dev/null. Result: {"exit_code", "signal", "stdout", "stderr", "stdout_truncated",
// "stderr_truncated"}, plus "stdout_base64" / "stderr_base64" (standard base64 of the raw bytes) only
// when those bytes are not valid UTF-8: the text fields then have U+FFFD in place of the invalid
// bytes. Returns as soon as the command exits. At the task's deadline the whole process group is killed and the attempt
// fails. Served only by workers started with --allow-exec.
void add_exec_handler(HandlerRegistry& registry, ExecLimits limits = {});

// A function that runs a command (`taskmaster worker --function NAME -- CMD ARGS...`).
struct CommandFunction {
  std::vector<std::string> argv;  // without a shell; argv[0] looked up in PATH
  // false: one process per task. Its standard input is the args as JSON (one line); every "{}" in
  // its arguments, also inside a word, is replaced by the args (a JSON string bare, anything else as
  // JSON). Its standard output is the result: JSON if it parses, else the text without the final
  // newline. A non-zero exit or a signal fails the attempt with the exit status and the tail of
  // stderr. At the deadline its process group is killed.
  // true: one long-lived process per task running at once; for each task it reads one line (the args
  // as compact JSON) and writes one line (the result, JSON or text), flushing it. Its stderr is the
  // worker's. If it exits, or the deadline passes, the attempt fails and the next task starts a new
  // process. "{}" is not replaced.
  bool lines = false;
};
void add_command_handler(HandlerRegistry& registry, const std::string& name, CommandFunction function);

// The functions of a --function-file: a JSON object of NAME: ["CMD", "ARG", ...] or
// NAME: {"command": ["CMD", ...], "lines": true}. Throws std::invalid_argument saying what is wrong.
std::map<std::string, CommandFunction> parse_function_file(std::string_view text);

}  // namespace taskmaster
