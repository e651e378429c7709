// The scheduler as a pure unit (TaskTable::pick with its SchedulePolicy): round robin across jobs,
// first come first served, aging, weighted queues, shortest first, and the cost with many jobs.
// Time is a parameter: t0 plus durations, never a clock.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "master/task_table.h"

namespace taskmaster {
namespace {

using namespace std::chrono_literals;
using protocol::TaskSpec;

const TimePoint t0{};

// A table whose bookkeeping is checked when the test ends, the filters' name references counted apart.
struct Table : TaskTable {
  using TaskTable::TaskTable;
  RefCounts refs;
  ~Table() { CHECK(check_invariants(refs) == ""); }
  WorkerFilter worker(std::vector<std::string> queues = {"default"}, std::vector<std::string> functions = {"f"},
                      std::vector<std::uint32_t> weights = {}) {
    WorkerFilter w;
    for (const auto& q : queues) w.queues.push_back(acquire(q));
    for (const auto& f : functions) w.functions.push_back(acquire(f));
    w.weights = std::move(weights);
    w.normalize();
    return w;
  }
  std::uint32_t acquire(const std::string& name) {
    const auto id = names().acquire(name);
    ++refs[id];
    return id;
  }
  // Adds n tasks of one job; returns their ids.
  std::vector<TaskId> job(JobId job, int n, TimePoint now = t0, std::int32_t priority = 0, std::string queue = "default",
                          std::string function = "f") {
    std::vector<TaskId> ids;
    for (int i = 0; i < n; ++i)
      ids.push_back(add(job, TaskSpec{.function = function, .args = "1", .queue = queue, .priority = priority}, now));
    return ids;
  }
  // Picks and leases one task; 0 if none.
  TaskId take(WorkerFilter& w, TimePoint now = t0) {
    const TaskId id = pick(w);
    if (id) lease(id, 0, now);
    return id;
  }
  JobId job_of(TaskId id) const { return find(id)->job; }
  std::string queue_of(TaskId id) const { return names().name(find(id)->queue); }
};

TEST_SUITE("scheduler") {

TEST_CASE("fair - a small job behind a big one takes every other turn") {
  Table table;
  auto w = table.worker();
  table.job(1, 1000);
  // The big job has had 5 turns when the small one comes.
  for (int i = 0; i < 5; ++i) CHECK(table.job_of(table.take(w)) == 1);
  table.job(2, 10, t0 + 1ms);
  std::vector<JobId> order;
  for (int i = 0; i < 20; ++i) order.push_back(table.job_of(table.take(w, t0 + 2ms)));
  // The big job's last turn came before the small one arrived, so it goes first; then they alternate.
  CHECK(order == std::vector<JobId>{1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2});
  CHECK(table.job_of(table.take(w)) == 1);  // the small job is done: the big one goes on alone
  CHECK(table.queued() == 1000 - 5 - 10 - 1);
}

TEST_CASE("fair - three jobs take turns in the order they came, whatever their sizes") {
  Table table;
  auto w = table.worker();
  table.job(1, 100);
  table.job(2, 3);
  table.job(3, 100);
  std::vector<JobId> order;
  for (int i = 0; i < 9; ++i) order.push_back(table.job_of(table.take(w)));
  CHECK(order == std::vector<JobId>{1, 2, 3, 1, 2, 3, 1, 2, 3});
  order.clear();
  for (int i = 0; i < 4; ++i) order.push_back(table.job_of(table.take(w)));
  CHECK(order == std::vector<JobId>{1, 3, 1, 3});
}

TEST_CASE("fifo - a small job behind a big one waits until the big one has drained") {
  Table table(nullptr, SchedulePolicy{.fair = false});
  auto w = table.worker();
  table.job(1, 1000);
  table.job(2, 10, t0 + 1ms);
  for (int i = 0; i < 1000; ++i) REQUIRE(table.job_of(table.take(w)) == 1);
  for (int i = 0; i < 10; ++i) CHECK(table.job_of(table.take(w)) == 2);
}

TEST_CASE("fifo - cancelled tasks at the head of the line are skipped, across functions, and the order holds") {
  Table table(nullptr, SchedulePolicy{.fair = false});
  auto w = table.worker({"default"}, {"f", "g"});
  const auto f = table.job(1, 4, t0, 0, "default", "f");  // ids 1-4
  const auto g = table.job(2, 4, t0, 0, "default", "g");  // ids 5-8
  REQUIRE(table.cancel(f[0]));
  REQUIRE(table.cancel(f[1]));
  REQUIRE(table.cancel(g[0]));
  CHECK(table.check_invariants(table.refs) == "");
  std::vector<TaskId> order;
  while (const TaskId id = table.take(w)) {
    order.push_back(id);
    REQUIRE(table.check_invariants(table.refs) == "");
  }
  CHECK(order == std::vector<TaskId>{f[2], f[3], g[1], g[2], g[3]});
}

TEST_CASE("fair - priority still comes first, and a retried task goes back into its job's turn") {
  Table table(nullptr, SchedulePolicy{.aging_ms = 0});
  auto w = table.worker();
  table.job(1, 3);
  const auto urgent = table.job(2, 2, t0, 10);
  CHECK(table.take(w) == urgent[0]);
  CHECK(table.take(w) == urgent[1]);
  const TaskId a = table.take(w);
  CHECK(table.job_of(a) == 1);
  REQUIRE(table.complete(a, 1, false, "boom", t0).has_value());  // delayed by its backoff
  table.expire(t0 + 10s);                                        // queued again, in job 1's lane
  std::set<TaskId> rest;
  while (const TaskId id = table.take(w, t0 + 10s)) rest.insert(id);
  CHECK(rest.size() == 3);
  CHECK(rest.count(a) == 1);
}

TEST_CASE("strict priorities starve a low one under a steady stream of higher ones") {
  Table table(nullptr, SchedulePolicy{.aging_ms = 0});
  auto w = table.worker();
  const TaskId low = table.job(1, 1, t0, -5)[0];
  // One high-priority task arrives and is taken every 100 ms, for a simulated minute.
  for (int i = 0; i < 600; ++i) {
    const auto now = t0 + i * 100ms;
    table.job(static_cast<JobId>(100 + i), 1, now, 5);
    REQUIRE(table.take(w, now) != low);
  }
  CHECK(table.find(low)->state == TaskState::Queued);
}

TEST_CASE("aging - a starved low-priority job is lifted one level per aging period") {
  Table table(nullptr, SchedulePolicy{.aging_ms = 1000});
  auto w = table.worker();
  const TaskId low = table.job(1, 1, t0, -5)[0];
  // Priority 5 against -5: ten levels, so the low task goes after about 10 s of waiting.
  long long taken_at = -1;
  for (int i = 0; i < 600 && taken_at < 0; ++i) {
    const auto now = t0 + i * 100ms;
    table.job(static_cast<JobId>(100 + i), 1, now, 5);
    if (table.take(w, now) == low) taken_at = i * 100;
  }
  CHECK(taken_at >= 9900);
  CHECK(taken_at <= 10100);
}

TEST_CASE("aging - fifo ages each task by its own wait") {
  Table table(nullptr, SchedulePolicy{.fair = false, .aging_ms = 500});
  auto w = table.worker();
  const TaskId low = table.job(1, 1, t0, 0)[0];
  long long taken_at = -1;
  for (int i = 0; i < 600 && taken_at < 0; ++i) {
    const auto now = t0 + i * 100ms;
    table.job(2, 1, now, 4);
    if (table.take(w, now) == low) taken_at = i * 100;
  }
  CHECK(taken_at >= 1900);  // 4 levels × 500 ms
  CHECK(taken_at <= 2100);
}

TEST_CASE("weights - queues are served in proportion to their weights, evenly spread") {
  Table table;
  auto w = table.worker({"bulk", "urgent"}, {"f"}, {1, 3});
  table.job(1, 5000, t0, 0, "bulk");
  table.job(2, 5000, t0, 0, "urgent");
  std::map<std::string, int> served;
  int longest_bulk_gap = 0, gap = 0;
  for (int i = 0; i < 4000; ++i) {
    const std::string q = table.queue_of(table.take(w));
    ++served[q];
    gap = q == "bulk" ? 0 : gap + 1;
    longest_bulk_gap = std::max(longest_bulk_gap, gap);
  }
  CHECK(served["urgent"] >= 2996);
  CHECK(served["urgent"] <= 3004);
  CHECK(served["bulk"] == 4000 - served["urgent"]);
  CHECK(longest_bulk_gap <= 3);  // smooth: bulk's turns are spread, not bunched
}

TEST_CASE("weights - equal weights alternate, and a queue that runs dry gives its turns to the others") {
  Table table;
  auto w = table.worker({"a", "b", "c"});
  table.job(1, 100, t0, 0, "a");
  table.job(2, 2, t0, 0, "b");
  table.job(3, 100, t0, 0, "c");
  std::vector<std::string> order;
  for (int i = 0; i < 10; ++i) order.push_back(table.queue_of(table.take(w)));
  CHECK(order == std::vector<std::string>{"a", "b", "c", "a", "b", "c", "a", "c", "a", "c"});
}

TEST_CASE("weights - a queue's weight does not matter while the others are empty") {
  Table table;
  auto w = table.worker({"a", "b"}, {"f"}, {1, 100});
  table.job(1, 50, t0, 0, "a");
  int got = 0;
  while (table.take(w)) ++got;
  CHECK(got == 50);
  // The idle queue built up no credit meanwhile: when both have tasks, b leads again at once.
  table.job(2, 101, t0, 0, "a");
  table.job(3, 101, t0, 0, "b");
  int b = 0;
  for (int i = 0; i < 101; ++i) b += table.queue_of(table.take(w)) == "b";
  CHECK(b == 100);
}

TEST_CASE("shortest first - the function expected to be quickest goes first, one never measured before it") {
  Table table(nullptr, SchedulePolicy{.shortest_first = {"sjf"}});
  auto w = table.worker({"sjf"}, {"slow", "quick", "new"});
  // Measure: slow takes 100 ms, quick 2 ms.
  for (int i = 0; i < 3; ++i) {
    table.job(1, 1, t0, 0, "sjf", "slow");
    table.job(1, 1, t0, 0, "sjf", "quick");
    TaskId a = table.take(w, t0), b = table.take(w, t0);
    const auto d = [&](TaskId id) { return table.names().name(table.find(id)->function) == "slow" ? 100ms : 2ms; };
    REQUIRE(table.complete(a, 1, true, "1", t0 + d(a)).has_value());
    REQUIRE(table.complete(b, 1, true, "1", t0 + d(b)).has_value());
  }
  const auto fn = [&](TaskId id) { return table.names().name(table.find(id)->function); };
  REQUIRE(table.expected_ms(table.names().find("slow")).value_or(0) == doctest::Approx(100));
  REQUIRE(table.expected_ms(table.names().find("quick")).value_or(0) == doctest::Approx(2));
  table.job(2, 3, t0, 0, "sjf", "slow");
  table.job(3, 3, t0, 0, "sjf", "quick");
  table.job(4, 1, t0, 0, "sjf", "new");
  std::vector<std::string> order;
  while (const TaskId id = table.take(w)) order.push_back(fn(id));
  CHECK(order == std::vector<std::string>{"new", "quick", "quick", "quick", "slow", "slow", "slow"});
}

TEST_CASE("shortest first applies only to the queues named: others keep round robin") {
  Table table(nullptr, SchedulePolicy{.shortest_first = {"sjf"}});
  auto w = table.worker({"default"}, {"slow", "quick"});
  table.job(1, 1, t0, 0, "default", "slow");
  REQUIRE(table.complete(table.take(w), 1, true, "1", t0 + 1s).has_value());
  table.job(2, 2, t0, 0, "default", "slow");
  table.job(3, 2, t0, 0, "default", "quick");
  std::vector<JobId> order;
  while (const TaskId id = table.take(w)) order.push_back(table.job_of(id));
  CHECK(order == std::vector<JobId>{2, 3, 2, 3});
}

TEST_CASE("ten thousand jobs each get a turn before any gets a second, and cancelled jobs leave no lanes") {
  Table table;
  auto w = table.worker();
  for (JobId j = 1; j <= 10000; ++j) table.job(j, 2);
  CHECK(table.lanes() == 10000);
  std::set<JobId> first_round;
  for (int i = 0; i < 10000; ++i) first_round.insert(table.job_of(table.take(w)));
  CHECK(first_round.size() == 10000);
  for (JobId j = 1; j <= 5000; ++j) table.cancel_job(j, {TaskRange{2 * j - 1, 2}});
  CHECK(table.lanes() == 5000);
  CHECK(table.queued() == 5000);
  std::set<JobId> second;
  while (const TaskId id = table.take(w)) second.insert(table.job_of(id));
  CHECK(second.size() == 5000);
  CHECK(*second.begin() == 5001);
  CHECK(table.lanes() == 0);
  CHECK(table.buckets() == 0);
}

TEST_CASE("a worker's functions and queues still filter what it is given, under every policy") {
  for (bool fair : {true, false}) {
    CAPTURE(fair);
    Table table(nullptr, SchedulePolicy{.fair = fair, .shortest_first = {"q2"}});
    auto only_g = table.worker({"q1", "q2"}, {"g"});
    table.job(1, 5, t0, 0, "q1", "f");
    table.job(2, 5, t0, 0, "q2", "f");
    CHECK(table.pick(only_g) == 0);
    const TaskId g = table.job(3, 1, t0, 0, "q2", "g")[0];
    CHECK(table.take(only_g) == g);
    CHECK(table.take(only_g) == 0);
  }
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
