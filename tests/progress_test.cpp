// The progress line's text in-process (the terminal behaviour is in tests/system/terminal_test.cpp).
#include "cli/progress.h"

#include <doctest/doctest.h>

namespace taskmaster::cli {

TEST_CASE("progress: the line shows done, failed, the total, the rate and the time left") {
  ProgressCounts c{12, 50000, 1200, 3, 0, true};
  CHECK(format_progress(c, std::nullopt) == "job 12: 1200 done, 3 failed of 50000");
  CHECK(format_progress(c, 340.0) == "job 12: 1200 done, 3 failed of 50000, 340/s, ETA 2m 24s");
  CHECK(format_progress(c, 0.0) == "job 12: 1200 done, 3 failed of 50000, 0.00/s, ETA -");
  c.cancelled = 2;
  CHECK(format_progress(c, 12.5) == "job 12: 1200 done, 3 failed, 2 cancelled of 50000, 12.5/s, ETA 1h 05m");
  c = ProgressCounts{7, 10, 4, 0, 0, false};  // still being submitted: no ETA, "so far"
  CHECK(format_progress(c, 2.0) == "job 7: 4 done, 0 failed of 10 so far, 2.00/s");
  c = ProgressCounts{7, 10, 10, 0, 0, true};  // all finished: nothing left to wait for
  CHECK(format_progress(c, 5.0) == "job 7: 10 done, 0 failed of 10, 5.00/s");
}

TEST_CASE("progress: the line never wraps, so that a carriage return can clear it") {
  ProgressCounts c{12, 50000, 1200, 3, 0, true};
  const auto line = format_progress(c, 340.0, 20);
  CHECK(line.size() == 19);
  CHECK(line == format_progress(c, 340.0).substr(0, 19));
  CHECK(format_progress(c, 340.0, 200) == format_progress(c, 340.0));
}

TEST_CASE("progress: the summary says the counts, the time and the rate") {
  ProgressCounts c{12, 50000, 49997, 3, 0, true};
  CHECK(format_progress_summary(c, 4.2) == "taskmaster: job 12: 49997 done, 3 failed in 4.2 s (11905/s)");
  CHECK(format_progress_summary(ProgressCounts{3, 1, 1, 0, 0, true}, 0) == "taskmaster: job 3: 1 done, 0 failed in 0.0 s");
}

TEST_CASE("progress: time left reads as seconds, minutes or hours") {
  CHECK(eta_text(0) == "0s");
  CHECK(eta_text(44.2) == "45s");
  CHECK(eta_text(60) == "1m 00s");
  CHECK(eta_text(147) == "2m 27s");
  CHECK(eta_text(3600 * 3 + 300) == "3h 05m");
  CHECK(eta_text(-5) == "0s");
}

TEST_CASE("progress: nothing is drawn when not wanted or stderr is not a terminal") {
  Progress off(false);
  CHECK_FALSE(off.active());
  bool wrote = false;
  off.around([&] { wrote = true; });
  CHECK(wrote);  // the output itself always goes out
  off.start(1);
  off.finish(nullptr);
}

}  // namespace taskmaster::cli
