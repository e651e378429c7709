// What people type, through the real binary: endpoints without tcp:// work against a running master,
// and bad command lines end with exit 2 and one line on stderr (never an abort, exit 134).
#include <algorithm>
#include <fstream>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// `taskmaster ARGS...` with the cluster's key and `env`, run to completion.
CommandResult run_binary(const Cluster& c, std::vector<std::string> args, std::vector<std::string> env = {}) {
  std::vector<std::string> argv{kTaskmaster};
  argv.insert(argv.end(), args.begin(), args.end());
  auto all_env = c.key().env();
  all_env.insert(all_env.end(), env.begin(), env.end());
  ChildProcess p(argv, {std::nullopt, all_env});
  return finish(p, 30s);
}

void check_usage_error(const CommandResult& r) {
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.rfind("taskmaster: ", 0) == 0, r.err);
  CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  CHECK(r.out.empty());
}

// Whether this host has the IPv6 loopback address (containers may not).
bool has_ipv6_loopback() {
  std::ifstream in("/proc/net/if_inet6");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("00000000000000000000000000000001 ", 0) == 0) return true;
  return false;
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("HOST:PORT endpoints without tcp:// reach a running master: worker, submit, status and TASKMASTER_ADDRESS") {
  Cluster c;
  c.start_master({"--in-memory"}, "127.0.0.1:0");  // --bind HOST:PORT too; the master prints tcp://127.0.0.1:PORT
  CHECK(c.endpoint().rfind("tcp://127.0.0.1:", 0) == 0);
  const std::string address = "127.0.0.1:" + c.port();
  auto worker = c.start({kTaskmaster, "worker", "--connect", address, "-j", "1"});
  c.wait_for_workers(1);
  auto r = run_binary(c, {"submit", "square", "7", "--wait", "--connect", address});
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.out == "7 -> 49\n");
  auto s = run_binary(c, {"status", "--json"}, {"TASKMASTER_ADDRESS=" + address});
  CHECK_MESSAGE(s.code == 0, s.err);
  CHECK(s.out.find("\"workers\"") != std::string::npos);
  // Nothing listens on port 1: exit 3 naming the normalised address, not an abort.
  auto closed = run_binary(c, {"status", "--connect", "127.0.0.1:1", "--connect-timeout", "0.5"});
  CHECK(closed.code == 3);
  CHECK(closed.err.find("tcp://127.0.0.1:1") != std::string::npos);
}

TEST_CASE("an IPv6 endpoint in brackets binds and connects") {
  if (!has_ipv6_loopback()) {
    MESSAGE("skipped: no ::1 on this host");
    return;
  }
  Cluster c;
  c.start_master({"--in-memory"}, "tcp://[::1]:0");
  REQUIRE(c.endpoint().rfind("tcp://[::1]:", 0) == 0);
  c.start_worker({"-j", "1"});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "square", "12", "--wait"});
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.out == "12 -> 144\n");
}

TEST_CASE("bad endpoints exit 2 with one line on stderr in every command") {
  Cluster c;  // only its key: nothing is started
  const std::vector<std::vector<std::string>> commands{{"submit", "square", "1"}, {"wait", "1"}, {"results", "1"}, {"status"},
                                                       {"cancel", "1"},           {"worker"},    {"bench"}};
  const std::vector<std::string> bad{"tcp://127.0.0.1:99999", "http://127.0.0.1:5555", "127.0.0.1", "",
                                     "tcp://127.0.0.1 :5555", "127.0.0.1:abc"};
  for (const auto& value : bad) {
    CAPTURE(value);
    for (const auto& command : commands) {
      CAPTURE(command[0]);
      auto args = command;
      args.insert(args.end(), {"--connect", value});
      check_usage_error(run_binary(c, args));
      // An empty variable counts as unset (the default endpoint), as CLI11 reads variables.
      if (command[0] != "bench" && !value.empty()) check_usage_error(run_binary(c, command, {"TASKMASTER_ADDRESS=" + value}));
    }
    check_usage_error(run_binary(c, {"master", "--bind", value, "--in-memory"}));
  }
  auto r = run_binary(c, {"status", "--connect", "tcp://127.0.0.1:99999"});
  CHECK(r.err ==
        "taskmaster: --connect 'tcp://127.0.0.1:99999': port 99999 is out of range (1-65535); expected HOST:PORT or "
        "tcp://HOST:PORT, e.g. tcp://10.0.0.5:5555\n");
}

TEST_CASE("a master whose journal cannot be replayed whole exits 5 with one line naming the journal and how to move it aside") {
  Cluster c;
  c.start_master();
  REQUIRE(c.run({"submit", "echo", "--each"}, "1\n2\n3\n").code == 0);
  REQUIRE(c.stop_master() == 0);
  const std::string db = c.data_dir() + "/journal.db";
  // A row written by a newer version (or damaged): a state this one does not know.
  ChildProcess edit({"/usr/bin/sqlite3", db, "UPDATE tasks SET state = 'paused' WHERE id = (SELECT max(id) FROM tasks)"});
  REQUIRE(finish(edit, 30s).code == 0);
  auto again = c.start({kTaskmaster, "master", "--bind", "tcp://127.0.0.1:0", "--data-dir", c.data_dir()});
  const auto r = finish(*again, 30s);
  CHECK(r.code == 5);
  CHECK(r.out.empty());  // it never bound: no endpoint line
  CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  CHECK_MESSAGE(r.err.find("has state 'paused'") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("mv " + db) != std::string::npos, r.err);
}

TEST_CASE("cli: impossible master and worker settings exit 2 before anything starts") {
  Cluster c;
  auto master = run_binary(c, {"master", "--bind", "127.0.0.1:0", "--in-memory", "--heartbeat-interval", "5", "--worker-timeout", "3"});
  check_usage_error(master);
  CHECK(master.err.find("--heartbeat-interval (5 s) must be shorter than --worker-timeout (3 s)") != std::string::npos);
  check_usage_error(run_binary(c, {"master", "--bind", "127.0.0.1:0", "--in-memory", "--result-ttl", "nan"}));
  check_usage_error(run_binary(c, {"worker", "--connect", "127.0.0.1:1", "-j", "4096", "--prefetch", "100000"}));
  check_usage_error(run_binary(c, {"submit", "square", "1", "--connect", "127.0.0.1:1", "--delay", "inf"}));
}

}  // TEST_SUITE

}  // namespace taskmaster::test
