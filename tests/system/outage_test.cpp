// A fleet that outlives its master: outages longer than every backoff and timeout, a master that is
// stopped, workers that start before their master. Each outage is the fault itself, held for a
// fixed time on purpose; everything after it waits on a condition with a deadline.
#include <signal.h>

#include <thread>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// The fault's length: longer than the worker's master timeout (3 s), its HELLO backoff cap (2 s) and
// libzmq's reconnect cap (2 s) together.
constexpr auto kOutage = 10s;

// Holds a fault for `d`. Not a wait for something to settle: the duration is what is tested.
void hold_fault(std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }

// How long a healed fleet may take to be whole again: the reconnect cap plus a HELLO round trip,
// with a wide margin for a loaded machine.
constexpr auto kRejoin = 10s;

void check_job(Cluster& c, int n) {
  std::string input;
  for (int i = 1; i <= n; ++i) input += std::to_string(i) + "\n";
  auto r = c.run({"submit", "square", "--each", "--wait", "--json"}, input, 60s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto rows = r.json_lines();
  REQUIRE(rows.size() == static_cast<std::size_t>(n));
  long long sum = 0, expected = 0;
  for (const auto& j : rows) sum += j["result"].get<long long>();
  for (long long i = 1; i <= n; ++i) expected += i * i;
  CHECK(sum == expected);
}

// A plain TCP relay in front of the master (tests/netns/delay_relay.py), as docker-proxy or a load
// balancer would be: it accepts while the master is down and closes what it cannot forward.
struct Relay {
  std::unique_ptr<ChildProcess> process;
  std::string endpoint;
  Relay(Cluster& c, int delay_ms) {
    const std::string port = std::to_string(closed_loopback_port());
    process = c.start({"/usr/bin/python3", std::string(TASKMASTER_SOURCE_DIR) + "/tests/netns/delay_relay.py", "--listen",
                       "127.0.0.1:" + port, "--to", "127.0.0.1:" + c.port(), "--delay-ms", std::to_string(delay_ms), "--max-seconds",
                       "280"});
    const auto line = process->read_line(20s);
    REQUIRE_MESSAGE(line.has_value(), "the relay did not start: " << process->err());
    endpoint = "tcp://127.0.0.1:" + port;
  }
};

// `taskmaster ARGS... --connect ENDPOINT` through the relay.
std::unique_ptr<ChildProcess> via(Cluster& c, const std::string& endpoint, std::vector<std::string> args,
                                  std::optional<std::string> input = std::nullopt) {
  std::vector<std::string> argv{kTaskmaster};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--connect");
  argv.push_back(endpoint);
  return c.start(argv, std::move(input));
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("workers serve again after their master was away longer than every backoff") {
  Cluster c;
  c.start_master();
  auto& w1 = c.start_worker({"-j", "2", "--name", "w1"});
  auto& w2 = c.start_worker({"-j", "2", "--name", "w2"});
  c.wait_for_workers(2);
  const std::string bind = c.endpoint();
  SUBCASE("killed, and started again 10 s later") {
    c.stop_master(SIGKILL);
    hold_fault(kOutage);
    c.start_master({}, bind);
  }
  SUBCASE("stopped (SIGSTOP) for 10 s") {
    c.master().signal(SIGSTOP);
    hold_fault(kOutage);
    c.master().signal(SIGCONT);
  }
  const auto back = Clock::now();
  c.wait_for_workers(2, kRejoin);
  MESSAGE("workers back " << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - back).count() << " ms after the master");
  CHECK(w1.running());
  CHECK(w2.running());
  check_job(c, 20);
  // The socket monitor is made once per worker: no "Address already in use" however long it waited.
  CHECK(w1.err().find("Address already in use") == std::string::npos);
  CHECK(w1.err().find("authentication failed") == std::string::npos);
}

TEST_CASE("a worker started long before its master serves once the master is up") {
  Cluster c;
  c.start_master();
  const std::string bind = c.endpoint();
  c.stop_master(SIGKILL);
  auto& w = c.start_worker({"-j", "2", "--name", "early"});
  hold_fault(kOutage);
  CHECK(w.running());
  c.start_master({}, bind);
  c.wait_for_workers(1, kRejoin);
  check_job(c, 10);
}

TEST_CASE("a worker repeatedly cut off serves again every time, with nothing growing per reconnect") {
  Cluster c;
  c.start_master({"--in-memory"});
  auto& w = c.start_worker({"-j", "1", "--name", "again"});
  c.wait_for_workers(1);
  const std::string bind = c.endpoint();
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    c.stop_master(SIGKILL);
    hold_fault(4s);  // past the master timeout: the worker notices and keeps trying
    c.start_master({"--in-memory"}, bind);
    c.wait_for_workers(1, kRejoin);
    check_job(c, 3);
  }
  CHECK(w.running());
}

TEST_CASE("a master restart behind a TCP proxy is a reconnect for workers and clients, never a wrong key") {
  Cluster c;
  c.start_master();
  const std::string bind = c.endpoint();
  Relay proxy(c, 0);
  auto worker = via(c, proxy.endpoint, {"worker", "-j", "2", "--name", "behind"});
  c.wait_for_workers(1);
  auto job = via(c, proxy.endpoint, {"submit", "sleep", "--each", "--wait", "--json"}, "0.5\n0.5\n0.5\n0.5\n0.5\n0.5\n");
  wait_until([&] { return c.status()["workers"][0]["done"] >= 1; }, 20s, "the job under way");
  c.stop_master(SIGKILL);
  // While the master is down the proxy still accepts and then hangs up: a new client says
  // unreachable (3), not authentication failed (4).
  auto early = via(c, proxy.endpoint, {"status", "--connect-timeout", "2"});
  const auto status_code = finish(*early, 30s).code;
  hold_fault(1500ms);
  c.start_master({}, bind);
  c.wait_for_workers(1, kRejoin);
  auto done = finish(*job, 60s);
  CHECK(status_code == 3);
  CHECK_MESSAGE(done.code == 0, done.err);
  CHECK(done.json_lines().size() == 6);
  CHECK(worker->running());
  CHECK(worker->err().find("authentication failed") == std::string::npos);
}

TEST_CASE("80 ms each way and a master restart behind it: every task ran is recorded once, none waits for its timeout") {
  Cluster c;
  c.start_master();
  const std::string bind = c.endpoint();
  Relay slow(c, 80);
  auto worker = via(c, slow.endpoint, {"worker", "-j", "4", "--name", "far"});
  c.wait_for_workers(1);
  auto job = via(c, slow.endpoint, {"submit", "sleep", "--each", "--wait", "--json", "--timeout", "120"},
                 "0.3\n0.3\n0.3\n0.3\n0.3\n0.3\n0.3\n0.3\n");
  wait_until([&] { return c.status()["workers"][0]["in_flight"] >= 1; }, 20s, "tasks on the far worker");
  c.stop_master(SIGTERM);
  c.start_master({}, bind);
  auto done = finish(*job, 90s);  // well under the tasks' 120 s timeout
  REQUIRE_MESSAGE(done.code == 0, done.err);
  const auto rows = done.json_lines();
  CHECK(rows.size() == 8);
  for (const auto& row : rows) CHECK(row["status"] == "done");
  CHECK(worker->running());
}

}  // TEST_SUITE

}  // namespace taskmaster::test
