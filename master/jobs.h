// Jobs: what one `submit` sends. A job groups tasks, remembers the order they finished in (the
// cursor clients wait on), and lives until its results' time is up after it ends.
// Not thread-safe: owned by the master's loop.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "master/task_table.h"

namespace taskmaster {

struct Job {
  struct Batch {
    TaskId first = 0;
    std::uint32_t count = 0;
  };
  JobId id = 0;
  std::string idempotency_key;   // "" if none
  std::vector<Batch> batches;    // index = the batch's seq
  std::vector<TaskId> finished;  // in the order they finished; WAIT's cursor indexes this
  std::uint64_t total = 0;       // tasks in the job so far
  std::uint64_t failed = 0;      // finished dead or cancelled
  bool sealed = false;           // no more batches may join
  bool cancelled = false;
  std::optional<TimePoint> ended_at;  // when sealed and every task finished

  bool ended() const { return sealed && finished.size() == total; }
};

class JobTable {
 public:
  // A new job with the next id. REQUIRES: no job has this key (find_by_key first).
  Job& create(std::string idempotency_key);
  // Puts back a job read from the journal. REQUIRES: no job with this id exists.
  Job& restore(JobId id, std::string idempotency_key);
  Job* find(JobId id);
  Job* find_by_key(const std::string& key);
  std::size_t size() const { return jobs_.size(); }

  // Records that one of the job's tasks finished; marks the job ended when it was the last.
  void task_finished(Job& job, TaskId task, bool failed, TimePoint now);
  // Seals the job; marks it ended if every task already finished.
  void seal(Job& job, TimePoint now);

  // The next id create() will use; kept past every restored id (the journal's high-water mark).
  void set_next_id(JobId next) { next_id_ = std::max(next_id_, next); }
  JobId next_id() const { return next_id_; }

  // Undoes the job's last batch (its commit failed): the batch, its tasks' count and any of them
  // that finished are forgotten, and the job is sealed again only if it was before.
  void drop_last_batch(Job& job, bool was_sealed, TimePoint now);
  // Forgets a job whose creation was undone; its id is given again if no later job was created.
  void forget_created(JobId id);

  // Marks a job read from the journal as ended at `at`.
  void restore_ended(Job& job, TimePoint at);

  // Jobs that ended at least `ttl` before now, oldest first. They stay until erase().
  std::vector<JobId> expired(TimePoint now, std::chrono::milliseconds ttl) const;
  void erase(JobId id);

 private:
  void mark_ended(Job& job, TimePoint now);

  std::unordered_map<JobId, Job> jobs_;
  std::unordered_map<std::string, JobId> keys_;
  std::deque<std::pair<TimePoint, JobId>> ended_;  // in end order (time only grows)
  JobId next_id_ = 1;
};

}  // namespace taskmaster
