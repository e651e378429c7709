// The parts of `taskmaster run` (cli/run_command.cpp) that tests call directly.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "protocol/message.h"

namespace taskmaster::cli {

// The command line of one task: `{}` in any argument (also inside a word) replaced by `item`; with
// no `{}` anywhere, the item is appended as one more argument.
std::vector<std::string> substitute(const std::vector<std::string>& command, const std::string& item);

// Standard base64 (RFC 4648, with padding) decoded; nullopt if `text` is not that.
std::optional<std::string> base64_decode(const std::string& text);

// What one task's command did, from its exec outcome.
struct Ran {
  std::string out, err;  // its raw output: "stdout_base64"/"stderr_base64" when present, else "stdout"/"stderr"
  int code = 0;          // its exit code; 128 + N when killed by signal N; 1 when it did not run
  bool ran = false;
  std::string error;  // why it did not run to its end (dead or cancelled)
};
Ran read_outcome(const protocol::Outcome& o);

}  // namespace taskmaster::cli
