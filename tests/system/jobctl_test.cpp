// Job control through the CLI: status at a glance and --watch.
#include <signal.h>
#include <regex>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

TEST_SUITE("system") {

TEST_CASE("status marks a queue whose queued tasks need a function no connected worker serves") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2"});
  c.wait_for_workers(1);
  auto s = c.run({"submit", "nobody_serves_this", "1"});
  REQUIRE_MESSAGE(s.code == 0, s.err);
  auto st = c.status();
  CHECK(st["queues"]["default"]["unserved"]["nobody_serves_this"] == 1);
  auto text = c.run({"status"});
  REQUIRE_MESSAGE(text.code == 0, text.err);
  CHECK(text.out.find("NO WORKER") != std::string::npos);
  CHECK(text.out.find("queue default: no connected worker serves nobody_serves_this (1 queued)") != std::string::npos);
  // The worker table: threads, running and reserved, the heartbeat's age.
  CHECK(text.out.find("threads") != std::string::npos);
  CHECK(text.out.find("reserved") != std::string::npos);
  CHECK(text.out.find(" s ago") != std::string::npos);
  // A queue whose tasks a worker serves is not marked.
  auto d = c.run({"submit", "square", "3", "--wait"});
  REQUIRE(d.code == 0);
  auto again = c.run({"status"});
  CHECK(again.out.find("nobody_serves_this (1 queued)") != std::string::npos);
  CHECK(again.out.find("serves square") == std::string::npos);
}

TEST_CASE("status --watch prints the report again until SIGINT, without clearing a screen that is not a terminal") {
  Cluster c;
  c.start_master();
  auto w = c.spawn({"status", "--watch", "0.2"});
  const auto count = [&] {
    std::size_t n = 0;
    for (auto p = w->out().find("rates:"); p != std::string::npos; p = w->out().find("rates:", p + 1)) ++n;
    return n;
  };
  wait_until([&] { return count() >= 3; }, 20s, "three reports");
  w->signal(SIGINT);
  CHECK(w->wait(10s) == 0);
  CHECK(w->out().find("\033[") == std::string::npos);
  CHECK(w->out().find("no worker connected") != std::string::npos);
  // Without a value it refreshes every 2 s; a bad value is a usage error.
  auto bad = c.run({"status", "--watch", "0"});
  CHECK(bad.code == 2);
  auto bad2 = c.run({"status", "--watch", "soon"});
  CHECK(bad2.code == 2);
}

TEST_CASE("job JOB and status JOB show one job's progress, jobs lists the recent ones, cancel says what it did") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  c.wait_for_workers(1);
  auto a = c.run({"submit", "square", "--each", "--wait"}, "1\n2\n3\n");
  REQUIRE_MESSAGE(a.code == 0, a.err);
  auto s = c.run({"submit", "nobody_serves_this", "--each"}, "1\n2\n");
  REQUIRE(s.code == 0);
  const std::string job = s.lines().at(0);
  auto j = c.run({"job", job});
  REQUIRE_MESSAGE(j.code == 0, j.err);
  CHECK(j.out.find("job " + job + ": ") == 0);
  CHECK(j.out.find(", 0/2 finished (0 done, 0 failed or cancelled), 2 unfinished") != std::string::npos);
  CHECK(j.out.find("function nobody_serves_this on queue default") != std::string::npos);
  auto st = c.run({"status", job});
  CHECK(st.code == 0);
  // The same report, but for the job's age ("submitted 0.1 s ago"), which moves between the two.
  const auto without_age = [](const std::string& report) {
    return std::regex_replace(report, std::regex("submitted [0-9.]+ s ago"), "submitted ago");
  };
  CHECK(without_age(st.out) == without_age(j.out));
  auto js = c.run({"job", job, "--json"});
  REQUIRE(js.code == 0);
  CHECK(nlohmann::json::parse(js.out)["counts"]["queued"] == 2);
  CHECK(c.run({"job", "999999999"}).code == 5);
  CHECK(c.run({"job", "nope"}).code == 2);
  CHECK(c.run({"status", "0"}).code == 2);

  auto list = c.run({"jobs"});
  REQUIRE_MESSAGE(list.code == 0, list.err);
  const auto lines = list.lines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].find("job") == 0);
  CHECK(lines[1].find(job) == 0);  // newest first
  CHECK(lines[1].find("nobody_serves_this") != std::string::npos);
  CHECK(lines[2].find("done") != std::string::npos);
  CHECK(lines[2].find("square") != std::string::npos);
  auto one = c.run({"jobs", "-n", "1", "--json"});
  REQUIRE(one.code == 0);
  REQUIRE(one.json_lines().size() == 1);
  CHECK(one.json_lines()[0]["function"] == "nobody_serves_this");
  CHECK(c.run({"jobs", "-n", "0"}).code == 2);

  auto cancel = c.run({"cancel", job});
  REQUIRE(cancel.code == 0);
  CHECK(cancel.out == "2\n");
  CHECK(cancel.err == "taskmaster: job " + job + ": 2 tasks cancelled (waiting, delayed or queued)\n");
  auto again = c.run({"cancel", job});
  CHECK(again.out == "0\n");
  CHECK(again.err.find("nothing left to cancel") != std::string::npos);
}

TEST_CASE("purge QUEUE cancels its queued tasks with --yes, and refuses without it when stdin is not a terminal") {
  Cluster c;
  c.start_master();
  auto s = c.run({"submit", "nobody_serves_this", "--each"}, "1\n2\n3\n");
  REQUIRE(s.code == 0);
  const std::string job = s.lines().at(0);
  auto refused = c.run({"purge", "default"}, "y\n");
  CHECK(refused.code == 2);
  CHECK(refused.err.find("pass --yes") != std::string::npos);
  CHECK(c.status()["queues"]["default"]["queued"] == 3);  // nothing lost
  CHECK(c.run({"purge"}).code == 2);
  auto p = c.run({"purge", "default", "--yes"});
  REQUIRE_MESSAGE(p.code == 0, p.err);
  CHECK(p.out == "3\n");
  CHECK(p.err == "taskmaster: queue default: 3 tasks cancelled (queued or delayed); running ones finish\n");
  auto w = c.run({"wait", job});
  CHECK(w.code == 1);  // its tasks ended cancelled
  CHECK(w.out.find("cancelled (purged from queue default)") != std::string::npos);
  auto again = c.run({"purge", "default", "-y"});
  CHECK(again.out == "0\n");
}

}  // TEST_SUITE

}  // namespace taskmaster::test
