// The run path end to end: streaming `submit --each`, `taskmaster run` on an --allow-exec worker.
#include <fstream>
#include <set>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// `sh -c SCRIPT` with the cluster's key in its environment.
std::unique_ptr<ChildProcess> shell(Cluster& c, const std::string& script, std::optional<std::string> stdin_data = std::nullopt) {
  return c.start({"/bin/sh", "-c", script}, std::move(stdin_data));
}

// Standard input that stays open: a writer that prints `first`, then waits for `flag` to exist
// before it prints `rest` and closes the pipe.
std::string slow_writer(const std::string& first, const std::string& flag, const std::string& rest) {
  return "(printf '" + first + "'; while [ ! -e '" + flag + "' ]; do sleep 0.02; done; printf '" + rest + "')";
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("submit --each submits lines as they arrive: the first outcome comes while standard input is open") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  TempDir dir;
  const std::string flag = dir.path() + "/flag";
  auto p = shell(c,
                 slow_writer("3\\n", flag, "4\\n5\\n") + " | '" + kTaskmaster + "' submit square --each --wait --connect " + c.endpoint());
  auto first = p->read_line(20s);
  REQUIRE_MESSAGE(first.has_value(), p->err());
  CHECK(*first == "3 -> 9");
  CHECK(p->running());  // its input is still open: the writer waits for the flag
  std::ofstream(flag).put('x');
  std::set<std::string> rest;
  for (int i = 0; i < 2; ++i) {
    auto line = p->read_line(20s);
    REQUIRE(line.has_value());
    rest.insert(*line);
  }
  CHECK(rest == std::set<std::string>{"4 -> 16", "5 -> 25"});
  CHECK(p->wait(20s) == 0);
}

TEST_CASE("submit --each without --wait on a slow pipe: tasks are queued before the input ends") {
  Cluster c;
  c.start_master();
  TempDir dir;
  const std::string flag = dir.path() + "/flag";
  auto p = shell(c, slow_writer("1\\n2\\n", flag, "3\\n") + " | '" + kTaskmaster + "' submit square --each --connect " + c.endpoint());
  // No worker: the two tasks wait in the queue while the submitter still reads.
  wait_until(
      [&] {
        auto q = c.status()["queues"];
        return q.contains("default") && q["default"].value("queued", 0) == 2;
      },
      20s, "two tasks queued");
  CHECK(p->running());
  std::ofstream(flag).put('x');
  CHECK(p->wait(20s) == 0);
  CHECK(c.status()["queues"]["default"].value("queued", 0) == 3);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
