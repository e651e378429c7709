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

LogLevel level_from_env() {
  const char* v = std::getenv("TASKMASTER_LOG");
  if (!v) return LogLevel::Info;
  std::string s(v);
  if (s == "debug") return LogLevel::Debug;
  if (s == "warn") return LogLevel::Warn;
  if (s == "error") return LogLevel::Error;
  return LogLevel::Info;
}

std::atomic<LogLevel> g_level{level_from_env()};
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
  std::lock_guard lock(g_mutex);
  std::fprintf(stderr, "%s.%03dZ %s %s: %.*s\n", stamp, static_cast<int>(ms), g_name.c_str(), level_name(level),
               static_cast<int>(text.size()), text.data());
}

}  // namespace taskmaster
