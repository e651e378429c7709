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
  MESSAGE("workers back " << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - back).count()
                          << " ms after the master");
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

TEST_CASE("a worker repeatedly cut off serves again every time; nothing grows per reconnect") {
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

}  // TEST_SUITE

}  // namespace taskmaster::test
