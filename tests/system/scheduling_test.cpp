// Scheduling end to end: a small job submitted behind a big one, under each --policy, with real
// master and worker processes on loopback. Asserts the order in which jobs finish, never a time.
#include <doctest/doctest.h>

#include <string>

#include "support/cluster.h"

namespace taskmaster::test {
namespace {

// Submits `n` tasks of `sleep 0.001` as one job without waiting; returns its id.
std::string submit_sleeps(Cluster& c, int n) {
  std::string input;
  for (int i = 0; i < n; ++i) input += "0.001\n";
  auto r = c.run({"submit", "sleep", "--each"}, input, 300s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return r.lines().at(0);
}

// Tasks of the job that have finished so far.
std::size_t finished(Cluster& c, const std::string& job) {
  auto r = c.run({"results", job, "--json"});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return r.json_lines().size();
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("fair - a 10-task job submitted behind a 200,000-task job finishes while the big one is far from done") {
  Cluster c;
  c.start_master({"--in-memory"});
  c.start_worker({"-j", "2"});
  c.wait_for_workers(1);
  const std::string big = submit_sleeps(c, 200000);  // 100 s of work for two threads
  auto small = c.run({"submit", "square", "--each", "--wait", "--json"}, "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
  REQUIRE_MESSAGE(small.code == 0, small.err);
  CHECK(small.json_lines().size() == 10);
  const auto done = finished(c, big);
  MESSAGE("the big job had finished " << done << " of 200000 tasks when the small one was done");
  CHECK(done < 100000);
  CHECK(c.run({"cancel", big}).code == 0);
}

TEST_CASE("fifo - the same small job waits until the big one has been handed out") {
  Cluster c;
  c.start_master({"--in-memory", "--policy", "fifo"});
  c.start_worker({"-j", "2"});
  c.wait_for_workers(1);
  const std::string big = submit_sleeps(c, 1000);
  auto small = c.run({"submit", "square", "--each", "--wait", "--json"}, "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
  REQUIRE_MESSAGE(small.code == 0, small.err);
  CHECK(small.json_lines().size() == 10);
  // Every big task was handed out before the first small one: at most what the worker held (its
  // threads and prefetch) can still have been running.
  const auto done = finished(c, big);
  MESSAGE("the big job had finished " << done << " of 1000 tasks when the small one was done");
  CHECK(done >= 900);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
