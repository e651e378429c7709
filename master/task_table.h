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
//
// Pure: no sockets, no clock reads. Time is always passed in as `now`, so tests move it at will.
// Every state change goes through one private function (move_to), which tells the Listener: the
// one place where the master journals, counts and wakes waiting clients.
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
class Names {
 public:
  std::uint32_t intern(std::string_view name);
  // 0 if the name was never interned.
  std::uint32_t find(std::string_view name) const;
  // REQUIRES: id was returned by intern(); 0 gives "".
  const std::string& name(std::uint32_t id) const { return names_[id]; }

 private:
  std::vector<std::string> names_{std::string()};  // id 0 is "no name"
  std::unordered_map<std::string, std::uint32_t> ids_;
};

struct Task {
  TaskId id = 0;
  JobId job = 0;
  std::string args;          // compact JSON
  std::string outcome;       // done: the result (compact JSON); otherwise the last error, if any
  TimePoint ready_at{};      // delayed: when it becomes queued
  TimePoint deadline{};      // running: when the current attempt times out
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

// What a worker serves: the queues and functions it announced, as Names ids.
struct WorkerFilter {
  std::vector<std::uint32_t> queues;
  std::vector<std::uint32_t> functions;
  // Sorts both lists and removes repeats; serves() needs it.
  void normalize();
  // REQUIRES: normalize() since the last change. O(log n).
  bool serves(std::uint32_t queue, std::uint32_t function) const;
};

// "1.5" for 1500 ms, "300" for 300000 ms.
std::string seconds_text(std::uint64_t ms);

class TaskTable {
 public:
  explicit TaskTable(TaskListener* listener = nullptr) : listener_(listener) {}
  TaskTable(const TaskTable&) = delete;
  TaskTable& operator=(const TaskTable&) = delete;

  Names& names() { return names_; }
  const Names& names() const { return names_; }

  // Creates a task: delayed if it has a delay, else queued. Returns its id.
  TaskId add(JobId job, const protocol::TaskSpec& spec, TimePoint now);
  // Puts back a task read from the journal, in the state it had, with its id. Running tasks come
  // back queued (their attempt stays counted). REQUIRES: no task with this id exists.
  void restore(Task task, TimePoint now);

  const Task* find(TaskId id) const;
  std::size_t size() const { return tasks_.size(); }
  TaskId last_id() const { return next_id_ - 1; }
  // The next id add() will use; restore() and set_next_id keep it past every restored id.
  void set_next_id(TaskId next) { next_id_ = std::max(next_id_, next); }

  // The best queued task this worker may run (highest priority, then oldest), or 0 if none.
  // REQUIRES: filter.normalize(). Its cost does not grow with what the worker lists: it walks the
  // smaller of the worker's (queue, function) pairs and the index of non-empty buckets, best first.
  TaskId pick(const WorkerFilter& filter);
  // queued → running: starts attempt number attempts + 1. Returns that number.
  // REQUIRES: the task is queued.
  std::uint32_t lease(TaskId id, std::uint32_t worker, TimePoint now);
  // running → queued without counting the attempt: the lease never reached the worker.
  void unlease(TaskId id, std::uint32_t attempt);

  // The outcome of attempt `attempt`. Ok: running → done. Error: running → delayed (backoff) while
  // attempts remain, else dead. An outcome for an attempt that is not the current one, or for a
  // task that is not running, changes nothing and is an UnknownTask error (a stale result).
  Status complete(TaskId id, std::uint32_t attempt, bool ok, std::string value, TimePoint now);

  // delayed|queued → cancelled. False if the task is in any other state.
  bool cancel(TaskId id);
  // Forgets a finished task (its results' time is up). Does nothing unless the task is done, dead
  // or cancelled.
  void erase(TaskId id);
  // Forgets a task in whatever state, without telling the listener: its creation was never made
  // durable (the commit failed) and it is undone. Its timers and queue entries are skipped later.
  void discard(TaskId id);
  // After discarding the newest tasks: ids from `first` on are given again. REQUIRES: no task with
  // an id >= first exists.
  void rewind_ids(TaskId first) { next_id_ = std::min(next_id_, first); }

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

  // Delay before the next attempt after `failed_attempts` failures: backoff doubled each time,
  // at most an hour.
  static std::chrono::milliseconds backoff(std::uint32_t backoff_ms, std::uint32_t failed_attempts);

 private:
  struct Entry {
    std::int32_t priority;
    TaskId id;
    bool operator<(const Entry& o) const {  // max-heap: higher priority, then lower id
      return priority != o.priority ? priority < o.priority : id > o.id;
    }
  };
  // The queued tasks of one (queue, function) pair. Entries of tasks that left the queued state
  // (cancelled) stay until they reach the top and are skipped there.
  struct Bucket {
    std::priority_queue<Entry> heap;
    std::uint64_t live = 0;  // queued tasks in this bucket
    std::uint32_t queue = 0, function = 0;
    bool indexed = false;    // its head is in index_
    Entry head{};            // the head as index_ has it
  };
  // Non-empty buckets by their head, best first.
  struct Better {
    bool operator()(const std::pair<Entry, std::uint64_t>& a, const std::pair<Entry, std::uint64_t>& b) const {
      if (b.first < a.first) return true;
      if (a.first < b.first) return false;
      return a.second < b.second;
    }
  };
  template <class T>
  struct Timer {
    TimePoint at;
    TaskId id;
    T tag;
    bool operator>(const Timer& o) const { return at > o.at; }
  };

  Task& get(TaskId id);
  void move_to(Task& t, TaskState to);
  void enter(Task& t);  // schedules a task that just entered its state (queues, timers)
  void fail_attempt(Task& t, std::string error, TimePoint now);
  void set_outcome(Task& t, std::string outcome);
  Bucket& bucket(std::uint32_t queue, std::uint32_t function);
  // Drops the entries of tasks no longer queued from the top of `b`, and puts its (new) head in
  // index_, or takes it out if the bucket is empty. Returns the head, or nullptr.
  const Entry* refresh(Bucket& b);
  static std::uint64_t bucket_key(std::uint32_t q, std::uint32_t f) { return (std::uint64_t{q} << 32) | f; }

  TaskListener* listener_;
  Names names_;
  std::unordered_map<TaskId, Task> tasks_;
  TaskId next_id_ = 1;
  std::unordered_map<std::uint64_t, Bucket> buckets_;
  std::set<std::pair<Entry, std::uint64_t>, Better> index_;  // (head, bucket key) of non-empty buckets
  std::priority_queue<Timer<int>, std::vector<Timer<int>>, std::greater<>> delayed_;
  std::set<std::pair<TimePoint, TaskId>> leases_;  // deadline of every running attempt
  std::map<std::uint32_t, StateCounts> counts_;
  std::uint64_t queued_ = 0;
  std::uint64_t unfinished_ = 0;
  std::uint64_t bytes_ = 0;
};

}  // namespace taskmaster
