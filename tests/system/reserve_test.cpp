// Prefetch that keeps its promises (PROTOCOL.md §8.6), end to end with real processes on loopback:
// after a warm-up of fast tasks a one-thread worker holds about a thousand reserved tasks, and still
// a higher priority overtakes them, cancel reaches them, and an idle worker takes them over while a
// slow task holds the busy worker's thread. Each test asserts an order of completion or a count that
// the reserved tasks would break if they stayed where they were, never a time.
#include <doctest/doctest.h>

#include <string>

#include "support/cluster.h"

namespace taskmaster::test {
namespace {

std::string numbers(int n) {
  std::string input;
  for (int i = 1; i <= n; ++i) input += std::to_string(i) + "\n";
  return input;
}

// 20,000 fast tasks: the worker measures microseconds per task and sizes its prefetch to the most
// it allows (kMaxPrefetchPerThread per thread).
void warm_up(Cluster& c) {
  auto r = c.run({"submit", "square", "--each", "--wait"}, numbers(20000), 120s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  REQUIRE(r.lines().size() == 20000);
}

// A master and one worker of one thread (with `worker_args`), warmed up.
void start_warm(Cluster& c, std::vector<std::string> worker_args = {}) {
  c.start_master({"--in-memory"});
  worker_args.insert(worker_args.begin(), {"-j", "1"});
  c.start_worker(worker_args);
  c.wait_for_workers(1);
  warm_up(c);
}

// Submits `n` tasks of `sleep 0.001` as one job without waiting; returns its id.
std::string submit_sleeps(Cluster& c, int n) {
  std::string input;
  for (int i = 0; i < n; ++i) input += "0.001\n";
  auto r = c.run({"submit", "sleep", "--each"}, input, 120s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return r.lines().at(0);
}

// The job's finished tasks by status.
std::map<std::string, std::size_t> outcomes(Cluster& c, const std::string& job) {
  auto r = c.run({"results", job, "--json"});
  REQUIRE_MESSAGE((r.code == 0 || r.code == 1), r.err);  // 1: some task cancelled
  std::map<std::string, std::size_t> by_status;
  for (const auto& line : r.json_lines()) ++by_status[line.at("status").get<std::string>()];
  return by_status;
}

std::size_t finished(Cluster& c, const std::string& job) {
  std::size_t n = 0;
  for (const auto& [status, count] : outcomes(c, job)) n += count;
  return n;
}

// Waits until the workers hold at least `n` reserved tasks; returns that status.
nlohmann::json wait_for_reserved(Cluster& c, std::size_t n) {
  nlohmann::json st;
  wait_until(
      [&] {
        st = c.status();
        return st.at("reserved").get<std::size_t>() >= n;
      },
      20s, "the worker to hold hundreds of reserved tasks");
  return st;
}

nlohmann::json worker_named(const nlohmann::json& status, const std::string& name) {
  for (const auto& w : status.at("workers"))
    if (w.at("id") == name) return w;
  return nullptr;
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("reserve - after a warm-up a higher priority overtakes the thousand tasks a one-thread worker holds") {
  Cluster c;
  start_warm(c);
  const std::string low = submit_sleeps(c, 3000);  // 3 s of work for the one thread
  nlohmann::json st = wait_for_reserved(c, 300);
  const std::size_t reserved = st.at("reserved").get<std::size_t>();
  const std::size_t before = finished(c, low);
  auto high = c.run({"submit", "square", "--priority", "10", "--each", "--wait", "--json"}, numbers(10));
  REQUIRE_MESSAGE(high.code == 0, high.err);
  CHECK(high.json_lines().size() == 10);
  // Had they stayed in the worker, every task reserved at `before` would have run first.
  const std::size_t after = finished(c, low);
  MESSAGE(reserved << " reserved; the low job went from " << before << " to " << after << " finished while the high one ran");
  CHECK(after < before + reserved / 2);
  CHECK(c.run({"cancel", low}).code == 0);
}

TEST_CASE("reserve - cancel reaches tasks a one-thread worker holds but has not begun: they end cancelled, never run") {
  Cluster c;
  start_warm(c);
  const std::string job = submit_sleeps(c, 3000);
  nlohmann::json st = wait_for_reserved(c, 300);
  const std::size_t reserved = st.at("reserved").get<std::size_t>();
  const std::size_t before = finished(c, job);
  auto cancel = c.run({"cancel", job});
  REQUIRE_MESSAGE(cancel.code == 0, cancel.err);
  wait_until(
      [&] {
        st = c.status();
        return st.at("running") == 0 && st.at("reserved") == 0;
      },
      20s, "the worker to hold nothing");
  auto by = outcomes(c, job);
  MESSAGE(reserved << " were reserved and " << before << " done at the cancel; then done " << by["done"] << ", cancelled "
                   << by["cancelled"]);
  CHECK(by["done"] + by["cancelled"] == 3000);
  // Had the reserved ones stayed, they would all have run.
  CHECK(by["done"] < before + reserved / 2);
}

TEST_CASE("reserve - a slow task does not hold back the tasks reserved behind it while another worker is idle") {
  Cluster c;
  start_warm(c, {"--name", "busy"});
  auto slow = c.run({"submit", "sleep", "600"});
  REQUIRE_MESSAGE(slow.code == 0, slow.err);
  const std::string slow_job = slow.lines().at(0);
  wait_until([&] { return worker_named(c.status(), "busy").at("running") == 1; }, 20s, "the slow task to begin");
  auto fast = c.run({"submit", "square", "--each"}, numbers(1000));
  REQUIRE_MESSAGE(fast.code == 0, fast.err);
  const std::string fast_job = fast.lines().at(0);
  // As many as its prefetch holds (all 1000 here; fewer on a slow build), the rest queued.
  wait_until([&] { return worker_named(c.status(), "busy").at("reserved").get<std::size_t>() >= 100; }, 20s,
             "the fast tasks reserved behind the slow one");
  c.start_worker({"-j", "1", "--name", "idle"});
  auto w = c.run({"wait", fast_job, "--json"}, std::nullopt, 120s);
  REQUIRE_MESSAGE(w.code == 0, w.err);
  CHECK(w.json_lines().size() == 1000);
  for (const auto& line : w.json_lines()) CHECK(line.at("worker") == "idle");
  // All of them done, and the slow task still holds the busy worker's thread.
  const auto st = c.status();
  CHECK(worker_named(st, "busy").at("running") == 1);
  CHECK(worker_named(st, "busy").at("reserved") == 0);
  CHECK(finished(c, slow_job) == 0);
}

TEST_CASE("reserve - a worker without the feature is served as before: every held task counts as running, none is revoked") {
  Cluster c;
  start_warm(c, {"--name", "old", "--no-reserve"});
  const std::string job = submit_sleeps(c, 1000);
  nlohmann::json st;
  wait_until(
      [&] {
        st = c.status();
        return worker_named(st, "old").at("running").get<std::size_t>() >= 300;
      },
      20s, "the old worker to hold hundreds of tasks");
  CHECK(worker_named(st, "old").at("reserved") == 0);
  CHECK(st.at("reserved") == 0);
  const std::size_t held = worker_named(st, "old").at("running").get<std::size_t>();
  const std::size_t before = finished(c, job);
  CHECK(c.run({"cancel", job}).code == 0);
  wait_until([&] { return c.status().at("running") == 0; }, 60s, "the old worker to finish what it held");
  auto by = outcomes(c, job);
  // What it held ran (cancel cannot reach it), and the rest was cancelled.
  CHECK(by["done"] >= before + held / 2);
  CHECK(by["done"] + by["cancelled"] == 1000);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
