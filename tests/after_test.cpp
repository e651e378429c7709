// Jobs after jobs (SUBMIT `after`, `after_success`): MasterState without sockets, in memory and
// with its journal through a restart. Time is passed in; nothing waits on a clock.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>

#include "common/log.h"
#include "master/journal.h"
#include "master/state.h"
#include "support/sent_messages.h"
#include "support/temp_dir.h"

namespace taskmaster {
namespace {

namespace proto = protocol;
using namespace std::chrono_literals;

const TimePoint t0 = TimePoint{} + std::chrono::hours(1000);

// A master state (with a journal if given a directory), driven as master.cpp's loop drives it.
struct Node : test::SentMessages {
  LogLevel logs = log_level();  // workers joining and replays log at info level; these tests check state
  MasterConfig config;
  TimePoint now = t0;
  std::unique_ptr<Journal> journal;
  std::unique_ptr<MasterState> state;

  explicit Node(std::string dir = "", MasterConfig c = {}) : config(c) {
    set_log_level(LogLevel::Error);
    config.worker_timeout = std::chrono::hours(10);  // time jumps here must not lose workers
    state = std::make_unique<MasterState>(config, "instance", now);
    if (!dir.empty()) {
      journal = std::make_unique<Journal>(dir);
      state->recover(*journal, now);
      commit();
    } else {
      state->start_ids_at(1, 1);
    }
  }
  // Every test ends with the state's bookkeeping checked.
  ~Node() {
    CHECK(state->check_invariants() == "");
    set_log_level(logs);
  }

  void commit() {
    for (auto& o : state->commit(now)) sent.push_back(std::move(o));
  }
  void step() {
    state->turn(now);
    REQUIRE(state->check_invariants() == "");
    collect(*state, now);
    commit();
  }
  void deliver(const std::string& from, proto::Message m) {
    state->receive(from, Expected<proto::Message>(std::move(m)), now);
    step();
  }
  void hello(const std::string& id, std::uint32_t slots) {
    proto::Hello h{};
    h.worker = "w-" + id;
    h.functions = {"square", "echo"};
    h.queues = {"default"};
    h.slots = slots;
    deliver(id, h);
    REQUIRE(take<proto::Welcome>(id).size() == 1);
  }
  static proto::Submit job(int n, std::vector<JobId> after = {}, bool after_success = false) {
    proto::Submit s;
    s.req = 7;
    s.after = std::move(after);
    s.after_success = after_success;
    for (int i = 0; i < n; ++i) s.tasks.push_back(proto::TaskSpec{.function = "echo", .args = std::to_string(i), .max_attempts = 1});
    return s;
  }
  JobId submit(int n, std::vector<JobId> after = {}, bool after_success = false) {
    deliver("C", job(n, std::move(after), after_success));
    auto a = take<proto::Accepted>("C");
    REQUIRE(a.size() == 1);
    return a[0].job;
  }
  proto::ErrorReply refused(proto::Submit s) {
    deliver("C", std::move(s));
    REQUIRE(take<proto::Accepted>("C").empty());
    auto e = take<proto::ErrorReply>("C");
    REQUIRE(e.size() == 1);
    return e[0];
  }
  // Finishes every attempt worker `w` was given: ok unless its args are in `fail`.
  std::vector<JobId> finish_all(const std::string& w, const std::vector<std::string>& fail = {}) {
    std::vector<JobId> jobs;
    proto::Results r;
    for (const auto& a : tasks_for(w)) {
      jobs.push_back(a.job);
      const bool bad = std::find(fail.begin(), fail.end(), a.args) != fail.end();
      r.results.push_back({a.task, a.attempt, !bad, bad ? "boom" : a.args});
    }
    if (!r.results.empty()) deliver(w, r);
    (void)take<proto::Ack>(w);
    return jobs;
  }
  proto::Outcomes wait(JobId job) {
    deliver("C", proto::Wait{9, job, 0, 10000, 0, {}});
    auto o = take<proto::Outcomes>("C");
    REQUIRE(o.size() == 1);
    return o[0];
  }
  std::vector<TaskState> states(JobId job) {
    std::vector<TaskState> out;
    for (const auto& b : state->jobs().find(job)->batches)
      for (TaskId t = b.first; t < b.first + b.count; ++t) out.push_back(state->tasks().find(t)->state);
    return out;
  }
  nlohmann::json status() {
    deliver("C", proto::Status{1});
    auto r = take<proto::Report>("C");
    REQUIRE(r.size() == 1);
    return r[0].status;
  }
};

bool all(const std::vector<TaskState>& v, TaskState s) {
  return !v.empty() && std::all_of(v.begin(), v.end(), [s](TaskState x) { return x == s; });
}

}  // namespace

TEST_SUITE("after") {

TEST_CASE("a job after another holds its tasks until that one ends, then they run") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(3);
  const JobId b = n.submit(2, {a});
  CHECK(all(n.states(b), TaskState::Waiting));
  CHECK(n.state->tasks().queued() == 0);  // a's three went to W; b's are in no queue
  const auto st = n.status();
  CHECK(st["waiting_jobs"] == 1);
  CHECK(st["waiting"][0]["job"] == b);
  CHECK(st["waiting"][0]["pending"] == nlohmann::json::array({a}));
  CHECK(st["queues"]["default"]["waiting"] == 2);
  // Only a's tasks go out; b's follow once a has ended, though one of a's tasks failed.
  const auto first = n.finish_all("W", {"1"});
  CHECK(first == std::vector<JobId>{a, a, a});
  CHECK(n.wait(a).outcomes.size() == 3);
  const auto second = n.finish_all("W");
  CHECK(second == std::vector<JobId>{b, b});
  CHECK(all(n.states(b), TaskState::Done));
  CHECK(n.status()["waiting_jobs"] == 0);
}

TEST_CASE("after-success cancels the tasks with a reason naming the job that failed") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(2);
  const JobId c = n.submit(2, {a}, true);
  n.finish_all("W", {"0"});  // a: one dead, one done
  CHECK(all(n.states(c), TaskState::Cancelled));
  CHECK(n.tasks_for("W").empty());
  const auto o = n.wait(c);
  REQUIRE(o.outcomes.size() == 2);
  CHECK(o.outcomes[0].status == TaskState::Cancelled);
  CHECK(o.outcomes[0].value.find("job " + std::to_string(a)) != std::string::npos);
  CHECK(n.state->jobs().find(c)->ended());
}

TEST_CASE("after-success runs the job when every task of what it waits for is done") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(2);
  const JobId c = n.submit(1, {a}, true);
  CHECK(n.finish_all("W") == std::vector<JobId>{a, a});
  CHECK(n.finish_all("W") == std::vector<JobId>{c});
}

TEST_CASE("a chain waits link by link, and a job waiting on several waits for the last of them") {
  Node n;
  n.hello("W", 1);
  const JobId a = n.submit(1);
  const JobId b = n.submit(1, {a});
  const JobId c = n.submit(1, {b});
  const JobId d = n.submit(1, {a, c, a});  // a repeat counts once
  CHECK(n.state->jobs().find(d)->after == std::vector<JobId>{a, c});
  std::vector<JobId> order;
  for (int i = 0; i < 4; ++i) {
    auto done = n.finish_all("W", {});
    REQUIRE(done.size() == 1);
    order.push_back(done[0]);
    CHECK(n.status()["waiting_jobs"] == std::max(0, 2 - i));  // each job done releases the next
  }
  CHECK(order == std::vector<JobId>{a, b, c, d});
}

TEST_CASE("a failed job's after-success dependents are cancelled down the chain, its plain ones run") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(1);
  const JobId b = n.submit(1, {a}, true);  // cancelled: a fails
  const JobId c = n.submit(1, {b}, true);  // cancelled: b ended with its task cancelled
  const JobId d = n.submit(1, {b});        // runs: b ended, however
  n.finish_all("W", {"0"});
  CHECK(all(n.states(b), TaskState::Cancelled));
  CHECK(all(n.states(c), TaskState::Cancelled));
  CHECK(n.wait(c).outcomes[0].value.find("job " + std::to_string(b)) != std::string::npos);
  CHECK(n.finish_all("W") == std::vector<JobId>{d});
}

TEST_CASE("unknown jobs and the job itself are refused, and nothing is created") {
  Node n;
  const JobId a = n.submit(1);
  const auto jobs = n.state->jobs().size();
  auto e = n.refused(Node::job(1, {a, 999}));
  CHECK(e.code == ErrorCode::UnknownJob);
  CHECK(e.message.find("job 999 does not exist") != std::string::npos);
  e = n.refused(Node::job(1, {n.state->jobs().next_id()}));
  CHECK(e.code == ErrorCode::BadField);
  CHECK(e.message.find("cannot wait for itself") != std::string::npos);
  CHECK(n.state->jobs().size() == jobs);
}

TEST_CASE("a job after one that has already ended is queued at once") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(1);
  n.finish_all("W", {"0"});
  const JobId b = n.submit(1, {a});
  CHECK(n.finish_all("W") == std::vector<JobId>{b});
  const JobId c = n.submit(1, {a}, true);
  CHECK(all(n.states(c), TaskState::Cancelled));
}

TEST_CASE("cancelling a waiting job cancels its tasks and releases what waits for it") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(1);
  const JobId b = n.submit(2, {a});
  const JobId c = n.submit(1, {b});
  n.deliver("C", proto::Cancel{3, b});
  REQUIRE(n.take<proto::Cancelled>("C").at(0).cancelled == 2);
  CHECK(all(n.states(b), TaskState::Cancelled));
  CHECK_FALSE(n.state->jobs().find(b)->waiting);
  // c waited for b only: b has ended (cancelled), so c runs; a's task is still W's.
  const auto done = n.finish_all("W");
  CHECK(std::count(done.begin(), done.end(), c) == 1);
  CHECK(std::count(done.begin(), done.end(), a) == 1);
}

TEST_CASE("a waiting job sent in several batches is released when its last batch is in") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(1);
  auto first = Node::job(1, {a});
  first.more = true;
  n.deliver("C", first);
  const JobId b = n.take<proto::Accepted>("C").at(0).job;
  n.finish_all("W");  // a ends while b is still open: b waits for its last batch
  CHECK(all(n.states(b), TaskState::Waiting));
  proto::Submit last = Node::job(2);
  last.job = b;
  last.seq = 1;
  n.deliver("C", last);
  REQUIRE(n.take<proto::Accepted>("C").size() == 1);
  CHECK(n.finish_all("W") == std::vector<JobId>{b, b, b});
}

TEST_CASE("a delay counts from the submission: a job released later starts at once") {
  Node n;
  n.hello("W", 100);
  const JobId a = n.submit(1);
  auto s = Node::job(2, {a});
  s.tasks[0].delay_ms = 500;
  s.tasks[1].delay_ms = 5000;
  n.deliver("C", s);
  const JobId b = n.take<proto::Accepted>("C").at(0).job;
  n.now += 1000ms;
  n.step();
  n.finish_all("W");
  CHECK(n.states(b) == std::vector<TaskState>{TaskState::Running, TaskState::Delayed});
}

TEST_CASE("waiting jobs survive a restart: still waiting, then released and cancelled as they should") {
  test::TempDir dir;
  JobId a = 0, b = 0, c = 0;
  {
    Node n(dir.path());
    n.hello("W", 100);
    auto twice = Node::job(2);
    for (auto& t : twice.tasks) t.max_attempts = 2;  // the first attempt dies with the master
    n.deliver("C", twice);
    a = n.take<proto::Accepted>("C").at(0).job;
    b = n.submit(1, {a});
    c = n.submit(1, {b}, true);
    REQUIRE(n.tasks_for("W").size() == 2);  // a runs, and the master goes away with it
  }
  Node n(dir.path());
  CHECK(all(n.states(a), TaskState::Queued));  // the restart rule: attempt 1 counted, queued again
  CHECK(all(n.states(b), TaskState::Waiting));
  CHECK(all(n.states(c), TaskState::Waiting));
  CHECK(n.status()["waiting_jobs"] == 2);
  n.hello("W", 100);
  // a ends with a task dead; b runs anyway, and fails; c (after-success b) is cancelled.
  CHECK(n.finish_all("W", {"0"}) == std::vector<JobId>{a, a});
  CHECK(n.finish_all("W", {"0"}) == std::vector<JobId>{b});
  CHECK(all(n.states(c), TaskState::Cancelled));
  CHECK(n.wait(c).outcomes.at(0).value.find("job " + std::to_string(b)) != std::string::npos);
}

TEST_CASE("how a job ended is kept for those waiting on it after its results expire, through a restart") {
  test::TempDir dir;
  MasterConfig c;
  c.result_ttl = 1s;
  JobId a = 0, b = 0, d = 0;
  {
    Node n(dir.path(), c);
    n.hello("W", 100);
    a = n.submit(1);
    auto twice = Node::job(1);
    twice.tasks[0].max_attempts = 2;  // its attempt dies with the master, and it runs again
    n.deliver("C", twice);
    b = n.take<proto::Accepted>("C").at(0).job;
    d = n.submit(1, {a, b}, true);
    const auto given = n.tasks_for("W");
    REQUIRE(given.size() == 2);
    n.deliver("W", proto::Results{{proto::Result{given[0].job == a ? given[0].task : given[1].task, 1, false, "boom"}}});
    n.now += 2000ms;  // a ended failed and expires; b still runs
    n.step();
    CHECK(n.state->jobs().find(a) == nullptr);
    CHECK(n.state->jobs().find(d)->failed_after == a);
  }
  Node n(dir.path(), c);
  CHECK(n.state->jobs().find(d)->waiting);
  CHECK(n.state->jobs().find(d)->failed_after == a);
  n.hello("W", 100);
  CHECK(n.finish_all("W") == std::vector<JobId>{b});  // b's task, queued again by the restart, now done
  CHECK(all(n.states(b), TaskState::Done));
  // a is long gone, but how it ended was kept: d is cancelled for a's failure, not run.
  CHECK(all(n.states(d), TaskState::Cancelled));
  CHECK(n.wait(d).outcomes.at(0).value.find("job " + std::to_string(a)) != std::string::npos);
}

}  // TEST_SUITE

}  // namespace taskmaster
