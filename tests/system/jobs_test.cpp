// Jobs end to end: real master and worker processes on loopback, driven through the CLI.
#include <signal.h>

#include <map>
#include <random>
#include <set>

#include <doctest/doctest.h>

#include "client/client.h"
#include "support/cluster.h"

namespace taskmaster::test {

TEST_SUITE("system") {

TEST_CASE("the example job: two workers square ten random numbers") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2"});
  c.start_worker({"-j", "2"});
  std::mt19937 rng(42);
  std::map<long long, int> wanted;  // n -> how many times submitted
  std::string input;
  for (int i = 0; i < 10; ++i) {
    const long long n = std::uniform_int_distribution<long long>(0, 10000)(rng);
    ++wanted[n];
    input += std::to_string(n) + "\n";
  }
  auto r = c.run({"submit", "square", "--each", "--wait", "--json"}, input);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto lines = r.json_lines();
  REQUIRE(lines.size() == 10);
  std::set<long long> tasks;
  for (const auto& j : lines) {
    CHECK(j["status"] == "done");
    const long long n = j["args"].get<long long>();
    CHECK(j["result"].get<long long>() == n * n);
    CHECK(--wanted[n] >= 0);
    CHECK(j["attempts"] == 1);
    CHECK_FALSE(j["worker"].get<std::string>().empty());
    tasks.insert(j["task"].get<long long>());
    CHECK(j["job"] == lines[0]["job"]);
  }
  CHECK(tasks.size() == 10);
  // The text form: ARGS -> RESULT
  auto t = c.run({"submit", "square", "12", "--wait"});
  CHECK(t.code == 0);
  CHECK(t.out == "12 -> 144\n");
  // Without --wait only the job id is printed; results and wait read it back later.
  auto s = c.run({"submit", "square", "7"});
  REQUIRE(s.code == 0);
  const std::string job = s.lines().at(0);
  CHECK(std::stoll(job) > 0);
  auto w = c.run({"wait", job});
  CHECK(w.code == 0);
  CHECK(w.out == "7 -> 49\n");
  auto again = c.run({"results", job, "--json"});  // reading results does not remove them
  CHECK(again.code == 0);
  CHECK(again.json_lines().at(0)["result"] == 49);
}

TEST_CASE("a failing function is retried with backoff, then dead with its last error") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  auto r = c.run({"submit", "fail", "\"disk on fire\"", "--max-attempts", "3", "--backoff", "0.1", "--wait", "--json"});
  CHECK(r.code == 1);
  auto lines = r.json_lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["status"] == "dead");
  CHECK(lines[0]["error"] == "disk on fire");
  CHECK(lines[0]["attempts"] == 3);
  CHECK_FALSE(lines[0].contains("result"));
  // Backoff 0.1 s then 0.2 s between the three attempts.
  CHECK(r.elapsed >= 300ms);
  auto text = c.run({"submit", "fail", "\"boom\"", "--max-attempts", "1", "--wait"});
  CHECK(text.code == 1);
  CHECK(text.out == "\"boom\" -> error: boom\n");
  // An exception in a function (overflow) fails the attempt with its message.
  auto o = c.run({"submit", "square", "4000000000", "--max-attempts", "1", "--wait", "--json"});
  CHECK(o.code == 1);
  CHECK(o.json_lines().at(0)["error"].get<std::string>().find("overflows") != std::string::npos);
}

TEST_CASE("an attempt past its timeout fails and is retried - the last one leaves the task dead") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  auto r = c.run({"submit", "sleep", "30", "--timeout", "0.3", "--max-attempts", "2", "--backoff", "0", "--wait", "--json"});
  CHECK(r.code == 1);
  auto lines = r.json_lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["status"] == "dead");
  CHECK(lines[0]["attempts"] == 2);
  CHECK(lines[0]["error"].get<std::string>().find("timed out after 0.3 s") != std::string::npos);
  CHECK(r.elapsed < 20s);
  // The worker's slot came back: it still runs tasks.
  auto ok = c.run({"submit", "square", "3", "--wait"});
  CHECK(ok.out == "3 -> 9\n");
}

TEST_CASE("a delayed task waits in state delayed, then runs") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  const auto t0 = Clock::now();
  auto s = c.run({"submit", "echo", "\"later\"", "--delay", "1.5"});
  REQUIRE(s.code == 0);
  const std::string job = s.lines().at(0);
  auto st = c.status();
  CHECK(st["queues"]["default"]["delayed"] == 1);
  CHECK(st["queues"]["default"]["done"] == 0);
  auto w = c.run({"wait", job, "--json"});
  CHECK(w.code == 0);
  CHECK(w.json_lines().at(0)["result"] == "later");
  CHECK(Clock::now() - t0 >= 1500ms);  // the delay is the behaviour under test
  CHECK(c.status()["queues"]["default"]["delayed"] == 0);
}

TEST_CASE("higher priority runs first - equal priorities run in submission order") {
  Cluster c;
  c.start_master();
  // No worker yet: everything is queued before anything runs.
  zmq::context_t ctx;
  Client client(ctx, c.client_options());
  REQUIRE(client.connect());
  int next = 0;
  const std::vector<int> priorities{0, 5, 0, 9, 5, -3, 9, 0};
  TaskSource source = [&]() -> std::optional<protocol::TaskSpec> {
    if (next == static_cast<int>(priorities.size())) return std::nullopt;
    protocol::TaskSpec t;
    t.function = "echo";
    t.args = std::to_string(next);
    t.priority = priorities[static_cast<std::size_t>(next++)];
    return t;
  };
  auto job = run_job(client, source, JobOptions{}, nullptr, nullptr);
  REQUIRE(job);
  c.start_worker({"-j", "1", "--prefetch", "0"});  // one slot: tasks run one at a time, in dispatch order
  std::vector<int> order;
  OutcomeSink sink = [&](protocol::JobId, const std::vector<protocol::Outcome>& batch) {
    for (const auto& o : batch) order.push_back(std::stoi(o.args));
  };
  auto done = follow_job(client, job->job, true, sink);
  REQUIRE(done);
  CHECK(done->all_done());
  CHECK(order == std::vector<int>{3, 6, 1, 4, 0, 2, 7, 5});
}

TEST_CASE("cancel: queued and delayed tasks become cancelled, a running one finishes") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1", "--prefetch", "0"});  // holds only what it runs
  auto s = c.run({"submit", "sleep", "--each"}, "3\n0.01\n0.01\n0.01\n");
  REQUIRE(s.code == 0);
  const std::string job = s.lines().at(0);
  wait_until([&] { return c.status()["queues"]["default"]["running"] == 1; }, 20s, "the first task running");
  auto d = c.run({"submit", "echo", "1", "--delay", "600"});  // a delayed task in another job
  auto cancel = c.run({"cancel", job});
  CHECK(cancel.code == 0);
  CHECK(cancel.out == "3\n");
  auto w = c.run({"wait", job, "--json"});
  CHECK(w.code == 1);  // some task cancelled
  std::map<std::string, int> by_status;
  for (const auto& j : w.json_lines()) ++by_status[j["status"].get<std::string>()];
  CHECK(by_status["done"] == 1);
  CHECK(by_status["cancelled"] == 3);
  auto dc = c.run({"cancel", d.lines().at(0)});
  CHECK(dc.out == "1\n");
  auto dw = c.run({"wait", d.lines().at(0)});
  CHECK(dw.code == 1);
  CHECK(dw.out == "1 -> cancelled\n");
  // An unknown job is an error, not a hang.
  auto u = c.run({"wait", "999999"});
  CHECK(u.code == 5);
  CHECK(u.err.find("does not exist") != std::string::npos);
}

TEST_CASE("submit --each streams many tasks in batches and --wait prints every outcome once") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2"});
  c.start_worker({"-j", "2"});
  std::string input;
  const int n = 25000;  // more than one SUBMIT batch
  for (int i = 0; i < n; ++i) input += std::to_string(i) + "\n";
  auto r = c.run({"submit", "square", "--each", "--wait"}, input, 120s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto lines = r.lines();
  REQUIRE(lines.size() == static_cast<std::size_t>(n));
  std::vector<bool> seen(n, false);
  for (const auto& line : lines) {
    const auto arrow = line.find(" -> ");
    REQUIRE(arrow != std::string::npos);
    const long long a = std::stoll(line.substr(0, arrow)), b = std::stoll(line.substr(arrow + 4));
    CHECK(b == a * a);
    REQUIRE(a < n);
    CHECK_FALSE(seen[static_cast<std::size_t>(a)]);
    seen[static_cast<std::size_t>(a)] = true;
  }
}

TEST_CASE("bare strings and JSON on the command line and on stdin") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  auto r = c.run({"submit", "echo", "--each", "--wait", "--json"}, "hello world\n{\"a\": [1, 2]}\n\n\"quoted\"\n");
  REQUIRE(r.code == 0);
  std::set<std::string> got;
  for (const auto& j : r.json_lines()) got.insert(j["result"].dump());
  CHECK(got == std::set<std::string>{"\"hello world\"", "{\"a\":[1,2]}", "\"quoted\""});
  auto empty = c.run({"submit", "echo", "--each"}, "\n\n");
  CHECK(empty.code == 2);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
