// MasterState without sockets: messages and time go in, the outbox comes out.
#include <doctest/doctest.h>

#include <map>
#include <set>

#include "master/metrics.h"
#include "master/state.h"
#include "support/sent_messages.h"

namespace taskmaster {
namespace {

namespace proto = protocol;
using namespace std::chrono_literals;

const TimePoint t0 = TimePoint{} + std::chrono::hours(1000);

// A master state with helpers to talk to it as workers and clients would.
struct Harness : test::SentMessages {
  MasterConfig config;
  MasterState state;
  TimePoint now = t0;

  Harness() : Harness(MasterConfig{}) {}
  explicit Harness(MasterConfig c) : config(c), state(c, "test-instance", t0) {}
  // Every test ends with the state's bookkeeping checked.
  ~Harness() { CHECK(state.check_invariants() == ""); }

  // Delivers a message, runs the turn, collects the outbox.
  void deliver(const std::string& from, Expected<proto::Message> m) {
    state.receive(from, std::move(m), now);
    step();
  }
  void deliver(const std::string& from, proto::Message m) { deliver(from, Expected<proto::Message>(std::move(m))); }
  void step() {
    state.turn(now);
    REQUIRE(state.check_invariants() == "");
    for (auto& o : state.take_outbox()) {
      state.sent(o.identity, now);
      sent.push_back(std::move(o));
    }
  }
  void advance(std::chrono::milliseconds d) {
    now += d;
    step();
  }
  void hello(const std::string& id, std::uint32_t slots, std::vector<std::string> functions = {"square", "echo"},
             std::vector<std::string> queues = {"default"}) {
    proto::Hello h;
    h.worker = "w-" + id;
    h.host = "host";
    h.pid = 1;
    h.functions = std::move(functions);
    h.queues = std::move(queues);
    h.slots = slots;
    deliver(id, h);
    REQUIRE(take<proto::Welcome>(id).size() == 1);
  }
  proto::Accepted submit(const std::string& client, int n, std::string function = "square", std::int32_t priority = 0,
                         std::string key = "") {
    proto::Submit s;
    s.req = 7;
    s.idempotency_key = std::move(key);
    for (int i = 0; i < n; ++i) {
      proto::TaskSpec t;
      t.function = function;
      t.args = std::to_string(i);
      t.priority = priority;
      t.backoff_ms = 100;
      s.tasks.push_back(t);
    }
    deliver(client, s);
    auto a = take<proto::Accepted>(client);
    REQUIRE(a.size() == 1);
    return a[0];
  }
  void result(const std::string& w, const proto::Assignment& a, bool ok, std::string value) {
    deliver(w, proto::Results{{proto::Result{a.task, a.attempt, ok, std::move(value)}}});
  }
  proto::Outcomes wait(const std::string& client, proto::JobId job, std::uint64_t after = 0, std::uint32_t timeout_ms = 0) {
    deliver(client, proto::Wait{9, job, after, 10000, timeout_ms, {}});
    auto o = take<proto::Outcomes>(client);
    REQUIRE(o.size() == 1);
    return o[0];
  }
  const Task& task(TaskId id) { return *state.tasks().find(id); }
};

}  // namespace

TEST_SUITE("state") {

TEST_CASE("HELLO weights go with their queues, whatever their order and repeats") {
  Harness h;
  for (const char* q : {"bulk", "urgent"}) {
    proto::Submit s;
    s.req = 7;
    for (int i = 0; i < 400; ++i) s.tasks.push_back(proto::TaskSpec{.function = "square", .args = "1", .queue = q});
    h.deliver("C", s);
    REQUIRE(h.take<proto::Accepted>("C").size() == 1);
  }
  proto::Hello w;
  w.worker = "w-W";
  w.functions = {"square"};
  w.queues = {"urgent", "bulk", "urgent"};  // urgent listed twice: its largest weight counts
  w.weights = {2, 1, 3};
  w.slots = 400;
  h.deliver("W", w);
  REQUIRE(h.take<proto::Welcome>("W").size() == 1);
  std::map<std::string, int> got;
  for (const auto& a : h.tasks_for("W")) ++got[h.state.names().name(h.task(a.task).queue)];
  CHECK(got["urgent"] == 300);
  CHECK(got["bulk"] == 100);
}

TEST_CASE("a worker gets WELCOME, then never more tasks than its slots - results free slots") {
  Harness h;
  h.hello("W", 2);
  auto acc = h.submit("C", 5);
  CHECK(acc.count == 5);
  CHECK_FALSE(acc.duplicate);
  auto first = h.tasks_for("W");
  REQUIRE(first.size() == 2);
  CHECK(first[0].attempt == 1);
  CHECK(h.state.tasks().queued() == 3);
  // One result frees one slot: exactly one more task, and an ACK for the result.
  h.result("W", first[0], true, "0");
  CHECK(h.take<proto::Ack>("W").at(0).tasks == std::vector<TaskId>{first[0].task});
  auto more = h.tasks_for("W");
  REQUIRE(more.size() == 1);
  CHECK(h.task(first[0].task).state == TaskState::Done);
  CHECK(h.task(first[0].task).outcome == "0");
}

TEST_CASE("tasks spread over workers with free slots") {
  Harness h;
  h.hello("A", 10);
  h.hello("B", 10);
  h.submit("C", 4);
  CHECK(h.tasks_for("A").size() == 2);
  CHECK(h.tasks_for("B").size() == 2);
}

TEST_CASE("a worker only gets the functions and queues it announced") {
  Harness h;
  h.hello("E", 5, {"echo"});
  h.submit("C", 3, "square");
  CHECK(h.tasks_for("E").empty());
  h.submit("C", 2, "echo");
  CHECK(h.tasks_for("E").size() == 2);
  h.hello("Q", 5, {"square"}, {"other"});
  CHECK(h.tasks_for("Q").empty());
}

TEST_CASE("CREDIT 0 stops dispatch to a draining worker") {
  Harness h;
  h.hello("W", 1);
  h.deliver("W", proto::Credit{0});
  h.submit("C", 2);
  CHECK(h.tasks_for("W").empty());
  h.deliver("W", proto::Credit{2});
  CHECK(h.tasks_for("W").size() == 2);
}

TEST_CASE("results from a peer that is not a worker, or for tasks it does not hold, change nothing") {
  Harness h;
  h.hello("W", 1);
  h.submit("C", 1);
  auto a = h.tasks_for("W").at(0);
  SUBCASE("a client sends RESULTS") {
    h.result("C", a, true, "99");
    auto e = h.take<proto::ErrorReply>("C");
    REQUIRE(e.size() == 1);
    CHECK(e[0].code == ErrorCode::NotAllowed);
    CHECK(h.task(a.task).state == TaskState::Running);
  }
  SUBCASE("another worker finishes a task it does not hold") {
    h.hello("X", 1);
    h.result("X", a, true, "99");
    CHECK(h.state.counters().unheld_results == 1);
    CHECK(h.take<proto::Ack>("X").size() == 1);  // acknowledged, so it stops resending
    CHECK(h.task(a.task).state == TaskState::Running);
  }
  SUBCASE("a replayed result is dropped; the first one stays") {
    h.result("W", a, true, "0");
    h.result("W", a, true, "12345");
    CHECK(h.task(a.task).outcome == "0");
    CHECK(h.state.counters().unheld_results == 1);
  }
  SUBCASE("a result for an older attempt") {
    proto::Assignment old = a;
    old.attempt = 7;
    h.result("W", old, true, "1");
    CHECK(h.task(a.task).state == TaskState::Running);
    CHECK(h.state.counters().unheld_results == 1);
  }
}

TEST_CASE("a silent worker is presumed dead - its tasks go to another worker") {
  MasterConfig c;
  c.worker_timeout = 3000ms;
  Harness h(c);
  h.hello("A", 2);
  h.submit("C", 2);
  auto held = h.tasks_for("A");
  REQUIRE(held.size() == 2);
  h.hello("B", 2);
  CHECK(h.tasks_for("B").empty());
  // B keeps talking, A does not.
  for (int i = 0; i < 30; ++i) {
    h.now += 100ms;
    h.deliver("B", proto::Heartbeat{});
  }
  CHECK(h.state.workers() == 2);  // 3 s have not passed
  for (int i = 0; i < 3; ++i) {
    h.now += 100ms;
    h.deliver("B", proto::Heartbeat{});
  }
  CHECK(h.state.workers() == 1);
  CHECK(h.state.counters().workers_lost == 1);
  // The failed attempts are retried after their backoff (100 ms), on B.
  h.advance(150ms);
  auto retried = h.tasks_for("B");
  REQUIRE(retried.size() == 2);
  CHECK(retried[0].attempt == 2);
  CHECK(h.task(retried[0].task).outcome.find("presumed dead") != std::string::npos);
}

TEST_CASE("heartbeats go to idle workers every interval") {
  Harness h;
  h.hello("W", 1);
  h.advance(500ms);
  CHECK(h.take<proto::Heartbeat>("W").empty());
  h.advance(600ms);
  CHECK(h.take<proto::Heartbeat>("W").size() == 1);
}

TEST_CASE("TASKS that cannot be sent put their tasks back without counting an attempt") {
  Harness h;
  h.hello("W", 2);
  proto::Submit s;
  s.tasks = {proto::TaskSpec{"square", "3"}};
  h.state.receive("C", proto::Message(s), h.now);
  h.state.turn(h.now);
  bool failed = false;
  for (auto& o : h.state.take_outbox()) {
    if (std::holds_alternative<proto::Tasks>(o.message)) {
      h.state.send_failed(o.identity, o.message, proto::SendResult::WouldBlock, h.now);
      failed = true;
    }
  }
  REQUIRE(failed);
  CHECK(h.state.tasks().queued() == 1);
  const Task& t = *h.state.tasks().find(h.state.tasks().last_id());
  CHECK(t.attempts == 0);
  h.step();
  auto again = h.tasks_for("W");
  REQUIRE(again.size() == 1);
  CHECK(again[0].attempt == 1);
}

TEST_CASE("WAIT is answered at once when something finished, else held until then or its timeout") {
  Harness h;
  h.hello("W", 1);
  auto acc = h.submit("C", 2);
  auto a = h.tasks_for("W").at(0);
  h.deliver("C", proto::Wait{1, acc.job, 0, 100, 1000, {}});
  CHECK(h.take<proto::Outcomes>("C").empty());  // held
  h.result("W", a, true, "0");
  auto o = h.take<proto::Outcomes>("C");
  REQUIRE(o.size() == 1);
  CHECK(o[0].req == 1);
  REQUIRE(o[0].outcomes.size() == 1);
  CHECK(o[0].outcomes[0].value == "0");
  CHECK(o[0].outcomes[0].worker == "w-W");
  CHECK(o[0].finished == 1);
  CHECK(o[0].total == 2);
  CHECK(o[0].sealed);
  // Nothing new after the cursor: held until the timeout, then answered empty.
  h.deliver("C", proto::Wait{2, acc.job, 1, 100, 1000, {}});
  h.advance(900ms);
  CHECK(h.take<proto::Outcomes>("C").empty());
  h.advance(200ms);
  auto empty = h.take<proto::Outcomes>("C");
  REQUIRE(empty.size() == 1);
  CHECK(empty[0].outcomes.empty());
  CHECK(empty[0].after == 1);
}

TEST_CASE("submissions: idempotency key, batches, sealing") {
  Harness h;
  auto a = h.submit("C", 3, "square", 0, "key-1");
  auto b = h.submit("C", 3, "square", 0, "key-1");
  CHECK(b.duplicate);
  CHECK(b.job == a.job);
  CHECK(b.first_task == a.first_task);
  CHECK(h.state.tasks().size() == 3);
  // A job in several batches: seq 1 appends, a resent seq 1 is a duplicate, seq 3 is out of order.
  proto::Submit first;
  first.req = 1;
  first.more = true;
  first.tasks = {proto::TaskSpec{"echo", "1"}};
  h.deliver("C", first);
  const auto job = h.take<proto::Accepted>("C").at(0).job;
  proto::Submit second;
  second.req = 2;
  second.job = job;
  second.seq = 1;
  second.more = true;
  second.tasks = {proto::TaskSpec{"echo", "2"}, proto::TaskSpec{"echo", "3"}};
  h.deliver("C", second);
  auto acc2 = h.take<proto::Accepted>("C").at(0);
  CHECK(acc2.count == 2);
  CHECK_FALSE(acc2.duplicate);
  h.deliver("C", second);
  CHECK(h.take<proto::Accepted>("C").at(0).duplicate);
  second.seq = 3;
  h.deliver("C", second);
  CHECK(h.take<proto::ErrorReply>("C").at(0).code == ErrorCode::BadField);
  // Close the job with an empty batch; it takes nothing more.
  proto::Submit close;
  close.job = job;
  close.seq = 2;
  h.deliver("C", close);
  CHECK(h.take<proto::Accepted>("C").at(0).count == 0);
  close.seq = 3;
  close.tasks = {proto::TaskSpec{"echo", "4"}};
  h.deliver("C", close);
  CHECK(h.take<proto::ErrorReply>("C").at(0).code == ErrorCode::NotAllowed);
  auto o = h.wait("C", job);
  CHECK(o.total == 3);
  CHECK(o.sealed);
  // A job that does not exist.
  close.job = 424242;
  h.deliver("C", close);
  CHECK(h.take<proto::ErrorReply>("C").at(0).code == ErrorCode::UnknownJob);
}

TEST_CASE("cancel, then the results expire after their TTL") {
  MasterConfig c;
  c.result_ttl = 10000ms;
  Harness h(c);
  auto acc = h.submit("C", 3);
  h.deliver("C", proto::Cancel{5, acc.job});
  auto cancelled = h.take<proto::Cancelled>("C");
  REQUIRE(cancelled.size() == 1);
  CHECK(cancelled[0].cancelled == 3);
  auto o = h.wait("C", acc.job);
  CHECK(o.outcomes.size() == 3);
  CHECK(o.outcomes[0].status == TaskState::Cancelled);
  h.advance(9000ms);
  CHECK(h.wait("C", acc.job).outcomes.size() == 3);  // reading does not remove them
  h.advance(1100ms);
  h.deliver("C", proto::Wait{1, acc.job, 0, 10, 0, {}});
  CHECK(h.take<proto::ErrorReply>("C").at(0).code == ErrorCode::UnknownJob);
  CHECK(h.state.tasks().size() == 0);
  CHECK(h.state.counters().expired_jobs == 1);
}

TEST_CASE("bad input is answered with an error and changes nothing") {
  Harness h;
  SUBCASE("a decoding error") {
    h.deliver("X", Expected<proto::Message>(Error{ErrorCode::BadJson, "SUBMIT: body is not valid JSON"}));
    auto e = h.take<proto::ErrorReply>("X");
    REQUIRE(e.size() == 1);
    CHECK(e[0].code == ErrorCode::BadJson);
    CHECK(h.state.counters().bad_messages == 1);
  }
  SUBCASE("a command only the master sends") {
    h.deliver("X", proto::Tasks{});
    CHECK(h.take<proto::ErrorReply>("X").at(0).code == ErrorCode::NotAllowed);
  }
  SUBCASE("a heartbeat from a stranger") {
    h.deliver("X", proto::Heartbeat{});
    CHECK(h.take<proto::ErrorReply>("X").at(0).code == ErrorCode::NotAllowed);
  }
  CHECK(h.state.tasks().size() == 0);
  CHECK(h.state.workers() == 0);
}

TEST_CASE("a reconnecting worker keeps the attempts it still runs") {
  Harness h;
  h.hello("old", 2);
  h.submit("C", 2);
  auto held = h.tasks_for("old");
  REQUIRE(held.size() == 2);
  // The same worker process (same name, host and pid: a peer that sends no session id) on a new
  // connection, still running the first attempt only.
  proto::Hello again;
  again.worker = "w-old";
  again.host = "host";
  again.pid = 1;
  again.functions = {"square"};
  again.queues = {"default"};
  again.slots = 2;
  again.running = {{held[0].task, held[0].attempt}};
  h.deliver("new", again);
  CHECK(h.state.workers() == 1);
  CHECK(h.task(held[0].task).state == TaskState::Running);
  // The other attempt failed with the old session and is retried later.
  CHECK(h.task(held[1].task).state == TaskState::Delayed);
  h.result("new", held[0], true, "0");
  CHECK(h.task(held[0].task).state == TaskState::Done);
}

TEST_CASE("status reports queues, workers and counters") {
  Harness h;
  h.hello("W", 1);
  h.submit("C", 3);
  h.deliver("C", proto::Status{3});
  auto r = h.take<proto::Report>("C");
  REQUIRE(r.size() == 1);
  CHECK(r[0].req == 3);
  const auto& s = r[0].status;
  CHECK(s["queues"]["default"]["running"] == 1);
  CHECK(s["queues"]["default"]["queued"] == 2);
  REQUIRE(s["workers"].size() == 1);
  CHECK(s["workers"][0]["id"] == "w-W");
  CHECK(s["workers"][0]["in_flight"] == 1);
  CHECK(s["workers"][0]["slots"] == 1);
  CHECK(s["counters"]["submitted"] == 3);
}

}  // TEST_SUITE

}  // namespace taskmaster

namespace taskmaster {
TEST_SUITE("state") {

TEST_CASE("a running task of a cancelled job finishes, and is not retried if it fails") {
  Harness h;
  h.hello("W", 2);
  auto acc = h.submit("C", 3);
  auto running = h.tasks_for("W");
  REQUIRE(running.size() == 2);
  h.deliver("C", proto::Cancel{1, acc.job});
  CHECK(h.take<proto::Cancelled>("C").at(0).cancelled == 1);
  h.result("W", running[0], true, "0");
  h.result("W", running[1], false, "boom");
  CHECK(h.task(running[0].task).state == TaskState::Done);
  CHECK(h.task(running[1].task).state == TaskState::Cancelled);
  auto o = h.wait("C", acc.job);
  CHECK(o.outcomes.size() == 3);
  CHECK(o.finished == 3);
}

TEST_CASE("a peer may hold only a bounded number of WAITs") {
  Harness h;
  auto acc = h.submit("C", 1);
  for (std::size_t i = 0; i < proto::kMaxWaitsPerPeer; ++i) h.deliver("C", proto::Wait{i + 1, acc.job, 0, 10, 60000, {}});
  CHECK(h.take<proto::ErrorReply>("C").empty());
  h.deliver("C", proto::Wait{999, acc.job, 0, 10, 60000, {}});
  auto e = h.take<proto::ErrorReply>("C");
  REQUIRE(e.size() == 1);
  CHECK(e[0].req == 999);
  CHECK(e[0].code == ErrorCode::TooLarge);
  h.deliver("D", proto::Wait{1, acc.job, 0, 10, 60000, {}});  // another peer is not affected
  CHECK(h.take<proto::ErrorReply>("D").empty());
}

}  // TEST_SUITE
}  // namespace taskmaster

namespace taskmaster {
TEST_SUITE("state") {

TEST_CASE("an idempotency key reused for another function, other args or options is refused key_reused") {
  Harness h;
  const auto a = h.submit("C", 3, "square", 0, "key-r");
  const auto refused = [&](proto::Submit m, std::string_view why) {
    CAPTURE(why);
    m.req = 8;
    m.idempotency_key = "key-r";
    h.deliver("C", m);
    const auto e = h.take<proto::ErrorReply>("C");
    REQUIRE(e.size() == 1);
    CHECK(e[0].code == ErrorCode::KeyReused);
    CHECK(e[0].req == 8);
    CHECK(e[0].message == "SUBMIT: idempotency key 'key-r' was used for a different job (" + std::to_string(a.job) +
                              "): another function, queue, args or options");
  };
  // The submission Harness::submit makes: square of 0, 1, 2 with backoff 100.
  proto::Submit same;
  for (int i = 0; i < 3; ++i) {
    proto::TaskSpec t{"square", std::to_string(i)};
    t.backoff_ms = 100;
    same.tasks.push_back(t);
  }
  auto m = same;
  m.tasks[2].args = "7";
  refused(m, "other args");
  m = same;
  for (auto& t : m.tasks) t.function = "echo";
  refused(m, "another function");
  m = same;
  m.tasks[1].queue = "other";
  refused(m, "another queue");
  m = same;
  m.tasks[0].max_attempts = 9;
  refused(m, "another option");
  m = same;
  m.after = {a.job};
  refused(m, "after");
  m = same;
  m.tasks.resize(1);
  m.tasks[0].args = "5";
  refused(m, "a first batch of another size whose first task differs");
  CHECK(h.state.tasks().size() == 3);  // nothing was created
  // A copy is answered as before; so is one cut into another first batch (same first task).
  const auto b = h.submit("C", 3, "square", 0, "key-r");
  CHECK(b.duplicate);
  CHECK(b.job == a.job);
  const auto c = h.submit("C", 1, "square", 0, "key-r");
  CHECK(c.duplicate);
  CHECK(c.job == a.job);
  CHECK(h.state.tasks().size() == 3);
}

TEST_CASE("submission digests: every field counts, and the rule for first batches of another size") {
  std::vector<proto::TaskSpec> tasks{{"square", "1"}, {"square", "2"}};
  const auto d = submission_digest(tasks, {}, false);
  CHECK(d.rfind("2 ", 0) == 0);
  CHECK(d.size() == 2 + 64 + 1 + 64);
  CHECK(same_submission(d, submission_digest(tasks, {}, false)));
  for (int field = 0; field < 8; ++field) {
    auto t = tasks;
    auto& x = t[1];
    switch (field) {
      case 0: x.function = "echo"; break;
      case 1: x.args = "3"; break;
      case 2: x.queue = "q"; break;
      case 3: x.priority = 1; break;
      case 4: x.delay_ms = 1; break;
      case 5: x.timeout_ms = 1; break;
      case 6: x.max_attempts = 1; break;
      default: x.backoff_ms = 1; break;
    }
    CAPTURE(field);
    CHECK_FALSE(same_submission(d, submission_digest(t, {}, false)));
  }
  CHECK_FALSE(same_submission(d, submission_digest(tasks, {4}, false)));
  CHECK_FALSE(same_submission(d, submission_digest(tasks, {4}, true)));
  CHECK_FALSE(same_submission(submission_digest(tasks, {4}, false), submission_digest(tasks, {4}, true)));
  // Field boundaries are unambiguous: "ab" + "c" is not "a" + "bc".
  CHECK_FALSE(same_submission(submission_digest({{"ab", "c"}}, {}, false), submission_digest({{"a", "bc"}}, {}, false)));
  // Another size: only the first task is compared.
  CHECK(same_submission(d, submission_digest({tasks[0]}, {}, false)));
  CHECK(same_submission(d, submission_digest({tasks[0], tasks[1], {"echo", "9"}}, {}, false)));
  CHECK_FALSE(same_submission(d, submission_digest({tasks[1]}, {}, false)));
  // No digest known (a journal from before them): anything matches.
  CHECK(same_submission("", d));
  CHECK(same_submission("garbage", d));
}

TEST_CASE("WAIT may name the job by its idempotency key, right behind the SUBMIT") {
  Harness h;
  h.hello("W", 1);
  proto::Submit s;
  s.req = 1;
  s.idempotency_key = "k-77";
  s.tasks = {proto::TaskSpec{"square", "3"}};
  h.state.receive("C", proto::Message(s), h.now);
  proto::Wait w{2, 0, 0, 10, 1000, "k-77"};
  h.state.receive("C", proto::Message(w), h.now);  // the same turn, in order
  h.step();
  const auto acc = h.take<proto::Accepted>("C").at(0);
  CHECK(h.take<proto::Outcomes>("C").empty());  // held: nothing finished yet
  h.result("W", h.tasks_for("W").at(0), true, "9");
  auto o = h.take<proto::Outcomes>("C");
  REQUIRE(o.size() == 1);
  CHECK(o[0].req == 2);
  CHECK(o[0].job == acc.job);
  CHECK(o[0].outcomes.at(0).value == "9");
  h.deliver("C", proto::Wait{3, 0, 0, 10, 0, "no-such-key"});
  CHECK(h.take<proto::ErrorReply>("C").at(0).code == ErrorCode::UnknownJob);
}

TEST_CASE("a HELLO repeated on the same connection keeps the leases in flight to the worker") {
  Harness h;
  h.hello("W", 2);
  h.submit("C", 2);
  const auto given = h.tasks_for("W");
  REQUIRE(given.size() == 2);
  // The worker's first WELCOME was slow, so it said HELLO again before the TASKS reached it: its
  // HELLO lists nothing running. The session and its leases stay.
  proto::Hello again;
  again.worker = "w-W";
  again.host = "host";
  again.pid = 1;
  again.functions = {"square", "echo"};
  again.queues = {"default"};
  again.slots = 2;
  h.deliver("W", again);
  CHECK(h.take<proto::Welcome>("W").size() == 1);
  CHECK(h.state.workers() == 1);
  CHECK(h.tasks_for("W").empty());  // its slots are still taken by what it holds
  for (const auto& a : given) h.result("W", a, true, "1");
  for (const auto& a : given) CHECK(h.task(a.task).state == TaskState::Done);
  CHECK(h.state.counters().unheld_results == 0);
  CHECK(h.state.counters().stale_results == 0);
}

TEST_CASE("two worker processes that share a name both serve - the same process reconnecting replaces its session") {
  Harness h;
  proto::Hello a;
  a.worker = "same";
  a.host = "host-a";
  a.pid = 10;
  a.session = 111;
  a.functions = {"square"};
  a.queues = {"default"};
  a.slots = 2;
  proto::Hello b = a;
  b.host = "host-b";
  b.session = 222;
  h.deliver("A", a);
  h.deliver("B", b);
  CHECK(h.state.workers() == 2);
  h.submit("C", 4);
  const auto on_a = h.tasks_for("A"), on_b = h.tasks_for("B");
  CHECK(on_a.size() == 2);
  CHECK(on_b.size() == 2);
  h.deliver("C", proto::Status{1});
  const auto report = h.take<proto::Report>("C").at(0).status;
  REQUIRE(report["workers"].size() == 2);
  CHECK(report["workers"][0]["session"] != report["workers"][1]["session"]);
  // Process A again, on a new connection, still running its first attempt: A's old session ends,
  // its other attempt fails; B is untouched.
  a.running = {{on_a[0].task, on_a[0].attempt}};
  h.deliver("A2", a);
  CHECK(h.state.workers() == 2);
  CHECK(h.task(on_a[0].task).state == TaskState::Running);
  CHECK(h.task(on_a[1].task).state == TaskState::Delayed);
  for (const auto& t : on_b) CHECK(h.task(t.task).state == TaskState::Running);
  h.result("A2", on_a[0], true, "0");
  for (const auto& t : on_b) h.result("B", t, true, "0");
  CHECK(h.task(on_a[0].task).state == TaskState::Done);
  for (const auto& t : on_b) CHECK(h.task(t.task).state == TaskState::Done);
  CHECK(h.state.counters().unheld_results == 0);
}

TEST_CASE("dispatch picks by what is queued, whatever a worker lists") {
  Harness h;
  // The largest HELLO the protocol allows: 1024 functions and 1024 queues.
  std::vector<std::string> functions, queues;
  for (int i = 0; i < 1024; ++i) {
    functions.push_back("f" + std::to_string(i));
    queues.push_back("q" + std::to_string(i));
  }
  h.hello("BIG", 100000, functions, queues);
  h.hello("ONE", 100000, {"f5"}, {"q7"});
  proto::Submit s;
  s.req = 7;
  for (int i = 0; i < 2000; ++i) {
    proto::TaskSpec t;
    t.function = i % 2 ? "f5" : "f1000";
    t.queue = i % 2 ? "q7" : "q3";
    t.args = std::to_string(i);
    t.priority = i % 3;
    s.tasks.push_back(t);
  }
  h.deliver("C", s);
  REQUIRE(h.take<proto::Accepted>("C").size() == 1);
  const auto big = h.tasks_for("BIG"), one = h.tasks_for("ONE");
  CHECK(big.size() + one.size() == 2000);
  for (const auto& a : one) CHECK(a.function == "f5");
  // Each worker got its tasks best first: higher priority, then older.
  for (const auto* list : {&big, &one}) {
    for (std::size_t i = 1; i < list->size(); ++i) {
      const Task& prev = h.task((*list)[i - 1].task);
      const Task& cur = h.task((*list)[i].task);
      CHECK((prev.priority > cur.priority || (prev.priority == cur.priority && prev.id < cur.id)));
    }
  }
  CHECK(h.state.tasks().queued() == 0);
}

TEST_CASE("--max-queued refuses a SUBMIT with the request req, and nothing accepted is lost") {
  MasterConfig c;
  c.max_queued = 5;
  Harness h(c);
  CHECK(h.submit("C", 3).count == 3);
  proto::Submit s;
  s.req = 41;
  for (int i = 0; i < 3; ++i) s.tasks.push_back(proto::TaskSpec{"square", std::to_string(i)});
  h.deliver("C", s);
  auto e = h.take<proto::ErrorReply>("C");
  REQUIRE(e.size() == 1);
  CHECK(e[0].req == 41);
  CHECK(e[0].code == ErrorCode::Unavailable);
  CHECK(e[0].message.find("--max-queued") != std::string::npos);
  // One batch bigger than the bound can never fit.
  s.req = 42;
  s.tasks.assign(6, proto::TaskSpec{"square", "1"});
  h.deliver("C", s);
  e = h.take<proto::ErrorReply>("C");
  REQUIRE(e.size() == 1);
  CHECK(e[0].code == ErrorCode::TooLarge);
  CHECK(h.state.tasks().unfinished() == 3);
  CHECK(h.state.counters().refused_full == 2);
  // Once the queued work is done there is room again.
  h.hello("W", 10);
  for (const auto& a : h.tasks_for("W")) h.result("W", a, true, "0");
  CHECK(h.state.tasks().unfinished() == 0);
  CHECK(h.submit("C", 5).count == 5);
}

TEST_CASE("a job id from before an in-memory master's restart is reported gone") {
  Harness h;
  h.state.start_ids_at(5000, 5000 * 4096 + 1);
  CHECK(h.submit("C", 1).job == 5000);
  h.deliver("C", proto::Wait{3, 17, 0, 10, 0, {}});
  const auto e = h.take<proto::ErrorReply>("C").at(0);
  CHECK(e.code == ErrorCode::UnknownJob);
  CHECK(e.message.find("restarted without a journal") != std::string::npos);
}

}  // TEST_SUITE

// ---- the feature "reserve": STARTED, REVOKE, RELEASED (PROTOCOL.md §6.14, §8.6) -----------------

namespace {

// A worker that speaks "reserve", with `threads` threads and `slots` slots.
void hello_reserve(Harness& h, const std::string& id, std::uint32_t slots, std::uint32_t threads) {
  proto::Hello m;
  m.worker = "w-" + id;
  m.functions = {"square", "echo"};
  m.queues = {"default"};
  m.slots = slots;
  m.features = {"reserve"};
  m.threads = threads;
  h.deliver(id, m);
  auto w = h.take<proto::Welcome>(id);
  REQUIRE(w.size() == 1);
  REQUIRE(w[0].features == std::vector<std::string>{"reserve"});
}

std::vector<proto::Lease> leases_of(const std::vector<proto::Assignment>& tasks) {
  std::vector<proto::Lease> out;
  for (const auto& a : tasks) out.push_back({a.task, a.attempt});
  return out;
}

std::set<TaskId> ids_of(const std::vector<proto::Lease>& list) {
  std::set<TaskId> out;
  for (const auto& l : list) out.insert(l.task);
  return out;
}

nlohmann::json worker_status(Harness& h, const std::string& name) {
  h.deliver("S", proto::Status{1});
  auto r = h.take<proto::Report>("S");
  REQUIRE(r.size() == 1);
  for (const auto& w : r[0].status["workers"])
    if (w["id"] == name) return w;
  FAIL("no worker " << name);
  return {};
}

}  // namespace

TEST_SUITE("reserve") {

TEST_CASE("the feature is used only when the worker asks: an old worker's WELCOME lists none and it gets no REVOKE") {
  Harness h;
  h.hello("OLD", 10);  // no features
  auto acc = h.submit("C", 10);
  REQUIRE(h.tasks_for("OLD").size() == 10);
  h.deliver("C", proto::Cancel{3, acc.job});
  CHECK(h.take<proto::Revoke>("OLD").empty());
  const auto w = worker_status(h, "w-OLD");
  CHECK(w["running"] == 10);  // without the feature every held attempt counts as running
  CHECK(w["reserved"] == 0);
  CHECK(w["threads"].is_null());
}

TEST_CASE("cancel takes back reserved attempts: released ones end cancelled without an attempt, begun ones finish") {
  Harness h;
  hello_reserve(h, "R", 10, 1);
  auto acc = h.submit("C", 10);
  auto got = h.tasks_for("R");
  REQUIRE(got.size() == 10);
  h.deliver("R", proto::Started{{{got[0].task, got[0].attempt}}});
  auto st = worker_status(h, "w-R");
  CHECK(st["running"] == 1);
  CHECK(st["reserved"] == 9);
  CHECK(st["threads"] == 1);

  h.deliver("C", proto::Cancel{3, acc.job});
  auto revokes = h.take<proto::Revoke>("R");
  REQUIRE(revokes.size() == 1);
  auto asked = ids_of(revokes[0].tasks);
  CHECK(asked.size() == 9);
  CHECK_FALSE(asked.count(got[0].task));  // begun: not asked for
  // The worker began one more meanwhile (task 1): it gives back the other 8.
  std::vector<proto::Lease> released;
  for (std::size_t i = 2; i < got.size(); ++i) released.push_back({got[i].task, got[i].attempt});
  h.deliver("R", proto::Released{released});
  for (std::size_t i = 2; i < got.size(); ++i) {
    CHECK(h.task(got[i].task).state == TaskState::Cancelled);
    CHECK(h.task(got[i].task).attempts == 0);  // never ran
  }
  CHECK(h.task(got[1].task).state == TaskState::Running);
  // The two that began finish as usual; the job ends with 2 done and 8 cancelled.
  h.result("R", got[0], true, "0");
  h.result("R", got[1], true, "1");
  auto o = h.wait("C", acc.job);
  CHECK(o.finished == 10);
  int done = 0, cancelled = 0;
  for (const auto& x : o.outcomes) (x.status == TaskState::Done ? done : cancelled) += 1;
  CHECK(done == 2);
  CHECK(cancelled == 8);
  CHECK(h.tasks_for("R").empty());  // nothing of the cancelled job is leased again
}

TEST_CASE("a RELEASED entry the session does not hold, of another attempt, or begun, changes nothing") {
  Harness h;
  hello_reserve(h, "R", 4, 1);
  h.submit("C", 4);
  auto got = h.tasks_for("R");
  REQUIRE(got.size() == 4);
  h.deliver("R", proto::Started{{{got[0].task, got[0].attempt}}});
  h.deliver("R", proto::Released{{{got[0].task, got[0].attempt},      // begun
                                  {got[1].task, got[1].attempt + 1},  // another attempt
                                  {999999, 1}}});                     // never held
  for (const auto& a : got) CHECK(h.task(a.task).state == TaskState::Running);
  CHECK(h.tasks_for("R").empty());
  // From a peer without a session: refused.
  h.deliver("X", proto::Released{{{got[2].task, got[2].attempt}}});
  auto e = h.take<proto::ErrorReply>("X");
  REQUIRE(e.size() == 1);
  CHECK(e[0].code == ErrorCode::NotAllowed);
  CHECK(h.task(got[2].task).state == TaskState::Running);
  // STARTED in RESULTS counts too.
  h.deliver("R", proto::Results{{proto::Result{got[0].task, got[0].attempt, true, "0"}}, {{got[1].task, got[1].attempt}}});
  auto st = worker_status(h, "w-R");
  CHECK(st["running"] == 1);
  CHECK(st["reserved"] == 2);
}

TEST_CASE("a new job overtakes reserved attempts of a running one: all come back and the small job is leased first") {
  Harness h;
  hello_reserve(h, "R", 100, 1);
  auto big = h.submit("C", 100);
  auto got = h.tasks_for("R");
  REQUIRE(got.size() == 100);
  h.deliver("R", proto::Started{{{got[0].task, got[0].attempt}}});
  auto small = h.submit("C", 5);
  REQUIRE(small.job != big.job);
  auto revokes = h.take<proto::Revoke>("R");
  REQUIRE(revokes.size() == 1);
  CHECK(revokes[0].tasks.size() == 99);
  h.deliver("R", proto::Released{revokes[0].tasks});
  auto again = h.tasks_for("R");
  REQUIRE(again.size() == 99);
  // Round robin across the two jobs: the 5 small tasks are among the first 10 leased.
  std::size_t last_small = 0;
  for (std::size_t i = 0; i < again.size(); ++i)
    if (again[i].job == small.job) last_small = i;
  CHECK(last_small < 10);
  // The big job's tasks kept their order among themselves, and no attempt was counted.
  TaskId prev = 0;
  for (const auto& a : again)
    if (a.job == big.job) {
      CHECK(a.task > prev);
      CHECK(a.attempt == 1);
      prev = a.task;
    }
  // More tasks for the same job make no new lane: nothing is revoked.
  proto::Submit more;
  more.req = 8;
  more.job = big.job;
  more.seq = 1;
  h.deliver("C", more);
  CHECK(h.take<proto::Revoke>("R").empty());
}

TEST_CASE("a task leased again to the worker whose earlier attempt began and timed out is reserved, not begun") {
  Harness h;
  hello_reserve(h, "R", 2, 1);
  proto::Submit s;
  s.req = 7;
  s.tasks.push_back(proto::TaskSpec{.function = "square", .args = "1", .timeout_ms = 100, .max_attempts = 3, .backoff_ms = 0});
  h.deliver("C", s);
  auto acc = h.take<proto::Accepted>("C");
  REQUIRE(acc.size() == 1);
  auto first = h.tasks_for("R");
  REQUIRE(first.size() == 1);
  h.deliver("R", proto::Started{{{first[0].task, first[0].attempt}}});
  h.advance(150ms);  // the attempt times out; the retry comes back to the same worker
  auto second = h.tasks_for("R");
  REQUIRE(second.size() == 1);
  CHECK(second[0].attempt == 2);
  CHECK(worker_status(h, "w-R")["reserved"] == 1);
  h.deliver("C", proto::Cancel{3, acc[0].job});
  auto revokes = h.take<proto::Revoke>("R");
  REQUIRE(revokes.size() == 1);
  REQUIRE(revokes[0].tasks.size() == 1);
  CHECK(revokes[0].tasks[0].attempt == 2);
}

TEST_CASE("attempts leased in the dispatch that queued a new lane are in order already: not taken back") {
  Harness h;
  hello_reserve(h, "R", 100, 1);
  h.submit("C", 50);
  REQUIRE(h.tasks_for("R").size() == 50);
  // Two new jobs in one turn, more than the free slots: both lanes stay queued after leasing.
  for (int j = 0; j < 2; ++j) {
    proto::Submit s;
    s.req = 10 + j;
    for (int i = 0; i < 40; ++i) s.tasks.push_back(proto::TaskSpec{.function = "square", .args = "1"});
    h.state.receive("C", proto::Message(s), h.now);
  }
  h.step();
  auto leased = h.tasks_for("R");
  REQUIRE(leased.size() == 50);
  auto revokes = h.take<proto::Revoke>("R");
  REQUIRE(revokes.size() == 1);
  // Only the first job's 50 come back, none of the 50 just leased.
  auto asked = ids_of(revokes[0].tasks);
  CHECK(asked.size() == 50);
  for (const auto& a : leased) CHECK_FALSE(asked.count(a.task));
}

TEST_CASE("a job released from waiting overtakes reserved attempts as a new job does") {
  Harness h;
  hello_reserve(h, "R", 100, 1);
  auto first = h.submit("C", 1);
  auto p = h.tasks_for("R");
  REQUIRE(p.size() == 1);
  auto big = h.submit("C", 99);
  REQUIRE(h.tasks_for("R").size() == 99);
  proto::Submit after;
  after.req = 8;
  after.after = {first.job};
  for (int i = 0; i < 5; ++i) after.tasks.push_back(proto::TaskSpec{.function = "square", .args = "1"});
  h.deliver("C", after);
  auto acc = h.take<proto::Accepted>("C");
  REQUIRE(acc.size() == 1);
  CHECK(h.take<proto::Revoke>("R").empty());  // waiting: nothing to overtake yet
  h.deliver("R", proto::Started{{{p[0].task, p[0].attempt}}});
  h.result("R", p[0], true, "1");  // the first job ends: the waiting one is released
  auto released = h.tasks_for("R");
  REQUIRE(released.size() == 1);  // the one free slot
  CHECK(released[0].job == acc[0].job);
  auto revokes = h.take<proto::Revoke>("R");
  REQUIRE(revokes.size() == 1);
  CHECK(revokes[0].tasks.size() == 99);  // all of the big job's reserved attempts
  for (const auto& l : revokes[0].tasks) CHECK(h.task(l.task).job == big.job);
}

TEST_CASE("fifo: a new job of the same priority waits behind reserved attempts, a higher priority overtakes them") {
  MasterConfig c;
  c.schedule.fair = false;
  Harness h(c);
  hello_reserve(h, "R", 50, 1);
  h.submit("C", 50);
  REQUIRE(h.tasks_for("R").size() == 50);
  h.advance(5ms);
  h.submit("C", 5);  // same priority: first come, first served
  CHECK(h.take<proto::Revoke>("R").empty());
  h.submit("C", 5, "square", 3);
  auto revokes = h.take<proto::Revoke>("R");
  REQUIRE(revokes.size() == 1);
  CHECK(revokes[0].tasks.size() == 50);
  // One REVOKE at a time: another higher priority waits for the answer.
  h.submit("C", 5, "square", 4);
  CHECK(h.take<proto::Revoke>("R").empty());
  h.advance(5ms);
  h.deliver("R", proto::Released{revokes[0].tasks});
  auto again = h.tasks_for("R");
  REQUIRE(again.size() == 50);
  for (int i = 0; i < 5; ++i) CHECK(h.task(again[i].task).priority == 4);
  for (int i = 5; i < 10; ++i) CHECK(h.task(again[i].task).priority == 3);
  // Then the first job's 40 released ones, ahead of the second job's 5 (released tasks keep their place).
  TaskId prev = 0;
  for (int i = 10; i < 50; ++i) {
    CHECK(h.task(again[i].task).priority == 0);
    CHECK(again[i].task > prev);
    prev = again[i].task;
  }
}

TEST_CASE("an idle worker steals half of what waits behind a busy one's threads, and gets it") {
  Harness h;
  hello_reserve(h, "BUSY", 100, 1);
  h.submit("C", 100);
  auto got = h.tasks_for("BUSY");
  REQUIRE(got.size() == 100);
  hello_reserve(h, "IDLE", 10, 2);
  // BUSY has not said its thread began: it may be about to start them all; nothing is taken.
  CHECK(h.take<proto::Revoke>("BUSY").empty());
  h.deliver("BUSY", proto::Started{{{got[0].task, got[0].attempt}}});
  auto revokes = h.take<proto::Revoke>("BUSY");
  REQUIRE(revokes.size() == 1);
  CHECK(revokes[0].tasks.size() == 10);  // as many as IDLE has slots (half of 99 is more)
  CHECK_FALSE(ids_of(revokes[0].tasks).count(got[0].task));
  h.deliver("BUSY", proto::Released{revokes[0].tasks});
  auto stolen = h.tasks_for("IDLE");
  CHECK(ids_of(leases_of(stolen)) == ids_of(revokes[0].tasks));
  CHECK(h.tasks_for("BUSY").empty());  // its free slots find nothing: the idle worker went first
  // IDLE finishes them; while BUSY's thread is still on its first task, it steals again.
  proto::Results done;
  for (const auto& a : stolen) done.results.push_back({a.task, a.attempt, true, "1"});
  h.deliver("IDLE", done);
  revokes = h.take<proto::Revoke>("BUSY");
  REQUIRE(revokes.size() == 1);
  CHECK(revokes[0].tasks.size() == 10);
  // Until BUSY answers, no second REVOKE.
  h.advance(10ms);
  CHECK(h.take<proto::Revoke>("BUSY").empty());
  const auto st = worker_status(h, "w-BUSY");
  CHECK(st["running"] == 1);
  CHECK(st["reserved"] == 89);
}

TEST_CASE("RETRY queues a dead task again with its function, args, queue, priority, timeout, attempts and backoff") {
  Harness h;
  h.hello("W", 4, {"square"}, {"q2"});
  proto::Submit s;
  proto::TaskSpec t;
  t.function = "square";
  t.args = "[1,\"x\"]";
  t.queue = "q2";
  t.priority = 7;
  t.timeout_ms = 4321;
  t.max_attempts = 1;
  t.backoff_ms = 250;
  s.tasks = {t};
  h.deliver("C", s);
  auto acc = h.take<proto::Accepted>("C");
  REQUIRE(acc.size() == 1);
  auto got = h.tasks_for("W");
  REQUIRE(got.size() == 1);
  h.result("W", got[0], false, "boom");
  REQUIRE(h.task(got[0].task).state == TaskState::Dead);
  h.deliver("C", proto::Retry{2, acc[0].job});
  auto r = h.take<proto::Accepted>("C");
  REQUIRE(r.size() == 1);
  CHECK(r[0].count == 1);
  auto again = h.tasks_for("W");
  REQUIRE(again.size() == 1);
  const Task& copy = h.task(again[0].task);
  CHECK(copy.job == r[0].job);
  CHECK(h.state.names().name(copy.function) == "square");
  CHECK(copy.args == "[1,\"x\"]");
  CHECK(h.state.names().name(copy.queue) == "q2");
  CHECK(copy.priority == 7);
  CHECK(copy.timeout_ms == 4321);
  CHECK(copy.max_attempts == 1);
  CHECK(copy.backoff_ms == 250);
}

TEST_CASE("CANCELLED says how many were cancelled, how many run on and how many reserved come back") {
  Harness h;
  hello_reserve(h, "R", 3, 1);
  h.hello("OLD", 1);
  auto acc = h.submit("C", 10);
  auto got = h.tasks_for("R");
  REQUIRE(got.size() == 3);
  REQUIRE(h.tasks_for("OLD").size() == 1);
  h.deliver("R", proto::Started{{{got[0].task, got[0].attempt}}});
  h.deliver("C", proto::Cancel{3, acc.job});
  auto c = h.take<proto::Cancelled>("C");
  REQUIRE(c.size() == 1);
  CHECK(c[0].req == 3);
  CHECK(c[0].cancelled == 6);
  CHECK(c[0].running == 2);  // one begun, one on a worker without the feature
  CHECK(c[0].reserved == 2);
  // Again: nothing left to cancel, the same two still run and the two still asked back.
  h.deliver("C", proto::Cancel{4, acc.job});
  CHECK(h.take<proto::Cancelled>("C").at(0).cancelled == 0);
}

TEST_CASE("STATUS job: one job's counts by state, STATUS jobs: the most recent jobs, an unknown job an error") {
  Harness h;
  h.hello("W", 1);
  auto a = h.submit("C", 3);
  auto b = h.submit("C", 2, "echo");
  h.deliver("C", proto::Status{5, a.job});
  auto r = h.take<proto::Report>("C");
  REQUIRE(r.size() == 1);
  CHECK(r[0].req == 5);
  const auto& j = r[0].status["job"];
  CHECK(j["id"] == a.job);
  CHECK(j["total"] == 3);
  CHECK(j["function"] == "square");
  CHECK(j["counts"]["running"] == 1);
  CHECK(j["counts"]["queued"] == 2);
  h.deliver("C", proto::Status{6, 0, 1});
  r = h.take<proto::Report>("C");
  REQUIRE(r.size() == 1);
  REQUIRE(r[0].status["jobs"].size() == 1);
  CHECK(r[0].status["jobs"][0]["id"] == b.job);  // newest first
  CHECK(r[0].status["jobs"][0]["function"] == "echo");
  CHECK(r[0].status["total"] == 2);
  h.deliver("C", proto::Status{7, b.job + 100});
  auto e = h.take<proto::ErrorReply>("C");
  REQUIRE(e.size() == 1);
  CHECK(e[0].code == ErrorCode::UnknownJob);
}

TEST_CASE("status per queue: reserved split from running, rates, and the functions no connected worker serves") {
  Harness h;
  hello_reserve(h, "R", 4, 1);
  h.submit("C", 4);
  h.submit("C", 3, "nobody_serves");
  auto got = h.tasks_for("R");
  REQUIRE(got.size() == 4);
  h.deliver("R", proto::Started{{{got[0].task, got[0].attempt}}});
  h.deliver("S", proto::Status{1});
  auto r = h.take<proto::Report>("S");
  REQUIRE(r.size() == 1);
  auto q = r[0].status["queues"]["default"];
  CHECK(q["running"] == 4);
  CHECK(q["reserved"] == 3);
  CHECK(q["queued"] == 3);
  CHECK(q["submitted_per_s"].get<double>() > 0);
  CHECK(q["finished_per_s"] == 0.0);
  CHECK(q["unserved"] == nlohmann::json{{"nobody_serves", 3}});

  // A worker that serves it connects: the mark goes.
  h.hello("N", 3, {"nobody_serves"});
  h.result("R", got[0], true, "0");
  h.deliver("S", proto::Status{2});
  r = h.take<proto::Report>("S");
  REQUIRE(r.size() == 1);
  q = r[0].status["queues"]["default"];
  CHECK(q["unserved"] == nlohmann::json::object());
  CHECK(q["finished_per_s"].get<double>() > 0);
  // 20 s later the rates are back to 0.
  h.advance(20s);
  h.deliver("S", proto::Status{3});
  r = h.take<proto::Report>("S");
  REQUIRE(r.size() == 1);
  CHECK(r[0].status["queues"]["default"]["finished_per_s"] == 0.0);
  CHECK(r[0].status["queues"]["default"]["submitted_per_s"] == 0.0);
}

}  // TEST_SUITE

// ---- the HTTP API (docs/HTTP.md) -----------------------------------------------------------------

namespace {

nlohmann::json get(Harness& h, const std::string& path, std::unordered_map<std::string, std::string> params = {}, int status = 200) {
  const HttpAnswer a = h.state.http(HttpQuery{"GET", path, std::move(params)}, h.now);
  CHECK_MESSAGE(a.status == status, path, ": ", a.body);
  auto j = nlohmann::json::parse(a.body);
  if (status != 200) CHECK(j.at("error").is_string());
  return j;
}

nlohmann::json post(Harness& h, const std::string& path, int status = 200) {
  const HttpAnswer a = h.state.http(HttpQuery{"POST", path, {}}, h.now);
  CHECK_MESSAGE(a.status == status, path, ": ", a.body);
  if (status == 200) CHECK(a.changed);
  h.step();
  return nlohmann::json::parse(a.body);
}

// A job of `n` tasks of one attempt each on queue "default".
proto::Accepted submit_once(Harness& h, int n) {
  proto::Submit s;
  s.req = 3;
  for (int i = 0; i < n; ++i) s.tasks.push_back(proto::TaskSpec{.function = "square", .args = std::to_string(i), .max_attempts = 1});
  h.deliver("C", s);
  auto a = h.take<proto::Accepted>("C");
  REQUIRE(a.size() == 1);
  return a[0];
}

}  // namespace

TEST_SUITE("http api") {

TEST_CASE("the API follows a job that fails, and retry runs its dead task again once") {
  Harness h;
  h.hello("W", 4);
  const auto job = submit_once(h, 3);
  auto leased = h.tasks_for("W");
  REQUIRE(leased.size() == 3);
  {
    auto w = get(h, "/api/workers");
    CHECK(w["total"] == 1);
    CHECK(w["workers"][0]["id"] == "w-W");
    CHECK(w["workers"][0]["tasks"].size() == 3);
    CHECK(w["workers"][0]["tasks"][0]["state"] == "running");  // a worker without feature reserve: all running
  }
  h.result("W", leased[0], true, "0");
  h.result("W", leased[1], true, "1");
  h.result("W", leased[2], false, "boom: \"quoted\" <b>");
  auto st = get(h, "/api/status");
  REQUIRE(st["queues"].size() == 1);
  CHECK(st["queues"][0]["name"] == "default");
  CHECK(st["queues"][0]["done"] == 2);
  CHECK(st["queues"][0]["dead"] == 1);
  CHECK(st["queues"][0]["served_by"] == 1);
  CHECK(st["totals"]["workers"] == 1);
  REQUIRE(st["failures"].size() == 1);
  CHECK(st["failures"][0]["dead"] == true);
  CHECK(st["failures"][0]["error"] == "boom: \"quoted\" <b>");
  CHECK(st["failures"][0]["worker"] == "w-W");
  CHECK(st["failures"][0]["job"] == job.job);
  CHECK(st["throughput"]["finished"].size() == 300);
  CHECK(st["throughput"]["finished"].back() == 3);
  CHECK(st["throughput"]["failed"].back() == 1);
  auto w = get(h, "/api/workers");
  CHECK(w["workers"][0]["done"] == 3);
  CHECK(w["workers"][0]["failed"] == 1);
  CHECK(w["workers"][0]["tasks"].empty());
  auto jobs = get(h, "/api/jobs");
  REQUIRE(jobs["jobs"].size() == 1);
  CHECK(jobs["jobs"][0]["state"] == "failed");
  CHECK(jobs["jobs"][0]["done"] == 2);
  CHECK(jobs["jobs"][0]["failed"] == 1);
  CHECK(jobs["jobs"][0]["function"] == "square");
  auto one = get(h, "/api/jobs/" + std::to_string(job.job));
  CHECK(one["counts"]["dead"] == 1);
  CHECK(one["counts"]["done"] == 2);
  REQUIRE(one["failures"].size() == 1);
  CHECK(one["failures"][0]["task"] == leased[2].task);

  auto r = post(h, "/api/jobs/" + std::to_string(job.job) + "/retry");
  CHECK(r["tasks"] == 1);
  CHECK(r["duplicate"] == false);
  const proto::JobId retry = r["retry_job"].get<proto::JobId>();
  CHECK(retry != job.job);
  auto again = h.tasks_for("W");
  REQUIRE(again.size() == 1);
  CHECK(h.task(again[0].task).args == h.task(leased[2].task).args);
  CHECK(h.task(again[0].task).job == retry);
  CHECK(h.task(again[0].task).max_attempts == 1);
  // Asked again, by HTTP or by the protocol (a resend): the same retry job, nothing new.
  auto r2 = post(h, "/api/jobs/" + std::to_string(job.job) + "/retry");
  CHECK(r2["retry_job"] == retry);
  CHECK(r2["duplicate"] == true);
  h.deliver("C", proto::Retry{12, job.job});
  auto acc = h.take<proto::Accepted>("C");
  REQUIRE(acc.size() == 1);
  CHECK(acc[0].req == 12);
  CHECK(acc[0].job == retry);
  CHECK(acc[0].duplicate);
  CHECK(h.tasks_for("W").empty());
  // The retry job has no dead task (yet): nothing to retry.
  post(h, "/api/jobs/" + std::to_string(retry) + "/retry", 409);
  h.deliver("C", proto::Retry{13, retry});
  auto err = h.take<proto::ErrorReply>("C");
  REQUIRE(err.size() == 1);
  CHECK(err[0].code == ErrorCode::NotAllowed);
}

TEST_CASE("cancel through the API cancels what has not started, as CANCEL does") {
  Harness h;
  const auto job = submit_once(h, 5);
  auto c = post(h, "/api/jobs/" + std::to_string(job.job) + "/cancel");
  CHECK(c["cancelled"] == 5);
  CHECK(get(h, "/api/jobs/" + std::to_string(job.job))["state"] == "cancelled");
  CHECK(get(h, "/api/status")["queues"][0]["cancelled"] == 5);
}

TEST_CASE("bad API requests get a status and a one-line error, and change nothing") {
  Harness h;
  const auto job = submit_once(h, 2);
  const std::string j = "/api/jobs/" + std::to_string(job.job);
  get(h, "/api/jobs/abc", {}, 400);
  get(h, "/api/jobs/0", {}, 400);
  get(h, "/api/jobs/99999999999999999999999", {}, 400);
  get(h, "/api/jobs/424242", {}, 404);
  get(h, j + "/cancel", {}, 405);
  get(h, j + "/explode", {}, 404);
  get(h, "/api/nope", {}, 404);
  get(h, "/api/workers", {{"limit", "0"}}, 400);
  get(h, "/api/workers", {{"limit", "501"}}, 400);
  get(h, "/api/workers", {{"offset", "-1"}}, 400);
  get(h, "/api/jobs", {{"before", "x"}}, 400);
  get(h, "/api/jobs", {{"limit", "1e3"}}, 400);
  CHECK(h.state.http(HttpQuery{"POST", "/api/status", {}}, h.now).status == 405);
  CHECK(h.state.http(HttpQuery{"POST", "/api/jobs/424242/cancel", {}}, h.now).status == 404);
  CHECK(h.state.http(HttpQuery{"GET", "/metrics", {}}, h.now).status == 404);  // no metrics kept
  CHECK(h.state.tasks().queued() == 2);
}

TEST_CASE("jobs and workers come one page at a time, newest job first") {
  Harness h;
  for (int i = 0; i < 7; ++i) h.hello("W" + std::to_string(i), 1, {"other"});
  std::vector<proto::JobId> ids;
  for (int i = 0; i < 25; ++i) ids.push_back(submit_once(h, 1).job);
  auto page = get(h, "/api/jobs", {{"limit", "10"}});
  CHECK(page["total"] == 25);
  REQUIRE(page["jobs"].size() == 10);
  CHECK(page["jobs"][0]["id"] == ids[24]);
  CHECK(page["jobs"][9]["id"] == ids[15]);
  CHECK(page["next_before"] == ids[15]);
  auto last = get(h, "/api/jobs", {{"limit", "10"}, {"before", std::to_string(ids[5])}});
  REQUIRE(last["jobs"].size() == 5);
  CHECK(last["jobs"][4]["id"] == ids[0]);
  CHECK(last["next_before"].is_null());
  auto w = get(h, "/api/workers", {{"offset", "5"}, {"limit", "5"}});
  CHECK(w["total"] == 7);
  REQUIRE(w["workers"].size() == 2);
  CHECK(w["workers"][0]["id"] == "w-W5");
  CHECK(get(h, "/api/status")["queues"][0]["served_by"] == 7);  // by queue, whatever the functions
}

// The value of one sample line `NAME{LABELS} VALUE` of the metrics' text, or -1 if absent.
double sample(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST_CASE("metrics count what happens to tasks by queue and function, and render as Prometheus text") {
  Harness h;
  Metrics metrics;
  h.state.set_metrics(&metrics);
  h.hello("W", 4);
  submit_once(h, 3);
  auto leased = h.tasks_for("W");
  REQUIRE(leased.size() == 3);
  h.result("W", leased[0], true, "0");
  h.result("W", leased[1], false, "no");
  proto::Submit s;  // one that retries
  s.tasks.push_back(proto::TaskSpec{.function = "echo", .args = "1", .queue = "other", .max_attempts = 2, .backoff_ms = 0});
  h.deliver("C", s);
  h.hello("V", 1, {"echo"}, {"other"});
  auto e = h.tasks_for("V");
  REQUIRE(e.size() == 1);
  h.result("V", e[0], false, "again");
  const auto text = h.state.http(HttpQuery{"GET", "/metrics", {}}, h.now).body;
  const std::string sq = "{function=\"square\",queue=\"default\"}";
  CHECK(sample(text, "taskmaster_tasks_submitted_total" + sq) == 3);
  CHECK(sample(text, "taskmaster_attempts_started_total" + sq) == 3);
  CHECK(sample(text, "taskmaster_tasks_succeeded_total" + sq) == 1);
  CHECK(sample(text, "taskmaster_attempts_failed_total" + sq) == 1);
  CHECK(sample(text, "taskmaster_tasks_dead_total" + sq) == 1);
  CHECK(sample(text, "taskmaster_tasks_retried_total{function=\"echo\",queue=\"other\"}") == 1);
  CHECK(sample(text, "taskmaster_task_duration_seconds_count{function=\"square\",outcome=\"ok\",queue=\"default\"}") == 1);
  CHECK(sample(text, "taskmaster_queue_tasks{queue=\"default\",state=\"leased\"}") == 1);
  CHECK(sample(text, "taskmaster_worker_in_flight{state=\"running\",worker=\"w-W\"}") == 1);
  CHECK(sample(text, "taskmaster_workers_connected") == 2);
  CHECK(text.find("# TYPE taskmaster_task_duration_seconds histogram") != std::string::npos);
  // A worker that left has no series any more.
  h.deliver("V", proto::Bye{});
  const auto after = h.state.http(HttpQuery{"GET", "/metrics", {}}, h.now).body;
  CHECK(after.find("worker=\"w-V\"") == std::string::npos);
  CHECK(sample(after, "taskmaster_workers_connected") == 1);
}

TEST_CASE("metrics keep at most kMaxSeries label pairs: names chosen by clients cannot grow the scrape") {
  Harness h;
  Metrics metrics;
  h.state.set_metrics(&metrics);
  proto::Submit s;
  for (std::size_t i = 0; i < Metrics::kMaxSeries + 50; ++i)
    s.tasks.push_back(proto::TaskSpec{.function = "f" + std::to_string(i), .args = "1"});
  h.deliver("C", s);
  const auto text = h.state.http(HttpQuery{"GET", "/metrics", {}}, h.now).body;
  std::size_t series = 0;
  for (std::size_t at = 0; (at = text.find("\ntaskmaster_tasks_submitted_total{", at + 1)) != std::string::npos;) ++series;
  CHECK(series == Metrics::kMaxSeries + 1);  // the first kMaxSeries, and _other
  CHECK(sample(text, "taskmaster_tasks_submitted_total{function=\"_other\",queue=\"_other\"}") == 50);
}

TEST_CASE("a permanent error makes the task dead at once, an ordinary one is retried") {
  Harness h;
  h.hello("W", 4);
  proto::Submit s;
  s.req = 7;
  for (int i = 0; i < 2; ++i) s.tasks.push_back(proto::TaskSpec{.function = "square", .args = "1", .max_attempts = 5, .backoff_ms = 0});
  h.deliver("C", s);
  REQUIRE(h.take<proto::Accepted>("C").size() == 1);
  auto got = h.tasks_for("W");
  REQUIRE(got.size() == 2);
  proto::Result permanent{got[0].task, got[0].attempt, false, "square: expected an integer"};
  permanent.permanent = true;
  h.deliver("W", proto::Results{{permanent, proto::Result{got[1].task, got[1].attempt, false, "flaky"}}});
  CHECK(h.task(got[0].task).state == TaskState::Dead);
  CHECK(h.task(got[0].task).attempts == 1);
  CHECK(h.task(got[1].task).state != TaskState::Dead);  // retried: 4 attempts remain
  auto again = h.tasks_for("W");
  REQUIRE(again.size() == 1);
  CHECK(again[0].task == got[1].task);
  CHECK(again[0].attempt == 2);
}

}  // TEST_SUITE
}  // namespace taskmaster
