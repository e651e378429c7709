// The master's process life: restarts under running workers, and clients facing no master.
#include <signal.h>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

TEST_SUITE("system") {

TEST_CASE("a master restarted while workers keep running: they reconnect and serve again") {
  Cluster c;
  c.start_master();
  auto& w1 = c.start_worker({"-j", "2"});
  auto& w2 = c.start_worker({"-j", "2"});
  c.wait_for_workers(2);
  CHECK(c.run({"submit", "square", "5", "--wait"}).out == "5 -> 25\n");
  const std::string bind = c.endpoint();
  SUBCASE("after SIGKILL") { c.stop_master(SIGKILL); }
  SUBCASE("after SIGTERM") { CHECK(c.stop_master(SIGTERM) == 0); }
  c.start_master({}, bind);
  c.wait_for_workers(2, 30s);
  CHECK(w1.running());
  CHECK(w2.running());
  auto r = c.run({"submit", "square", "--each", "--wait", "--json"}, "1\n2\n3\n4\n5\n6\n");
  REQUIRE(r.code == 0);
  long long sum = 0;
  for (const auto& j : r.json_lines()) sum += j["result"].get<long long>();
  CHECK(sum == 1 + 4 + 9 + 16 + 25 + 36);
}

TEST_CASE("an in-memory master gives new task ids after a restart: an attempt from before cannot finish a new task") {
  Cluster c;
  c.start_master({"--in-memory"});
  c.start_worker({"-j", "1"});
  c.wait_for_workers(1);
  auto first = c.run({"submit", "square", "5", "--wait", "--json"});
  REQUIRE(first.code == 0);
  const auto old_id = first.json_lines().at(0)["task"].get<std::uint64_t>();
  // An attempt that outlives the master (task old_id + 1): the worker reports it after the restart.
  REQUIRE(c.run({"submit", "sleep", "2"}).code == 0);
  wait_until([&] { return c.status()["workers"].at(0)["in_flight"] == 1; }, 20s, "the sleep task to run");
  const std::string bind = c.endpoint();
  c.stop_master(SIGKILL);
  c.start_master({"--in-memory"}, bind);
  c.wait_for_workers(1, 30s);
  auto r = c.run({"submit", "echo", "--each", "--wait", "--json"}, "\"a\"\n\"b\"\n\"c\"\n");
  REQUIRE(r.code == 0);
  const auto lines = r.json_lines();
  REQUIRE(lines.size() == 3);
  for (const auto& j : lines) {
    CHECK(j["result"] == j["args"]);  // not the sleep's null
    CHECK(j["task"].get<std::uint64_t>() > old_id + 1);
  }
}

TEST_CASE("every client command exits 3 within the connect timeout when no master answers") {
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(closed_loopback_port());
  TestKey key;
  const std::vector<std::vector<std::string>> commands{
      {"submit", "square", "1"}, {"submit", "square", "1", "--wait"}, {"wait", "1"}, {"results", "1"}, {"status"}, {"cancel", "1"}};
  for (const auto& args : commands) {
    CAPTURE(args[0]);
    std::vector<std::string> argv{kTaskmaster};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--connect", endpoint, "--connect-timeout", "1"});
    ChildProcess p(argv, {std::nullopt, key.env()});
    auto r = finish(p, 20s);
    CHECK(r.code == 3);
    CHECK(r.err.find(endpoint) != std::string::npos);
    CHECK(r.err.find("cannot reach the master") != std::string::npos);
    CHECK(r.elapsed < 5s);
  }
}

TEST_CASE("the master prints the endpoint it bound first, and a bad bind fails clearly") {
  Cluster c;
  c.start_master();
  CHECK(c.endpoint().rfind("tcp://127.0.0.1:", 0) == 0);
  CHECK(std::stoi(c.port()) > 0);
  // The same port again cannot be bound.
  auto second = c.start({kTaskmaster, "master", "--bind", c.endpoint()});
  auto r = finish(*second, 20s);
  CHECK(r.code == 5);
  CHECK(r.err.find("cannot bind " + c.endpoint()) != std::string::npos);
  CHECK(r.out.empty());
}

}  // TEST_SUITE

}  // namespace taskmaster::test
