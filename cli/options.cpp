#include "cli/options.h"

#include "common/log.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

namespace taskmaster::cli {

UsageError::UsageError(std::string message) : CLI::ParseError("UsageError", std::move(message), CLI::ExitCodes::ValidationError) {}

CLI::Option* add_endpoint_option(CLI::App* cmd, const std::string& names, std::string& endpoint, protocol::EndpointUse use,
                                 const std::string& help, const char* env) {
  auto self = std::make_shared<CLI::Option*>(nullptr);
  auto* opt = cmd->add_option(names, endpoint, help);
  *self = opt;
  opt->transform(CLI::Validator(
      [cmd, self, use](std::string& value) -> std::string {
        // CLI11 gives every subcommand the variable's value and runs their checks, also of those not
        // on the command line: only the one that runs matters.
        if (!cmd->parsed()) return {};
        auto parsed = protocol::parse_endpoint(value, use);
        // (A value from the environment or a config file gets its source's name instead of the
        // option's: cli/config.cpp.)
        if (!parsed) throw UsageError((*self)->get_name() + " '" + value + "': " + parsed.error().message);
        value = *parsed;
        return {};
      },
      "ENDPOINT"));
  if (env) opt->envname(env);
  return opt;
}

std::string seconds_text(double seconds) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, seconds);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(seconds);
}

std::optional<double> parse_duration(std::string_view text) {
  // A number, then an optional unit: ms, s, m or h (90, 1.5, 30s, 5m, 2h, 500ms).
  double scale = 1;
  if (text.ends_with("ms")) {
    scale = 0.001;
    text.remove_suffix(2);
  } else if (text.ends_with('s')) {
    text.remove_suffix(1);
  } else if (text.ends_with('m')) {
    scale = 60;
    text.remove_suffix(1);
  } else if (text.ends_with('h')) {
    scale = 3600;
    text.remove_suffix(1);
  }
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v)) return std::nullopt;
  return v * scale;
}

CLI::Option* add_seconds_option(CLI::App* cmd, const std::string& names, double& seconds, double min, double max, const std::string& help) {
  auto self = std::make_shared<CLI::Option*>(nullptr);
  auto* opt = cmd->add_option(names, seconds, help);
  *self = opt;
  opt->transform(CLI::Validator(
      [self, min, max](std::string& value) -> std::string {
        const auto v = parse_duration(value);
        if (!v || *v < min || *v > max)
          throw UsageError((*self)->get_name() + " '" + value + "': expected a duration from " + seconds_text(min) + " to " +
                           seconds_text(max) + " seconds (90, 1.5, 30s, 5m, 2h or 500ms)");
        value = seconds_text(*v);
        return {};
      },
      "SECONDS in [" + seconds_text(min) + " - " + seconds_text(max) + "] (or 500ms, 30s, 5m, 2h)"));
  return opt;
}

CLI::Validator not_empty(const std::string& what) {
  return CLI::Validator([what](std::string& value) { return value.empty() ? what + " must not be empty" : std::string(); }, "");
}

CLI::Option* add_job_argument(CLI::App* cmd, protocol::JobId& job, const std::string& help) {
  constexpr protocol::JobId kMaxJob = std::numeric_limits<std::int64_t>::max();  // PROTOCOL.md §4.2: ids below 2^63
  return cmd->add_option("JOB", job, help)
      ->required()
      ->type_name("JOB")
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            protocol::JobId id = 0;
            const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), id);
            if (value.empty() || ec != std::errc() || end != value.data() + value.size() || id == 0 || id > kMaxJob)
              throw UsageError("JOB '" + value + "': not a job id (job ids are whole numbers from 1, as submit prints them)");
            return {};
          },
          ""));
}

CLI::Option* add_job_list_option(CLI::App* cmd, const std::string& names, std::vector<protocol::JobId>& jobs, const std::string& help) {
  auto self = std::make_shared<CLI::Option*>(nullptr);
  auto* opt = cmd->add_option_function<std::string>(
      names,
      [self, &jobs](const std::string& value) {
        constexpr protocol::JobId kMaxJob = std::numeric_limits<std::int64_t>::max();
        const auto bad = [&](const std::string& why) {
          return UsageError((*self)->get_name() + " '" + value + "': " + why + "; expected job ids separated by commas, e.g. 12,13");
        };
        jobs.clear();
        for (std::size_t i = 0; i <= value.size();) {
          const std::size_t end = std::min(value.find(',', i), value.size());
          protocol::JobId id = 0;
          const auto [p, ec] = std::from_chars(value.data() + i, value.data() + end, id);
          if (end == i) throw bad("an empty job id");
          if (ec != std::errc() || p != value.data() + end || id == 0 || id > kMaxJob)
            throw bad("'" + value.substr(i, end - i) + "' is not a job id (1 to " + std::to_string(kMaxJob) + ")");
          jobs.push_back(id);
          if (jobs.size() > protocol::kMaxAfterJobs) throw bad("more than " + std::to_string(protocol::kMaxAfterJobs) + " jobs");
          i = end + 1;
        }
      },
      help);
  *self = opt;
  opt->type_name("JOB[,JOB...]");
  return opt;
}

Expected<std::optional<protocol::CurveKeys>> KeyOptions::resolve() const {
  if (insecure) return std::optional<protocol::CurveKeys>();
  auto key = protocol::load_key(key_file);
  if (!key) return key.error();
  return std::optional<protocol::CurveKeys>(protocol::derive_keys(*key));
}

Expected<std::optional<protocol::HttpSecrets>> KeyOptions::http_secrets() const {
  if (insecure) return std::optional<protocol::HttpSecrets>();
  auto key = protocol::load_key(key_file);
  if (!key) return key.error();
  return std::optional<protocol::HttpSecrets>(protocol::derive_http_secrets(*key));
}

void LogOptions::apply() const {
  set_log_level(parse_log_level(level).value_or(LogLevel::Info));
  set_log_format(parse_log_format(format).value_or(LogFormat::Text));
}

void add_log_options(CLI::App* cmd, LogOptions& o) {
  cmd->add_option("--log-level", o.level,
                  "Least level logged to stderr: debug (also one line per task), info (joins, departures, deaths, "
                  "rejections, checkpoints), warn or error; else TASKMASTER_LOG")
      ->envname("TASKMASTER_LOG")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  cmd->add_option("--log-format", o.format, "text (one line per event) or json (one JSON object per line); else TASKMASTER_LOG_FORMAT")
      ->envname("TASKMASTER_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

void add_key_options(CLI::App* cmd, KeyOptions& o, bool key_short) {
  auto* file = cmd->add_option(key_short ? "-k,--key-file" : "--key-file", o.key_file,
                               "File holding the shared key (else TASKMASTER_KEY_FILE, the key in TASKMASTER_KEY, or " +
                                   protocol::default_key_path() + ")")
                   ->check(not_empty("the key file's name"));
  cmd->add_flag("--insecure", o.insecure, "No key: no authentication and no encryption (both sides must agree)")->excludes(file);
}

Expected<ClientOptions> ConnectionOptions::client() const {
  auto keys = key.resolve();
  if (!keys) return keys.error();
  ClientOptions c;
  c.curve = *keys;
  c.endpoint = endpoint;
  c.connect_timeout = to_ms(connect_timeout_s);
  c.retry_timeout = to_ms(retry_timeout_s);
  return c;
}

void add_connection_options(CLI::App* cmd, ConnectionOptions& o, bool key_short) {
  add_endpoint_option(cmd, "-c,--connect", o.endpoint, protocol::EndpointUse::Connect,
                      "The master's endpoint: HOST:PORT (the same as tcp://HOST:PORT), tcp://[IPV6]:PORT or ipc://PATH", kAddressEnv)
      ->capture_default_str();
  add_seconds_option(cmd, "--connect-timeout", o.connect_timeout_s, 0.001, kMaxWaitSeconds,
                     "Seconds to wait for the first connection; then exit 3")
      ->capture_default_str();
  add_seconds_option(cmd, "--retry-timeout", o.retry_timeout_s, 0.001, kMaxWaitSeconds,
                     "Seconds to keep retrying when the master stops answering (e.g. while it restarts); then exit 3")
      ->capture_default_str();
  add_key_options(cmd, o.key, key_short);
}

void add_check_connection_options(CLI::App* cmd, ConnectionOptions& o) {
  add_endpoint_option(cmd, "-c,--connect", o.endpoint, protocol::EndpointUse::Connect,
                      "The master's endpoint: HOST:PORT (the same as tcp://HOST:PORT), tcp://[IPV6]:PORT or ipc://PATH", kAddressEnv)
      ->capture_default_str();
  add_seconds_option(cmd, "-t,--timeout,--connect-timeout", o.connect_timeout_s, 0.001, kMaxWaitSeconds,
                     "Seconds the whole check may take (connecting and the answer); then exit 3")
      ->capture_default_str();
  add_key_options(cmd, o.key);
}

StopSignal::StopSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw std::runtime_error("cannot block SIGINT/SIGTERM");
  fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd_ < 0) throw std::runtime_error(std::string("signalfd: ") + std::strerror(errno));
}

StopSignal::~StopSignal() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace taskmaster::cli
