// The durable journal: every task and job change, in SQLite (WAL mode, synchronous=FULL), committed
// once per loop turn before any acknowledgement leaves (group commit). On start the master replays
// it. The schema is documented in docs/DURABILITY.md; `sqlite3 DIR/journal.db` reads it.
// Not thread-safe: owned by the master's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/expected.h"
#include "master/jobs.h"
#include "master/task_table.h"

struct sqlite3;
struct sqlite3_stmt;

namespace taskmaster {

// The default data directory: $XDG_STATE_HOME/taskmaster, else ~/.local/state/taskmaster.
std::string default_data_dir();

class Journal {
 public:
  // Opens (creating if needed) DIR/journal.db and takes DIR/lock so that no second master can use
  // the directory. Throws std::runtime_error with a message that says what is wrong and what to do:
  // the directory cannot be made or written, it is locked by another master, the journal is not a
  // database or fails its integrity check (move it aside), or it has a newer schema.
  explicit Journal(const std::string& dir);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& path() const { return path_; }

  // Changes, collected in the open transaction (begun on the first one). `now` converts steady
  // times to the wall clock times the journal keeps.
  // finished_seq: the task's place in its job's finish order (-1 while it is not finished).
  // is_new: the task was just added (its whole row is written); else only its state fields are.
  void task_saved(const Task& task, const Names& names, std::int64_t finished_seq, TimePoint now, bool is_new);
  void task_erased(TaskId id);
  void job_saved(const Job& job, TimePoint now);
  void batch_added(JobId job, std::uint32_t seq, TaskId first, std::uint32_t count);
  void job_erased(JobId id);
  // Every batch of the job again (after a failed commit), and the next ids.
  void batches_saved(const Job& job);
  void next_ids_saved(JobId next_job, TaskId next_task);
  // The value queues (master/value_queues.h): one value, as JSON, at its place `id` (FIFO by id).
  void value_saved(std::uint64_t id, std::string_view queue, std::string_view value);
  void value_erased(std::uint64_t id);

  // Makes every change since the last commit durable (COMMIT, which fsyncs the WAL). On failure
  // (disk full, I/O error) the transaction is rolled back, nothing of it is on disk, and the error
  // says why. Nothing to commit is Ok and costs nothing.
  // Before a commit that hands out ids past those reserved in DIR/ids, it reserves more there
  // (written and fsynced outside SQLite, so that a WAL cut short cannot take the reservation with
  // it); a failure to do so fails the commit.
  Status commit();
  // Rolls the open transaction back, if any.
  void abandon();
  bool dirty() const { return in_transaction_; }

  // What the journal holds, as it holds it: a plain read of its rows (MasterState::recover puts
  // them back and applies the restart rule). Times are converted to the steady clock of `now`.
  struct JobRow {
    JobId id = 0;
    std::string idempotency_key;
    std::string digest;  // Job::digest; "" if none (a journal from before the column)
    std::uint64_t total = 0;
    bool sealed = false, cancelled = false;
    std::optional<TimePoint> ended_at;
    // From the waits table: the job still waits for the jobs `after` (SUBMIT after).
    bool waiting = false, after_success = false;
    std::vector<JobId> after{};
    JobId failed_after = 0;
  };
  struct BatchRow {
    JobId job = 0;
    std::uint32_t seq = 0;
    TaskRange tasks;
  };
  struct TaskRow {
    Task task;  // its Names ids are 0: the names are below
    std::string function, queue, worker;
    std::int64_t finished_seq = -1;  // its place in its job's finish order; -1 if not finished
  };
  struct Contents {
    std::vector<JobRow> jobs;       // by id
    std::vector<BatchRow> batches;  // by job, then seq
    std::vector<TaskRow> tasks;     // by id
    // Ids continue from these: past every id ever handed out (jobs whose results expired too) and,
    // unless the last master stopped cleanly, past every id it reserved (DIR/ids).
    JobId next_job = 1;
    TaskId next_task = 1;
  };
  // Reads every row. Throws std::runtime_error naming the journal and how to move it aside if any
  // read fails (an I/O error, a row this version does not understand): a master never starts with
  // part of its journal.
  Contents load(TimePoint now);
  // The value queues' rows, by id. Throws as load() does.
  struct ValueRow {
    std::uint64_t id = 0;
    std::string queue, value;
  };
  std::vector<ValueRow> load_values();

  // Bytes on disk: the database and its WAL.
  std::uint64_t bytes() const;
  // Writes the WAL back into the database and truncates it. (SQLite also checkpoints by itself every
  // 4000 pages, and journal_size_limit shrinks the WAL back to 64 MiB, so the master need not.)
  void checkpoint();

 private:
  // sqlite3_wal_hook: after each commit; checkpoints (and logs it) once the WAL holds enough pages.
  static int wal_hook(void* self, sqlite3* db, const char* name, int pages);
  struct Finalize {
    void operator()(sqlite3_stmt* s) const;
  };
  using Statement = std::unique_ptr<sqlite3_stmt, Finalize>;
  // The statements the changes use, prepared once.
  struct Statements {
    Statement put_task, upd_task, del_task, put_job, put_batch, del_job, del_batches, put_wait, del_wait;
    Statement put_next;  // meta: the next job and task ids
    Statement put_value, del_value;
  };

  void exec(const char* sql);
  void begin();
  Statement prepare(const char* sql);
  Contents read_all(TimePoint now);  // load() without the message that names the journal
  // A step of a read: true for a row, false at the end; throws for an error.
  bool step_row(sqlite3_stmt* s, const char* what);
  // Binding and running a write; the first failure of the transaction is kept for commit().
  void bind(sqlite3_stmt* s, int i, std::int64_t v);
  void bind(sqlite3_stmt* s, int i, const std::string& v);
  void bind(sqlite3_stmt* s, int i, std::string_view v);
  void bind_null(sqlite3_stmt* s, int i);
  void run(sqlite3_stmt* s);
  void note(int rc);
  void close_db();
  void rollback();  // the open transaction, if SQLite has not rolled it back itself
  // DIR/ids: ids reserved ahead of use, and whether the last master stopped cleanly.
  struct Reserved {
    JobId job = 0;
    TaskId task = 0;
    bool clean = false;
  };
  Status write_reserved(const Reserved& r);
  Reserved read_reserved() const;

  std::string dir_, path_;
  int lock_fd_ = -1;
  sqlite3* db_ = nullptr;
  bool in_transaction_ = false;
  std::optional<Statements> st_;  // finalized before the database closes
  std::string failure_;           // the first write error of the open transaction
  Reserved reserved_;             // as DIR/ids says now
  JobId next_job_ = 1;            // the next ids, as the transactions so far have them
  TaskId next_task_ = 1;
};

// Ids reserved in DIR/ids at a time: a crash skips at most this many.
inline constexpr std::uint64_t kReservedJobs = 1000;
inline constexpr std::uint64_t kReservedTasks = 1u << 20;

}  // namespace taskmaster
