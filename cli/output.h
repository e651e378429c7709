// Exit codes, and how results are printed. The only part of taskmaster that writes to stdout.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/expected.h"
#include "protocol/message.h"

namespace taskmaster::cli {

// Exit codes (README "Exit codes" and every --help).
enum ExitCode : int {
  kExitOk = 0,           // every task done (or the command succeeded)
  kExitTaskFailed = 1,   // some task dead or cancelled
  kExitUsage = 2,        // bad command line
  kExitUnreachable = 3,  // master unreachable within the connect timeout
  kExitAuth = 4,         // authentication failed: wrong key, no key, a key file others can read
  kExitError = 5,        // anything else: the master refused the request, cannot bind, unknown job
};

inline constexpr const char* kExitCodesHelp =
    "Exit codes: 0 every task done (or success); 1 some task dead or cancelled; 2 usage error;\n"
    "3 master unreachable; 4 authentication failed (or no usable key); 5 other error (request refused, unknown job,\n"
    "cannot bind).";

// Prints "taskmaster: MESSAGE" on stderr and returns the exit code for this error. A message that
// begins with a protocol message's name (the master's "WAIT: job 12 does not exist") names the
// command that runs instead ("results: job 12 does not exist"), once set_command_name has named it.
int report(const Error& e);
void set_command_name(std::string name);
// For a reply of another kind than the request's (a master that breaks the protocol): prints
// "taskmaster: the master answered REQUEST with COMMAND" and returns kExitError.
int unexpected_reply(const char* request, const protocol::Message& reply);

// One finished task, as `submit --wait` prints it: "ARGS -> RESULT", "ARGS -> error: MESSAGE",
// "ARGS -> cancelled"; with json, one object with job, task, args, status, result|error, attempts,
// worker. Appends a newline.
// The JSON object also carries "function" and "queue", so that the output can be submitted again:
// the outcome's own (from the master), else `origin` when the caller knows them (submit --wait
// facing a master that predates them), else neither.
struct OutcomeOrigin {
  std::string function, queue;
};
void append_outcome(std::string& out, protocol::JobId job, const protocol::Outcome& o, bool json, const OutcomeOrigin* origin = nullptr);
// Writes a batch of outcomes to stdout and flushes it.
void print_outcomes(protocol::JobId job, const std::vector<protocol::Outcome>& outcomes, bool json,
                    const std::optional<OutcomeOrigin>& origin = std::nullopt);

// The master's status report as an aligned text table.
std::string format_status(const nlohmann::json& status);
// One job's progress (REPORT `status.job`, PROTOCOL.md §6.12.1): `taskmaster job JOB`.
std::string format_job(const nlohmann::json& job);
// The recent jobs (REPORT of STATUS `jobs`) as a table: `taskmaster jobs`.
std::string format_jobs(const nlohmann::json& jobs);
// What CANCELLED says, in words, for stderr: "taskmaster: job 12: 40 tasks cancelled (...); 3 running: they finish\n".
std::string cancel_words(const protocol::Cancelled& c);
// The one line of `health --verbose`: "master=ID uptime_s=S workers=N tasks=N\n".
std::string format_health(const nlohmann::json& status);

}  // namespace taskmaster::cli
