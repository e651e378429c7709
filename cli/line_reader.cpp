#include "cli/line_reader.h"

#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>

namespace taskmaster::cli {

struct LineReader::Shared {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Line> lines;
  bool eof = false;
  bool closed = false;  // the LineReader is gone: stop reading
  std::size_t capacity = 0;
};

LineReader::LineReader(std::size_t capacity) : shared_(std::make_shared<Shared>()) {
  shared_->capacity = capacity;
  std::thread([s = shared_] {
    std::string text;
    std::size_t number = 0;
    while (std::getline(std::cin, text)) {
      ++number;
      if (!text.empty() && text.back() == '\r') text.pop_back();
      if (text.empty()) continue;
      std::unique_lock lock(s->mutex);
      s->changed.wait(lock, [&] { return s->lines.size() < s->capacity || s->closed; });
      if (s->closed) return;
      s->lines.push_back(Line{number, std::move(text)});
      s->changed.notify_all();
    }
    std::lock_guard lock(s->mutex);
    s->eof = true;
    s->changed.notify_all();
  }).detach();
}

LineReader::~LineReader() {
  std::lock_guard lock(shared_->mutex);
  shared_->closed = true;
  shared_->changed.notify_all();
}

LineReader::Got LineReader::next(Line& line, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(shared_->mutex);
  const auto ready = [&] { return !shared_->lines.empty() || shared_->eof; };
  if (deadline == std::chrono::steady_clock::time_point::max()) shared_->changed.wait(lock, ready);
  else shared_->changed.wait_until(lock, deadline, ready);
  if (shared_->lines.empty()) return shared_->eof ? Got::End : Got::NotYet;
  line = std::move(shared_->lines.front());
  shared_->lines.pop_front();
  shared_->changed.notify_all();
  return Got::Line;
}

StreamingTaskSource prepend(TaskPull first, const StreamingTaskSource& rest) {
  auto held = std::make_shared<std::optional<TaskPull>>(std::move(first));
  return [held, &rest](std::chrono::steady_clock::time_point deadline) -> TaskPull {
    if (*held) {
      TaskPull t = std::move(**held);
      held->reset();
      return t;
    }
    return rest(deadline);
  };
}

}  // namespace taskmaster::cli
