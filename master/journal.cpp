#include "master/journal.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
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
-- Values of the value queues (the Python BaseManager listener, `taskmaster queue`), as JSON, in
-- FIFO order by id. Added without a schema version change: an older master ignores the table.
CREATE TABLE IF NOT EXISTS queue_values (
  id INTEGER PRIMARY KEY,
  queue TEXT NOT NULL,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS waits (
  job INTEGER PRIMARY KEY,
  after TEXT NOT NULL,
  after_success INTEGER NOT NULL,
  failed_after INTEGER NOT NULL
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

// A column as text; NULL is "". A NULL pointer for a column that is not NULL is SQLite out of memory.
std::string text(sqlite3_stmt* s, int col) {
  const auto* p = sqlite3_column_text(s, col);
  if (!p && sqlite3_column_type(s, col) != SQLITE_NULL) throw std::runtime_error("out of memory reading a text column");
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, col))) : std::string();
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
    struct stat st {};
    if (::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0 && ::fchmod(fd, 0600) == 0)
      log_warn("journal ", path_, " could be read by others; it is now 0600");
    ::close(fd);
  }
  for (const char* suffix : {"-wal", "-shm"}) {  // left by an older version after a crash
    struct stat st {};
    const std::string f = path_ + suffix;
    if (::stat(f.c_str(), &st) == 0 && (st.st_mode & 077) != 0) (void)::chmod(f.c_str(), 0600);
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
    // SQLite's automatic checkpoint (every 4000 WAL pages), done by our own WAL hook so that each one
    // is logged: what it moved into the database and how long it took.
    sqlite3_wal_hook(db_, &Journal::wal_hook, this);
    exec("PRAGMA journal_size_limit=67108864");  // the WAL shrinks back to 64 MiB after a checkpoint
    if (existed) {
      Statement check = prepare("PRAGMA quick_check");
      const int rc = sqlite3_step(check.get());
      std::string verdict = rc == SQLITE_ROW ? text(check.get(), 0) : std::string(sqlite3_errmsg(db_));
      if (verdict != "ok") throw std::runtime_error("journal " + path_ + " is damaged (" + verdict + ")." + move_aside_hint(path_));
    }
    exec(kSchema);
    {
      // Added after schema version 1 without changing it (an older master ignores the column):
      // the digest of a job's first batch, so that its idempotency key cannot be reused for another.
      Statement has = prepare("SELECT count(*) FROM pragma_table_info('jobs') WHERE name = 'digest'");
      if (step_row(has.get(), "the jobs table's columns") && sqlite3_column_int(has.get(), 0) == 0)
        exec("ALTER TABLE jobs ADD COLUMN digest TEXT");
    }
    int version = 0;
    {
      Statement v = prepare("SELECT value FROM meta WHERE key = 'schema_version'");
      if (step_row(v.get(), "its schema version")) version = sqlite3_column_int(v.get(), 0);
    }
    if (version == 0) {
      exec(("INSERT INTO meta(key, value) VALUES ('schema_version', " + std::to_string(kSchemaVersion) + ")").c_str());
    } else if (version > kSchemaVersion) {
      throw std::runtime_error("journal " + path_ + " has schema version " + std::to_string(version) +
                               ", newer than this taskmaster understands (" + std::to_string(kSchemaVersion) + "); run a newer taskmaster");
    }
    st_.emplace();
    st_->put_task = prepare(
        "INSERT OR REPLACE INTO tasks(id, job, function, queue, args, priority, timeout_ms, max_attempts, backoff_ms, state,"
        " attempts, ready_at_ms, outcome, worker, finished_seq) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)");
    // A task's own fields never change after it is added; its state changes touch only these.
    st_->upd_task = prepare(
        "UPDATE tasks SET state = ?2, attempts = ?3, ready_at_ms = ?4, outcome = ?5, worker = ?6, finished_seq = ?7 WHERE id = ?1");
    st_->del_task = prepare("DELETE FROM tasks WHERE id = ?1");
    st_->put_job = prepare(
        "INSERT OR REPLACE INTO jobs(id, idempotency_key, total, sealed, cancelled, ended_at_ms, digest) VALUES (?1,?2,?3,?4,?5,?6,?7)");
    st_->put_batch = prepare("INSERT OR REPLACE INTO batches(job, seq, first_task, count) VALUES (?1,?2,?3,?4)");
    st_->del_job = prepare("DELETE FROM jobs WHERE id = ?1");
    st_->del_batches = prepare("DELETE FROM batches WHERE job = ?1");
    st_->put_wait = prepare("INSERT OR REPLACE INTO waits(job, after, after_success, failed_after) VALUES (?1,?2,?3,?4)");
    st_->del_wait = prepare("DELETE FROM waits WHERE job = ?1");
    st_->put_value = prepare("INSERT OR REPLACE INTO queue_values(id, queue, value) VALUES (?1,?2,?3)");
    st_->del_value = prepare("DELETE FROM queue_values WHERE id = ?1");
    // The ids handed out so far, so that ids of expired (deleted) jobs and tasks are never reused.
    st_->put_next = prepare(
        "INSERT INTO meta(key, value) VALUES ('next_job', ?1), ('next_task', ?2)"
        " ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)");
    reserved_ = read_reserved();
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    st_.reset();
    close_db();
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (msg.find(path_) != std::string::npos) throw;
    throw std::runtime_error("cannot use journal " + path_ + ": " + msg + "." + move_aside_hint(path_));
  }
}

Journal::~Journal() {
  st_.reset();  // statements first: a database with statements open does not close
  if (db_) {
    const bool clean = !in_transaction_;
    if (in_transaction_ && sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK && !sqlite3_get_autocommit(db_))
      log_warn("journal ", path_, ": rolling back at close failed: ", sqlite3_errmsg(db_), " (the next start replays the last commit)");
    // A clean stop: the journal holds every id handed out, so the next start continues from it
    // rather than from the reservation.
    if (clean && sqlite3_close(db_) == SQLITE_OK) {
      db_ = nullptr;
      if (auto s = write_reserved({next_job_, next_task_, true}); !s) log_warn(s.error().message);
    }
    close_db();
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

void Journal::Finalize::operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }

void Journal::close_db() {
  if (!db_) return;
  if (sqlite3_close_v2(db_) != SQLITE_OK) log_warn("journal ", path_, ": closing failed: ", sqlite3_errmsg(db_));
  db_ = nullptr;
}

void Journal::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw std::runtime_error(msg);
  }
}

Journal::Statement Journal::prepare(const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
    sqlite3_finalize(s);
    throw std::runtime_error(std::string("cannot prepare a journal statement: ") + sqlite3_errmsg(db_));
  }
  return Statement(s);
}

bool Journal::step_row(sqlite3_stmt* s, const char* what) {
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw std::runtime_error("cannot read " + std::string(what) + " from journal " + path_ + ": " + sqlite3_errmsg(db_) + " (" +
                           sqlite3_errstr(rc) + "); the master does not start with part of its journal." + move_aside_hint(path_));
}

void Journal::begin() {
  if (in_transaction_) return;
  note(sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr));
  in_transaction_ = true;
}

void Journal::note(int rc) {
  if (rc != SQLITE_OK && failure_.empty()) failure_ = std::string(sqlite3_errmsg(db_)) + " (" + sqlite3_errstr(rc) + ")";
}

void Journal::bind(sqlite3_stmt* s, int i, std::int64_t v) { note(sqlite3_bind_int64(s, i, static_cast<sqlite3_int64>(v))); }
void Journal::bind(sqlite3_stmt* s, int i, std::string_view v) {
  note(sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
}
void Journal::bind(sqlite3_stmt* s, int i, const std::string& v) { bind(s, i, std::string_view(v)); }
void Journal::bind_null(sqlite3_stmt* s, int i) { note(sqlite3_bind_null(s, i)); }

// Runs a write statement; the first failure of the transaction is kept for commit() to report.
// After a failure nothing more runs: on SQLITE_FULL or an I/O error SQLite may already have rolled
// the whole transaction back, and later statements would then commit one by one (autocommit),
// leaving half a transaction on disk.
void Journal::run(sqlite3_stmt* s) {
  if (failure_.empty()) {
    if (sqlite3_get_autocommit(db_)) failure_ = "the transaction was rolled back";
    else if (const int rc = sqlite3_step(s); rc != SQLITE_DONE) note(rc == SQLITE_ROW ? SQLITE_MISUSE : rc);
  }
  // reset() repeats the step's error, already noted; clear_bindings() cannot fail.
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

void Journal::task_saved(const Task& t, const Names& names, std::int64_t finished_seq, TimePoint now, bool is_new) {
  begin();
  const auto state = protocol::to_string(t.state);
  const bool timed = t.state == TaskState::Delayed || t.state == TaskState::Waiting;  // waiting: when its delay ends
  const std::int64_t ready = timed ? wall_ms(t.ready_at, now) : 0;
  if (!is_new) {
    sqlite3_stmt* s = st_->upd_task.get();
    bind(s, 1, static_cast<std::int64_t>(t.id));
    bind(s, 2, state);
    bind(s, 3, t.attempts);
    bind(s, 4, ready);
    bind(s, 5, t.outcome);
    bind(s, 6, names.name(t.worker));
    bind(s, 7, finished_seq);
    return run(s);
  }
  sqlite3_stmt* s = st_->put_task.get();
  bind(s, 1, static_cast<std::int64_t>(t.id));
  bind(s, 2, static_cast<std::int64_t>(t.job));
  bind(s, 3, names.name(t.function));
  bind(s, 4, names.name(t.queue));
  bind(s, 5, t.args);
  bind(s, 6, t.priority);
  bind(s, 7, t.timeout_ms);
  bind(s, 8, t.max_attempts);
  bind(s, 9, t.backoff_ms);
  bind(s, 10, state);
  bind(s, 11, t.attempts);
  bind(s, 12, ready);
  bind(s, 13, t.outcome);
  bind(s, 14, names.name(t.worker));
  bind(s, 15, finished_seq);
  run(s);
}

void Journal::task_erased(TaskId id) {
  begin();
  bind(st_->del_task.get(), 1, static_cast<std::int64_t>(id));
  run(st_->del_task.get());
}

void Journal::value_saved(std::uint64_t id, std::string_view queue, std::string_view value) {
  begin();
  sqlite3_stmt* s = st_->put_value.get();
  bind(s, 1, static_cast<std::int64_t>(id));
  bind(s, 2, queue);
  bind(s, 3, value);
  run(s);
}

void Journal::value_erased(std::uint64_t id) {
  begin();
  bind(st_->del_value.get(), 1, static_cast<std::int64_t>(id));
  run(st_->del_value.get());
}

std::vector<Journal::ValueRow> Journal::load_values() {
  std::vector<ValueRow> rows;
  Statement s = prepare("SELECT id, queue, value FROM queue_values ORDER BY id");
  while (step_row(s.get(), "the value queues")) {
    rows.push_back({static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0)), text(s.get(), 1), text(s.get(), 2)});
  }
  return rows;
}

void Journal::job_saved(const Job& job, TimePoint now) {
  begin();
  sqlite3_stmt* s = st_->put_job.get();
  bind(s, 1, static_cast<std::int64_t>(job.id));
  if (job.idempotency_key.empty()) bind_null(s, 2);
  else bind(s, 2, job.idempotency_key);
  bind(s, 3, static_cast<std::int64_t>(job.total));
  bind(s, 4, job.sealed ? 1 : 0);
  bind(s, 5, job.cancelled ? 1 : 0);
  if (job.ended_at) bind(s, 6, wall_ms(*job.ended_at, now));
  else bind_null(s, 6);
  if (job.digest.empty()) bind_null(s, 7);
  else bind(s, 7, job.digest);
  run(s);
  if (job.after.empty()) return;
  // A job that waits for others has a row in waits until it is released.
  if (!job.waiting) {
    bind(st_->del_wait.get(), 1, static_cast<std::int64_t>(job.id));
    return run(st_->del_wait.get());
  }
  std::string after;
  for (JobId j : job.after) after += (after.empty() ? "" : ",") + std::to_string(j);
  sqlite3_stmt* w = st_->put_wait.get();
  bind(w, 1, static_cast<std::int64_t>(job.id));
  bind(w, 2, after);
  bind(w, 3, job.after_success ? 1 : 0);
  bind(w, 4, static_cast<std::int64_t>(job.failed_after));
  run(w);
}

void Journal::batch_added(JobId job, std::uint32_t seq, TaskId first, std::uint32_t count) {
  begin();
  sqlite3_stmt* s = st_->put_batch.get();
  bind(s, 1, static_cast<std::int64_t>(job));
  bind(s, 2, seq);
  bind(s, 3, static_cast<std::int64_t>(first));
  bind(s, 4, count);
  run(s);
  next_ids_saved(job + 1, first + count);
}

void Journal::batches_saved(const Job& job) {
  begin();
  bind(st_->del_batches.get(), 1, static_cast<std::int64_t>(job.id));
  run(st_->del_batches.get());
  sqlite3_stmt* s = st_->put_batch.get();
  for (std::size_t seq = 0; seq < job.batches.size(); ++seq) {
    bind(s, 1, static_cast<std::int64_t>(job.id));
    bind(s, 2, static_cast<std::int64_t>(seq));
    bind(s, 3, static_cast<std::int64_t>(job.batches[seq].first));
    bind(s, 4, job.batches[seq].count);
    run(s);
  }
}

void Journal::next_ids_saved(JobId next_job, TaskId next_task) {
  begin();
  next_job_ = std::max(next_job_, next_job);
  next_task_ = std::max(next_task_, next_task);
  bind(st_->put_next.get(), 1, static_cast<std::int64_t>(next_job));
  bind(st_->put_next.get(), 2, static_cast<std::int64_t>(next_task));
  run(st_->put_next.get());
}

void Journal::job_erased(JobId id) {
  begin();
  bind(st_->del_job.get(), 1, static_cast<std::int64_t>(id));
  run(st_->del_job.get());
  bind(st_->del_batches.get(), 1, static_cast<std::int64_t>(id));
  run(st_->del_batches.get());
  bind(st_->del_wait.get(), 1, static_cast<std::int64_t>(id));
  run(st_->del_wait.get());
}

void Journal::abandon() {
  if (!in_transaction_) return;
  in_transaction_ = false;
  failure_.clear();
  rollback();
}

void Journal::rollback() {
  if (sqlite3_get_autocommit(db_)) return;  // SQLite rolled it back already
  if (sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK)
    log_warn("journal ", path_, ": ROLLBACK failed: ", sqlite3_errmsg(db_));
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
  rollback();
  // A big transaction may have spilled pages into the WAL before it failed; give that space back
  // (on a full disk, later small commits would fail too otherwise). It may fail for the same reason
  // the commit did: the commit's error is the one reported.
  if (const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr); rc != SQLITE_OK)
    log_debug("journal ", path_, ": checkpoint after a failed commit: ", sqlite3_errstr(rc));
  return make_error(ErrorCode::Unavailable, "cannot write the journal " + path_ + ": " + why);
}

Journal::Contents Journal::load(TimePoint now) {
  try {
    return read_all(now);
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    if (what.find(path_) != std::string::npos) throw;
    throw std::runtime_error("cannot replay journal " + path_ + ": " + what + "; the master does not start with part of its journal." +
                             move_aside_hint(path_));
  }
}

Journal::Contents Journal::read_all(TimePoint now) {
  Contents c;
  const auto i64 = [](sqlite3_stmt* s, int col) { return static_cast<std::uint64_t>(sqlite3_column_int64(s, col)); };
  // A value past what this version writes is a damaged (or foreign) row, not one to cut down.
  const auto ranged = [&](sqlite3_stmt* s, int col, std::uint64_t max, const char* what, std::uint64_t id) {
    const std::int64_t v = sqlite3_column_int64(s, col);
    if (v < 0 || static_cast<std::uint64_t>(v) > max)
      throw std::runtime_error("journal " + path_ + ": " + what + " of row " + std::to_string(id) + " is " + std::to_string(v) +
                               ", outside 0 … " + std::to_string(max) + "; the master does not start with part of its journal." +
                               move_aside_hint(path_));
    return static_cast<std::uint64_t>(v);
  };
  {
    Statement j = prepare("SELECT id, idempotency_key, total, sealed, cancelled, ended_at_ms, digest FROM jobs ORDER BY id");
    while (step_row(j.get(), "a job")) {
      JobRow r;
      r.id = i64(j.get(), 0);
      r.idempotency_key = text(j.get(), 1);
      r.total = i64(j.get(), 2);
      r.sealed = sqlite3_column_int(j.get(), 3) != 0;
      r.cancelled = sqlite3_column_int(j.get(), 4) != 0;
      if (sqlite3_column_type(j.get(), 5) != SQLITE_NULL) r.ended_at = steady_of(sqlite3_column_int64(j.get(), 5), now);
      r.digest = text(j.get(), 6);
      c.next_job = std::max(c.next_job, r.id + 1);
      c.jobs.push_back(std::move(r));
    }
  }
  {
    // Jobs that wait for others (by id, as the jobs are).
    Statement w = prepare("SELECT job, after, after_success, failed_after FROM waits ORDER BY job");
    auto row = c.jobs.begin();
    while (step_row(w.get(), "a waiting job")) {
      const JobId job = i64(w.get(), 0);
      row = std::lower_bound(row, c.jobs.end(), job, [](const JobRow& r, JobId id) { return r.id < id; });
      if (row == c.jobs.end() || row->id != job) continue;  // a row left of a job erased (cannot happen: erased together)
      const std::string after = text(w.get(), 1);
      for (std::size_t i = 0; i < after.size();) {
        const std::size_t end = std::min(after.find(',', i), after.size());
        JobId id = 0;
        const auto [p, ec] = std::from_chars(after.data() + i, after.data() + end, id);
        if (ec != std::errc() || p != after.data() + end || id == 0)
          throw std::runtime_error("journal " + path_ + ": job " + std::to_string(job) + " waits for '" + after +
                                   "', which is not a list of job ids; the master does not start with part of its journal." +
                                   move_aside_hint(path_));
        row->after.push_back(id);
        i = end + 1;
      }
      row->waiting = true;
      row->after_success = sqlite3_column_int(w.get(), 2) != 0;
      row->failed_after = i64(w.get(), 3);
    }
  }
  {
    Statement b = prepare("SELECT job, seq, first_task, count FROM batches ORDER BY job, seq");
    while (step_row(b.get(), "a batch")) {
      const auto seq = i64(b.get(), 1);
      if (seq > UINT32_MAX)
        throw std::runtime_error("journal " + path_ + ": a batch of job " + std::to_string(i64(b.get(), 0)) + " has seq " +
                                 std::to_string(seq) + ", past any this version gives." + move_aside_hint(path_));
      c.batches.push_back(
          {i64(b.get(), 0),
           static_cast<std::uint32_t>(seq),
           {i64(b.get(), 2), static_cast<std::uint32_t>(ranged(b.get(), 3, UINT32_MAX, "the task count", i64(b.get(), 0)))}});
    }
  }
  {
    Statement t = prepare(
        "SELECT id, job, function, queue, args, priority, timeout_ms, max_attempts, backoff_ms, state, attempts, ready_at_ms,"
        " outcome, worker, finished_seq FROM tasks ORDER BY id");
    sqlite3_stmt* s = t.get();
    while (step_row(s, "a task")) {
      TaskRow r;
      Task& task = r.task;
      task.id = i64(s, 0);
      task.job = i64(s, 1);
      r.function = text(s, 2);
      r.queue = text(s, 3);
      task.args = text(s, 4);
      task.priority = sqlite3_column_int(s, 5);
      task.timeout_ms = static_cast<std::uint32_t>(ranged(s, 6, UINT32_MAX, "timeout_ms", task.id));
      task.max_attempts = static_cast<std::uint16_t>(ranged(s, 7, UINT16_MAX, "max_attempts", task.id));
      task.backoff_ms = static_cast<std::uint32_t>(ranged(s, 8, UINT32_MAX, "backoff_ms", task.id));
      const std::string state = text(s, 9);
      const auto parsed = protocol::task_state_from_string(state);
      if (!parsed)
        throw std::runtime_error("journal " + path_ + ": task " + std::to_string(task.id) + " has state '" + state +
                                 "', which this taskmaster does not know (a newer version's journal, or a damaged one); the master"
                                 " does not start with part of its journal." +
                                 move_aside_hint(path_));
      task.state = *parsed;
      task.attempts = static_cast<std::uint16_t>(ranged(s, 10, UINT16_MAX, "attempts", task.id));
      task.ready_at = steady_of(sqlite3_column_int64(s, 11), now);
      task.outcome = text(s, 12);
      r.worker = text(s, 13);
      r.finished_seq = sqlite3_column_int64(s, 14);
      c.next_task = std::max(c.next_task, task.id + 1);
      c.tasks.push_back(std::move(r));
    }
  }
  {
    Statement m = prepare("SELECT key, value FROM meta WHERE key IN ('next_job', 'next_task')");
    while (step_row(m.get(), "the next ids")) {
      const auto next = i64(m.get(), 1);
      if (text(m.get(), 0) == "next_job") c.next_job = std::max(c.next_job, next);
      else c.next_task = std::max(c.next_task, next);
    }
  }
  // Ids continue past every id reserved in DIR/ids unless the last master stopped cleanly: after a
  // crash the journal may lack its last transactions (a WAL cut short), and their ids may have been
  // handed out. A journal that ends before the block the last reservation was made for lost some.
  if (reserved_.task) {
    // After a clean stop the file holds the exact next ids (at least the journal's own); after a
    // crash, the end of the reservation.
    if (!reserved_.clean && (c.next_task + kReservedTasks < reserved_.task || c.next_job + kReservedJobs < reserved_.job))
      log_warn("journal ", path_, " ends at task id ", c.next_task, " and job id ", c.next_job, ", before ids the last master reserved (",
               reserved_.task, ", ", reserved_.job,
               "): its last transactions may be lost (a WAL cut short?); ids continue past the"
               " reservation, so none is given twice");
    c.next_job = std::max(c.next_job, reserved_.job);
    c.next_task = std::max(c.next_task, reserved_.task);
  }
  next_job_ = c.next_job;
  next_task_ = c.next_task;
  return c;
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

int Journal::wal_hook(void* self, sqlite3* db, const char* name, int pages) {
  constexpr int kCheckpointPages = 4000;  // as PRAGMA wal_autocheckpoint=4000: about 16 MB
  if (pages < kCheckpointPages) return SQLITE_OK;
  const auto t0 = std::chrono::steady_clock::now();
  int logged = 0, moved = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &logged, &moved);
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  auto* j = static_cast<Journal*>(self);
  if (rc == SQLITE_OK || rc == SQLITE_BUSY)
    log_info("journal ", j->path_, ": checkpoint moved ", moved, " of ", logged, " WAL pages into the database in ", ms, " ms");
  else log_warn("journal ", j->path_, ": checkpoint failed: ", sqlite3_errstr(rc), " (tried again after the next commit)");
  return SQLITE_OK;  // the commit itself succeeded whatever the checkpoint did
}

void Journal::checkpoint() {
  if (in_transaction_) return;
  if (const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr); rc != SQLITE_OK)
    log_warn("journal ", path_, ": checkpoint failed: ", sqlite3_errmsg(db_), " (SQLite checkpoints again by itself)");
}

}  // namespace taskmaster
