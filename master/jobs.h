// Jobs: what one `submit` sends. A job groups tasks, remembers the order they finished in (the
// cursor clients wait on), and lives until its results' time is up after it ends.
// Every change of a job goes through JobTable, which tells its JobListener (as TaskTable tells its
// TaskListener): the one place the master journals jobs. Callers read jobs, never change them.
// Not thread-safe: owned by the master's loop.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "master/task_table.h"

namespace taskmaster {

struct Job {
  using Batch = TaskRange;
  JobId id = 0;
  std::string idempotency_key;   // "" if none
  std::string digest;            // of its first batch (submission_digest); "" if not known (older journals)
  std::vector<Batch> batches;    // index = the batch's seq
  std::vector<TaskId> finished;  // in the order they finished; WAIT's cursor indexes this
  std::uint64_t total = 0;       // tasks in the job so far
  std::uint64_t failed = 0;      // finished dead or cancelled
  bool sealed = false;           // no more batches may join
  bool cancelled = false;
  std::optional<TimePoint> ended_at;  // when sealed and every task finished
  std::optional<TimePoint> created;   // when it was submitted (not known for a job read from the journal)
  // Jobs after jobs (SUBMIT after): the jobs this one waits for, as submitted (no repeats). While
  // `waiting`, its tasks are in state waiting, in no queue; once every one of `after` has ended, they
  // are queued, or with after_success cancelled if one of them did not end with every task done.
  std::vector<JobId> after{};
  bool after_success = false;
  bool waiting = false;
  JobId failed_after = 0;  // the first of `after` seen to end with a task not done; 0: none

  bool ended() const { return sealed && finished.size() == total; }
};

// The fingerprint of a new job's first SUBMIT batch, kept with its idempotency key so that the key
// reused for another job is refused (as Stripe does): its task count and BLAKE2b-256 digests of the
// whole batch and of its first task, each over every field of the tasks (function, queue, args,
// priority, delay, timeout, attempts, backoff) and the job's after and after_success. Text:
// "COUNT BATCH-HEX FIRST-HEX".
std::string submission_digest(const std::vector<protocol::TaskSpec>& tasks, const std::vector<JobId>& after, bool after_success);
// Whether a first batch with digest `again` repeats the one with digest `stored`: the same batch when
// their counts are equal, else (a streaming source cuts its batches by time) the same first task.
// An unknown stored digest ("", or not of this form) matches anything.
bool same_submission(const std::string& stored, const std::string& again);

// What changed in a job, as the listener is told.
enum class JobChange {
  BatchAdded,  // a batch joined (the last of job.batches); the job's row changed with it
  Updated,     // sealed, cancelled or ended
  Erased,      // about to be forgotten (its results' time is up)
};

class JobListener {
 public:
  virtual ~JobListener() = default;
  virtual void on_job_change(const Job& job, JobChange change) = 0;
};

class JobTable {
 public:
  explicit JobTable(JobListener* listener = nullptr) : listener_(listener) {}
  JobTable(const JobTable&) = delete;
  JobTable& operator=(const JobTable&) = delete;

  // A new job with the next id, without batches yet (the listener hears of it with its first
  // batch). REQUIRES: no job has this key (find_by_key first).
  // `after`: the jobs it waits for (then it is waiting; no repeats).
  const Job& create(std::string idempotency_key, std::vector<JobId> after = {}, bool after_success = false,
                    std::optional<TimePoint> now = std::nullopt, std::string digest = "");
  const Job* find(JobId id) const;
  const Job* find_by_key(const std::string& key) const;
  std::size_t size() const { return jobs_.size(); }
  const std::unordered_map<JobId, Job>& all() const { return jobs_; }

  // Adds the batch of tasks `batch` (their ids, given by the task table) as the job's next; `last`
  // seals the job. REQUIRES: the job exists and is not sealed.
  void add_batch(JobId job, TaskRange batch, bool last, TimePoint now);
  // Records that one of the job's tasks finished; marks the job ended when it was the last.
  void task_finished(JobId job, TaskId task, bool failed, TimePoint now);
  // Seals the job; marks it ended if every task already finished.
  void seal(JobId job, TimePoint now);
  // Marks the job cancelled and seals it. (Its tasks are the task table's: TaskTable::cancel_job.)
  void cancel(JobId job, TimePoint now);

  // Jobs after jobs. The waiting jobs that wait for `job` (none: nullptr), and every waiting job.
  const std::vector<JobId>* waiting_for(JobId job) const;
  const std::set<JobId>& waiting() const { return waiting_; }
  // Records that `after`, one the job waits for, ended with a task not done (the first one counts).
  void after_failed(JobId job, JobId after);
  // The job waits no more (its tasks are released or cancelled by the caller).
  void stop_waiting(JobId job);

  // Jobs that ended at least `ttl` before now, oldest first. They stay until erase().
  std::vector<JobId> expired(TimePoint now, std::chrono::milliseconds ttl) const;
  void erase(JobId id);

  // Undoing what a failed commit did not make durable; the listener is not told. discard() forgets
  // a job created in that turn; drop_last_batch() undoes the job's last batch (its tasks' count and
  // any of them that finished are forgotten), sealing it again only if it was before.
  void discard(JobId id);
  void drop_last_batch(JobId job, bool was_sealed, TimePoint now);

  // Replay of the journal; the listener is not told. REQUIRES: no job with this id exists.
  const Job& restore(JobId id, std::string idempotency_key, std::uint64_t total, bool sealed, bool cancelled, std::string digest = "");
  void restore_batch(JobId job, std::uint32_t seq, TaskRange batch);
  // Appends a finished task in its place (replay gives them in finish order).
  void restore_finished(JobId job, TaskId task, bool failed);
  // Marks a job read from the journal as ended at `at`.
  void restore_ended(JobId job, TimePoint at);
  // A job read from the journal still waits for `after` (its waits row).
  void restore_waiting(JobId job, std::vector<JobId> after, bool after_success, JobId failed_after);

  // The next id create() will use; kept past every restored id (the journal's high-water mark).
  void set_next_id(JobId next) { next_id_ = std::max(next_id_, next); }
  JobId next_id() const { return next_id_; }

 private:
  Job* get(JobId id);
  void mark_ended(Job& job, TimePoint now);
  void wait_for(Job& job, std::vector<JobId> after, bool after_success);
  void unwait(Job& job);  // stop_waiting without telling
  void tell(const Job& job, JobChange change) {
    if (listener_) listener_->on_job_change(job, change);
  }

  JobListener* listener_;
  std::unordered_map<JobId, Job> jobs_;
  std::unordered_map<std::string, JobId> keys_;
  std::deque<std::pair<TimePoint, JobId>> ended_;             // in end order (time only grows)
  std::unordered_map<JobId, std::vector<JobId>> dependents_;  // job -> waiting jobs that wait for it
  std::set<JobId> waiting_;
  JobId next_id_ = 1;
};

}  // namespace taskmaster
