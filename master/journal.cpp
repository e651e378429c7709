#include "master/journal.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "common/log.h"

namespace taskmaster {

namespace fs = std::filesystem;
using namespace std::chrono;

namespace {

constexpr int kSchemaVersion = 1;

// The schema (docs/DURABILITY.md). Times are wall-clock milliseconds since the epoch, so that
// they keep their meaning across restarts; the master's own clock is monotonic.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY,
  idempotency_key TEXT,
  total INTEGER NOT NULL,
  sealed INTEGER NOT NULL,
  cancelled INTEGER NOT NULL,
  ended_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS batches (
  job INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  first_task INTEGER NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (job, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY,
  job INTEGER NOT NULL,
  function TEXT NOT NULL,
  queue TEXT NOT NULL,
  args TEXT NOT NULL,
  priority INTEGER NOT NULL,
  timeout_ms INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  backoff_ms INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  ready_at_ms INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  worker TEXT NOT NULL,
  finished_seq INTEGER NOT NULL
);
)sql";

std::int64_t wall_ms(TimePoint t, TimePoint now) {
  const auto wall_now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  return wall_now + duration_cast<milliseconds>(t - now).count();
}

TimePoint steady_of(std::int64_t ms, TimePoint now) {
  const auto wall_now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  return now + milliseconds(ms - wall_now);
}

std::string text(sqlite3_stmt* s, int col) {
  const auto* p = sqlite3_column_text(s, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, col))) : std::string();
}

void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

std::string move_aside_hint(const std::string& path) {
  return " Move it aside to start afresh (its tasks and results are then lost to this master): mv " + path + " " + path +
         ".broken; rm -f " + path + "-wal " + path + "-shm";
}

}  // namespace

std::string default_data_dir() {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) return std::string(x) + "/taskmaster";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.local/state/taskmaster";
  return ".local/state/taskmaster";
}

Journal::Journal(const std::string& dir) : dir_(dir), path_(dir + "/journal.db") {
  std::error_code ec;
  // The directory and the journal hold every task's args and results: 0700 and 0600 whatever the
  // umask. SQLite gives the WAL and SHM files the database file's mode.
  const bool made = fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("cannot create data directory " + dir_ + ": " + ec.message());
  if (made && ::chmod(dir_.c_str(), 0700) != 0) log_warn("cannot make ", dir_, " private (chmod 0700): ", std::strerror(errno));
  // One master per directory: an exclusive lock that the kernel releases when the holder dies.
  const std::string lock_path = dir_ + "/lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) throw std::runtime_error("cannot open " + lock_path + ": " + std::strerror(errno) + " (is " + dir_ + " writable?)");
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    (void)::pread(lock_fd_, pid, sizeof pid - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    std::string holder(pid);
    holder.erase(std::remove(holder.begin(), holder.end(), '\n'), holder.end());
    throw std::runtime_error("data directory " + dir_ + " is in use by another master" + (holder.empty() ? "" : " (pid " + holder + ")") +
                             "; stop it first, or give this one another --data-dir");
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) < 0)
    log_warn("cannot write the pid into ", lock_path, ": ", std::strerror(errno));

  const bool existed = fs::exists(path_, ec);
  if (const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600); fd >= 0) {
    struct stat st{};
    if (::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0 && ::fchmod(fd, 0600) == 0)
      log_warn("journal ", path_, " could be read by others; it is now 0600");
    ::close(fd);
  }
  if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close_v2(db_);  // a failed constructor runs no destructor: give back the lock here
    db_ = nullptr;
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw std::runtime_error("cannot open journal " + path_ + ": " + why);
  }
  try {
    // Durability: WAL, and synchronous=FULL so that every COMMIT fsyncs the WAL before returning.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("PRAGMA foreign_keys=OFF");
    exec("PRAGMA wal_autocheckpoint=4000");
    exec("PRAGMA journal_size_limit=67108864");  // the WAL shrinks back to 64 MiB after a checkpoint
    if (existed) {
      sqlite3_stmt* check = prepare("PRAGMA quick_check");
      std::string verdict = sqlite3_step(check) == SQLITE_ROW ? text(check, 0) : std::string(sqlite3_errmsg(db_));
      sqlite3_finalize(check);
      if (verdict != "ok") throw std::runtime_error("journal " + path_ + " is damaged (" + verdict + ")." + move_aside_hint(path_));
    }
    exec(kSchema);
    sqlite3_stmt* v = prepare("SELECT value FROM meta WHERE key = 'schema_version'");
    int version = sqlite3_step(v) == SQLITE_ROW ? sqlite3_column_int(v, 0) : 0;
    sqlite3_finalize(v);
    if (version == 0) {
      exec(("INSERT INTO meta(key, value) VALUES ('schema_version', " + std::to_string(kSchemaVersion) + ")").c_str());
    } else if (version > kSchemaVersion) {
      throw std::runtime_error("journal " + path_ + " has schema version " + std::to_string(version) +
                               ", newer than this taskmaster understands (" + std::to_string(kSchemaVersion) + "); run a newer taskmaster");
    }
    put_task_ = prepare(
        "INSERT OR REPLACE INTO tasks(id, job, function, queue, args, priority, timeout_ms, max_attempts, backoff_ms, state,"
        " attempts, ready_at_ms, outcome, worker, finished_seq) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)");
    // A task's own fields never change after it is added; its state changes touch only these.
    upd_task_ = prepare(
        "UPDATE tasks SET state = ?2, attempts = ?3, ready_at_ms = ?4, outcome = ?5, worker = ?6, finished_seq = ?7 WHERE id = ?1");
    del_task_ = prepare("DELETE FROM tasks WHERE id = ?1");
    put_job_ = prepare("INSERT OR REPLACE INTO jobs(id, idempotency_key, total, sealed, cancelled, ended_at_ms) VALUES (?1,?2,?3,?4,?5,?6)");
    put_batch_ = prepare("INSERT OR REPLACE INTO batches(job, seq, first_task, count) VALUES (?1,?2,?3,?4)");
    del_job_ = prepare("DELETE FROM jobs WHERE id = ?1");
    del_batches_ = prepare("DELETE FROM batches WHERE job = ?1");
    // The ids handed out so far, so that ids of expired (deleted) jobs and tasks are never reused.
    put_next_ = prepare(
        "INSERT INTO meta(key, value) VALUES ('next_job', ?1), ('next_task', ?2)"
        " ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)");
    reserved_ = read_reserved();
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (auto** s : {&put_task_, &upd_task_, &del_task_, &put_job_, &put_batch_, &del_job_, &del_batches_, &put_next_}) {
      sqlite3_finalize(*s);
      *s = nullptr;
    }
    sqlite3_close_v2(db_);
    db_ = nullptr;
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (msg.find(path_) != std::string::npos) throw;
    throw std::runtime_error("cannot use journal " + path_ + ": " + msg + "." + move_aside_hint(path_));
  }
}

Journal::~Journal() {
  for (auto* s : {put_task_, upd_task_, del_task_, put_job_, put_batch_, del_job_, del_batches_, put_next_}) sqlite3_finalize(s);
  if (db_) {
    const bool clean = !in_transaction_;
    if (in_transaction_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    // A clean stop: the journal holds every id handed out, so the next start continues from it
    // rather than from the reservation.
    if (clean && sqlite3_close(db_) == SQLITE_OK) {
      db_ = nullptr;
      (void)write_reserved({next_job_, next_task_, true});
    }
    if (db_) sqlite3_close_v2(db_);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

void Journal::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw std::runtime_error(msg);
  }
}

sqlite3_stmt* Journal::prepare(const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    throw std::runtime_error(std::string("cannot prepare a journal statement: ") + sqlite3_errmsg(db_));
  return s;
}

void Journal::begin() {
  if (in_transaction_) return;
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK && failure_.empty()) failure_ = sqlite3_errmsg(db_);
  in_transaction_ = true;
}

namespace {

// Runs a write statement; the first failure of the transaction is kept for commit() to report.
// After a failure nothing more runs: on SQLITE_FULL or an I/O error SQLite may already have rolled
// the whole transaction back, and later statements would then commit one by one (autocommit),
// leaving half a transaction on disk.
void run(sqlite3* db, sqlite3_stmt* s, std::string& failure) {
  if (failure.empty()) {
    if (sqlite3_get_autocommit(db)) failure = "the transaction was rolled back";
    else if (sqlite3_step(s) != SQLITE_DONE) failure = sqlite3_errmsg(db);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

}  // namespace

void Journal::task_saved(const Task& t, const Names& names, std::int64_t finished_seq, TimePoint now, bool is_new) {
  begin();
  const auto state = protocol::to_string(t.state);
  const std::int64_t ready = t.state == TaskState::Delayed ? wall_ms(t.ready_at, now) : 0;
  if (!is_new) {
    sqlite3_stmt* s = upd_task_;
    sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(t.id));
    sqlite3_bind_text(s, 2, state.data(), static_cast<int>(state.size()), SQLITE_STATIC);
    sqlite3_bind_int(s, 3, t.attempts);
    sqlite3_bind_int64(s, 4, ready);
    bind_text(s, 5, t.outcome);
    bind_text(s, 6, names.name(t.worker));
    sqlite3_bind_int64(s, 7, finished_seq);
    run(db_, s, failure_);
    return;
  }
  sqlite3_stmt* s = put_task_;
  sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(t.id));
  sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(t.job));
  bind_text(s, 3, names.name(t.function));
  bind_text(s, 4, names.name(t.queue));
  bind_text(s, 5, t.args);
  sqlite3_bind_int(s, 6, t.priority);
  sqlite3_bind_int64(s, 7, t.timeout_ms);
  sqlite3_bind_int(s, 8, t.max_attempts);
  sqlite3_bind_int64(s, 9, t.backoff_ms);
  sqlite3_bind_text(s, 10, state.data(), static_cast<int>(state.size()), SQLITE_STATIC);
  sqlite3_bind_int(s, 11, t.attempts);
  sqlite3_bind_int64(s, 12, ready);
  bind_text(s, 13, t.outcome);
  bind_text(s, 14, names.name(t.worker));
  sqlite3_bind_int64(s, 15, finished_seq);
  run(db_, s, failure_);
}

void Journal::task_erased(TaskId id) {
  begin();
  sqlite3_bind_int64(del_task_, 1, static_cast<sqlite3_int64>(id));
  run(db_, del_task_, failure_);
}

void Journal::job_saved(const Job& job, TimePoint now) {
  begin();
  sqlite3_stmt* s = put_job_;
  sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(job.id));
  if (job.idempotency_key.empty()) sqlite3_bind_null(s, 2);
  else bind_text(s, 2, job.idempotency_key);
  sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(job.total));
  sqlite3_bind_int(s, 4, job.sealed ? 1 : 0);
  sqlite3_bind_int(s, 5, job.cancelled ? 1 : 0);
  if (job.ended_at) sqlite3_bind_int64(s, 6, wall_ms(*job.ended_at, now));
  else sqlite3_bind_null(s, 6);
  run(db_, s, failure_);
}

void Journal::batch_added(JobId job, std::uint32_t seq, TaskId first, std::uint32_t count) {
  begin();
  sqlite3_bind_int64(put_batch_, 1, static_cast<sqlite3_int64>(job));
  sqlite3_bind_int64(put_batch_, 2, seq);
  sqlite3_bind_int64(put_batch_, 3, static_cast<sqlite3_int64>(first));
  sqlite3_bind_int64(put_batch_, 4, count);
  run(db_, put_batch_, failure_);
  next_ids_saved(job + 1, first + count);
}

void Journal::batches_saved(const Job& job) {
  begin();
  sqlite3_bind_int64(del_batches_, 1, static_cast<sqlite3_int64>(job.id));
  run(db_, del_batches_, failure_);
  for (std::size_t seq = 0; seq < job.batches.size(); ++seq) {
    sqlite3_bind_int64(put_batch_, 1, static_cast<sqlite3_int64>(job.id));
    sqlite3_bind_int64(put_batch_, 2, static_cast<sqlite3_int64>(seq));
    sqlite3_bind_int64(put_batch_, 3, static_cast<sqlite3_int64>(job.batches[seq].first));
    sqlite3_bind_int64(put_batch_, 4, job.batches[seq].count);
    run(db_, put_batch_, failure_);
  }
}

void Journal::next_ids_saved(JobId next_job, TaskId next_task) {
  begin();
  next_job_ = std::max(next_job_, next_job);
  next_task_ = std::max(next_task_, next_task);
  sqlite3_bind_int64(put_next_, 1, static_cast<sqlite3_int64>(next_job));
  sqlite3_bind_int64(put_next_, 2, static_cast<sqlite3_int64>(next_task));
  run(db_, put_next_, failure_);
}

void Journal::job_erased(JobId id) {
  begin();
  sqlite3_bind_int64(del_job_, 1, static_cast<sqlite3_int64>(id));
  run(db_, del_job_, failure_);
  sqlite3_bind_int64(del_batches_, 1, static_cast<sqlite3_int64>(id));
  run(db_, del_batches_, failure_);
}

void Journal::abandon() {
  if (!in_transaction_) return;
  in_transaction_ = false;
  failure_.clear();
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

Status Journal::commit() {
  if (!in_transaction_) return Ok{};
  if (failure_.empty() && (next_job_ > reserved_.job || next_task_ > reserved_.task || reserved_.clean)) {
    if (auto s = write_reserved({next_job_ + kReservedJobs, next_task_ + kReservedTasks, false}); !s) failure_ = s.error().message;
  }
  in_transaction_ = false;
  if (failure_.empty() && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return Ok{};
  std::string why = failure_.empty() ? sqlite3_errmsg(db_) : failure_;
  failure_.clear();
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  // A big transaction may have spilled pages into the WAL before it failed; give that space back
  // (on a full disk, later small commits would fail too otherwise).
  sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  return make_error(ErrorCode::Unavailable, "cannot write the journal " + path_ + ": " + why);
}

Journal::Loaded Journal::load(TaskTable& tasks, JobTable& jobs, TimePoint now) {
  Loaded loaded;
  std::map<JobId, std::vector<std::pair<std::int64_t, TaskId>>> finished;  // job -> (seq, task)
  sqlite3_stmt* j = prepare("SELECT id, idempotency_key, total, sealed, cancelled, ended_at_ms FROM jobs ORDER BY id");
  std::map<JobId, std::optional<TimePoint>> ended;
  while (sqlite3_step(j) == SQLITE_ROW) {
    const auto id = static_cast<JobId>(sqlite3_column_int64(j, 0));
    Job& job = jobs.restore(id, text(j, 1));
    job.total = static_cast<std::uint64_t>(sqlite3_column_int64(j, 2));
    job.sealed = sqlite3_column_int(j, 3) != 0;
    job.cancelled = sqlite3_column_int(j, 4) != 0;
    if (sqlite3_column_type(j, 5) != SQLITE_NULL) ended[id] = steady_of(sqlite3_column_int64(j, 5), now);
    ++loaded.jobs;
  }
  sqlite3_finalize(j);
  sqlite3_stmt* b = prepare("SELECT job, seq, first_task, count FROM batches ORDER BY job, seq");
  while (sqlite3_step(b) == SQLITE_ROW) {
    Job* job = jobs.find(static_cast<JobId>(sqlite3_column_int64(b, 0)));
    if (!job) continue;
    const auto seq = static_cast<std::size_t>(sqlite3_column_int64(b, 1));
    if (job->batches.size() <= seq) job->batches.resize(seq + 1);
    job->batches[seq] = {static_cast<TaskId>(sqlite3_column_int64(b, 2)), static_cast<std::uint32_t>(sqlite3_column_int64(b, 3))};
  }
  sqlite3_finalize(b);
  sqlite3_stmt* t = prepare(
      "SELECT id, job, function, queue, args, priority, timeout_ms, max_attempts, backoff_ms, state, attempts, ready_at_ms,"
      " outcome, worker, finished_seq FROM tasks ORDER BY id");
  std::vector<TaskId> changed;
  while (sqlite3_step(t) == SQLITE_ROW) {
    Task task;
    task.id = static_cast<TaskId>(sqlite3_column_int64(t, 0));
    task.job = static_cast<JobId>(sqlite3_column_int64(t, 1));
    task.function = tasks.names().intern(text(t, 2));
    task.queue = tasks.names().intern(text(t, 3));
    task.args = text(t, 4);
    task.priority = sqlite3_column_int(t, 5);
    task.timeout_ms = static_cast<std::uint32_t>(sqlite3_column_int64(t, 6));
    task.max_attempts = static_cast<std::uint16_t>(sqlite3_column_int(t, 7));
    task.backoff_ms = static_cast<std::uint32_t>(sqlite3_column_int64(t, 8));
    const auto state = protocol::task_state_from_string(text(t, 9));
    task.state = state.value_or(TaskState::Queued);
    task.attempts = static_cast<std::uint16_t>(sqlite3_column_int(t, 10));
    task.ready_at = steady_of(sqlite3_column_int64(t, 11), now);
    task.outcome = text(t, 12);
    task.worker = tasks.names().intern(text(t, 13));
    std::int64_t seq = sqlite3_column_int64(t, 14);
    const TaskState stored = task.state;
    if (task.state == TaskState::Running) {
      ++loaded.requeued;
      changed.push_back(task.id);
      // Its attempt died with the old master. Retried if attempts remain, else dead; not retried if
      // its job was cancelled (as any failed attempt of a cancelled job, MasterState::on_task_change).
      if (const Job* owner = jobs.find(task.job); owner && owner->cancelled) {
        task.state = TaskState::Cancelled;
        task.outcome = "the master stopped during the task's attempt " + std::to_string(task.attempts) + "; its job was cancelled";
        seq = -1;  // gets its place below
      } else if (task.attempts >= task.max_attempts) {
        task.state = TaskState::Dead;
        task.outcome = "the master stopped during the task's last attempt (" + std::to_string(task.attempts) + " of " +
                       std::to_string(task.max_attempts) + ")";
        seq = -1;  // gets its place below
      }
    }
    const JobId job = task.job;
    const TaskId id = task.id;
    const bool final = protocol::is_final(task.state);
    tasks.restore(std::move(task), now);
    if (final) finished[job].emplace_back(seq < 0 ? INT64_MAX : seq, id);
    // Queued by replay (it was running, or its time came while the master was down): saved as such,
    // as the dead ones are below, so that the journal says what the tables hold.
    else if (const Task* tk = tasks.find(id); tk->state != stored) task_saved(*tk, tasks.names(), -1, now, false);
    ++loaded.tasks;
  }
  sqlite3_finalize(t);
  sqlite3_stmt* m = prepare("SELECT key, value FROM meta WHERE key IN ('next_job', 'next_task')");
  while (sqlite3_step(m) == SQLITE_ROW) {
    const auto next = static_cast<std::uint64_t>(sqlite3_column_int64(m, 1));
    if (text(m, 0) == "next_job") jobs.set_next_id(next);
    else tasks.set_next_id(next);
  }
  sqlite3_finalize(m);
  for (auto& [id, list] : finished) {
    Job* job = jobs.find(id);
    if (!job) continue;
    std::sort(list.begin(), list.end());
    for (auto& [seq, task] : list) {
      job->finished.push_back(task);
      const Task* tk = tasks.find(task);
      if (tk->state == TaskState::Dead || tk->state == TaskState::Cancelled) ++job->failed;
      if (seq == INT64_MAX) task_saved(*tk, tasks.names(), static_cast<std::int64_t>(job->finished.size() - 1), now, false);
    }
  }
  for (auto& [id, at] : ended)
    if (Job* job = jobs.find(id)) jobs.restore_ended(*job, at.value_or(now));
  // Ids continue past every id reserved in DIR/ids unless the last master stopped cleanly: after a
  // crash the journal may lack its last transactions (a WAL cut short), and their ids may have been
  // handed out. A journal that ends before the block the last reservation was made for lost some.
  next_job_ = jobs.next_id();
  next_task_ = tasks.last_id() + 1;
  if (reserved_.task && !reserved_.clean) {
    if (next_task_ + kReservedTasks < reserved_.task || next_job_ + kReservedJobs < reserved_.job)
      log_warn("journal ", path_, " ends at task id ", next_task_, " and job id ", next_job_, ", before ids the last master reserved (",
               reserved_.task, ", ", reserved_.job, "): its last transactions may be lost (a WAL cut short?); ids continue past the"
               " reservation, so none is given twice");
    jobs.set_next_id(reserved_.job);
    tasks.set_next_id(reserved_.task);
    next_job_ = reserved_.job;
    next_task_ = reserved_.task;
  }
  // Jobs that end only now (their last task came back dead) get their end time.
  for (TaskId id : changed) {
    const Task* tk = tasks.find(id);
    if (Job* job = jobs.find(tk->job); job && job->ended() && !job->ended_at) {
      jobs.restore_ended(*job, now);
      job_saved(*job, now);
    }
  }
  return loaded;
}

Journal::Reserved Journal::read_reserved() const {
  Reserved r;
  FILE* f = std::fopen((dir_ + "/ids").c_str(), "re");
  if (!f) return r;
  unsigned long long job = 0, task = 0;
  int clean = 0;
  if (std::fscanf(f, "next_job %llu next_task %llu clean %d", &job, &task, &clean) == 3) r = {job, task, clean != 0};
  std::fclose(f);
  return r;
}

Status Journal::write_reserved(const Reserved& r) {
  const std::string path = dir_ + "/ids", tmp = path + ".new";
  const std::string text = "next_job " + std::to_string(r.job) + "\nnext_task " + std::to_string(r.task) + "\nclean " +
                           (r.clean ? "1" : "0") + "\n";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  const int err = errno;
  if (fd >= 0) ::close(fd);
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0;
  if (ok) {
    if (const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
      ok = ::fsync(dfd) == 0;
      ::close(dfd);
    }
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return make_error(ErrorCode::Unavailable, "cannot reserve ids in " + path + ": " + std::strerror(ok ? errno : err));
  }
  reserved_ = r;
  return Ok{};
}

std::uint64_t Journal::bytes() const {
  std::uint64_t n = 0;
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const auto s = fs::file_size(path_ + suffix, ec);
    if (!ec) n += s;
  }
  return n;
}

void Journal::checkpoint() {
  if (in_transaction_) return;
  sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

}  // namespace taskmaster
