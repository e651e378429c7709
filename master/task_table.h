// Tasks and their states: the task life of docs/ARCHITECTURE.md as code.
//
//            submit                 start time comes
//   (new) ──────────► delayed ──────────────────────► queued ◄──────────────┐
//     │                 │  ▲                           │  │   not delivered │
//     │ no delay        │  │ failed attempt,           │  └─ lease ──► running
//     └─────────────────┼──┼── attempts remain ◄───────┼───────────────────┤
//                       │  │                           │                   │ result
//                cancel ▼  │                    cancel ▼    failed, none   ▼
//                   cancelled                  cancelled    left ──► dead  done
//                                                  ▲                       │
//                                                  └───────────────────────┘
//                                       failed, and its job was cancelled: not retried
//
// A task whose job waits for other jobs (SUBMIT `after`) starts `waiting`, in no queue: release_job
// makes it queued (or delayed), and cancel makes it cancelled.
//
// A master that restarts finds its running tasks' attempts gone with it: restore() applies the
// same rule as to any failed attempt (queued again, dead on the last, cancelled in a cancelled job).
//
// Pure: no sockets, no clock reads. Time is always passed in as `now`, so tests move it at will.
// Every state change goes through one private function (move_to), which tells the Listener: the
// one place where the master journals, counts and wakes waiting clients. The Listener only
// observes: it never changes the table from inside the call.
// Not thread-safe: owned by the master's loop.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/expected.h"
#include "protocol/message.h"

namespace taskmaster {

using protocol::JobId;
using protocol::TaskId;
using protocol::TaskState;
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// Interns names (functions, queues, workers) as small integers, so a task stores 4 bytes per name.
// Names are counted: each task and worker session that refers to one holds a reference, and a name
// nothing refers to any more is forgotten and its id given to the next new name, so that any number
// of distinct names over time costs only the memory of those in use.
class Names {
 public:
  // The name's id, holding one more reference to it. "" is id 0, which is never counted.
  std::uint32_t acquire(std::string_view name);
  // One more reference to an id already held; 0 does nothing.
  void retain(std::uint32_t id);
  // Drops one reference; the last one forgets the name. 0 does nothing.
  void release(std::uint32_t id);
  // 0 if no one holds the name.
  std::uint32_t find(std::string_view name) const;
  // REQUIRES: id is held (or 0, which gives "").
  const std::string& name(std::uint32_t id) const { return names_[id].name; }
  // Names held, and the references to them.
  std::size_t size() const { return ids_.size(); }
  std::uint64_t references() const { return references_; }
  std::uint64_t references(std::uint32_t id) const { return id < names_.size() ? names_[id].refs : 0; }
  // Its own bookkeeping: every held id found by its name, free ids unreferenced. "" if right.
  std::string check() const;

 private:
  struct Entry {
    std::string name;
    std::uint64_t refs = 0;
  };
  std::vector<Entry> names_{Entry{}};  // id 0 is "no name"
  std::vector<std::uint32_t> free_;    // ids of forgotten names, for reuse
  std::unordered_map<std::string, std::uint32_t> ids_;
  std::uint64_t references_ = 0;
};

// Consecutive task ids: the tasks of one SUBMIT batch.
struct TaskRange {
  TaskId first = 0;
  std::uint32_t count = 0;
  bool contains(TaskId id) const { return id >= first && id - first < count; }
};

struct Task {
  TaskId id = 0;
  JobId job = 0;
  std::string args;      // compact JSON
  std::string outcome;   // done: the result (compact JSON); otherwise the last error, if any
  TimePoint ready_at{};  // delayed: when it becomes queued
  TimePoint deadline{};  // running: when the current attempt times out
  std::uint32_t timeout_ms = 0;
  std::uint32_t backoff_ms = 0;
  std::int32_t priority = 0;
  std::uint32_t function = 0;  // Names id
  std::uint32_t queue = 0;     // Names id
  std::uint32_t worker = 0;    // Names id of the worker of the current or last attempt; 0 = none
  std::uint16_t attempts = 0;  // attempts started so far; the current attempt's number when running
  std::uint16_t max_attempts = 0;
  TaskState state = TaskState::Queued;
};

// Told of every change; `from` is empty when the task is new.
class TaskListener {
 public:
  virtual ~TaskListener() = default;
  virtual void on_task_change(const Task& task, std::optional<TaskState> from) = 0;
};

// What a worker serves: the queues and functions it announced, as Names ids, and the weight of each
// queue. It also carries the worker's place in the rotation over its queues (TaskTable::pick).
struct WorkerFilter {
  std::vector<std::uint32_t> queues;
  std::vector<std::uint32_t> functions;
  // Parallel to queues: how many turns each queue gets per round, relative to the others. Empty:
  // all equal.
  std::vector<std::uint32_t> weights;
  // Sorts the lists and removes repeats (a queue listed twice keeps its largest weight); serves()
  // and pick() need it.
  void normalize();
  // REQUIRES: normalize() since the last change. O(log n).
  bool serves(std::uint32_t queue, std::uint32_t function) const;

  // Kept by TaskTable::pick: the queue served last (equal weights), or each queue's running credit
  // (smooth weighted round robin, parallel to queues).
  std::uint32_t last_queue = 0;
  std::vector<std::int64_t> credit;
  bool weighted() const;
};

// How the master orders queued tasks (README "Scheduling"; the structures: docs/ARCHITECTURE.md).
struct SchedulePolicy {
  // Within a queue and a priority: true, round robin across jobs (each job with queued tasks takes
  // its turn); false, first come first served across all tasks.
  bool fair = true;
  // Aging: every aging_ms a queued job waits without being given a task counts as one priority
  // level more (fifo: every aging_ms a task waits). 0: none, priorities are strict.
  std::uint32_t aging_ms = 10000;
  // Queues ordered by the expected duration of their tasks' functions, shortest first.
  std::vector<std::string> shortest_first{};
};

// "1.5" for 1500 ms, "300" for 300000 ms.
std::string seconds_text(std::uint64_t ms);

class TaskTable {
 public:
  explicit TaskTable(TaskListener* listener = nullptr, SchedulePolicy policy = {});
  TaskTable(const TaskTable&) = delete;
  TaskTable& operator=(const TaskTable&) = delete;

  Names& names() { return names_; }
  const Names& names() const { return names_; }

  // Creates a task: delayed if it has a delay, else queued; `waiting` (its job waits for others to
  // end): waiting, in no queue and no timer until release_job. Returns its id.
  TaskId add(JobId job, const protocol::TaskSpec& spec, TimePoint now, bool waiting = false);
  // Puts back a task read from the journal, with its id and names, in the state it had, except
  // that the restart rule applies: a running task's attempt died with the old master, so it is
  // queued again (the attempt counted), dead if that was its last, cancelled if its job was (mark
  // cancelled jobs with restore_cancelled_job first); a delayed task whose time has come is queued.
  // The listener is not told. Returns true if the rule changed the task's state.
  // REQUIRES: no task with this id exists.
  bool restore(Task task, std::string_view function, std::string_view queue, std::string_view worker, TimePoint now);

  const Task* find(TaskId id) const;
  std::size_t size() const { return tasks_.size(); }
  template <class F> void for_each(F&& f) const {
    for (const auto& [id, t] : tasks_) f(t);
  }
  TaskId last_id() const { return next_id_ - 1; }
  // The next id add() will use; restore() and set_next_id keep it past every restored id.
  void set_next_id(TaskId next) { next_id_ = std::max(next_id_, next); }

  // The queued task this worker should run next, or 0 if none it may run. First the queue: the
  // worker's queues that have a task for it take turns, by weight (equal weights: one after the
  // other). Then, in that queue, the best task: highest effective priority (priority raised by
  // aging), then round robin across jobs (fair) or first queued first (fifo); in a shortest-first
  // queue, the function expected to run shortest first. Picking twice without lease() gives the
  // same task unless the worker has several queues (the rotation moves on).
  // REQUIRES: filter.normalize(). O(log n) in queued tasks and jobs; the worker's lists cost at most
  // the smaller of their length and the number of queues and buckets holding tasks.
  TaskId pick(WorkerFilter& filter);
  TaskId pick(WorkerFilter&& filter) { return pick(filter); }  // a filter used once
  // queued → running: starts attempt number attempts + 1. Returns that number.
  // REQUIRES: the task is queued.
  std::uint32_t lease(TaskId id, std::uint32_t worker, TimePoint now);
  // running → queued without counting the attempt: the lease never reached the worker, or the
  // worker gave it back unbegun (RELEASED). It rejoins its lane at the front, where it was when it
  // was picked. A task of a cancelled job becomes cancelled instead.
  void unlease(TaskId id, std::uint32_t attempt);

  // The outcome of attempt `attempt`. Ok: running → done. Error: running → delayed (backoff) while
  // attempts remain, else dead. An outcome for an attempt that is not the current one, or for a
  // task that is not running, changes nothing and is an UnknownTask error (a stale result).
  // A permanent error (the handler says retrying cannot fix it) makes the task dead at once.
  Status complete(TaskId id, std::uint32_t attempt, bool ok, std::string value, TimePoint now, bool permanent = false);

  // waiting|delayed|queued → cancelled, with `reason` as its outcome if not empty. False if the task
  // is in any other state.
  bool cancel(TaskId id, std::string_view reason = {});
  // Cancels the job's tasks that have not started (returns how many), and marks the job cancelled:
  // an attempt of it that fails from now on ends its task cancelled instead of retrying it.
  std::uint64_t cancel_job(JobId job, const std::vector<TaskRange>& tasks, std::string_view reason = {});
  // waiting → queued, or delayed while the task's delay (counted from its submission) lasts: the
  // job's tasks may now run. Returns how many were released. O(k log n) for k tasks.
  std::uint64_t release_job(const std::vector<TaskRange>& tasks, TimePoint now);
  bool job_cancelled(JobId job) const { return cancelled_jobs_.count(job) > 0; }
  // Marks a job read from the journal as cancelled (before its tasks are restored).
  void restore_cancelled_job(JobId job) { cancelled_jobs_.insert(job); }
  // Forgets the job's mark once its tasks are gone.
  void forget_job(JobId job) { cancelled_jobs_.erase(job); }
  std::size_t cancelled_jobs() const { return cancelled_jobs_.size(); }
  // Forgets a finished task (its results' time is up). Does nothing unless the task is done, dead
  // or cancelled.
  void erase(TaskId id);
  // Forgets a task in whatever state, without telling the listener: its creation was never made
  // durable (the commit failed) and it is undone. Its timers and queue entries are skipped later
  // (its id is never given again, so no entry can come to name another task).
  void discard(TaskId id);

  // Delayed tasks whose time has come become queued; running attempts past their deadline fail.
  void expire(TimePoint now);
  // The earliest time expire() has something to do, if any.
  std::optional<TimePoint> next_deadline() const;

  // Tasks per queue and state, for status. Index = Names id of the queue.
  using StateCounts = std::array<std::uint64_t, protocol::kTaskStateCount>;
  const std::map<std::uint32_t, StateCounts>& counts() const { return counts_; }
  std::uint64_t queued() const { return queued_; }
  // Tasks not finished yet (delayed, queued or running).
  std::uint64_t unfinished() const { return unfinished_; }
  // Bytes of args and outcomes of every task held.
  std::uint64_t bytes() const { return bytes_; }
  // Buckets of queued tasks, (queue, function) pairs, held now: only those with queued tasks.
  std::size_t buckets() const { return buckets_.size(); }
  // Lanes held now: (bucket, job, priority) triples with queued tasks (fifo: (bucket, priority)).
  std::size_t lanes() const;
  // How many lanes were ever created (a task queued where its job, at its priority, had none).
  std::uint64_t lanes_created() const { return lanes_created_; }
  // When the oldest queued task of each queue became queued, by queue (Names id), as ms of the
  // steady clock. A task cancelled while queued may still count until its lane is next served.
  // O(lanes): for status and metrics.
  std::map<std::uint32_t, std::int64_t> oldest_queued_ms() const;
  // The (queue, function) pairs with queued tasks, and how many each holds. O(buckets): for status
  // (which queues hold tasks no connected worker serves).
  struct QueuedPair {
    std::uint32_t queue = 0, function = 0;
    std::uint64_t queued = 0;
  };
  std::vector<QueuedPair> queued_pairs() const;
  // Does the lane of this job and priority in this bucket hold queued tasks? O(log n).
  bool has_queued(std::uint32_t queue, std::uint32_t function, JobId job, std::int32_t priority) const;
  const SchedulePolicy& policy() const { return policy_; }
  // The moving average of the function's attempt durations in ms (attempts that reported, ok or
  // not), if one was seen.
  std::optional<double> expected_ms(std::uint32_t function) const;

  // Checks what the table's bookkeeping promises: the counts per state add up to the tasks held,
  // queued() and every bucket's count match the queued tasks, every queued task is in its bucket
  // and every bucket with queued tasks in the index, running tasks and lease timers match, delayed
  // tasks have their timers, unfinished() and bytes() are right, Names is consistent, and every
  // name's references are exactly its uses (`extra_refs`: name id -> references held outside the
  // table, by worker sessions). Returns the first violation found, "" if none. O(tasks log tasks):
  // for tests and the fuzzer.
  using RefCounts = std::unordered_map<std::uint32_t, std::uint64_t>;
  std::string check_invariants(const RefCounts& extra_refs = {}) const;

  // Delay before the next attempt after `failed_attempts` failures: backoff doubled each time,
  // at most an hour.
  static std::chrono::milliseconds backoff(std::uint32_t backoff_ms, std::uint32_t failed_attempts);

 private:
  // A lane's place in line: the best has the highest score, then the lowest seq. score is
  // priority × W − the time of its turn in ms, where W is aging_ms (a wait of aging_ms is worth one
  // level) or, without aging, so large that priority always decides.
  struct Turn {
    std::int64_t score = 0;
    std::uint64_t seq = 0;
    bool operator==(const Turn& o) const { return score == o.score && seq == o.seq; }
  };
  struct BestFirst {
    bool operator()(const Turn& a, const Turn& b) const { return a.score != b.score ? a.score > b.score : a.seq < b.seq; }
    template <class T> bool operator()(const std::pair<Turn, T>& a, const std::pair<Turn, T>& b) const {
      if ((*this)(a.first, b.first)) return true;
      if ((*this)(b.first, a.first)) return false;
      return a.second < b.second;
    }
  };
  struct Entry {
    std::int64_t at_ms;  // when the task became queued
    TaskId id;
    bool operator>(const Entry& o) const { return at_ms != o.at_ms ? at_ms > o.at_ms : id > o.id; }
  };
  using LaneKey = std::pair<JobId, std::int32_t>;  // (job, priority); fifo: (0, priority)
  // The queued tasks of one job at one priority in one bucket, first queued first. Entries of
  // tasks that left the queued state (cancelled) stay until they reach the top and are skipped.
  struct Lane {
    std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
    std::uint64_t live = 0;  // queued tasks in this lane
    Turn turn;
  };
  // The queued tasks of one (queue, function) pair, in lanes.
  struct Bucket {
    std::map<LaneKey, Lane> lanes;
    std::map<Turn, LaneKey, BestFirst> order;  // lanes, best first
    std::uint64_t live = 0;                    // queued tasks in this bucket
    std::uint32_t queue = 0, function = 0;
    bool indexed = false;  // its head is in its queue's index
    Turn head{};           // the head as the index has it
  };
  // The buckets with queued tasks of one queue, by their best lane.
  struct QueueIndex {
    std::set<std::pair<Turn, std::uint64_t>, BestFirst> buckets;  // (head, bucket key)
    bool shortest_first = false;
  };
  struct Average {
    double ms = 0;
    std::string function;  // the name the id had when measured (ids are reused)
  };
  template <class T> struct Timer {
    TimePoint at;
    TaskId id;
    T tag;
    bool operator>(const Timer& o) const { return at > o.at; }
  };

  Task& get(TaskId id);
  void move_to(Task& t, TaskState to);
  void enter(Task& t);  // schedules a task that just entered its state (queues, timers)
  void fail_attempt(Task& t, std::string error, TimePoint now, bool permanent = false);
  void set_outcome(Task& t, std::string outcome);
  Bucket& bucket(std::uint32_t queue, std::uint32_t function);
  // A task left the queue: its lane's and bucket's counts drop, and a lane or bucket with none left
  // is freed.
  void leave_bucket(const Task& t);
  // The task is gone from the table: its names' references and its queue's counts go.
  void forget(const Task& t);
  void set_worker(Task& t, std::uint32_t worker);
  LaneKey lane_key(const Task& t) const { return {policy_.fair ? t.job : 0, t.priority}; }
  Turn turn_at(std::int32_t priority, std::int64_t ms, std::uint64_t seq) const;
  // Drops entries of tasks no longer queued from the top of the lane; fifo: its turn follows its head.
  void settle(Bucket& b, const LaneKey& key, Lane& lane);
  void set_turn(Bucket& b, Lane& lane, Turn turn);
  // Puts the bucket's best lane in its queue's index.
  void reindex(Bucket& b);
  // The best bucket of queue `q` the worker serves, or nullptr.
  Bucket* best_in(std::uint32_t q, QueueIndex& index, const WorkerFilter& filter);
  void record_duration(const Task& t, TimePoint now);
  static std::int64_t ms_of(TimePoint t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }
  static std::uint64_t bucket_key(std::uint32_t q, std::uint32_t f) { return (std::uint64_t{q} << 32) | f; }

  TaskListener* listener_;
  std::uint64_t lanes_created_ = 0;
  bool rejoin_front_ = false;  // the task entering the queue goes to the front of its lane (unlease)
  Names names_;
  std::unordered_map<TaskId, Task> tasks_;
  TaskId next_id_ = 1;
  std::unordered_map<std::uint64_t, Bucket> buckets_;
  std::map<std::uint32_t, QueueIndex> queues_;  // queues with queued tasks
  SchedulePolicy policy_;
  std::int64_t weight_ms_;  // W of Turn
  std::uint64_t seq_ = 0;
  std::int64_t now_ms_ = 0;                               // the latest time the table was told
  std::unordered_map<std::uint32_t, Average> durations_;  // function id -> its attempts' average
  std::priority_queue<Timer<int>, std::vector<Timer<int>>, std::greater<>> delayed_;
  std::set<std::pair<TimePoint, TaskId>> leases_;  // deadline of every running attempt
  std::map<std::uint32_t, StateCounts> counts_;    // queues with tasks held
  std::unordered_set<JobId> cancelled_jobs_;
  std::uint64_t queued_ = 0;
  std::uint64_t unfinished_ = 0;
  std::uint64_t bytes_ = 0;
};

}  // namespace taskmaster
