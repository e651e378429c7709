// Child processes of the handlers that run commands (exec, and the named functions of
// `worker --function`): started without a shell in their own process group, output captured within
// bounds, killed with their whole group at the attempt's deadline or when the worker stops.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "worker/handlers.h"

namespace taskmaster::subprocess {

// argv as strings; throws std::invalid_argument (naming `what`) unless `args` is a non-empty array of
// strings without NUL.
std::vector<std::string> argv_of(const nlohmann::json& args, std::string_view what);

// Starts argv with posix_spawnp in its own process group, default signal handling and an empty
// signal mask, the worker's environment without TASKMASTER_KEY*. The fds are the child's 0, 1, 2
// (-1: /dev/null). Throws std::runtime_error naming `what` when it cannot be started.
pid_t spawn(const std::vector<std::string>& argv, int in, int out, int err, std::string_view what);

struct Output {
  int status = 0;  // as waitpid gives it
  std::string out, err;
  bool out_truncated = false, err_truncated = false;
};

// Runs argv to its end: `input` (if any) is its standard input (else /dev/null); keeps up to
// max_output_bytes of stdout and of stderr each. Returns as soon as it exits (what it left running in
// its process group is killed then, even if that holds the pipes). At the context's deadline, or
// when the worker stops, kills the process group and throws std::runtime_error naming `what`.
Output run(const std::vector<std::string>& argv, const std::string* input, const TaskContext& ctx, std::size_t max_output_bytes,
           std::string_view what);

// "exit code 3", "killed by signal 9 (Killed)".
std::string describe_status(int status);

// Whether s is valid UTF-8; standard base64 (with padding) of s.
bool is_valid_utf8(std::string_view s);
std::string base64(std::string_view s);

// A pidfd for pid (readable once it exits), or -1 where the kernel has none.
int open_pidfd(pid_t pid);

}  // namespace taskmaster::subprocess
