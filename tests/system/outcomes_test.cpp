// wait and results end to end: --json outcomes carry each task's function and queue (so that they can
// be submitted again), and wait says when no connected worker serves its job.
#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

TEST_SUITE("system") {

TEST_CASE("results --json and wait --json carry function and queue, and the outcomes can be submitted again") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2", "-q", "rq"});
  c.wait_for_workers(1);
  auto s = c.run({"submit", "square", "--each", "-q", "rq"}, std::string("2\n3\n{\"x\":1}\n"));
  REQUIRE_MESSAGE(s.code == 0, s.err);
  const std::string job = s.lines().at(0);
  auto w = c.run({"wait", job, "--json"});
  CHECK(w.code == 1);  // {"x":1} is not a number: that task is dead
  auto r = c.run({"results", job, "--json"});
  CHECK(r.code == 1);
  for (const auto* out : {&w, &r}) {
    const auto lines = out->json_lines();
    REQUIRE(lines.size() == 3);
    for (const auto& line : lines) {
      CAPTURE(line.dump());
      CHECK(line["function"] == "square");
      CHECK(line["queue"] == "rq");
      CHECK(line["job"].get<std::uint64_t>() == std::stoull(job));
    }
  }
  // Each outcome's function, queue and args are all it takes to run it again: the same results.
  for (const auto& line : r.json_lines()) {
    CAPTURE(line.dump());
    auto again = c.run({"submit", line["function"].get<std::string>(), line["args"].dump(), "--queue", line["queue"].get<std::string>(),
                        "--max-attempts", "1", "--wait", "--json"});
    const auto back = again.json_lines();
    REQUIRE(back.size() == 1);
    CHECK(back[0]["status"] == line["status"]);
    CHECK(back[0]["args"] == line["args"]);
    if (line["status"] == "done") CHECK(back[0]["result"] == line["result"]);
    CHECK(again.code == (line["status"] == "done" ? 0 : 1));
  }
}

TEST_CASE("wait JOB warns when no connected worker serves the job's function on its queue, and again when one comes") {
  Cluster c;
  c.start_master();
  auto s = c.run({"submit", "square", "7", "-q", "wq"});
  REQUIRE_MESSAGE(s.code == 0, s.err);
  const std::string job = s.lines().at(0);
  auto p = c.spawn({"wait", job});
  CHECK(p->wait_for_err([](const std::string& e) { return e.find("no connected worker serves square on queue wq") != std::string::npos; },
                        20s));
  CHECK(p->running());
  c.start_worker({"-j", "1", "-q", "wq"});
  CHECK(p->wait_for_err(
      [](const std::string& e) { return e.find("a worker serving square on queue wq is connected now") != std::string::npos; }, 20s));
  auto r = finish(*p, 30s);
  CHECK(r.code == 0);
  CHECK(r.out == "7 -> 49\n");
}

}  // TEST_SUITE

}  // namespace taskmaster::test
