// The task state machine: every transition of the diagram in master/task_table.h, and what happens
// to requests it forbids. Time is a parameter: t0 plus durations, never a clock.
#include "master/task_table.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace taskmaster {
namespace {

using namespace std::chrono_literals;
using protocol::TaskSpec;
using S = TaskState;

const TimePoint t0{};

// Milliseconds since t0, so that failures print a number.
long long ms(TimePoint t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t - t0).count(); }
long long ms(std::optional<TimePoint> t) { return t ? ms(*t) : -1; }  // -1: no deadline

// The counts of one queue, nonzero states only, e.g. "queued=2 running=1"; "" if all are zero.
std::string counts(const TaskTable& table, std::string_view queue = "default") {
  const auto it = table.counts().find(table.names().find(queue));
  if (it == table.counts().end()) return "";
  std::string s;
  for (std::size_t i = 0; i < it->second.size(); ++i) {
    if (it->second[i] == 0) continue;
    if (!s.empty()) s += ' ';
    s += std::string(protocol::to_string(static_cast<S>(i))) + "=" + std::to_string(it->second[i]);
  }
  return s;
}

// Every change the table announces, as "ID FROM>TO" ("new" when the task is new), comma-separated.
struct Recorder : TaskListener {
  std::string log;
  void on_task_change(const Task& task, std::optional<S> from) override {
    if (!log.empty()) log += ", ";
    log += std::to_string(task.id) + " " + (from ? std::string(protocol::to_string(*from)) : "new") + ">" +
           std::string(protocol::to_string(task.state));
  }
  std::string take() { return std::exchange(log, std::string()); }
};

TaskSpec spec(std::string args = "1") { return TaskSpec{.function = "square", .args = std::move(args)}; }

// A table whose bookkeeping is checked when the test ends (TaskTable::check_invariants), with the
// name references taken by the test itself (filters, workers) counted apart.
struct CheckedTable : TaskTable {
  using TaskTable::TaskTable;
  RefCounts test_refs;
  std::uint32_t acquire(std::string_view name) {
    const auto id = names().acquire(name);
    if (id) ++test_refs[id];
    return id;
  }
  ~CheckedTable() { CHECK(check_invariants(test_refs) == ""); }
};

WorkerFilter filter(CheckedTable& table, std::vector<std::string> queues = {"default"}, std::vector<std::string> functions = {"square"}) {
  WorkerFilter f;
  for (const auto& q : queues) f.queues.push_back(table.acquire(q));
  for (const auto& fn : functions) f.functions.push_back(table.acquire(fn));
  f.normalize();
  return f;
}

S state(const TaskTable& table, TaskId id) {
  const Task* t = table.find(id);
  REQUIRE(t != nullptr);
  return t->state;
}

TEST_SUITE("task_table") {

TEST_CASE("a task without a delay is queued at once") {
  Recorder rec;
  CheckedTable table(&rec);
  const TaskId id = table.add(7, spec("\"x\""), t0 + 1s);
  REQUIRE(table.find(id) != nullptr);
  const Task& t = *table.find(id);
  CHECK(id == 1);
  CHECK(t.job == 7);
  CHECK(t.args == "\"x\"");
  CHECK(t.state == S::Queued);
  CHECK(t.attempts == 0);
  CHECK(t.max_attempts == protocol::kDefaultMaxAttempts);
  CHECK(table.names().name(t.function) == "square");
  CHECK(table.names().name(t.queue) == "default");
  CHECK(table.size() == 1);
  CHECK(table.last_id() == 1);
  CHECK(table.queued() == 1);
  CHECK(counts(table) == "queued=1");
  CHECK(rec.take() == "1 new>queued");
  CHECK(ms(table.next_deadline()) == -1);
  CHECK(table.pick(filter(table)) == id);
}

TEST_CASE("a delayed task becomes queued when its start time comes, not before") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.delay_ms = 500;
  const TaskId id = table.add(1, s, t0 + 1s);
  CHECK(state(table, id) == S::Delayed);
  CHECK(ms(table.find(id)->ready_at) == 1500);
  CHECK(counts(table) == "delayed=1");
  CHECK(table.queued() == 0);
  CHECK(table.pick(filter(table)) == 0);
  CHECK(ms(table.next_deadline()) == 1500);
  CHECK(rec.take() == "1 new>delayed");

  table.expire(t0 + 1499ms);
  CHECK(state(table, id) == S::Delayed);
  CHECK(table.pick(filter(table)) == 0);
  CHECK(rec.take() == "");

  table.expire(t0 + 1500ms);
  CHECK(state(table, id) == S::Queued);
  CHECK(counts(table) == "queued=1");
  CHECK(table.queued() == 1);
  CHECK(rec.take() == "1 delayed>queued");
  CHECK(ms(table.next_deadline()) == -1);
  CHECK(table.pick(filter(table)) == id);
}

TEST_CASE("pick prefers the higher priority, then the oldest task, and leaves the task queued") {
  CheckedTable table;
  const std::vector<std::int32_t> priorities{0, 5, 5, -1, 5, 0};
  for (auto p : priorities) {
    auto s = spec();
    s.priority = p;
    table.add(1, s, t0);
  }
  auto f = filter(table);
  CHECK(table.pick(f) == 2);
  CHECK(table.pick(f) == 2);  // picking alone takes nothing
  CHECK(state(table, 2) == S::Queued);
  std::vector<TaskId> order;
  while (const TaskId id = table.pick(f)) {
    table.lease(id, 0, t0);
    order.push_back(id);
  }
  CHECK(order == std::vector<TaskId>{2, 3, 5, 1, 6, 4});
  CHECK(table.queued() == 0);
  CHECK(counts(table) == "running=6");
}

TEST_CASE("pick takes only tasks of the worker's queues and functions") {
  CheckedTable table;
  auto make = [&](std::string queue, std::string function, std::int32_t priority) {
    auto s = spec();
    s.queue = std::move(queue);
    s.function = std::move(function);
    s.priority = priority;
    return table.add(1, s, t0);
  };
  const TaskId def_square = make("default", "square", 0);
  const TaskId def_echo = make("default", "echo", 9);
  const TaskId other_square = make("other", "square", 1);
  const TaskId other_echo = make("other", "echo", 2);

  CHECK(table.pick(filter(table, {"default"}, {"square"})) == def_square);
  CHECK(table.pick(filter(table, {"default"}, {"echo"})) == def_echo);
  CHECK(table.pick(filter(table, {"other"}, {"square", "echo"})) == other_echo);
  // A worker's queues take turns: one pick from each.
  auto both = filter(table, {"default", "other"}, {"square"});
  const std::set<TaskId> two{table.pick(both), table.pick(both)};
  CHECK(two == std::set<TaskId>{def_square, other_square});
  CHECK(table.pick(filter(table, {"nowhere"}, {"square", "echo"})) == 0);
  CHECK(table.pick(filter(table, {"default", "other"}, {"sleep"})) == 0);
  CHECK(table.pick(WorkerFilter{}) == 0);

  // Once its only matching task runs, a worker gets nothing, though other tasks are queued.
  auto only = filter(table, {"default"}, {"square"});
  table.lease(def_square, 0, t0);
  CHECK(table.queued() == 3);
  CHECK(table.pick(only) == 0);
  CHECK(counts(table, "default") == "queued=1 running=1");
  CHECK(counts(table, "other") == "queued=2");
}

TEST_CASE("a lease starts the next attempt, names the worker and sets the deadline") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.timeout_ms = 2000;
  const TaskId id = table.add(1, s, t0);
  const auto worker = table.acquire("w1");
  rec.take();

  CHECK(table.lease(id, worker, t0 + 1s) == 1);
  const Task& t = *table.find(id);
  CHECK(t.state == S::Running);
  CHECK(t.attempts == 1);
  CHECK(t.worker == worker);
  CHECK(ms(t.deadline) == 3000);
  CHECK(ms(table.next_deadline()) == 3000);
  CHECK(table.queued() == 0);
  CHECK(counts(table) == "running=1");
  CHECK(rec.take() == "1 queued>running");
  CHECK(table.pick(filter(table)) == 0);
}

TEST_CASE("a successful result makes the task done with its value") {
  Recorder rec;
  CheckedTable table(&rec);
  const TaskId id = table.add(1, spec("7"), t0);
  const auto attempt = table.lease(id, 0, t0);
  rec.take();

  const auto st = table.complete(id, attempt, true, "49", t0 + 1s);
  CHECK(st.has_value());
  const Task& t = *table.find(id);
  CHECK(t.state == S::Done);
  CHECK(t.outcome == "49");
  CHECK(t.attempts == 1);
  CHECK(counts(table) == "done=1");
  CHECK(rec.take() == "1 running>done");
  // The finished attempt's deadline passing later changes nothing.
  table.expire(t0 + 1h);
  CHECK(t.state == S::Done);
  CHECK(rec.take() == "");
}

TEST_CASE("a failed attempt waits its backoff, doubled each time, then runs again - the last one makes it dead") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.max_attempts = 3;
  s.backoff_ms = 1000;
  s.timeout_ms = 60000;
  const TaskId id = table.add(1, s, t0);
  auto f = filter(table);
  const Task& t = *table.find(id);

  // Attempt 1 fails at 100 ms: the retry may start backoff(1000, 1) = 1 s later.
  REQUIRE(table.lease(id, 0, t0) == 1);
  REQUIRE(table.complete(id, 1, false, "first", t0 + 100ms).has_value());
  CHECK(t.state == S::Delayed);
  CHECK(t.outcome == "first");
  CHECK(TaskTable::backoff(1000, 1) == 1000ms);
  CHECK(ms(t.ready_at) == 1100);
  CHECK(ms(table.next_deadline()) == 1100);
  CHECK(counts(table) == "delayed=1");
  CHECK(table.pick(f) == 0);
  table.expire(t0 + 1099ms);
  CHECK(t.state == S::Delayed);
  table.expire(t0 + 1100ms);
  CHECK(t.state == S::Queued);
  CHECK(counts(table) == "queued=1");
  CHECK(table.pick(f) == id);

  // Attempt 2 fails at 2 s: backoff(1000, 2) = 2 s.
  REQUIRE(table.lease(id, 0, t0 + 1100ms) == 2);
  REQUIRE(table.complete(id, 2, false, "second", t0 + 2s).has_value());
  CHECK(t.state == S::Delayed);
  CHECK(TaskTable::backoff(1000, 2) == 2000ms);
  CHECK(ms(t.ready_at) == 4000);
  CHECK(ms(table.next_deadline()) == 4000);
  table.expire(t0 + 3999ms);
  CHECK(t.state == S::Delayed);
  table.expire(t0 + 4000ms);
  CHECK(t.state == S::Queued);

  // Attempt 3 is the last: its failure makes the task dead, keeping that error.
  REQUIRE(table.lease(id, 0, t0 + 4s) == 3);
  REQUIRE(table.complete(id, 3, false, "third", t0 + 5s).has_value());
  CHECK(t.state == S::Dead);
  CHECK(t.outcome == "third");
  CHECK(t.attempts == 3);
  CHECK(counts(table) == "dead=1");
  CHECK(table.pick(f) == 0);
  CHECK(rec.take() ==
        "1 new>queued, 1 queued>running, 1 running>delayed, 1 delayed>queued, 1 queued>running, 1 running>delayed, "
        "1 delayed>queued, 1 queued>running, 1 running>dead");
}

TEST_CASE("a task with one attempt is dead after its first failure") {
  CheckedTable table;
  auto s = spec();
  s.max_attempts = 1;
  const TaskId id = table.add(1, s, t0);
  table.lease(id, 0, t0);
  REQUIRE(table.complete(id, 1, false, "boom", t0 + 1s).has_value());
  CHECK(state(table, id) == S::Dead);
  CHECK(table.find(id)->outcome == "boom");
  CHECK(counts(table) == "dead=1");
}

TEST_CASE("with no backoff a failed task is queued again at once") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.backoff_ms = 0;
  const TaskId id = table.add(1, s, t0);
  table.lease(id, 0, t0);
  rec.take();
  REQUIRE(table.complete(id, 1, false, "oops", t0 + 1s).has_value());
  CHECK(state(table, id) == S::Queued);
  CHECK(table.find(id)->outcome == "oops");
  CHECK(counts(table) == "queued=1");
  CHECK(table.queued() == 1);
  CHECK(rec.take() == "1 running>delayed, 1 delayed>queued");
  CHECK(table.pick(filter(table)) == id);
  CHECK(table.lease(id, 0, t0 + 1s) == 2);
}

TEST_CASE("backoff doubles from the base after each failure and stops at an hour") {
  CHECK(TaskTable::backoff(1000, 1) == 1000ms);
  CHECK(TaskTable::backoff(1000, 2) == 2000ms);
  CHECK(TaskTable::backoff(1000, 3) == 4000ms);
  CHECK(TaskTable::backoff(1000, 12) == 2048000ms);
  CHECK(TaskTable::backoff(1000, 13) == 3600000ms);  // 4096 s is past the cap
  CHECK(TaskTable::backoff(1000, 1000) == 3600000ms);
  CHECK(TaskTable::backoff(0, 5) == 0ms);
  CHECK(TaskTable::backoff(protocol::kMaxBackoffMs, 1) == 3600000ms);
  CHECK(TaskTable::backoff(protocol::kMaxBackoffMs, 0xFFFFFFFF) == 3600000ms);
}

TEST_CASE("seconds_text writes milliseconds as seconds without trailing zeros") {
  CHECK(seconds_text(0) == "0");
  CHECK(seconds_text(1) == "0.001");
  CHECK(seconds_text(250) == "0.25");
  CHECK(seconds_text(1500) == "1.5");
  CHECK(seconds_text(300000) == "300");
}

TEST_CASE("an attempt past its deadline fails as timed out") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.timeout_ms = 1500;
  s.backoff_ms = 1000;
  SUBCASE("with attempts left it is retried after the backoff") {
    s.max_attempts = 2;
    const TaskId id = table.add(1, s, t0);
    table.lease(id, 0, t0 + 1s);
    rec.take();
    CHECK(ms(table.next_deadline()) == 2500);
    table.expire(t0 + 2499ms);
    CHECK(state(table, id) == S::Running);
    CHECK(rec.take() == "");
    table.expire(t0 + 2500ms);
    const Task& t = *table.find(id);
    CHECK(t.state == S::Delayed);
    CHECK(t.outcome == "timed out after 1.5 s");
    CHECK(ms(t.ready_at) == 3500);
    CHECK(counts(table) == "delayed=1");
    CHECK(rec.take() == "1 running>delayed");
    // The worker's result for the timed-out attempt comes too late.
    const auto late = table.complete(id, 1, true, "1", t0 + 2600ms);
    REQUIRE_FALSE(late.has_value());
    CHECK(late.error().code == ErrorCode::UnknownTask);
    CHECK(t.state == S::Delayed);
    CHECK(t.outcome == "timed out after 1.5 s");
    CHECK(rec.take() == "");
  }
  SUBCASE("on the last attempt it is dead") {
    s.max_attempts = 1;
    const TaskId id = table.add(1, s, t0);
    table.lease(id, 0, t0);
    table.expire(t0 + 1500ms);
    CHECK(state(table, id) == S::Dead);
    CHECK(table.find(id)->outcome.find("timed out") != std::string::npos);
    CHECK(counts(table) == "dead=1");
  }
}

TEST_CASE("a stale result changes nothing and is an UnknownTask error") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.max_attempts = 5;
  s.backoff_ms = 0;
  const TaskId id = table.add(1, s, t0);
  const Task& t = *table.find(id);
  std::uint32_t attempt = 0;
  std::string expected_counts;

  SUBCASE("a result of an earlier attempt") {
    table.lease(id, 0, t0);
    REQUIRE(table.complete(id, 1, false, "first", t0).has_value());
    table.lease(id, 0, t0);  // attempt 2 runs now
    attempt = 1;
    expected_counts = "running=1";
  }
  SUBCASE("a result of an attempt not started yet") {
    table.lease(id, 0, t0);
    attempt = 2;
    expected_counts = "running=1";
  }
  SUBCASE("a result for a queued task") {
    table.lease(id, 0, t0);
    REQUIRE(table.complete(id, 1, false, "first", t0).has_value());
    REQUIRE(t.state == S::Queued);
    attempt = 1;
    expected_counts = "queued=1";
  }
  SUBCASE("a second result for a done task") {
    table.lease(id, 0, t0);
    REQUIRE(table.complete(id, 1, true, "1", t0).has_value());
    attempt = 1;
    expected_counts = "done=1";
  }
  SUBCASE("a result for a cancelled task") {
    REQUIRE(table.cancel(id));
    attempt = 0;
    expected_counts = "cancelled=1";
  }
  REQUIRE(counts(table) == expected_counts);
  const S before = t.state;
  const auto attempts_before = t.attempts;
  const std::string outcome_before = t.outcome;
  const auto queued_before = table.queued();
  rec.take();

  for (const bool ok : {true, false}) {
    CAPTURE(ok);
    const auto st = table.complete(id, attempt, ok, "stale", t0 + 1s);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().code == ErrorCode::UnknownTask);
    CHECK(t.state == before);
    CHECK(t.attempts == attempts_before);
    CHECK(t.outcome == outcome_before);
    CHECK(counts(table) == expected_counts);
    CHECK(table.queued() == queued_before);
    CHECK(rec.take() == "");
  }
}

TEST_CASE("a result for a task that does not exist is an UnknownTask error") {
  CheckedTable table;
  const auto st = table.complete(42, 1, true, "1", t0);
  REQUIRE_FALSE(st.has_value());
  CHECK(st.error().code == ErrorCode::UnknownTask);
  CHECK(table.size() == 0);
}

TEST_CASE("unlease puts the task back in the queue without counting the attempt") {
  Recorder rec;
  CheckedTable table(&rec);
  const TaskId id = table.add(1, spec(), t0);
  auto f = filter(table);
  const Task& t = *table.find(id);
  REQUIRE(table.lease(id, 0, t0) == 1);
  rec.take();

  table.unlease(id, 2);  // not the current attempt: nothing happens
  CHECK(t.state == S::Running);
  CHECK(t.attempts == 1);
  CHECK(rec.take() == "");

  table.unlease(id, 1);
  CHECK(t.state == S::Queued);
  CHECK(t.attempts == 0);
  CHECK(counts(table) == "queued=1");
  CHECK(table.queued() == 1);
  CHECK(rec.take() == "1 running>queued");

  table.unlease(id, 1);  // not running any more: nothing happens
  CHECK(t.state == S::Queued);
  CHECK(t.attempts == 0);
  CHECK(rec.take() == "");

  CHECK(table.pick(f) == id);
  CHECK(table.lease(id, 0, t0) == 1);
  CHECK(table.pick(f) == 0);
}

TEST_CASE("an attempt given back and leased again times out at its new deadline, not the old one") {
  CheckedTable table;
  auto s = spec();
  s.timeout_ms = 10000;
  const TaskId id = table.add(1, s, t0);
  REQUIRE(table.lease(id, 0, t0) == 1);  // deadline 10 s
  table.unlease(id, 1);                  // the TASKS message never left
  REQUIRE(table.lease(id, 0, t0 + 5s) == 1);
  CHECK(ms(table.find(id)->deadline) == 15000);

  table.expire(t0 + 10s);  // the first lease's deadline: that lease is gone
  CHECK(state(table, id) == S::Running);
  CHECK(table.find(id)->outcome == "");
  CHECK(ms(table.next_deadline()) == 15000);

  table.expire(t0 + 15s);
  CHECK(state(table, id) == S::Delayed);
  CHECK(table.find(id)->outcome == "timed out after 10 s");
}

TEST_CASE("cancel takes delayed and queued tasks only") {
  Recorder rec;
  CheckedTable table(&rec);
  auto delayed_spec = spec();
  delayed_spec.delay_ms = 1000;
  auto once = spec();
  once.max_attempts = 1;
  const TaskId delayed = table.add(1, delayed_spec, t0);
  const TaskId queued = table.add(1, spec(), t0);
  const TaskId running = table.add(1, spec(), t0);
  const TaskId done = table.add(1, spec(), t0);
  const TaskId dead = table.add(1, once, t0);
  table.lease(running, 0, t0);
  table.lease(done, 0, t0);
  REQUIRE(table.complete(done, 1, true, "1", t0).has_value());
  table.lease(dead, 0, t0);
  REQUIRE(table.complete(dead, 1, false, "x", t0).has_value());
  REQUIRE(counts(table) == "delayed=1 queued=1 running=1 done=1 dead=1");
  rec.take();

  CHECK(table.cancel(delayed));
  CHECK(table.cancel(queued));
  CHECK(rec.take() == "1 delayed>cancelled, 2 queued>cancelled");
  CHECK(counts(table) == "running=1 done=1 dead=1 cancelled=2");
  CHECK(table.queued() == 0);

  CHECK_FALSE(table.cancel(running));
  CHECK_FALSE(table.cancel(done));
  CHECK_FALSE(table.cancel(dead));
  CHECK_FALSE(table.cancel(delayed));  // already cancelled
  CHECK_FALSE(table.cancel(999));
  CHECK(state(table, running) == S::Running);
  CHECK(state(table, done) == S::Done);
  CHECK(state(table, dead) == S::Dead);
  CHECK(counts(table) == "running=1 done=1 dead=1 cancelled=2");
  CHECK(rec.take() == "");

  // The cancelled delayed task's start time passing does not queue it.
  table.expire(t0 + 1s);
  CHECK(state(table, delayed) == S::Cancelled);
  CHECK(table.pick(filter(table)) == 0);
  CHECK(rec.take() == "");
}

TEST_CASE("cancelled tasks are never picked") {
  CheckedTable table;
  std::vector<TaskId> ids;
  for (int i = 0; i < 20; ++i) {
    auto s = spec();
    s.priority = i % 4;
    ids.push_back(table.add(1, s, t0));
  }
  std::set<TaskId> cancelled;
  for (std::size_t i = 0; i < ids.size(); i += 3) {
    REQUIRE(table.cancel(ids[i]));
    cancelled.insert(ids[i]);
  }
  // The best task of all (priority 3, oldest: i = 3) is among the cancelled ones.
  REQUIRE(cancelled.count(4));
  CHECK(table.queued() == ids.size() - cancelled.size());
  auto f = filter(table);
  std::size_t picked = 0;
  while (const TaskId id = table.pick(f)) {
    CAPTURE(id);
    CHECK(cancelled.count(id) == 0);
    table.lease(id, 0, t0);
    ++picked;
  }
  CHECK(picked == ids.size() - cancelled.size());
  CHECK(counts(table) == "running=" + std::to_string(picked) + " cancelled=" + std::to_string(cancelled.size()));

  SUBCASE("a bucket holding only cancelled tasks gives nothing") {
    auto s = spec();
    s.function = "echo";
    const TaskId only = table.add(1, s, t0);
    REQUIRE(table.cancel(only));
    CHECK(table.pick(filter(table, {"default"}, {"echo", "square"})) == 0);
  }
}

TEST_CASE("erase forgets finished tasks and nothing else") {
  CheckedTable table;
  auto once = spec();
  once.max_attempts = 1;
  auto later = spec();
  later.delay_ms = 1000;
  const TaskId done = table.add(1, spec(), t0);
  const TaskId dead = table.add(1, once, t0);
  const TaskId cancelled = table.add(1, spec(), t0);
  const TaskId queued = table.add(1, spec(), t0);
  const TaskId running = table.add(1, spec(), t0);
  const TaskId delayed = table.add(1, later, t0);
  table.lease(done, 0, t0);
  REQUIRE(table.complete(done, 1, true, "1", t0).has_value());
  table.lease(dead, 0, t0);
  REQUIRE(table.complete(dead, 1, false, "x", t0).has_value());
  REQUIRE(table.cancel(cancelled));
  table.lease(running, 0, t0);
  REQUIRE(counts(table) == "delayed=1 queued=1 running=1 done=1 dead=1 cancelled=1");

  table.erase(done);
  table.erase(dead);
  table.erase(cancelled);
  CHECK(table.find(done) == nullptr);
  CHECK(table.find(dead) == nullptr);
  CHECK(table.find(cancelled) == nullptr);
  CHECK(table.size() == 3);
  CHECK(counts(table) == "delayed=1 queued=1 running=1");

  // Unfinished tasks stay, counted as before.
  table.erase(queued);
  table.erase(running);
  table.erase(delayed);
  CHECK(table.size() == 3);
  CHECK(state(table, queued) == S::Queued);
  CHECK(state(table, running) == S::Running);
  CHECK(state(table, delayed) == S::Delayed);
  CHECK(counts(table) == "delayed=1 queued=1 running=1");
  CHECK(table.queued() == 1);
  CHECK(table.pick(filter(table)) == queued);

  table.erase(12345);  // unknown: nothing happens
  CHECK(table.size() == 3);
  // Ids are never reused.
  CHECK(table.add(1, spec(), t0) == 7);
}

TEST_CASE("counts per queue and state stay exact through every transition") {
  CheckedTable table;
  auto in = [](std::string queue, std::uint64_t delay_ms = 0) {
    auto s = spec();
    s.queue = std::move(queue);
    s.delay_ms = delay_ms;
    s.max_attempts = 2;
    s.backoff_ms = 500;
    s.timeout_ms = 1000;
    return s;
  };
  const TaskId a1 = table.add(1, in("a"), t0);
  const TaskId a2 = table.add(1, in("a"), t0);
  const TaskId a3 = table.add(1, in("a", 2000), t0);
  const TaskId b1 = table.add(1, in("b"), t0);
  const TaskId b2 = table.add(1, in("b", 100), t0);
  CHECK(counts(table, "a") == "delayed=1 queued=2");
  CHECK(counts(table, "b") == "delayed=1 queued=1");
  CHECK(table.queued() == 3);

  table.lease(a1, 0, t0);
  table.lease(b1, 0, t0);
  CHECK(counts(table, "a") == "delayed=1 queued=1 running=1");
  CHECK(counts(table, "b") == "delayed=1 running=1");

  table.expire(t0 + 100ms);  // b2 starts
  CHECK(counts(table, "b") == "queued=1 running=1");

  REQUIRE(table.complete(a1, 1, true, "1", t0 + 200ms).has_value());
  REQUIRE(table.complete(b1, 1, false, "x", t0 + 200ms).has_value());  // retry at 700 ms
  CHECK(counts(table, "a") == "delayed=1 queued=1 done=1");
  CHECK(counts(table, "b") == "delayed=1 queued=1");

  table.lease(a2, 0, t0 + 300ms);
  table.unlease(a2, 1);
  CHECK(counts(table, "a") == "delayed=1 queued=1 done=1");
  table.lease(a2, 0, t0 + 300ms);  // times out at 1300 ms, retried at 1800 ms
  REQUIRE(table.cancel(b2));
  CHECK(counts(table, "b") == "delayed=1 cancelled=1");

  table.expire(t0 + 700ms);  // b1's retry is due
  CHECK(counts(table, "b") == "queued=1 cancelled=1");
  table.lease(b1, 0, t0 + 700ms);  // times out at 1700 ms: dead
  table.expire(t0 + 1300ms);
  CHECK(counts(table, "a") == "delayed=2 done=1");
  table.expire(t0 + 1700ms);
  CHECK(counts(table, "b") == "dead=1 cancelled=1");
  table.expire(t0 + 2000ms);  // a2's retry and a3's start
  CHECK(counts(table, "a") == "queued=2 done=1");
  CHECK(table.queued() == 2);
  REQUIRE(table.cancel(a3));
  CHECK(counts(table, "a") == "queued=1 done=1 cancelled=1");

  table.erase(a1);
  table.erase(b1);
  table.erase(b2);
  CHECK(counts(table, "a") == "queued=1 cancelled=1");
  CHECK(counts(table, "b") == "");
  CHECK(table.queued() == 1);
  CHECK(table.size() == 2);
}

TEST_CASE("the listener sees every change with the state the task left") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.max_attempts = 2;
  s.backoff_ms = 100;
  s.timeout_ms = 1000;
  auto later = s;
  later.delay_ms = 50;

  const TaskId a = table.add(1, s, t0);                              // new > queued
  const TaskId b = table.add(1, later, t0);                          // new > delayed
  table.lease(a, 0, t0);                                             // queued > running
  table.unlease(a, 1);                                               // running > queued
  table.lease(a, 0, t0);                                             // queued > running
  REQUIRE(table.complete(a, 1, false, "e", t0).has_value());         // running > delayed
  table.expire(t0 + 100ms);                                          // a: delayed > queued; b: delayed > queued
  table.lease(a, 0, t0 + 100ms);                                     // queued > running
  REQUIRE(table.complete(a, 2, true, "1", t0 + 200ms).has_value());  // running > done
  table.lease(b, 0, t0 + 200ms);
  table.expire(t0 + 1200ms);  // running > delayed (timed out)
  table.expire(t0 + 1300ms);  // delayed > queued
  table.lease(b, 0, t0 + 1300ms);
  table.expire(t0 + 2300ms);  // running > dead
  const TaskId c = table.add(1, s, t0 + 3s);
  REQUIRE(table.cancel(c));  // queued > cancelled
  CHECK(rec.take() ==
        "1 new>queued, 2 new>delayed, 1 queued>running, 1 running>queued, 1 queued>running, 1 running>delayed, "
        "2 delayed>queued, 1 delayed>queued, 1 queued>running, 1 running>done, 2 queued>running, 2 running>delayed, "
        "2 delayed>queued, 2 queued>running, 2 running>dead, 3 new>queued, 3 queued>cancelled");
}

TEST_CASE("next_deadline is the earliest delayed start or attempt deadline") {
  CheckedTable table;
  CHECK(ms(table.next_deadline()) == -1);
  auto delayed = [](std::uint64_t delay_ms) {
    auto s = spec();
    s.delay_ms = delay_ms;
    return s;
  };
  auto timeout = [](std::uint32_t timeout_ms) {
    auto s = spec();
    s.timeout_ms = timeout_ms;
    return s;
  };
  table.add(1, delayed(5000), t0);
  CHECK(ms(table.next_deadline()) == 5000);
  const TaskId r = table.add(1, timeout(3000), t0);
  CHECK(ms(table.next_deadline()) == 5000);  // queued tasks have no timer
  table.lease(r, 0, t0 + 100ms);
  CHECK(ms(table.next_deadline()) == 3100);
  table.add(1, delayed(1000), t0 + 1s);
  CHECK(ms(table.next_deadline()) == 2000);
  table.expire(t0 + 2s);
  CHECK(ms(table.next_deadline()) == 3100);
  table.expire(t0 + 3100ms);  // r times out and waits its backoff (1 s by default)
  CHECK(ms(table.next_deadline()) == 4100);
  table.expire(t0 + 4100ms);
  CHECK(ms(table.next_deadline()) == 5000);
  table.expire(t0 + 5s);
  CHECK(ms(table.next_deadline()) == -1);
}

TEST_CASE("first come first served - thousands of tasks come out by priority, then in submission order") {
  CheckedTable table(nullptr, SchedulePolicy{.fair = false, .aging_ms = 0});
  constexpr int kTasks = 5000;
  struct Expected {
    std::int32_t priority;
    TaskId id;
  };
  std::vector<Expected> expected;
  std::set<TaskId> cancelled;
  for (int i = 0; i < kTasks; ++i) {
    auto s = spec(std::to_string(i));
    s.priority = static_cast<std::int32_t>((i * 7919) % 11) - 5;  // -5..5, scattered
    s.function = i % 2 ? "square" : "echo";                       // two buckets
    const TaskId id = table.add(1, s, t0);
    if (i % 13 == 0) {
      REQUIRE(table.cancel(id));
      cancelled.insert(id);
    } else {
      expected.push_back({s.priority, id});
    }
  }
  std::sort(expected.begin(), expected.end(),
            [](const Expected& x, const Expected& y) { return std::tie(y.priority, x.id) < std::tie(x.priority, y.id); });
  std::vector<TaskId> want;
  for (const auto& e : expected) want.push_back(e.id);

  auto f = filter(table, {"default"}, {"square", "echo"});
  std::vector<TaskId> got;
  while (const TaskId id = table.pick(f)) {
    table.lease(id, 0, t0);
    got.push_back(id);
    if (got.size() > static_cast<std::size_t>(kTasks)) break;  // a runaway loop
  }
  CHECK(got.size() == want.size());
  CHECK(got == want);
  CHECK(table.queued() == 0);
  CHECK(counts(table) == "running=" + std::to_string(want.size()) + " cancelled=" + std::to_string(cancelled.size()));
}

TEST_CASE("restore puts tasks back with their ids - a running one comes back queued with its attempt counted") {
  CheckedTable table;
  auto task = [&](TaskId id, S st) {
    Task t;
    t.id = id;
    t.job = 1;
    t.args = "1";
    t.max_attempts = 3;
    t.state = st;
    return t;
  };
  Task running = task(10, S::Running);
  running.attempts = 2;
  table.restore(running, "square", "default", "", t0 + 10s);
  Task due = task(4, S::Delayed);
  due.ready_at = t0 + 5s;
  table.restore(due, "square", "default", "", t0 + 10s);
  Task later = task(5, S::Delayed);
  later.ready_at = t0 + 20s;
  table.restore(later, "square", "default", "", t0 + 10s);
  Task done = task(3, S::Done);
  done.outcome = "1";
  table.restore(done, "square", "default", "", t0 + 10s);

  CHECK(state(table, 10) == S::Queued);
  CHECK(table.find(10)->attempts == 2);
  CHECK(state(table, 4) == S::Queued);
  CHECK(state(table, 5) == S::Delayed);
  CHECK(state(table, 3) == S::Done);
  CHECK(counts(table) == "delayed=1 queued=2 done=1");
  CHECK(table.queued() == 2);
  CHECK(ms(table.next_deadline()) == 20000);
  CHECK(table.pick(filter(table)) == 4);
  CHECK(table.lease(10, 0, t0 + 10s) == 3);
  CHECK(table.add(1, spec(), t0 + 10s) == 11);
}

TEST_CASE("cancel_job cancels what has not started, and a failed attempt of the job ends cancelled instead of retrying") {
  Recorder rec;
  CheckedTable table(&rec);
  auto s = spec();
  s.max_attempts = 5;
  const TaskId running = table.add(7, s, t0);
  const TaskId queued = table.add(7, s, t0);
  const TaskId other = table.add(8, s, t0);  // another job's
  REQUIRE(table.lease(running, 0, t0) == 1);
  rec.take();
  CHECK(table.cancel_job(7, {{running, 2}}) == 1);
  CHECK(table.job_cancelled(7));
  CHECK_FALSE(table.job_cancelled(8));
  CHECK(rec.take() == "2 queued>cancelled");
  // Its running attempt fails: one change, straight to cancelled, never queued again.
  REQUIRE(table.complete(running, 1, false, "\"boom\"", t0 + 1s));
  CHECK(rec.take() == "1 running>cancelled");
  CHECK(state(table, running) == S::Cancelled);
  CHECK(table.find(running)->outcome == "\"boom\"");
  // Timeouts are failed attempts too; the other job's task is retried as usual.
  REQUIRE(table.lease(other, 0, t0) == 1);
  REQUIRE(table.complete(other, 1, false, "\"x\"", t0 + 1s));
  CHECK(rec.take() == "3 queued>running, 3 running>delayed");
  table.forget_job(7);
  CHECK_FALSE(table.job_cancelled(7));
  CHECK(queued == 2);
}

TEST_CASE("the restart rule: a running task comes back queued, dead on its last attempt, cancelled in a cancelled job") {
  CheckedTable table;
  auto task = [&](TaskId id, JobId job, std::uint16_t attempts, std::uint16_t max) {
    Task t;
    t.id = id;
    t.job = job;
    t.args = "1";
    t.attempts = attempts;
    t.max_attempts = max;
    t.state = S::Running;
    return t;
  };
  table.restore_cancelled_job(2);
  CHECK(table.restore(task(1, 1, 1, 3), "square", "default", "w", t0));
  CHECK(table.restore(task(2, 1, 3, 3), "square", "default", "w", t0));
  CHECK(table.restore(task(3, 2, 1, 3), "square", "default", "w", t0));
  Task done = task(4, 1, 1, 3);
  done.state = S::Done;
  CHECK_FALSE(table.restore(done, "square", "default", "w", t0));
  CHECK(state(table, 1) == S::Queued);
  CHECK(table.find(1)->attempts == 1);
  CHECK(state(table, 2) == S::Dead);
  CHECK(table.find(2)->outcome == "the master stopped during the task's last attempt (3 of 3)");
  CHECK(state(table, 3) == S::Cancelled);
  CHECK(table.find(3)->outcome == "the master stopped during the task's attempt 1; its job was cancelled");
  CHECK(table.unfinished() == 1);
  CHECK(table.names().name(table.find(4)->worker) == "w");
}

TEST_CASE("names nobody refers to are forgotten and their ids reused, and empty buckets are freed") {
  CheckedTable table;
  const auto before = table.names().size();
  std::vector<TaskId> ids;
  for (int i = 0; i < 100; ++i) {
    auto s = spec();
    s.function = "f" + std::to_string(i);
    s.queue = "q" + std::to_string(i % 10);
    ids.push_back(table.add(1, s, t0));
  }
  CHECK(table.names().size() == before + 110);
  CHECK(table.buckets() == 100);
  const std::uint32_t f5 = table.names().find("f5");
  REQUIRE(f5 != 0);
  for (TaskId id : ids) REQUIRE(table.cancel(id));
  CHECK(table.buckets() == 0);                  // nothing queued in any
  CHECK(table.names().size() == before + 110);  // the cancelled tasks still name them
  for (TaskId id : ids) table.erase(id);
  CHECK(table.names().size() == before);
  CHECK(table.names().find("f5") == 0);
  CHECK(table.counts().empty());
  // A new name takes a freed id; the table still works with it.
  auto s = spec();
  s.function = "fresh";
  const TaskId id = table.add(1, s, t0);
  const std::uint32_t fresh = table.find(id)->function;
  CHECK(fresh != 0);
  CHECK(fresh <= 111);
  WorkerFilter f;
  f.queues.push_back(table.acquire("default"));
  f.functions.push_back(table.acquire("fresh"));
  f.normalize();
  CHECK(table.pick(f) == id);
  CHECK(f5 != 0);
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
