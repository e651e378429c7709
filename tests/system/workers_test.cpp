// Workers end to end: failure, draining and credit, with real processes on loopback.
#include <signal.h>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

nlohmann::json worker_named(const nlohmann::json& status, const std::string& pid) {
  for (const auto& w : status["workers"])
    if (std::to_string(w["pid"].get<long long>()) == pid) return w;
  return nullptr;
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("a worker killed with SIGKILL mid-task: its tasks complete on another worker") {
  Cluster c;
  c.start_master();  // default worker timeout: 3 s
  auto& a = c.start_worker({"-j", "2"});
  c.wait_for_workers(1);
  auto s = c.run({"submit", "sleep", "--each", "--max-attempts", "3"}, "1.5\n1.5\n");
  REQUIRE(s.code == 0);
  const std::string job = s.lines().at(0);
  wait_until([&] { return c.status()["queues"]["default"]["running"] == 2; }, 20s, "both tasks running on the first worker");
  c.start_worker({"-j", "2"});
  c.wait_for_workers(2);
  const auto killed_at = Clock::now();
  a.signal(SIGKILL);
  auto w = c.run({"wait", job, "--json"});
  const auto recovered = Clock::now() - killed_at;
  REQUIRE(w.code == 0);
  auto lines = w.json_lines();
  REQUIRE(lines.size() == 2);
  const std::string a_pid = std::to_string(a.pid());
  for (const auto& j : lines) {
    CHECK(j["status"] == "done");
    CHECK(j["attempts"] == 2);  // the first attempt died with the worker
    CHECK(j["worker"].get<std::string>().find("-" + a_pid + "-") == std::string::npos);
  }
  // Presumed dead within the 3 s timeout (plus the 1.5 s the rerun takes, and slack for CI).
  CHECK(recovered < 15s);
  auto st = c.status();
  CHECK(st["counters"]["workers_lost"] == 1);
  CHECK(st["workers"].size() == 1);
  MESSAGE("killed worker's tasks finished elsewhere after " << std::chrono::duration_cast<std::chrono::milliseconds>(recovered).count()
                                                            << " ms");
}

TEST_CASE("SIGTERM drains a worker: it takes no new tasks, finishes its running one, exits 0") {
  Cluster c;
  c.start_master();
  auto& w = c.start_worker({"-j", "1", "--prefetch", "0"});
  c.wait_for_workers(1);
  auto s = c.run({"submit", "sleep", "1"});
  const std::string job = s.lines().at(0);
  wait_until([&] { return c.status()["queues"]["default"]["running"] == 1; }, 20s, "the task running");
  w.signal(SIGTERM);
  REQUIRE(w.wait_for_err([](const std::string& e) { return e.find("draining") != std::string::npos; }, 10s));
  // Submitted while the worker drains: it must not take it.
  auto late = c.run({"submit", "echo", "1"});
  REQUIRE(late.code == 0);
  auto code = w.wait(20s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  auto r = c.run({"results", job, "--json"});
  REQUIRE(r.json_lines().size() == 1);
  CHECK(r.json_lines()[0]["status"] == "done");
  CHECK(r.json_lines()[0]["attempts"] == 1);
  auto st = c.status();
  CHECK(st["workers"].empty());
  CHECK(st["queues"]["default"]["queued"] == 1);  // the late task waits for another worker
  CHECK(st["counters"]["workers_lost"] == 0);     // it said goodbye
}

TEST_CASE("credit: a worker never holds more tasks than its slots, and tasks spread over workers") {
  Cluster c;
  c.start_master();
  // Fixed credits (threads + prefetch): 1 and 5.
  auto& small = c.start_worker({"-j", "1", "--prefetch", "0"});
  auto& big = c.start_worker({"-j", "3", "--prefetch", "2"});
  c.wait_for_workers(2);
  std::string input;
  for (int i = 0; i < 40; ++i) input += "0.05\n";
  auto job = c.spawn({"submit", "sleep", "--each", "--wait"}, input);
  const std::string small_pid = std::to_string(small.pid()), big_pid = std::to_string(big.pid());
  int samples = 0;
  while (job->running()) {
    auto st = c.status();
    auto ws = worker_named(st, small_pid), wb = worker_named(st, big_pid);
    if (ws.is_null() || wb.is_null()) break;
    CHECK(ws["slots"] == 1);
    CHECK(wb["slots"] == 5);
    CHECK(ws["in_flight"].get<int>() <= 1);
    CHECK(wb["in_flight"].get<int>() <= 5);
    CHECK(st["queues"].value("default", nlohmann::json::object()).value("running", 0) <= 6);
    ++samples;
  }
  auto r = finish(*job, 60s);
  CHECK(r.code == 0);
  CHECK(r.lines().size() == 40);
  CHECK(samples > 0);
  auto st = c.status();
  const auto done_small = worker_named(st, small_pid)["done"].get<int>();
  const auto done_big = worker_named(st, big_pid)["done"].get<int>();
  CHECK(done_small + done_big == 40);
  CHECK(done_small >= 1);  // both took part
  CHECK(done_big > done_small);
}

TEST_CASE("a worker only gets the functions and queues it announced") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1", "--queue", "fast"});
  c.wait_for_workers(1);
  auto other_queue = c.run({"submit", "square", "2"});                     // queue "default": nobody serves it
  auto exec = c.run({"submit", "exec", "[\"true\"]", "--queue", "fast"});  // exec not allowed
  auto fast = c.run({"submit", "square", "3", "--queue", "fast", "--wait"});
  CHECK(fast.out == "3 -> 9\n");
  auto st = c.status();
  CHECK(st["queues"]["default"]["queued"] == 1);
  CHECK(st["queues"]["fast"]["queued"] == 1);
  CHECK(st["queues"]["fast"]["done"] == 1);
  // A worker that serves both picks them up.
  c.start_worker({"-j", "1", "--queue", "default", "--queue", "fast", "--allow-exec"});
  auto w1 = c.run({"wait", other_queue.lines().at(0)});
  CHECK(w1.out == "2 -> 4\n");
  auto w2 = c.run({"wait", exec.lines().at(0), "--json"});
  REQUIRE(w2.code == 0);
  CHECK(w2.json_lines().at(0)["result"]["exit_code"] == 0);
}

TEST_CASE("exec runs a command line and kills its process group at the timeout") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1", "--allow-exec"});
  auto r = c.run({"submit", "exec", R"(["sh", "-c", "echo out; echo err >&2; exit 3"])", "--wait", "--json"});
  REQUIRE(r.code == 0);
  auto res = r.json_lines().at(0)["result"];
  CHECK(res["exit_code"] == 3);
  CHECK(res["stdout"] == "out\n");
  CHECK(res["stderr"] == "err\n");
  auto t = c.run({"submit", "exec", R"(["sleep", "30"])", "--timeout", "0.5", "--max-attempts", "1", "--wait", "--json"});
  CHECK(t.code == 1);
  CHECK(t.json_lines().at(0)["error"].get<std::string>().find("timed out") != std::string::npos);
  CHECK(t.elapsed < 20s);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
