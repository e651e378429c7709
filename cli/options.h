// Options and helpers that several subcommands share.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include "client/client.h"
#include "protocol/endpoint.h"

namespace taskmaster::cli {

inline constexpr const char* kDefaultConnect = "tcp://127.0.0.1:5555";
inline constexpr const char* kAddressEnv = "TASKMASTER_ADDRESS";

// A command line that cannot work: printed as the one line `taskmaster: MESSAGE`, exit 2. Thrown by
// the checks below while CLI11 parses (their messages already name the option and the value).
class UsageError : public CLI::ParseError {
 public:
  explicit UsageError(std::string message);
};

// An option that takes an endpoint as people type it (HOST:PORT, tcp://..., ipc://...; see
// protocol::parse_endpoint) and stores it normalised (tcp://HOST:PORT). A bad value is a usage error:
//   --connect 'tcp://127.0.0.1:99999': port 99999 is out of range (1-65535); expected HOST:PORT or ...
// `env`: a variable whose value is the default when the option is not given; it gets the same check,
// and a bad value is named by the variable.
CLI::Option* add_endpoint_option(CLI::App* cmd, const std::string& names, std::string& endpoint, protocol::EndpointUse use,
                                 const std::string& help, const char* env = nullptr);

// An option that takes a number of seconds from `min` to `max`; anything else (NaN and infinities
// included) is a usage error: --timeout 'nan': expected a duration from 0.001 to 604800 seconds (...).
// A unit may follow the number: 500ms, 30s, 5m, 2h (parse_duration).
CLI::Option* add_seconds_option(CLI::App* cmd, const std::string& names, double& seconds, double min, double max, const std::string& help);

// Seconds as a short text: 0.001, 1.5, 604800.
std::string seconds_text(double seconds);

// Seconds of a duration: a number with an optional unit, ms, s, m or h (90, 1.5, 30s, 5m, 2h,
// 500ms); nullopt if it is not one (NaN and infinities included).
std::optional<double> parse_duration(std::string_view text);

// Milliseconds of a number of seconds that add_seconds_option has checked.
inline std::chrono::milliseconds to_ms(double seconds) { return std::chrono::milliseconds(static_cast<long long>(seconds * 1000)); }

// A check for a string option that must not be empty when given (e.g. --key-file "").
CLI::Validator not_empty(const std::string& what);

// The required JOB argument of wait, results and cancel: a job id (1 to 2^63 - 1).
CLI::Option* add_job_argument(CLI::App* cmd, protocol::JobId& job, const std::string& help);

// An option that takes job ids separated by commas (JOB[,JOB...], each 1 to 2^63 - 1, at most
// protocol::kMaxAfterJobs): submit's --after. Anything else is a usage error that names the option.
CLI::Option* add_job_list_option(CLI::App* cmd, const std::string& names, std::vector<protocol::JobId>& jobs, const std::string& help);

// --key-file and --insecure: where the shared key comes from, or that there is none.
struct KeyOptions {
  std::string key_file;
  bool insecure = false;
  // The CURVE keys derived from the shared key; nullopt with --insecure. Fails (AuthFailed) when
  // no usable key is found: none anywhere, an unreadable file, a file others can read, too short.
  Expected<std::optional<protocol::CurveKeys>> resolve() const;
  // The HTTP endpoint's token and CSRF value, from the same key (nullopt with --insecure).
  Expected<std::optional<protocol::HttpSecrets>> http_secrets() const;
};
// key_short: also -k for --key-file (not for run, whose -k is --keep-order as in GNU parallel).
void add_key_options(CLI::App* cmd, KeyOptions& o, bool key_short = true);

// --log-level (else TASKMASTER_LOG) and --log-format (else TASKMASTER_LOG_FORMAT), for the long-running
// commands. apply() sets them for the process (common/log.h).
struct LogOptions {
  std::string level = "info", format = "text";
  void apply() const;
};
void add_log_options(CLI::App* cmd, LogOptions& o);

// --connect (default from TASKMASTER_ADDRESS), --connect-timeout, --retry-timeout, and the key.
// The timeouts are at least 1 ms and at most kMaxWaitSeconds.
inline constexpr double kMaxWaitSeconds = 366 * 86400.0;
struct ConnectionOptions {
  std::string endpoint = kDefaultConnect;
  double connect_timeout_s = 5;
  double retry_timeout_s = 60;
  KeyOptions key;
  Expected<ClientOptions> client() const;
};
void add_connection_options(CLI::App* cmd, ConnectionOptions& o, bool key_short = true);
// The same for a one-shot check (health): no retries, so no --retry-timeout, and one timeout named
// --timeout (also --connect-timeout) that bounds the whole exchange. Its default is o's value.
void add_check_connection_options(CLI::App* cmd, ConnectionOptions& o);

// Blocks SIGINT and SIGTERM in this thread and in every thread started after it, and delivers them
// on a file descriptor instead, which the master's and worker's loops poll. Create it before any
// other thread (the ZeroMQ context's included).
class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace taskmaster::cli
