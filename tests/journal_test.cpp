// The durable journal (master/journal.h): what MasterState records, what replay gives back, and
// what survives a crash at any point of a write, a failing disk and a bad journal file.
//
// Crashes are real processes ending: a forked child drives a MasterState with a journal and
// `_exit`s at a chosen point (no destructor, no ROLLBACK), or is killed by SIGXFSZ in the middle of
// writing the WAL. The parent then replays the same directory and compares what is on disk with
// what a reader saw committed at that point in an uncrashed run of the same workload.
// Time is passed in, as everywhere in the unit tests; only the journal itself converts it to the
// wall clock (delayed tasks' ready times and jobs' end times), so those are compared with a margin.
#include <doctest/doctest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "common/log.h"
#include "master/journal.h"
#include "master/state.h"
#include "support/sent_messages.h"
#include "support/temp_dir.h"

namespace taskmaster {
namespace {

namespace fs = std::filesystem;
namespace proto = protocol;
using namespace std::chrono_literals;

const TimePoint t0 = TimePoint{} + std::chrono::hours(1000);

// Replay and worker sessions log at info level; these tests check state, not logs.
struct QuietLogs {
  LogLevel before = log_level();
  QuietLogs() { set_log_level(LogLevel::Error); }
  ~QuietLogs() { set_log_level(before); }
};

using test::TempDir;

// The journal file in a test's directory.
std::string db_in(const TempDir& dir) { return dir.path("journal.db"); }

// A plain SQLite connection to a journal file, to look at it from outside.
class Sql {
 public:
  explicit Sql(const std::string& path, bool read_only = true) {
    const int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + path + ": " + (db_ ? sqlite3_errmsg(db_) : "no memory"));
  }
  ~Sql() { sqlite3_close_v2(db_); }
  Sql(const Sql&) = delete;
  Sql& operator=(const Sql&) = delete;

  // Every row, its columns joined by '|'; NULL shows as "NULL".
  std::vector<std::string> rows(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    std::vector<std::string> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        if (i) row += '|';
        const auto* p = sqlite3_column_text(s, i);
        row += p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, i))) : "NULL";
      }
      out.push_back(std::move(row));
    }
    const std::string err = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db_);
    sqlite3_finalize(s);
    if (!err.empty()) throw std::runtime_error(sql + ": " + err);
    return out;
  }
  std::int64_t number(const std::string& sql) {
    auto r = rows(sql);
    if (r.size() != 1) throw std::runtime_error(sql + ": " + std::to_string(r.size()) + " rows");
    return std::stoll(r[0]);
  }
  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error(sql + ": " + msg);
    }
  }

  // Everything the journal holds, as text, but for the wall-clock times (which differ from run to
  // run): whether a job has ended and whether a task has a ready time.
  std::string dump() {
    std::string out;
    for (const char* sql : {
             "SELECT 'meta', key, value FROM meta ORDER BY key",
             "SELECT 'job', id, ifnull(idempotency_key, '-'), total, sealed, cancelled, ended_at_ms IS NOT NULL FROM jobs ORDER BY id",
             "SELECT 'batch', job, seq, first_task, count FROM batches ORDER BY job, seq",
             "SELECT 'task', id, job, function, queue, args, priority, timeout_ms, max_attempts, backoff_ms, state, attempts,"
             " ready_at_ms != 0, outcome, worker, finished_seq FROM tasks ORDER BY id",
         })
      for (auto& r : rows(sql)) out += r + "\n";
    return out;
  }

  // Rules no committed state may break, whatever point a crash came at. Each returns the rows that
  // break it (empty: fine).
  std::vector<std::string> broken() {
    std::vector<std::string> out;
    auto add = [&](const char* rule, const char* sql) {
      for (auto& r : rows(sql)) out.push_back(std::string(rule) + ": " + r);
    };
    add("batch without its job", "SELECT b.job, b.seq FROM batches b LEFT JOIN jobs j ON j.id = b.job WHERE j.id IS NULL");
    add("task without its job", "SELECT t.id FROM tasks t LEFT JOIN jobs j ON j.id = t.job WHERE j.id IS NULL");
    add("job total differs from its tasks",
        "SELECT j.id, j.total, (SELECT count(*) FROM tasks t WHERE t.job = j.id) FROM jobs j"
        " WHERE j.total != (SELECT count(*) FROM tasks t WHERE t.job = j.id)");
    add("job total differs from its batches",
        "SELECT j.id, j.total FROM jobs j WHERE j.total != (SELECT ifnull(sum(count), 0) FROM batches b WHERE b.job = j.id)");
    add("task outside its job's batches",
        "SELECT t.id FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM batches b WHERE b.job = t.job"
        " AND t.id >= b.first_task AND t.id < b.first_task + b.count)");
    add("batches not numbered 0..n-1", "SELECT job FROM batches GROUP BY job HAVING min(seq) != 0 OR max(seq) != count(*) - 1");
    add("finish order not 0..n-1 over the finished tasks",
        "SELECT job FROM tasks WHERE state IN ('done', 'dead', 'cancelled') GROUP BY job"
        " HAVING count(DISTINCT finished_seq) != count(*) OR min(finished_seq) != 0 OR max(finished_seq) != count(*) - 1");
    add("unfinished task with a place in the finish order",
        "SELECT id FROM tasks WHERE state NOT IN ('done', 'dead', 'cancelled') AND finished_seq != -1");
    add("job ended but not all finished",
        "SELECT j.id FROM jobs j WHERE j.ended_at_ms IS NOT NULL AND (j.sealed = 0 OR EXISTS"
        " (SELECT 1 FROM tasks t WHERE t.job = j.id AND t.state NOT IN ('done', 'dead', 'cancelled')))");
    return out;
  }

  std::string integrity() {
    auto r = rows("PRAGMA integrity_check");
    std::string s;
    for (auto& x : r) s += x + "\n";
    return s;
  }

 private:
  sqlite3* db_ = nullptr;
};

// ---- a master: MasterState + Journal, driven as master.cpp's loop drives them --------------

proto::TaskSpec spec(std::string function, std::string args, std::int32_t priority = 0, std::uint32_t max_attempts = 3,
                     std::uint64_t delay_ms = 0, std::string queue = "default") {
  proto::TaskSpec t;
  t.function = std::move(function);
  t.args = std::move(args);
  t.priority = priority;
  t.max_attempts = max_attempts;
  t.delay_ms = delay_ms;
  t.queue = std::move(queue);
  t.backoff_ms = 100;
  t.timeout_ms = 600000;
  return t;
}

// No doctest macros in here: it also runs in forked children. Surprises throw.
void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

MasterConfig patient_config() {
  MasterConfig c;
  c.worker_timeout = std::chrono::hours(10);  // time jumps in these tests must not lose workers
  return c;
}

struct Node : test::SentMessages {
  MasterConfig config;
  TimePoint now;
  std::unique_ptr<Journal> journal;
  std::unique_ptr<MasterState> state;
  MasterState::Recovered loaded;
  int commit_failures = 0;
  std::string commit_error;
  // Called before (false) and after (true) every commit that has something to write.
  std::function<void(bool)> on_commit;

  // Every test ends with the state's bookkeeping checked.
  ~Node() {
    if (state) CHECK(state->check_invariants() == "");
  }
  explicit Node(const std::string& dir, MasterConfig c = patient_config(), TimePoint start = t0) : config(c), now(start) {
    journal = std::make_unique<Journal>(dir);
    start_state();
  }
  // Master::start_state: a new state, replayed from the journal; what replay changed is committed.
  void start_state() {
    state = std::make_unique<MasterState>(config, "instance", now);
    loaded = state->recover(*journal, now);
    commit();
  }
  // MasterState::commit, counting failures; what it releases goes to `sent`.
  bool commit() {
    const bool dirty = journal->dirty();
    if (dirty && on_commit) on_commit(false);
    const auto failures = state->counters().journal_failures;
    for (auto& o : state->commit(now)) {
      state->sent(o.identity, now);
      sent.push_back(std::move(o));
    }
    if (state->counters().journal_failures != failures) {
      ++commit_failures;
      commit_error = state->last_journal_failure();
      return false;
    }
    if (dirty && on_commit) on_commit(true);
    return true;
  }
  // One loop turn as Master::run makes it: timers, dispatch, what leaves at once, then the commit
  // and what it releases (errors for what a failed commit could not write).
  void step() {
    state->turn(now);
    for (auto& o : state->take_outbox()) {
      state->sent(o.identity, now);
      sent.push_back(std::move(o));
    }
    commit();
  }
  void deliver(const std::string& from, proto::Message m) {
    state->receive(from, Expected<proto::Message>(std::move(m)), now);
    step();
  }
  void advance(std::chrono::milliseconds d) {
    now += d;
    step();
  }
  template <class T> T ask(const std::string& from, proto::Message m) {
    deliver(from, std::move(m));
    auto r = take<T>(from);
    expect(r.size() == 1,
           "expected one " + std::string(proto::command_name(proto::Message(T{}))) + " for " + from + ", got " + std::to_string(r.size()));
    return r[0];
  }
  void hello(const std::string& id, std::uint32_t slots, std::vector<proto::Lease> running = {}, std::string name = "") {
    proto::Hello h;
    h.worker = name.empty() ? "w-" + id : name;
    h.host = "host";
    h.pid = 1;
    h.functions = {"square", "echo"};
    h.queues = {"default", "fast"};
    h.slots = slots;
    h.running = std::move(running);
    (void)ask<proto::Welcome>(id, h);
  }
  proto::Message submit_message(std::vector<proto::TaskSpec> tasks, std::string key = "", JobId job = 0, std::uint32_t seq = 0,
                                bool more = false) {
    proto::Submit s;
    s.req = 7;
    s.job = job;
    s.seq = seq;
    s.more = more;
    s.idempotency_key = std::move(key);
    s.tasks = std::move(tasks);
    return s;
  }
  proto::Accepted submit(std::vector<proto::TaskSpec> tasks, std::string key = "", JobId job = 0, std::uint32_t seq = 0,
                         bool more = false) {
    return ask<proto::Accepted>("C", submit_message(std::move(tasks), std::move(key), job, seq, more));
  }
  void result(const std::string& w, const proto::Assignment& a, bool ok, std::string value) {
    result(w, a.task, a.attempt, ok, std::move(value));
  }
  void result(const std::string& w, TaskId task, std::uint32_t attempt, bool ok, std::string value) {
    deliver(w, proto::Results{{proto::Result{task, attempt, ok, std::move(value)}}});
  }
  proto::Outcomes wait(JobId job) { return ask<proto::Outcomes>("C", proto::Wait{9, job, 0, 10000, 0, {}}); }
  const Task* task(TaskId id) const { return state->tasks().find(id); }
  std::int64_t jobs() { return ask<proto::Report>("C", proto::Status{1}).status["jobs"].get<std::int64_t>(); }
};

std::string describe(const Task& t, const Names& n) {
  std::ostringstream o;
  o << "task " << t.id << " job " << t.job << " " << proto::to_string(t.state) << " attempts " << t.attempts << "/" << t.max_attempts
    << " fn " << n.name(t.function) << " queue " << n.name(t.queue) << " priority " << t.priority << " timeout " << t.timeout_ms
    << " backoff " << t.backoff_ms << " worker " << n.name(t.worker) << " args " << t.args << " outcome " << t.outcome;
  return o.str();
}

std::vector<std::string> describe_tasks(const TaskTable& tasks) {
  std::vector<std::string> out;
  for (TaskId id = 1; id <= tasks.last_id(); ++id)
    if (const Task* t = tasks.find(id)) out.push_back(describe(*t, tasks.names()));
  return out;
}

std::string describe(const Job& j) {
  std::ostringstream o;
  o << "job " << j.id << " key " << j.idempotency_key << " total " << j.total << " failed " << j.failed << " sealed " << j.sealed
    << " cancelled " << j.cancelled << " ended " << j.ended_at.has_value() << " batches";
  for (auto& b : j.batches) o << " " << b.first << "+" << b.count;
  o << " finished";
  for (auto t : j.finished) o << " " << t;
  return o.str();
}

std::string describe(const proto::Outcomes& o) {
  std::ostringstream s;
  s << "job " << o.job << " after " << o.after << " finished " << o.finished << " total " << o.total << " sealed " << o.sealed;
  for (auto& x : o.outcomes)
    s << "\n  task " << x.task << " " << proto::to_string(x.status) << " attempts " << x.attempts << " worker " << x.worker << " args "
      << x.args << " value " << x.value;
  return s.str();
}

// The journal of `dir` replayed into a new state (nothing is committed: what replay would change is
// rolled back when the journal closes).
struct Replayed {
  MasterState::Recovered loaded;
  std::vector<std::string> tasks, jobs;
  std::vector<std::string> broken;  // jobs that disagree with their tasks
};
Replayed replay(const std::string& dir, TimePoint now = t0) {
  Journal journal(dir);
  MasterState state(patient_config(), "replay", now);
  Replayed r;
  r.loaded = state.recover(journal, now);
  const TaskTable& tasks = state.tasks();
  const JobTable& jobs = state.jobs();
  r.tasks = describe_tasks(tasks);
  if (auto e = state.check_invariants(); !e.empty()) r.broken.push_back(e);
  for (JobId id = 1; id < 1000; ++id) {
    const Job* j = jobs.find(id);
    if (!j) continue;
    r.jobs.push_back(describe(*j));
    std::uint64_t in_batches = 0, final_tasks = 0;
    for (const auto& b : j->batches)
      for (TaskId t = b.first; t < b.first + b.count; ++t, ++in_batches) {
        const Task* task = tasks.find(t);
        if (!task || task->job != id) r.broken.push_back("job " + std::to_string(id) + " misses task " + std::to_string(t));
        else if (proto::is_final(task->state)) ++final_tasks;
      }
    if (in_batches != j->total) r.broken.push_back("job " + std::to_string(id) + " total differs from its batches");
    if (final_tasks != j->finished.size()) r.broken.push_back("job " + std::to_string(id) + " finish order differs from its tasks");
  }
  if (jobs.size() != r.jobs.size()) r.broken.push_back("jobs with ids past 1000");
  return r;
}

// ---- child processes ------------------------------------------------------------------------

struct ChildEnd {
  int status = 0;
  std::string said;  // what the child wrote to its report pipe
  bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  bool killed_by(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
  std::string how() const {
    if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status)) + "; said: " + said;
    if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status)) + "; said: " + said;
    return "?";
  }
};

// Runs `body` in a forked child. The child ends with _exit: whatever the body leaves open (an
// uncommitted transaction, the journal, its lock) is abandoned as in a crash. The body returns the
// exit code; an exception ends it with 98 and its message on the pipe. `say` writes to the parent.
ChildEnd in_child(const std::function<int(const std::function<void(const std::string&)>& say)>& body) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto say = [fd = fds[1]](const std::string& s) {
      const std::string line = s + "\n";
      (void)!::write(fd, line.data(), line.size());
    };
    int code = 97;
    try {
      code = body(say);
    } catch (const std::exception& e) {
      say(std::string("exception: ") + e.what());
      code = 98;
    } catch (...) {
      code = 98;
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  ChildEnd end;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) end.said.append(buf, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  ::close(fds[0]);
  pid_t w;
  while ((w = ::waitpid(pid, &end.status, 0)) < 0 && errno == EINTR) {
  }
  REQUIRE(w == pid);
  return end;
}

// Writes past `bytes` in any file fail: SIGXFSZ, which kills, unless ignored (then EFBIG).
void limit_file_size(rlim_t bytes) {
  rlimit r{};
  if (::getrlimit(RLIMIT_FSIZE, &r) != 0) throw std::runtime_error(std::string("getrlimit: ") + std::strerror(errno));
  r.rlim_cur = bytes;
  if (::setrlimit(RLIMIT_FSIZE, &r) != 0) throw std::runtime_error(std::string("setrlimit: ") + std::strerror(errno));
}

std::uint64_t file_size(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

// ---- a workload touching every kind of change, for the crash tests --------------------------

MasterConfig workload_config() {
  MasterConfig c = patient_config();
  c.result_ttl = 10s;
  return c;
}

// Every turn of it that writes something is one commit.
void workload(Node& n) {
  n.hello("W", 0);  // no change
  const auto j1 = n.submit({spec("square", "1", 5), spec("square", "2", 1), spec("echo", "\"e\"", 9, 1)}, "crash-key", 0, 0, true);
  n.submit({spec("square", "3"), spec("square", "4", 0, 2, 60000)}, "", j1.job, 1, false);  // a second batch, one delayed
  n.deliver("W", proto::Credit{3});                                                         // leases 3
  auto held = n.tasks_for("W");
  expect(held.size() == 3, "workload: 3 leases");
  n.result("W", held[0], true, "\"r0\"");  // done; its slot takes the next queued task
  n.result("W", held[1], false, "boom");   // failed, attempts remain: delayed by its backoff
  n.advance(1s);                           // queued again, leased again
  const auto j2 = n.submit({spec("echo", "10"), spec("echo", "11"), spec("nobody-runs-this", "12")});
  n.ask<proto::Cancelled>("C", proto::Cancel{3, j2.job});
  for (auto& a : n.tasks_for("W")) held.push_back(a);
  for (std::size_t i = 2; i < held.size(); ++i) {
    const Task* t = n.task(held[i].task);
    if (t && t->state == TaskState::Running && t->attempts == held[i].attempt) n.result("W", held[i], i % 2 == 0, "\"v\"");
  }
  n.submit({spec("echo", "20", 0, 1)}, "second-key");
  n.advance(11s);  // job 2's results expire
  n.advance(60s);  // the delayed task is due
}

// What a separate reader saw committed, at the start and after each commit of the workload.
std::vector<std::string> committed_dumps() {
  TempDir dir;
  std::vector<std::string> dumps;
  Node n(dir.path(), workload_config());
  dumps.push_back(Sql(db_in(dir)).dump());
  n.on_commit = [&](bool done) {
    if (done) dumps.push_back(Sql(db_in(dir)).dump());
  };
  workload(n);
  REQUIRE(n.commit_failures == 0);
  return dumps;
}

void check_consistent(const std::string& dir, const std::string& context) {
  INFO(context);
  // Replay first (it recovers the WAL), with the journal's own code...
  const auto r = replay(dir);
  CHECK(r.broken.empty());
  for (auto& b : r.broken) MESSAGE(b);
  // ...then, with the journal closed, from outside.
  Sql sql(dir + "/journal.db");
  const auto broken = sql.broken();
  CHECK(broken.empty());
  for (auto& b : broken) MESSAGE(b);
  CHECK(sql.integrity() == "ok\n");
}

}  // namespace

TEST_SUITE("journal") {

// ---- round trips --------------------------------------------------------------------------------

TEST_CASE("a replayed master has every task, job, finish order, key and id counter of the one that stopped") {
  QuietLogs quiet;
  TempDir dir;
  std::vector<std::string> live_tasks;
  std::vector<std::string> live_waits;
  TaskId last_task = 0;
  {
    Node n(dir.path());
    CHECK(n.loaded.jobs == 0);
    CHECK(n.loaded.tasks == 0);
    n.hello("A", 0);
    const auto j1 = n.submit({spec("square", "1", 5), spec("square", "2", 1, 3, 0, "fast")}, "key-1", 0, 0, true);
    REQUIRE(j1.job == 1);
    REQUIRE(j1.first_task == 1);
    REQUIRE(n.submit({spec("echo", "\"x\"", 9, 1)}, "", 1, 1, false).first_task == 3);
    const auto j2 = n.submit({spec("square", "{\"later\":true}", 0, 3, 60000), spec("echo", "[1,2]", 0, 1)});
    REQUIRE(j2.job == 2);
    n.deliver("A", proto::Credit{2});
    auto a = n.tasks_for("A");
    REQUIRE(a.size() == 2);
    REQUIRE(a[0].task == 3);  // priority 9, queue default
    REQUIRE(a[1].task == 2);  // the worker's queues take turns: now queue fast
    n.result("A", a[0], true, "\"X\"");
    auto b = n.tasks_for("A");
    REQUIRE(b.size() == 1);
    REQUIRE(b[0].task == 1);
    n.result("A", b[0], false, "boom");  // task 1: attempt 1 of 3 failed, delayed 100 ms
    auto c = n.tasks_for("A");
    REQUIRE(c.size() == 1);
    REQUIRE(c[0].task == 5);
    n.result("A", c[0], false, "bad");  // task 5: its only attempt failed: dead
    n.result("A", a[1], true, "4");
    n.advance(200ms);
    auto d = n.tasks_for("A");
    REQUIRE(d.size() == 1);
    REQUIRE(d[0].task == 1);
    REQUIRE(d[0].attempt == 2);
    const auto j3 = n.submit({spec("echo", "6", 0, 1), spec("echo", "7", 0, 1), spec("echo", "8", 0, 1)});
    REQUIRE(j3.job == 3);
    auto e = n.tasks_for("A");
    REQUIRE(e.size() == 1);
    REQUIRE(e[0].task == 6);
    CHECK(n.ask<proto::Cancelled>("C", proto::Cancel{3, j3.job}).cancelled == 2);
    n.result("A", e[0], true, "\"six\"");    // a running task of a cancelled job finishes
    n.result("A", e[0], true, "\"again\"");  // a duplicate: dropped
    CHECK(n.state->counters().unheld_results == 1);
    const auto j4 = n.submit({spec("echo", "\"last\"", 0, 1)});
    REQUIRE(j4.job == 4);
    auto f = n.tasks_for("A");
    REQUIRE(f.size() == 1);
    REQUIRE(f[0].task == 9);
    // Now: 1 running (attempt 2 of 3), 9 running (its only attempt), 4 delayed, the rest finished.
    live_tasks = describe_tasks(n.state->tasks());
    REQUIRE(live_tasks.size() == 9);
    for (JobId j = 1; j <= 4; ++j) live_waits.push_back(describe(n.wait(j)));
    last_task = n.state->tasks().last_id();
    CHECK(n.commit_failures == 0);
  }

  Node n(dir.path());
  CHECK(n.loaded.jobs == 4);
  CHECK(n.loaded.tasks == 9);
  CHECK(n.loaded.requeued == 2);
  // Every task as it was, but the running ones: task 1 queued with its 2 attempts counted, task 9
  // dead (it was on its last attempt).
  auto expected = live_tasks;
  auto replace = [&](std::size_t i, const std::string& from, const std::string& to) {
    const auto at = expected[i].find(from);
    REQUIRE(at != std::string::npos);
    expected[i].replace(at, from.size(), to);
  };
  replace(0, " running attempts 2/3", " queued attempts 2/3");
  replace(8, " running attempts 1/1", " dead attempts 1/1");
  replace(8, " outcome ", " outcome the master stopped during the task's last attempt (1 of 1)");
  CHECK(describe_tasks(n.state->tasks()) == expected);
  // The finish order WAIT reads, unchanged; job 4 ends with its dead task.
  for (JobId j = 1; j <= 3; ++j) CHECK(describe(n.wait(j)) == live_waits[j - 1]);
  const auto w4 = n.wait(4);
  CHECK(w4.finished == 1);
  CHECK(w4.total == 1);
  CHECK(w4.sealed);
  REQUIRE(w4.outcomes.size() == 1);
  CHECK(w4.outcomes[0].status == TaskState::Dead);
  CHECK(w4.outcomes[0].value.find("master stopped") != std::string::npos);
  // Keys and batches answer resends as before.
  const auto again = n.submit({spec("square", "1", 5), spec("square", "2", 1, 3, 0, "fast")}, "key-1", 0, 0, true);
  CHECK(again.duplicate);
  CHECK(again.job == 1);
  CHECK(again.first_task == 1);
  CHECK(again.count == 2);
  const auto batch1 = n.submit({spec("echo", "\"x\"")}, "", 1, 1, false);
  CHECK(batch1.duplicate);
  CHECK(batch1.first_task == 3);
  CHECK(batch1.count == 1);
  // Sealed stays sealed.
  CHECK(n.ask<proto::ErrorReply>("C", n.submit_message({spec("echo", "1")}, "", 1, 2)).code == ErrorCode::NotAllowed);
  CHECK(n.ask<proto::ErrorReply>("C", n.submit_message({spec("echo", "1")}, "", 2, 1)).code == ErrorCode::NotAllowed);
  // Cancelled stays cancelled, and the flags are in the journal.
  CHECK(Sql(db_in(dir)).rows("SELECT id, sealed, cancelled FROM jobs ORDER BY id") ==
        std::vector<std::string>{"1|1|0", "2|1|0", "3|1|1", "4|1|0"});
  // New ids continue past the replayed ones.
  const auto fresh = n.submit({spec("echo", "\"new\"")});
  CHECK_FALSE(fresh.duplicate);
  CHECK(fresh.job == 5);
  CHECK(fresh.first_task == last_task + 1);
  // The queued task runs again, as its third attempt.
  n.hello("A", 1);
  auto g = n.tasks_for("A");
  REQUIRE(g.size() == 1);
  CHECK(g[0].task == 1);
  CHECK(g[0].attempt == 3);
  CHECK(n.commit_failures == 0);
}

TEST_CASE("running tasks come back queued with their attempt counted or dead on their last - and a second replay gives the same") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    n.hello("A", 3);
    const auto acc = n.submit(
        {spec("echo", "\"c\"", 9, 1), spec("echo", "\"a\"", 5, 3), spec("echo", "\"b\"", 1, 1), spec("echo", "\"queued\"", 0, 1)});
    REQUIRE(acc.job == 1);
    auto held = n.tasks_for("A");
    REQUIRE(held.size() == 3);
    n.result("A", held[0], true, "\"C\"");  // task 1 done; task 4 leased in its slot
    REQUIRE(n.tasks_for("A").size() == 1);
    REQUIRE(n.task(2)->state == TaskState::Running);
    REQUIRE(n.task(3)->state == TaskState::Running);
    REQUIRE(n.task(4)->state == TaskState::Running);
  }
  std::vector<std::string> first_tasks;
  std::string first_wait;
  {
    Node n(dir.path());
    CHECK(n.loaded.requeued == 3);
    const Task* a = n.task(2);
    REQUIRE(a);
    CHECK(a->state == TaskState::Queued);
    CHECK(a->attempts == 1);
    CHECK(a->outcome.empty());
    for (TaskId id : {TaskId{3}, TaskId{4}}) {
      const Task* t = n.task(id);
      REQUIRE(t);
      CHECK(t->state == TaskState::Dead);
      CHECK(t->attempts == 1);
      CHECK(t->outcome == "the master stopped during the task's last attempt (1 of 1)");
    }
    const auto w = n.wait(1);
    REQUIRE(w.outcomes.size() == 3);
    CHECK(w.outcomes[0].task == 1);
    CHECK(w.outcomes[1].task == 3);  // the dead ones after the done one, by id
    CHECK(w.outcomes[2].task == 4);
    CHECK(w.finished == 3);
    CHECK(w.total == 4);
    first_tasks = describe_tasks(n.state->tasks());
    first_wait = describe(w);
    // Replay's changes were committed (Node does it as the master does): the journal says so.
    Sql sql(db_in(dir));
    CHECK(sql.rows("SELECT id, state, finished_seq FROM tasks ORDER BY id") ==
          std::vector<std::string>{"1|done|0", "2|queued|-1", "3|dead|1", "4|dead|2"});
    CHECK(sql.broken().empty());
  }
  Node n(dir.path());
  CHECK(n.loaded.requeued == 0);  // nothing was running any more
  CHECK(describe_tasks(n.state->tasks()) == first_tasks);
  CHECK(describe(n.wait(1)) == first_wait);
  // And once the last task finishes, the job ends with the same order plus it.
  n.hello("A", 1);
  auto g = n.tasks_for("A");
  REQUIRE(g.size() == 1);
  CHECK(g[0].task == 2);
  CHECK(g[0].attempt == 2);
  n.result("A", g[0], true, "\"A\"");
  const auto w = n.wait(1);
  REQUIRE(w.outcomes.size() == 4);
  CHECK(w.outcomes[3].task == 2);
  CHECK(w.finished == 4);
}

TEST_CASE("a task running for a cancelled job is not run again after a replay") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    n.hello("A", 1);
    const auto acc = n.submit({spec("echo", "1", 0, 3), spec("echo", "2", 0, 3)});
    REQUIRE(n.tasks_for("A").size() == 1);
    CHECK(n.ask<proto::Cancelled>("C", proto::Cancel{1, acc.job}).cancelled == 1);
    REQUIRE(n.task(1)->state == TaskState::Running);
  }
  Node n(dir.path());
  // Its attempt died with the master; a failed attempt of a cancelled job is not retried.
  const Task* t = n.task(1);
  REQUIRE(t);
  CHECK(t->state == TaskState::Cancelled);
  CHECK(t->attempts == 1);
  n.hello("B", 5);
  CHECK(n.tasks_for("B").empty());
  const auto w = n.wait(1);
  CHECK(w.finished == 2);
  CHECK(w.total == 2);
  CHECK(Sql(db_in(dir)).rows("SELECT ended_at_ms IS NOT NULL FROM jobs") == std::vector<std::string>{"1"});
}

TEST_CASE("PURGE cancels a queue's queued tasks, leaves the running one and other queues, and a replay keeps it") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    n.hello("A", 1);
    auto fast = spec("echo", "9", 0, 3);
    fast.queue = "fast";
    n.submit({spec("echo", "1", 0, 3), spec("echo", "2", 0, 3), spec("echo", "3", 0, 3)});
    REQUIRE(n.tasks_for("A").size() == 1);  // task 1 runs
    n.submit({fast});                       // task 4, in another queue
    const auto p = n.ask<proto::Purged>("C", proto::Purge{5, "default"});
    CHECK(p.req == 5);
    CHECK(p.queue == "default");
    CHECK(p.purged == 2);
    CHECK(n.task(2)->state == TaskState::Cancelled);
    CHECK(n.task(2)->outcome == "purged from queue default");
    CHECK(n.task(1)->state == TaskState::Running);
    CHECK(n.task(4)->state == TaskState::Queued);
    CHECK(n.ask<proto::Purged>("C", proto::Purge{6, "no-such-queue"}).purged == 0);
  }
  Node n(dir.path());
  CHECK(n.task(2)->state == TaskState::Cancelled);
  CHECK(n.task(3)->state == TaskState::Cancelled);
  CHECK(n.task(4)->state == TaskState::Queued);
}

TEST_CASE("delayed tasks keep their ready time through a replay") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    n.submit(
        {spec("echo", "\"in 60 s\"", 0, 3, 60000), spec("echo", "\"in 120 s\"", 0, 3, 120000), spec("echo", "\"in 1 h\"", 0, 3, 3600000)});
    REQUIRE(n.task(1)->state == TaskState::Delayed);
  }
  // Simulate a master that was down for 90 s: the wall-clock ready times in the journal come 90 s
  // closer. (The journal keeps wall-clock times; the test cannot wait, so it moves them.)
  Sql(db_in(dir), false).exec("UPDATE tasks SET ready_at_ms = ready_at_ms - 90000");
  // The new master's steady clock has nothing to do with the old one's.
  const TimePoint start = t0 + std::chrono::hours(5);
  Node n(dir.path(), patient_config(), start);
  // The first was due 30 s ago: queued at once. The others have 30 s and 3510 s left.
  CHECK(n.task(1)->state == TaskState::Queued);
  CHECK(n.task(2)->state == TaskState::Delayed);
  CHECK(n.task(3)->state == TaskState::Delayed);
  // Queued by replay is recorded as such.
  CHECK(Sql(db_in(dir)).rows("SELECT state FROM tasks ORDER BY id") == std::vector<std::string>{"queued", "delayed", "delayed"});
  n.hello("A", 10);
  auto first = n.tasks_for("A");
  REQUIRE(first.size() == 1);
  CHECK(first[0].task == 1);
  n.result("A", first[0], true, "1");
  // The journal's conversion may move a time earlier by the few ms this test took: 5 s of margin.
  for (auto step : {std::pair{25s, TaskId{2}}, std::pair{3505s, TaskId{3}}}) {
    const auto at = step.first;  // named copies: clang 14 cannot capture structured bindings
    const auto task = step.second;
    CAPTURE(at.count());
    n.now = start + at;
    n.step();
    CHECK(n.task(task)->state == TaskState::Delayed);
    CHECK(n.tasks_for("A").empty());
    n.now = start + at + 6s;
    n.step();
    auto due = n.tasks_for("A");
    REQUIRE(due.size() == 1);
    CHECK(due[0].task == task);
    n.result("A", due[0], true, "1");
  }
}

TEST_CASE("a delayed task replayed before its time waits for it") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    n.submit({spec("echo", "\"later\"", 0, 3, 60000)});
  }
  const TimePoint start = t0 - std::chrono::hours(3);
  Node n(dir.path(), patient_config(), start);
  n.hello("A", 1);
  n.now = start + 55s;
  n.step();
  CHECK(n.task(1)->state == TaskState::Delayed);
  CHECK(n.tasks_for("A").empty());
  n.now = start + 61s;
  n.step();
  CHECK(n.tasks_for("A").size() == 1);
  CHECK(n.task(1)->state == TaskState::Running);
}

// ---- crashes --------------------------------------------------------------------------------

TEST_CASE("a crash before or after any commit of a workload leaves exactly what was committed") {
  QuietLogs quiet;
  const auto dumps = committed_dumps();
  const std::size_t commits = dumps.size() - 1;
  REQUIRE(commits >= 10);
  // Every commit changes something, so that a crash before it is told apart from one after it.
  for (std::size_t k = 1; k <= commits; ++k) CHECK(dumps[k] != dumps[k - 1]);
  // Crash point c: before commit c/2 + 1 when even, right after it when odd; 2 * commits: after
  // the whole workload, with the journal never closed.
  for (std::size_t c = 0; c <= 2 * commits; ++c) {
    const std::size_t k = c / 2 + 1;
    const bool after = c % 2 == 1 || c == 2 * commits;
    const std::size_t expected = c == 2 * commits ? commits : after ? k : k - 1;
    CAPTURE(c);
    TempDir dir;
    const auto end = in_child([&](auto& say) {
      Node n(dir.path(), workload_config());
      std::size_t seen = 0;
      n.on_commit = [&](bool done) {
        if (!done) ++seen;
        if (seen == k && done == after) ::_exit(0);
      };
      workload(n);
      say("commits " + std::to_string(seen) + " failures " + std::to_string(n.commit_failures));
      return c == 2 * commits ? 0 : 3;  // 3: the crash point never came
    });
    REQUIRE_MESSAGE(end.exited(0), end.how());
    check_consistent(dir.path(), "crash point " + std::to_string(c));
    CHECK(Sql(db_in(dir)).dump() == dumps[expected]);
  }
}

TEST_CASE("a crash in the middle of writing a commit to the WAL leaves nothing of it") {
  QuietLogs quiet;
  // The first turns commit; the big submission is the commit that the crash cuts. Measure it.
  auto prefix = [](Node& n) {
    n.hello("W", 1);
    n.submit({spec("echo", "\"small\"")}, "prefix-key");
  };
  auto big = [](Node& n) {
    std::vector<proto::TaskSpec> tasks;
    for (int i = 0; i < 200; ++i) tasks.push_back(spec("square", "\"" + std::string(700, 'a' + static_cast<char>(i % 26)) + "\""));
    n.submit(tasks, "big-key");
  };
  std::string before, after;
  std::uint64_t wal_before = 0, growth = 0;
  {
    TempDir dir;
    Node n(dir.path());
    prefix(n);
    before = Sql(db_in(dir)).dump();
    wal_before = file_size(db_in(dir) + "-wal");
    big(n);
    after = Sql(db_in(dir)).dump();
    growth = file_size(db_in(dir) + "-wal") - wal_before;
  }
  REQUIRE(before != after);
  REQUIRE(growth > 20 * 4096);  // many WAL frames: the cuts below fall at many places in it
  const std::uint64_t frame = 4096 + 24;
  for (std::uint64_t cut : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{24}, frame - 1, frame, frame + 1, 5 * frame + 99, growth / 2,
                            growth - frame, growth - 1}) {
    CAPTURE(cut);
    TempDir dir;
    const auto end = in_child([&](auto& say) {
      Node n(dir.path());
      prefix(n);
      const auto wal = file_size(db_in(dir) + "-wal");
      say("wal " + std::to_string(wal));
      if (wal != wal_before) return 4;
      rlimit core{0, 0};
      ::setrlimit(RLIMIT_CORE, &core);
      n.on_commit = [&](bool done) {
        if (!done) limit_file_size(wal + cut);  // SIGXFSZ (default: terminate) at the first write past it
      };
      big(n);
      return 0;  // not reached unless the limit did not bite
    });
    REQUIRE_MESSAGE(end.killed_by(SIGXFSZ), end.how());
    check_consistent(dir.path(), "cut at " + std::to_string(cut));
    CHECK(Sql(db_in(dir)).dump() == before);
    // And the master goes on from there.
    Node n(dir.path());
    CHECK(n.loaded.jobs == 1);
    // The key is free again; after a crash ids continue past those reserved in DIR/ids.
    const auto again = n.submit({spec("echo", "1")}, "big-key");
    CHECK_FALSE(again.duplicate);
    CHECK(again.job > 1);
  }
  // The same with room for the whole commit: all of it is there (the cuts above were real ones).
  TempDir dir;
  const auto end = in_child([&](auto&) {
    Node n(dir.path());
    prefix(n);
    const auto wal = file_size(db_in(dir) + "-wal");
    n.on_commit = [&](bool done) {
      if (!done) limit_file_size(wal + growth);
    };
    big(n);
    return n.commit_failures;
  });
  REQUIRE_MESSAGE(end.exited(0), end.how());
  check_consistent(dir.path(), "no cut");
  CHECK(Sql(db_in(dir)).dump() == after);
}

TEST_CASE("a crash in the middle of a checkpoint loses nothing") {
  QuietLogs quiet;
  auto work = [](Node& n) {
    n.hello("W", 2);
    for (int j = 0; j < 5; ++j) {
      std::vector<proto::TaskSpec> tasks;
      for (int i = 0; i < 40; ++i) tasks.push_back(spec("square", "\"" + std::string(500, 'x') + std::to_string(i) + "\""));
      n.submit(tasks);
      for (auto& a : n.tasks_for("W")) n.result("W", a, true, std::to_string(a.task));
    }
  };
  std::string expected;
  std::uint64_t db_before = 0, growth = 0;
  {
    TempDir dir;
    Node n(dir.path());
    work(n);
    expected = Sql(db_in(dir)).dump();
    db_before = file_size(db_in(dir));
    n.journal->checkpoint();
    growth = file_size(db_in(dir)) - db_before;
    CHECK(Sql(db_in(dir)).dump() == expected);
  }
  REQUIRE(growth > 20 * 4096);
  for (std::uint64_t cut : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{4096}, growth / 2, growth - 1}) {
    CAPTURE(cut);
    TempDir dir;
    const auto end = in_child([&](auto& say) {
      Node n(dir.path());
      work(n);
      const auto db = file_size(db_in(dir));
      say("db " + std::to_string(db) + " wal " + std::to_string(file_size(db_in(dir) + "-wal")));
      if (db != db_before) return 4;
      rlimit core{0, 0};
      ::setrlimit(RLIMIT_CORE, &core);
      limit_file_size(db + cut);
      n.journal->checkpoint();
      return 0;
    });
    REQUIRE_MESSAGE(end.killed_by(SIGXFSZ), end.how());
    check_consistent(dir.path(), "checkpoint cut at " + std::to_string(cut));
    CHECK(Sql(db_in(dir)).dump() == expected);
  }
}

TEST_CASE("a commit the disk refuses is reported, leaves nothing behind, and later commits work") {
  QuietLogs quiet;
  TempDir dir;
  const auto end = in_child([&](auto& say) {
    ::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead
    Node n(dir.path());
    n.submit({spec("echo", "\"kept\"")}, "kept-key");
    const auto wal = file_size(db_in(dir) + "-wal");
    // 1. A small turn: its writes reach the disk only at COMMIT, which fails.
    limit_file_size(wal + 100);
    n.deliver("C", n.submit_message({spec("echo", "\"lost-small\"")}, "lost-key"));
    const auto unavailable = [&] {
      int count = 0;
      for (auto& e : n.take<proto::ErrorReply>("C")) count += e.code == ErrorCode::Unavailable && e.req == 7 ? 1 : 0;
      return std::to_string(count) + " of " + std::to_string(count + static_cast<int>(n.sent.size()));
    };
    say("small: failures " + std::to_string(n.commit_failures) + " unavailable " + unavailable() + " jobs " +
        std::to_string(n.state->counters().submitted) + " error " + n.commit_error);
    n.sent.clear();
    // 2. A turn bigger than SQLite's page cache: pages spill to the WAL during the transaction and
    // a statement fails in the middle; the statements after it must not go to the disk alone.
    limit_file_size(wal + 3 * 1024 * 1024);
    std::vector<proto::TaskSpec> tasks;
    for (int i = 0; i < 60; ++i) tasks.push_back(spec("echo", "\"lost-big-" + std::string(100000, 'x') + "\""));
    n.deliver("C", n.submit_message(tasks, "lost-key"));
    say("big: failures " + std::to_string(n.commit_failures) + " unavailable " + unavailable() + " jobs " +
        std::to_string(n.state->counters().submitted) + " error " + n.commit_error);
    n.sent.clear();
    // 3. The disk has room again: the next turn commits.
    limit_file_size(RLIM_INFINITY);
    const auto acc = n.submit({spec("echo", "\"after\"")}, "lost-key");
    say("after: failures " + std::to_string(n.commit_failures) + " job " + std::to_string(acc.job) + " duplicate " +
        std::to_string(acc.duplicate));
    return 0;
  });
  REQUIRE_MESSAGE(end.exited(0), end.how());
  const std::string said = end.said;
  INFO(said);
  // Each refused turn answers its SUBMIT with `unavailable`, and keeps nothing of it in memory.
  CHECK(said.find("small: failures 1 unavailable 1 of 1 jobs 1 error cannot write the journal " + db_in(dir) + ": ") != std::string::npos);
  CHECK(said.find("big: failures 2 unavailable 1 of 1 jobs 1 error cannot write the journal") != std::string::npos);
  // The job refused twice was never acknowledged: the key is free. Ids of refused submissions are
  // not given again (jobs 2 and 3, tasks 2 to 62 were undone).
  CHECK(said.find("after: failures 2 job 4 duplicate 0") != std::string::npos);
  check_consistent(dir.path(), "after refused commits");
  Sql sql(db_in(dir));
  CHECK(sql.number("SELECT count(*) FROM tasks WHERE args LIKE '%lost%'") == 0);
  CHECK(sql.rows("SELECT id, idempotency_key, total FROM jobs ORDER BY id") == std::vector<std::string>{"1|kept-key|1", "4|lost-key|1"});
  CHECK(sql.rows("SELECT id, job, args FROM tasks ORDER BY id") == std::vector<std::string>{"1|1|\"kept\"", "63|4|\"after\""});
}

TEST_CASE("a full disk costs only what it could not write: workers, leases and running attempts stay") {
  QuietLogs quiet;
  TempDir dir;
  const auto end = in_child([&](auto& say) {
    ::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead
    Node n(dir.path());
    n.hello("W", 2);
    const auto job = n.submit({spec("echo", "\"a\""), spec("echo", "\"b\"")}, "kept").job;
    const auto given = n.tasks_for("W");
    expect(given.size() == 2, "two tasks leased");
    // The disk is full: no file may grow.
    limit_file_size(1);
    n.deliver("C", n.submit_message({spec("echo", "\"lost\"")}, "refused"));
    const auto refused = n.take<proto::ErrorReply>("C");
    n.result("W", given[0], true, "\"A\"");
    const auto early_acks = n.take<proto::Ack>("W").size();
    n.deliver("W", proto::Heartbeat{});
    const auto not_allowed = n.take<proto::ErrorReply>("W").size();
    say("refused " + std::to_string(refused.size()) + " code " + (refused.empty() ? "-" : std::string(error_code_name(refused[0].code))) +
        " failures " + std::to_string(n.commit_failures) + " early acks " + std::to_string(early_acks) + " not_allowed " +
        std::to_string(not_allowed) + " workers " + std::to_string(n.state->workers()) + " second running " +
        std::to_string(n.task(given[1].task)->state == TaskState::Running));
    // Space returns: the next turn writes what the refused ones could not, then acknowledges.
    limit_file_size(RLIM_INFINITY);
    n.now += 1s;
    n.step();
    const auto acks = n.take<proto::Ack>("W");
    n.result("W", given[1], true, "\"B\"");
    const auto o = n.wait(job);
    std::string values;
    for (const auto& x : o.outcomes) values += x.value + (x.status == TaskState::Done ? "" : "!") + " ";
    say("after: acks " + std::to_string(acks.size()) + " first acked " +
        std::to_string(!acks.empty() && acks[0].tasks == std::vector<TaskId>{given[0].task}) + " outcomes " + values + "submitted " +
        std::to_string(n.state->counters().submitted));
    return 0;
  });
  REQUIRE_MESSAGE(end.exited(0), end.how());
  INFO(end.said);
  CHECK(end.said.find("refused 1 code unavailable failures 3") != std::string::npos);  // three turns while full
  // Held, not lost: the result is acknowledged once it is on disk; the worker never had to say HELLO.
  CHECK(end.said.find("early acks 0 not_allowed 0 workers 1 second running 1") != std::string::npos);
  CHECK(end.said.find("after: acks 1 first acked 1 outcomes \"A\" \"B\" submitted 2") != std::string::npos);
  check_consistent(dir.path(), "after a full disk");
  Sql sql(db_in(dir));
  CHECK(sql.number("SELECT count(*) FROM tasks WHERE args LIKE '%lost%'") == 0);
  CHECK(sql.rows("SELECT id, state, outcome FROM tasks ORDER BY id") == std::vector<std::string>{"1|done|\"A\"", "2|done|\"B\""});
}

TEST_CASE("commit rules: a task reaches a worker only once its creation is committed, replies only after the commit") {
  QuietLogs quiet;
  TempDir dir;
  Node n(dir.path());
  n.hello("W", 4);
  // A task created earlier (durable), and one created in the same turn as its dispatch.
  const auto old = n.submit({spec("echo", "1")});
  REQUIRE(n.tasks_for("W").size() == 1);
  n.state->receive("C", Expected<proto::Message>(n.submit_message({spec("echo", "2")}, "k")), n.now);
  n.state->turn(n.now);
  std::vector<MasterState::Outgoing> now_out = n.state->take_outbox(), after = n.state->commit(n.now);
  const auto count = [](const std::vector<MasterState::Outgoing>& v, auto pred) { return std::count_if(v.begin(), v.end(), pred); };
  const auto is_tasks = [](const MasterState::Outgoing& o) { return std::holds_alternative<proto::Tasks>(o.message); };
  const auto is_accepted = [](const MasterState::Outgoing& o) { return std::holds_alternative<proto::Accepted>(o.message); };
  CHECK(count(now_out, is_tasks) == 0);     // the new task's id is not durable yet
  CHECK(count(now_out, is_accepted) == 0);  // nor is the submission
  CHECK(count(after, is_tasks) == 1);
  CHECK(count(after, is_accepted) == 1);
  // A lease of a task already durable leaves at once: fail the first attempt and let it be retried.
  n.result("W", old.first_task, 1, false, "\"again\"");
  n.now += 10s;  // past its backoff
  n.state->turn(n.now);
  now_out = n.state->take_outbox();
  after = n.state->commit(n.now);
  CHECK(count(now_out, is_tasks) == 1);
  CHECK(count(after, is_tasks) == 0);
}

TEST_CASE("a refused turn: a repeated SUBMIT gets no acknowledgement either, a cancelled job stays closed") {
  QuietLogs quiet;
  TempDir dir;
  const auto end = in_child([&](auto& say) {
    ::signal(SIGXFSZ, SIG_IGN);
    Node n(dir.path());
    const auto open_job = n.submit({spec("echo", "1")}, "open", 0, 0, /*more=*/true).job;
    limit_file_size(1);
    // One turn: a SUBMIT and its resend (same key), a batch for the open job, and its CANCEL.
    const auto again = n.submit_message({spec("echo", "2")}, "twice");
    n.state->receive("C", Expected<proto::Message>(again), n.now);
    n.state->receive("C", Expected<proto::Message>(again), n.now);
    n.state->receive("C", Expected<proto::Message>(n.submit_message({spec("echo", "3")}, "", open_job, 1, true)), n.now);
    n.state->receive("C", Expected<proto::Message>(proto::Cancel{8, open_job}), n.now);
    n.step();
    int unavailable = 0;
    for (const auto& e : n.take<proto::ErrorReply>("C")) unavailable += e.code == ErrorCode::Unavailable ? 1 : 0;
    const auto accepted = n.take<proto::Accepted>("C").size();
    limit_file_size(RLIM_INFINITY);
    n.now += 1s;
    // Space again: the cancelled job takes no more batches; the refused job can be submitted anew.
    const auto more = n.ask<proto::ErrorReply>("C", n.submit_message({spec("echo", "4")}, "", open_job, 1, true));
    const auto fresh = n.submit({spec("echo", "2")}, "twice");
    say("unavailable " + std::to_string(unavailable) + " accepted " + std::to_string(accepted) + " more " +
        std::string(error_code_name(more.code)) + " fresh duplicate " + std::to_string(fresh.duplicate));
    return 0;
  });
  REQUIRE_MESSAGE(end.exited(0), end.how());
  INFO(end.said);
  CHECK(end.said.find("unavailable 4 accepted 0 more not_allowed fresh duplicate 0") != std::string::npos);
  check_consistent(dir.path(), "after a refused turn");
}

TEST_CASE("the journal and its directory are private whatever the umask") {
  QuietLogs quiet;
  TempDir dir;
  const auto old = ::umask(0);
  {
    Node n(dir.path() + "/data");
    n.submit({spec("echo", "1")});
  }
  ::umask(old);
  struct stat st {};
  REQUIRE(::stat((dir.path() + "/data").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat((dir.path() + "/data/journal.db").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("ids are never given twice, even when the journal lost its last transactions") {
  QuietLogs quiet;
  TempDir dir;
  // A master that crashes (the child ends with _exit) after handing out ids.
  const auto end = in_child([&](auto& say) {
    Node n(dir.path());
    const auto a = n.submit({spec("echo", "1"), spec("echo", "2")});
    say("job " + std::to_string(a.job) + " last task " + std::to_string(a.first_task + a.count - 1));
    ::_exit(0);  // here, with the journal open: a crash
    return 1;
  });
  REQUIRE_MESSAGE(end.exited(0), end.how());
  REQUIRE(end.said == "job 1 last task 2\n");
  // A WAL cut short: every transaction is gone (none was checkpointed into the database file).
  REQUIRE(::truncate((db_in(dir) + "-wal").c_str(), 0) == 0);
  JobId next_job = 0;
  TaskId next_task = 0;
  {
    Node again(dir.path());
    CHECK(again.loaded.tasks == 0);
    const auto b = again.submit({spec("echo", "3")});
    CHECK(b.first_task > 2);
    CHECK(b.job > 1);
    next_job = b.job + 1;
    next_task = b.first_task + 1;
  }
  // A clean stop and start continues right after the last ids, with no gap.
  Node third(dir.path());
  const auto c = third.submit({spec("echo", "4")});
  CHECK(c.job == next_job);
  CHECK(c.first_task == next_task);
}

// ---- exactly-once results -----------------------------------------------------------------------

TEST_CASE("a result delivered twice is recorded once") {
  QuietLogs quiet;
  TempDir dir;
  MasterConfig c = patient_config();
  c.worker_timeout = 3s;
  Node n(dir.path(), c);
  n.hello("W", 1);
  n.submit({spec("echo", "1"), spec("echo", "2")});
  auto a = n.tasks_for("W");
  REQUIRE(a.size() == 1);
  SUBCASE("on the same connection") {
    n.result("W", a[0], true, "\"first\"");
    n.result("W", a[0], true, "\"second\"");
    CHECK(n.state->counters().unheld_results == 1);
    CHECK(n.state->counters().stale_results == 0);
  }
  SUBCASE("again after a reconnect that still lists it as running") {
    n.result("W", a[0], true, "\"first\"");
    REQUIRE(n.take<proto::Ack>("W").size() == 1);
    n.hello("W2", 1, {{a[0].task, a[0].attempt}}, "w-W");  // the ACK was lost; it says it still runs it
    n.result("W2", a[0], true, "\"second\"");
    CHECK(n.state->counters().stale_results == 1);
    CHECK(n.take<proto::Ack>("W2").size() == 1);  // acknowledged, so it stops resending
  }
  SUBCASE("from a worker presumed dead whose task went to another") {
    n.hello("V", 1);
    REQUIRE(n.tasks_for("V").size() == 1);  // the other task
    for (int i = 0; i < 40; ++i) {
      n.now += 100ms;
      n.deliver("V", proto::Heartbeat{});
    }
    REQUIRE(n.state->counters().workers_lost == 1);
    auto retry = n.tasks_for("V");
    REQUIRE(retry.empty());  // V's only slot is busy
    n.result("V", n.state->tasks().last_id(), 1, true, "\"v-other\"");
    retry = n.tasks_for("V");
    REQUIRE(retry.size() == 1);
    REQUIRE(retry[0].task == a[0].task);
    REQUIRE(retry[0].attempt == 2);
    // The presumed dead worker comes back, says it runs attempt 1 and sends its result: too late.
    n.hello("W", 1, {{a[0].task, 1}});
    n.result("W", a[0], true, "\"late\"");
    CHECK(n.state->counters().stale_results == 1);
    CHECK(n.task(a[0].task)->state == TaskState::Running);
    n.result("V", retry[0], true, "\"first\"");
    n.result("V", retry[0], true, "\"second\"");
    CHECK(n.state->counters().unheld_results == 1);
  }
  const Task* t = n.task(a[0].task);
  REQUIRE(t);
  CHECK(t->state == TaskState::Done);
  CHECK(t->outcome == "\"first\"");
  const auto w = n.wait(1);
  CHECK(std::count_if(w.outcomes.begin(), w.outcomes.end(), [&](auto& o) { return o.task == a[0].task; }) == 1);
  Sql sql(db_in(dir));
  CHECK(sql.rows("SELECT state, outcome FROM tasks WHERE id = " + std::to_string(a[0].task)) == std::vector<std::string>{"done|\"first\""});
  CHECK(sql.number("SELECT count(*) FROM tasks WHERE finished_seq >= 0 AND id = " + std::to_string(a[0].task)) == 1);
  CHECK(sql.broken().empty());
}

TEST_CASE("a result for an attempt that replay ended is dropped - the task runs again and finishes once") {
  QuietLogs quiet;
  TempDir dir;
  proto::Assignment a;
  {
    Node n(dir.path());
    n.hello("W", 1);
    n.submit({spec("echo", "1")});
    auto held = n.tasks_for("W");
    REQUIRE(held.size() == 1);
    a = held[0];
  }
  Node n(dir.path());
  // The worker reconnects to the new master, still running attempt 1, and sends its result.
  n.hello("W", 1, {{a.task, a.attempt}});
  CHECK(n.tasks_for("W").empty());  // its slot is taken by the attempt it says it runs
  n.result("W", a, true, "\"from before\"");
  CHECK(n.state->counters().stale_results == 1);
  const Task* t = n.task(a.task);
  REQUIRE(t);
  CHECK(t->outcome.empty());
  auto again = n.tasks_for("W");
  REQUIRE(again.size() == 1);
  CHECK(again[0].attempt == 2);
  CHECK(n.task(a.task)->state == TaskState::Running);
  n.result("W", again[0], true, "\"now\"");
  n.result("W", again[0], true, "\"now again\"");
  CHECK(n.state->counters().unheld_results == 1);
  CHECK(Sql(db_in(dir)).rows("SELECT state, attempts, outcome, finished_seq FROM tasks") == std::vector<std::string>{"done|2|\"now\"|0"});
  CHECK(n.wait(1).outcomes.size() == 1);
}

// ---- result TTL ---------------------------------------------------------------------------------

TEST_CASE("results past their TTL leave the journal - replay does not bring them back and the key is free") {
  QuietLogs quiet;
  TempDir dir;
  MasterConfig c = patient_config();
  c.result_ttl = 10s;
  JobId gone = 0;
  {
    Node n(dir.path(), c);
    const auto stays = n.submit({spec("nobody-runs-this", "1")}, "", 0, 0, true);  // never ends
    n.hello("W", 5);
    const auto acc = n.submit({spec("echo", "1"), spec("echo", "2"), spec("echo", "3")}, "ttl-key");
    gone = acc.job;
    REQUIRE(gone == stays.job + 1);
    for (auto& a : n.tasks_for("W")) n.result("W", a, true, "0");
    Sql sql(db_in(dir));
    auto rows = [&](const char* table, const char* column) {
      return sql.number(std::string("SELECT count(*) FROM ") + table + " WHERE " + column + " = " + std::to_string(gone));
    };
    n.advance(9s);
    CHECK(rows("jobs", "id") == 1);
    CHECK(rows("batches", "job") == 1);
    CHECK(rows("tasks", "job") == 3);
    n.advance(2s);
    CHECK(n.state->counters().expired_jobs == 1);
    CHECK(rows("jobs", "id") == 0);
    CHECK(rows("batches", "job") == 0);
    CHECK(rows("tasks", "job") == 0);
    // The other job is untouched.
    CHECK(sql.number("SELECT count(*) FROM tasks") == 1);
    CHECK(sql.number("SELECT count(*) FROM jobs") == 1);
    CHECK(sql.broken().empty());
  }
  Node n(dir.path(), c);
  CHECK(n.loaded.jobs == 1);
  CHECK(n.loaded.tasks == 1);
  CHECK(n.ask<proto::ErrorReply>("C", proto::Wait{1, gone, 0, 10, 0, {}}).code == ErrorCode::UnknownJob);
  const auto again = n.submit({spec("echo", "1")}, "ttl-key");
  CHECK_FALSE(again.duplicate);
  // A new job, with ids never handed out before (not those of the expired job).
  CHECK(again.job > gone);
  CHECK(again.first_task > 4);
}

TEST_CASE("an idempotency key reused for another job is refused after a replay too - and journals without digests still load") {
  QuietLogs quiet;
  TempDir dir;
  JobId job = 0;
  {
    Node n(dir.path());
    job = n.submit({spec("square", "1"), spec("square", "2")}, "reuse-key").job;
    CHECK(Sql(db_in(dir)).number("SELECT count(*) FROM jobs WHERE digest LIKE '2 %'") == 1);
  }
  {
    Node n(dir.path());
    const auto e = n.ask<proto::ErrorReply>("C", n.submit_message({spec("square", "1"), spec("square", "3")}, "reuse-key"));
    CHECK(e.code == ErrorCode::KeyReused);
    CHECK(e.message.find("was used for a different job (" + std::to_string(job) + ")") != std::string::npos);
    const auto again = n.submit({spec("square", "1"), spec("square", "2")}, "reuse-key");
    CHECK(again.duplicate);
    CHECK(again.job == job);
  }
  // A journal made before the digest column: the column is added, its jobs' keys match anything.
  {
    Sql sql(db_in(dir), false);
    sql.exec("ALTER TABLE jobs DROP COLUMN digest");
  }
  {
    Node n(dir.path());
    CHECK(Sql(db_in(dir)).number("SELECT count(*) FROM pragma_table_info('jobs') WHERE name = 'digest'") == 1);
    const auto old = n.submit({spec("echo", "other")}, "reuse-key");
    CHECK(old.duplicate);
    CHECK(old.job == job);
    const auto fresh = n.submit({spec("echo", "x")}, "new-key");
    CHECK_FALSE(fresh.duplicate);
  }
  Node n(dir.path());
  CHECK(n.ask<proto::ErrorReply>("C", n.submit_message({spec("echo", "y")}, "new-key")).code == ErrorCode::KeyReused);
}

TEST_CASE("a job that ended before a restart expires on time after it") {
  QuietLogs quiet;
  TempDir dir;
  MasterConfig c = patient_config();
  c.result_ttl = 60s;
  {
    Node n(dir.path(), c);
    const auto acc = n.submit({spec("echo", "1")});
    n.ask<proto::Cancelled>("C", proto::Cancel{1, acc.job});  // ends now
  }
  // Down for 30 s: the end time in the journal comes 30 s closer.
  Sql(db_in(dir), false).exec("UPDATE jobs SET ended_at_ms = ended_at_ms - 30000");
  const TimePoint start = t0 + std::chrono::hours(7);
  Node n(dir.path(), c, start);
  CHECK(n.loaded.jobs == 1);
  n.now = start + 25s;  // 55 s after it ended (less the ms this test took)
  n.step();
  CHECK(n.jobs() == 1);
  n.now = start + 31s;
  n.step();
  CHECK(n.jobs() == 0);
  CHECK(Sql(db_in(dir)).number("SELECT count(*) FROM tasks") == 0);
}

// ---- bad disk, bad journal ----------------------------------------------------------------------

TEST_CASE("a directory in use by another journal is refused until it is closed") {
  TempDir dir;
  auto first = std::make_unique<Journal>(dir.path());
  try {
    Journal second(dir.path());
    FAIL("a second journal opened the same directory");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(what.find("in use by another master") != std::string::npos);
    CHECK(what.find("(pid " + std::to_string(::getpid()) + ")") != std::string::npos);
    CHECK(what.find(dir.path()) != std::string::npos);
  }
  first.reset();
  CHECK_NOTHROW(Journal again(dir.path()));
  // A crashed holder does not keep it: its lock goes with the process.
  const auto end = in_child([&](auto&) {
    auto* leaked = new Journal(dir.path());  // never closed
    (void)leaked;
    return 0;
  });
  REQUIRE(end.exited(0));
  CHECK_NOTHROW(Journal after_crash(dir.path()));
}

TEST_CASE("a file that is not a journal is refused, left as it is, and the message says how to move it aside") {
  TempDir dir;
  std::string garbage;
  for (int i = 0; i < 300; ++i) garbage += "this is not a database, it is a shopping list\n";
  {
    std::ofstream f(db_in(dir), std::ios::binary);
    f << garbage;
  }
  try {
    Journal j(dir.path());
    FAIL("a garbage journal was opened");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(what.find(db_in(dir)) != std::string::npos);
    CHECK(what.find("mv " + db_in(dir) + " " + db_in(dir) + ".broken") != std::string::npos);
  }
  std::ifstream f(db_in(dir), std::ios::binary);
  CHECK(std::string(std::istreambuf_iterator<char>(f), {}) == garbage);
  // Moved aside as told, a new journal starts (the failed open did not keep the directory locked).
  fs::rename(db_in(dir), db_in(dir) + ".broken");
  CHECK_NOTHROW(Journal j(dir.path()));
}

TEST_CASE("a damaged journal or one of a newer schema is refused with a clear message") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    for (int i = 0; i < 5; ++i) n.submit({spec("echo", "\"" + std::string(3000, 'd') + "\"")});
    n.journal->checkpoint();
  }
  SUBCASE("a page overwritten") {
    const auto root = Sql(db_in(dir)).number("SELECT rootpage FROM sqlite_schema WHERE name = 'tasks'");
    {
      std::fstream f(db_in(dir), std::ios::binary | std::ios::in | std::ios::out);
      f.seekp((root - 1) * 4096);  // the tasks table's root page
      const std::string junk(4096, '\xA5');
      f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
    }
    try {
      Journal j(dir.path());
      FAIL("a damaged journal was opened");
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      CHECK(what.find(db_in(dir)) != std::string::npos);
      CHECK(what.find("mv ") != std::string::npos);
    }
  }
  SUBCASE("a newer schema") {
    Sql(db_in(dir), false).exec("UPDATE meta SET value = 99 WHERE key = 'schema_version'");
    try {
      Journal j(dir.path());
      FAIL("a journal of a newer schema was opened");
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      CHECK(what.find("schema version 99") != std::string::npos);
      CHECK(what.find("newer taskmaster") != std::string::npos);
    }
  }
  SUBCASE("journal.db is a directory") {
    fs::remove(db_in(dir));
    fs::create_directory(db_in(dir));
    try {
      Journal j(dir.path());
      FAIL("a directory was opened as the journal");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).find(db_in(dir)) != std::string::npos);
    }
    // Fixed, it opens: the failed attempt released the lock.
    fs::remove(db_in(dir));
    CHECK_NOTHROW(Journal j(dir.path()));
  }
}

// A replay that cannot read its journal whole stops: recover() throws a message naming the journal
// and how to move it aside (the CLI prints it and exits 5), never a master with part of its tasks.
std::string replay_failure(const std::string& dir) {
  Journal j(dir);
  MasterState state(patient_config(), "replay", t0);
  try {
    (void)state.recover(j, t0);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("a journal row with a state this version does not know stops the replay with a clear message") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    n.submit({spec("echo", "1"), spec("echo", "2"), spec("echo", "3")});
  }
  Sql(db_in(dir), false).exec("UPDATE tasks SET state = 'paused' WHERE id = 2");
  const std::string what = replay_failure(dir.path());
  CHECK(what.find(db_in(dir)) != std::string::npos);
  CHECK(what.find("task 2 has state 'paused'") != std::string::npos);
  CHECK(what.find("mv " + db_in(dir)) != std::string::npos);
  // Nothing was changed by the failed replay: put right, the journal replays whole.
  Sql(db_in(dir), false).exec("UPDATE tasks SET state = 'queued' WHERE id = 2");
  const auto r = replay(dir.path());
  CHECK(r.loaded.tasks == 3);
  CHECK(r.broken.empty());
}

TEST_CASE("a read error in the middle of the replay stops it: no master starts with part of its journal") {
  QuietLogs quiet;
  TempDir dir;
  {
    Node n(dir.path());
    for (int i = 0; i < 50; ++i) n.submit({spec("echo", std::to_string(i))});
  }
  // The tasks table becomes a view whose rows past the 20th fail to read (SQLite's abs() of the
  // smallest integer is an error at step time), with triggers so that the master's statements
  // still prepare. The replay meets the error after reading 20 tasks.
  {
    Sql sql(db_in(dir), false);
    sql.exec("ALTER TABLE tasks RENAME TO real_tasks");
    sql.exec(
        "CREATE VIEW tasks AS SELECT id, job, function, queue, args, priority, timeout_ms, max_attempts, backoff_ms, state, attempts,"
        " ready_at_ms, outcome, worker, CASE WHEN id > 20 THEN abs(-9223372036854775807 - 1) ELSE finished_seq END AS finished_seq"
        " FROM real_tasks");
    for (const char* op : {"INSERT", "UPDATE", "DELETE"})
      sql.exec(std::string("CREATE TRIGGER tasks_") + op + " INSTEAD OF " + op + " ON tasks BEGIN SELECT 1; END");
    CHECK(sql.rows("SELECT count(*) FROM real_tasks") == std::vector<std::string>{"50"});
  }
  const std::string what = replay_failure(dir.path());
  CHECK(what.find("cannot read a task from journal " + db_in(dir)) != std::string::npos);
  CHECK(what.find("integer overflow") != std::string::npos);
  CHECK(what.find("part of its journal") != std::string::npos);
  CHECK(what.find("mv " + db_in(dir)) != std::string::npos);
}

TEST_CASE("a data directory that cannot be made or written is refused clearly") {
  TempDir dir;
  SUBCASE("a path through a file") {
    { std::ofstream f(dir.path() + "/file"); }
    try {
      Journal j(dir.path() + "/file/data");
      FAIL("a journal under a file");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).find("cannot create data directory " + dir.path() + "/file/data") != std::string::npos);
    }
  }
  SUBCASE("no write permission") {
    const std::string parent = dir.path() + "/read-only";
    fs::create_directory(parent);
    fs::permissions(dir.path(),
                    fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec |
                                fs::perms::others_read | fs::perms::others_exec);
    // Root ignores permissions: check as an ordinary user, in a child that gives root up.
    const auto end = in_child([&](auto& say) {
      if (::geteuid() == 0 && ::setresuid(65534, 65534, 65534) != 0) {  // "nobody"
        say("cannot leave root");
        return 5;
      }
      for (const std::string& d : {parent + "/data", parent}) {
        try {
          Journal j(d);
          say("opened " + d);
        } catch (const std::runtime_error& e) {
          say(e.what());
        }
      }
      return 0;
    });
    if (end.exited(5)) {
      MESSAGE("running as root and cannot drop privileges: permission check skipped");
      return;
    }
    REQUIRE_MESSAGE(end.exited(0), end.how());
    INFO(end.said);
    CHECK(end.said.find("cannot create data directory " + parent + "/data: Permission denied") != std::string::npos);
    CHECK(end.said.find("cannot open " + parent + "/lock: Permission denied (is " + parent + " writable?)") != std::string::npos);
    CHECK(end.said.find("opened") == std::string::npos);
  }
}

// ---- size ---------------------------------------------------------------------------------------

TEST_CASE("the journal grows with its data and stays bounded when results expire") {
  QuietLogs quiet;
  TempDir dir;
  MasterConfig c = patient_config();
  c.result_ttl = 1s;
  Node n(dir.path(), c);
  n.hello("W", 100);
  const auto empty = n.journal->bytes();
  CHECK(empty > 0);
  const std::string args = "\"" + std::string(8000, 'p') + "\"";
  std::vector<proto::TaskSpec> tasks(100, spec("echo", args));
  std::uint64_t after_first = 0, at10 = 0, at40 = 0, db10 = 0, db40 = 0;
  for (int cycle = 1; cycle <= 40; ++cycle) {
    n.submit(tasks);
    if (cycle == 1) after_first = n.journal->bytes();
    proto::Results r;
    for (auto& a : n.tasks_for("W")) r.results.push_back({a.task, a.attempt, true, "1"});
    REQUIRE(r.results.size() == 100);
    n.deliver("W", r);
    n.advance(1100ms);  // the job expires
    REQUIRE(n.state->tasks().size() == 0);
    if (cycle == 10) at10 = n.journal->bytes(), db10 = file_size(db_in(dir));
    if (cycle == 40) at40 = n.journal->bytes(), db40 = file_size(db_in(dir));
  }
  CHECK(n.commit_failures == 0);
  INFO("bytes: empty ", empty, ", after the first submission ", after_first, ", after cycle 10 ", at10, ", after cycle 40 ", at40,
       " (database ", db10, " / ", db40, ")");
  CHECK(after_first > empty + 100 * 8000);  // the args are in it
  CHECK(at40 < at10 * 3 / 2);
  CHECK(db40 < db10 * 3 / 2 + 100 * 4096);
  CHECK(Sql(db_in(dir)).number("SELECT count(*) FROM tasks") == 0);
  // A checkpoint writes the WAL back and truncates it.
  const auto wal = file_size(db_in(dir) + "-wal");
  CHECK(wal > 0);
  n.journal->checkpoint();
  CHECK(file_size(db_in(dir) + "-wal") == 0);
  CHECK(n.journal->bytes() < at40);
  CHECK(n.journal->bytes() <= file_size(db_in(dir)) + file_size(db_in(dir) + "-shm"));
}

TEST_CASE("a checkpoint with a transaction open waits for the commit") {
  TempDir dir;
  Journal j(dir.path());
  TaskTable tasks;
  Task t;
  t.id = 1;
  t.job = 1;
  t.args = "1";
  j.task_saved(t, tasks.names(), -1, t0, true);
  CHECK(j.dirty());
  j.checkpoint();  // does nothing: the change is neither committed nor lost
  CHECK(j.dirty());
  REQUIRE(j.commit());
  CHECK_FALSE(j.dirty());
  CHECK(Sql(db_in(dir)).number("SELECT count(*) FROM tasks") == 1);
  j.checkpoint();
  CHECK(file_size(db_in(dir) + "-wal") == 0);
  CHECK(Sql(db_in(dir)).number("SELECT count(*) FROM tasks") == 1);
}

}  // TEST_SUITE

}  // namespace taskmaster
