// What people do to a fleet: two workers given one name, a flood of submissions past the master's
// bound.
#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

TEST_SUITE("system") {

TEST_CASE("two workers started with one --name both serve, and no task dies of it") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2", "--name", "twin"});
  c.start_worker({"-j", "2", "--name", "twin"});
  c.wait_for_workers(2);
  auto st = c.status();
  REQUIRE(st["workers"].size() == 2);
  CHECK(st["workers"][0]["id"] == "twin");
  CHECK(st["workers"][1]["id"] == "twin");
  CHECK(st["workers"][0]["session"] != st["workers"][1]["session"]);
  std::string input;
  for (int i = 0; i < 40; ++i) input += "0.02\n";
  auto r = c.run({"submit", "sleep", "--each", "--wait", "--json"}, input, 60s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto rows = r.json_lines();
  REQUIRE(rows.size() == 40);
  for (const auto& row : rows) {
    CHECK(row["status"] == "done");
    CHECK(row["attempts"] == 1);
  }
  st = c.status();
  CHECK(st["workers"].size() == 2);
  CHECK(st["counters"]["workers_lost"] == 0);
}

TEST_CASE("a flood past --max-queued is refused with a message naming the limit, and nothing accepted is lost") {
  Cluster c;
  c.start_master({"--max-queued", "100"});
  // No worker yet: everything submitted stays queued.
  std::string sixty, fifty;
  for (int i = 0; i < 60; ++i) sixty += std::to_string(i) + "\n";
  for (int i = 0; i < 50; ++i) fifty += std::to_string(i) + "\n";
  auto first = c.run({"submit", "square", "--each"}, sixty);
  REQUIRE_MESSAGE(first.code == 0, first.err);
  const std::string job = first.out.substr(0, first.out.find('\n'));
  auto refused = c.run({"submit", "square", "--each", "--retry-timeout", "2"}, fifty);
  CHECK(refused.code == 5);
  CHECK(refused.err.find("--max-queued") != std::string::npos);
  CHECK(refused.out.empty());
  std::string too_many;
  for (int i = 0; i < 101; ++i) too_many += "1\n";
  auto never = c.run({"submit", "square", "--each", "--retry-timeout", "2"}, too_many);
  CHECK(never.code == 5);
  CHECK(never.err.find("--max-queued") != std::string::npos);
  auto st = c.status();
  CHECK(st["unfinished"] == 60);
  CHECK(st["counters"]["refused_full"] >= 2);
  // The accepted job completes whole once a worker comes.
  c.start_worker({"-j", "2"});
  auto w = c.run({"wait", job, "--json"}, std::nullopt, 60s);
  REQUIRE_MESSAGE(w.code == 0, w.err);
  CHECK(w.json_lines().size() == 60);
  // And there is room again.
  CHECK(c.run({"submit", "square", "--each", "--wait"}, fifty, 60s).code == 0);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
