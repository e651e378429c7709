#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>

namespace taskmaster {
namespace {

// An unknown value is ignored here; the commands refuse it (cli/options.cpp).
LogLevel level_from_env() {
  const char* v = std::getenv("TASKMASTER_LOG");
  return v ? parse_log_level(v).value_or(LogLevel::Info) : LogLevel::Info;
}
LogFormat format_from_env() {
  const char* v = std::getenv("TASKMASTER_LOG_FORMAT");
  return v ? parse_log_format(v).value_or(LogFormat::Text) : LogFormat::Text;
}

std::atomic<LogLevel> g_level{level_from_env()};
std::atomic<LogFormat> g_format{format_from_env()};
std::mutex g_mutex;
std::string g_name = "taskmaster";

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
void set_log_format(LogFormat format) { g_format = format; }

std::optional<LogLevel> parse_log_level(std::string_view s) {
  if (s == "debug") return LogLevel::Debug;
  if (s == "info") return LogLevel::Info;
  if (s == "warn") return LogLevel::Warn;
  if (s == "error") return LogLevel::Error;
  return std::nullopt;
}

std::optional<LogFormat> parse_log_format(std::string_view s) {
  if (s == "text") return LogFormat::Text;
  if (s == "json") return LogFormat::Json;
  return std::nullopt;
}

namespace {

// A JSON string's content: quotes, backslashes and control characters escaped. Bytes that are not
// UTF-8 pass as they are (messages quote names that the protocol already checked).
void append_json(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
}

}  // namespace
LogLevel log_level() { return g_level; }
void set_log_name(std::string_view name) {
  std::lock_guard lock(g_mutex);
  g_name = name;
}

void log_line(LogLevel level, std::string_view text) {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t t = system_clock::to_time_t(now);
  const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  char full[40];
  std::snprintf(full, sizeof full, "%s.%03dZ", stamp, static_cast<int>(ms));
  std::lock_guard lock(g_mutex);
  if (g_format == LogFormat::Json) {
    std::string line = "{\"ts\":\"";
    line += full;
    line += "\",\"level\":\"";
    line += level_name(level);
    line += "\",\"component\":\"";
    append_json(line, g_name);
    line += "\",\"msg\":\"";
    append_json(line, text);
    line += "\"}\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
    return;
  }
  std::fprintf(stderr, "%s %s %s: %.*s\n", full, g_name.c_str(), level_name(level), static_cast<int>(text.size()), text.data());
}

}  // namespace taskmaster
