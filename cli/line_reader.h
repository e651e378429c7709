// Lines of standard input read by a thread of their own, so that a command can submit the lines
// that have arrived while more are still to come (`submit --each`, `run --each` on a slow or
// endless pipe).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "client/client.h"

namespace taskmaster::cli {

class LineReader {
 public:
  struct Line {
    std::size_t number = 0;  // 1-based
    std::string text;        // without its line break (nor a trailing \r)
  };
  enum class Got { Line, NotYet, End };

  // Starts reading standard input; at most `capacity` lines are held unread (the reader waits).
  explicit LineReader(std::size_t capacity = 20000);
  // The reading thread is left to end with the process if it is blocked in a read.
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next non-empty line, waiting at most until `deadline`.
  Got next(Line& line, std::chrono::steady_clock::time_point deadline);

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

// A source that returns `first` (a task read ahead, e.g. to check the input before connecting), then
// what `rest` returns.
StreamingTaskSource prepend(TaskPull first, const StreamingTaskSource& rest);

}  // namespace taskmaster::cli
