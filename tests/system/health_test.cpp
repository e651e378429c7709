// taskmaster health, the probe of compose healthchecks, systemd and load balancers: its exit codes
// against real masters on loopback.
#include <signal.h>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// `taskmaster health ARGS...` with the key of `key`, against whatever `endpoint` is.
CommandResult health(const TestKey& key, const std::string& endpoint, std::vector<std::string> args = {}) {
  std::vector<std::string> argv{kTaskmaster, "health", "--connect", endpoint};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess p(argv, {std::nullopt, key.env()});
  return finish(p, 30s);
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("health exits 0 and prints nothing when the master answers, and one line about it with --verbose") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  c.wait_for_workers(1);
  auto quiet = c.run({"health"});
  CHECK(quiet.code == 0);
  CHECK(quiet.out.empty());
  CHECK(quiet.err.empty());

  auto verbose = c.run({"health", "--verbose"});
  REQUIRE_MESSAGE(verbose.code == 0, verbose.err);
  const std::string instance = c.status()["master"].get<std::string>();
  CHECK(verbose.lines().size() == 1);
  CHECK(verbose.out.rfind("master=" + instance + " uptime_s=", 0) == 0);
  CHECK(verbose.out.find(" workers=1 tasks=0\n") != std::string::npos);
}

TEST_CASE("health exits 3 within its timeout when nothing listens (default 2 s, --timeout S)") {
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(closed_loopback_port());
  TestKey key;
  auto r = health(key, endpoint, {"--timeout", "0.5"});
  CHECK(r.code == 3);
  CHECK(r.err.find("cannot reach the master at " + endpoint) != std::string::npos);
  CHECK(r.out.empty());
  CHECK(r.elapsed < 5s);

  auto by_default = health(key, endpoint);
  CHECK(by_default.code == 3);
  CHECK(by_default.err.find("within 2 s") != std::string::npos);
  CHECK(by_default.elapsed >= 2s);
  CHECK(by_default.elapsed < 10s);
}

TEST_CASE("health exits 3 when the master holds connections but does not answer (SIGSTOP), 0 again after SIGCONT") {
  Cluster c;
  c.start_master();
  REQUIRE(c.run({"health"}).code == 0);
  c.master().signal(SIGSTOP);
  auto stopped = c.run({"health", "--timeout", "1"});
  c.master().signal(SIGCONT);
  CHECK(stopped.code == 3);
  CHECK(stopped.elapsed < 6s);
  auto again = c.run({"health", "--timeout", "10"});
  CHECK_MESSAGE(again.code == 0, again.err);
}

TEST_CASE("health exits 4 with a wrong key, and with a key against an insecure master") {
  Cluster c;
  c.start_master();
  TestKey other;
  auto wrong = c.run({"health", "--key-file", other.path()});
  CHECK(wrong.code == 4);
  CHECK(wrong.err.find("authentication failed") != std::string::npos);
  CHECK(wrong.elapsed < 10s);

  Cluster insecure(true);
  insecure.start_master();
  CHECK(insecure.run({"health"}).code == 0);  // run() adds --insecure
  CHECK(health(insecure.key(), insecure.endpoint()).code == 4);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
