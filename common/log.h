// Diagnostics: one line per event, to stderr, with a level and a UTC timestamp.
// Library code logs through here and never prints to stdout (stdout belongs to the CLI's output).
#pragma once

#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace taskmaster {

enum class LogLevel { Debug, Info, Warn, Error };
// Text: `2026-12-03T12:00:00.123Z master info: MESSAGE`. Json: one object per line,
// {"ts":"2026-12-03T12:00:00.123Z","level":"info","component":"master","msg":"MESSAGE"}.
enum class LogFormat { Text, Json };

// Messages below this level are dropped. Default Info; TASKMASTER_LOG=debug|info|warn|error sets it
// (the commands' --log-level overrides it).
void set_log_level(LogLevel level);
LogLevel log_level();
// Default Text; TASKMASTER_LOG_FORMAT=text|json sets it (--log-format overrides it).
void set_log_format(LogFormat format);
std::optional<LogLevel> parse_log_level(std::string_view s);
std::optional<LogFormat> parse_log_format(std::string_view s);
// A short name put in front of each line ("master", "worker").
void set_log_name(std::string_view name);

void log_line(LogLevel level, std::string_view text);

template <class... Args> void log(LogLevel level, const Args&... args) {
  if (level < log_level()) return;
  std::ostringstream out;
  (out << ... << args);
  log_line(level, out.str());
}
template <class... Args> void log_debug(const Args&... a) { log(LogLevel::Debug, a...); }
template <class... Args> void log_info(const Args&... a) { log(LogLevel::Info, a...); }
template <class... Args> void log_warn(const Args&... a) { log(LogLevel::Warn, a...); }
template <class... Args> void log_error(const Args&... a) { log(LogLevel::Error, a...); }

}  // namespace taskmaster
