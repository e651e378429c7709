// Diagnostics: one line per event, to stderr, with a level and a UTC timestamp.
// Library code logs through here and never prints to stdout (stdout belongs to the CLI's output).
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace taskmaster {

enum class LogLevel { Debug, Info, Warn, Error };

// Messages below this level are dropped. Default Info; TASKMASTER_LOG=debug|info|warn|error sets it.
void set_log_level(LogLevel level);
LogLevel log_level();
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
