// The live progress line of a job waited on in a terminal (submit --each --wait, run --each, wait):
// on stderr, "job 12: 1200 done, 3 failed of 50000, 340/s, ETA 2m 27s", redrawn at most 10 times a
// second with \r and erase-line, cleared at the end and replaced by one summary line. Never when
// stderr is not a terminal, TERM is dumb (or unset), or the command was given --quiet.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "client/client.h"

namespace taskmaster::cli {

// What the line shows. `rate`: tasks finished per second lately (nullopt: not known yet).
struct ProgressCounts {
  protocol::JobId job = 0;
  std::uint64_t total = 0, done = 0, failed = 0, cancelled = 0;
  bool sealed = false;  // the total is final (else "so far")
};
// "job 12: 1200 done, 3 failed of 50000, 340/s, ETA 2m 27s", cut to `width` columns (0: no cut).
std::string format_progress(const ProgressCounts& c, std::optional<double> rate, std::size_t width = 0);
// "taskmaster: job 12: 50000 done, 3 failed in 4.2 s (11900/s)".
std::string format_progress_summary(const ProgressCounts& c, double seconds);
// A duration for an ETA: "45s", "2m 27s", "3h 05m".
std::string eta_text(double seconds);
// Whether a progress line may be drawn: stderr a terminal, TERM set and not "dumb".
bool progress_terminal();

class Progress {
 public:
  // Draws only when `wanted` and progress_terminal().
  explicit Progress(bool wanted);
  ~Progress();  // clears the line (no summary) if finish() was not called
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool active() const { return active_; }
  // Starts the clock and the line, for this job.
  void start(protocol::JobId job);
  // The counts so far (from each answer of the master); and the tasks known to be in the job,
  // which may run ahead of the master's total while they are being submitted.
  void update(const JobSummary& s);
  void at_least(std::uint64_t total);
  // Runs `write` (which prints outcome lines on stdout, or anything on stderr) with the line
  // cleared first when stdout is the same terminal (or `write` uses stderr); it comes back at the
  // next redraw.
  void around(const std::function<void()>& write, bool on_stderr = false);
  // Clears the line; with a summary, prints "taskmaster: job 12: ... in 4.2 s (11900/s)".
  void finish(const JobSummary* summary);

 private:
  void run();
  void draw_locked();
  void clear_locked();

  bool active_ = false;
  bool shares_terminal_ = false;  // stdout is the same terminal as stderr
  std::mutex mutex_;
  ProgressCounts counts_{};
  std::uint64_t known_ = 0;  // at_least
  std::chrono::steady_clock::time_point started_{};
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> samples_;  // (when, finished)
  bool drawn_ = false;
  std::string last_;
  bool stop_ = false;
  std::thread thread_;
};

// Writes one line on stderr from any thread without breaking the progress line of this process
// (if one is drawn): the line is cleared first and comes back at the next redraw.
void say(const std::string& line);

}  // namespace taskmaster::cli
