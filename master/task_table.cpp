#include "master/task_table.h"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <type_traits>

namespace taskmaster {

std::uint32_t Names::acquire(std::string_view name) {
  if (name.empty()) return 0;
  std::uint32_t id;
  if (auto it = ids_.find(std::string(name)); it != ids_.end()) {
    id = it->second;
  } else if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
    names_[id].name.assign(name);
    ids_.emplace(std::string(name), id);
  } else {
    id = static_cast<std::uint32_t>(names_.size());
    names_.push_back({std::string(name), 0});
    ids_.emplace(std::string(name), id);
  }
  ++names_[id].refs;
  ++references_;
  return id;
}

void Names::retain(std::uint32_t id) {
  if (id == 0) return;
  assert(id < names_.size() && names_[id].refs > 0);
  ++names_[id].refs;
  ++references_;
}

void Names::release(std::uint32_t id) {
  if (id == 0) return;
  assert(id < names_.size() && names_[id].refs > 0);
  --references_;
  if (--names_[id].refs > 0) return;
  ids_.erase(names_[id].name);
  std::string().swap(names_[id].name);  // give its memory back too
  free_.push_back(id);
}

std::string Names::check() const {
  std::uint64_t refs = 0;
  std::size_t held = 0;
  for (std::uint32_t id = 1; id < names_.size(); ++id) {
    refs += names_[id].refs;
    if (names_[id].refs == 0) continue;
    ++held;
    auto it = ids_.find(names_[id].name);
    if (it == ids_.end() || it->second != id) return "name id " + std::to_string(id) + " is held but not found by its name";
  }
  if (names_[0].refs != 0) return "name id 0 is counted";
  for (auto id : free_)
    if (id == 0 || id >= names_.size() || names_[id].refs != 0) return "name id " + std::to_string(id) + " is free but referenced";
  if (held != ids_.size()) return std::to_string(ids_.size()) + " names known for " + std::to_string(held) + " held";
  if (held + free_.size() + 1 != names_.size()) return "name ids are lost: neither held nor free";
  if (refs != references_) return "the names' reference total is wrong";
  return "";
}

std::uint32_t Names::find(std::string_view name) const {
  auto it = ids_.find(std::string(name));
  return it == ids_.end() ? 0 : it->second;
}

namespace {

// The transitions of the diagram in task_table.h; anything else is a bug.
[[maybe_unused]] bool allowed(std::optional<TaskState> from, TaskState to) {
  using S = TaskState;
  if (!from) return to == S::Delayed || to == S::Queued;
  switch (*from) {
    case S::Delayed: return to == S::Queued || to == S::Cancelled;
    case S::Queued: return to == S::Running || to == S::Cancelled;
    case S::Running: return to == S::Done || to == S::Delayed || to == S::Queued || to == S::Dead || to == S::Cancelled;
    case S::Done:
    case S::Dead:
    case S::Cancelled: return false;
  }
  return false;
}

}  // namespace

std::string seconds_text(std::uint64_t ms) {
  std::string s = std::to_string(ms / 1000);
  if (ms % 1000) {
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03u", static_cast<unsigned>(ms % 1000));
    s += frac;
    while (s.back() == '0') s.pop_back();
  }
  return s;
}

std::chrono::milliseconds TaskTable::backoff(std::uint32_t backoff_ms, std::uint32_t failed_attempts) {
  constexpr std::uint64_t kCap = 3600 * 1000;
  std::uint64_t d = backoff_ms;
  for (std::uint32_t i = 1; i < failed_attempts && d < kCap; ++i) d *= 2;
  return std::chrono::milliseconds(std::min(d, kCap));
}

Task& TaskTable::get(TaskId id) {
  auto it = tasks_.find(id);
  assert(it != tasks_.end());
  return it->second;
}

const Task* TaskTable::find(TaskId id) const {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

void WorkerFilter::normalize() {
  for (auto* v : {&queues, &functions}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
}

bool WorkerFilter::serves(std::uint32_t queue, std::uint32_t function) const {
  assert(std::is_sorted(queues.begin(), queues.end()) && std::is_sorted(functions.begin(), functions.end()));
  return std::binary_search(queues.begin(), queues.end(), queue) && std::binary_search(functions.begin(), functions.end(), function);
}

TaskTable::Bucket& TaskTable::bucket(std::uint32_t queue, std::uint32_t function) {
  auto [it, inserted] = buckets_.try_emplace(bucket_key(queue, function));
  if (inserted) {
    it->second.queue = queue;
    it->second.function = function;
  }
  return it->second;
}

const TaskTable::Entry* TaskTable::refresh(Bucket& b) {
  while (!b.heap.empty()) {
    const Task* t = find(b.heap.top().id);
    if (t && t->state == TaskState::Queued) break;
    b.heap.pop();
  }
  const std::uint64_t key = bucket_key(b.queue, b.function);
  const bool same = b.indexed && !b.heap.empty() && b.head.id == b.heap.top().id && b.head.priority == b.heap.top().priority;
  if (same) return &b.heap.top();
  if (b.indexed) index_.erase({b.head, key});
  b.indexed = !b.heap.empty();
  if (!b.indexed) return nullptr;
  b.head = b.heap.top();
  index_.insert({b.head, key});
  return &b.heap.top();
}

void TaskTable::leave_bucket(const Task& t) {
  --queued_;
  auto it = buckets_.find(bucket_key(t.queue, t.function));
  assert(it != buckets_.end() && it->second.live > 0);
  Bucket& b = it->second;
  if (--b.live > 0) return;
  // Nothing queued is left in it: what its heap holds are entries of tasks that left. Free it, so
  // that buckets (and the names they are keyed by) do not accumulate.
  if (b.indexed) index_.erase({b.head, it->first});
  buckets_.erase(it);
}

void TaskTable::forget(const Task& t) {
  auto c = counts_.find(t.queue);
  --c->second[static_cast<std::size_t>(t.state)];
  if (std::all_of(c->second.begin(), c->second.end(), [](std::uint64_t n) { return n == 0; })) counts_.erase(c);
  bytes_ -= t.args.size() + t.outcome.size();
  names_.release(t.function);
  names_.release(t.queue);
  names_.release(t.worker);
}

void TaskTable::set_worker(Task& t, std::uint32_t worker) {
  names_.retain(worker);
  names_.release(t.worker);
  t.worker = worker;
}

void TaskTable::move_to(Task& t, TaskState to) {
  assert(allowed(t.state, to));
  const TaskState from = t.state;
  auto& c = counts_[t.queue];
  --c[static_cast<std::size_t>(from)];
  ++c[static_cast<std::size_t>(to)];
  if (from == TaskState::Queued) leave_bucket(t);
  // Running attempts are few (at most the workers' slots) and end often: their timers are removed
  // at once, so none lingers until its deadline.
  if (from == TaskState::Running) leases_.erase({t.deadline, t.id});
  if (protocol::is_final(to)) --unfinished_;
  t.state = to;
  enter(t);
  if (listener_) listener_->on_task_change(t, from);
}

void TaskTable::enter(Task& t) {
  switch (t.state) {
    case TaskState::Queued: {
      auto& b = bucket(t.queue, t.function);
      const Entry e{t.priority, t.id};
      b.heap.push(e);
      ++b.live;
      ++queued_;
      if (!b.indexed || b.head < e) refresh(b);
      break;
    }
    case TaskState::Delayed: delayed_.push({t.ready_at, t.id, 0}); break;
    case TaskState::Running: leases_.insert({t.deadline, t.id}); break;
    default: break;
  }
}

TaskId TaskTable::add(JobId job, const protocol::TaskSpec& spec, TimePoint now) {
  Task t;
  t.id = next_id_++;
  t.job = job;
  t.args = spec.args;
  t.timeout_ms = spec.timeout_ms;
  t.backoff_ms = spec.backoff_ms;
  t.priority = spec.priority;
  t.function = names_.acquire(spec.function);
  t.queue = names_.acquire(spec.queue);
  t.max_attempts = static_cast<std::uint16_t>(std::min<std::uint32_t>(spec.max_attempts, 0xFFFF));
  t.ready_at = now + std::chrono::milliseconds(spec.delay_ms);
  t.state = spec.delay_ms > 0 ? TaskState::Delayed : TaskState::Queued;
  auto [it, inserted] = tasks_.emplace(t.id, std::move(t));
  assert(inserted);
  Task& task = it->second;
  ++counts_[task.queue][static_cast<std::size_t>(task.state)];
  ++unfinished_;
  bytes_ += task.args.size();
  enter(task);
  if (listener_) listener_->on_task_change(task, std::nullopt);
  return task.id;
}

bool TaskTable::restore(Task t, std::string_view function, std::string_view queue, std::string_view worker, TimePoint now) {
  assert(!tasks_.count(t.id));
  const TaskState stored = t.state;
  if (t.state == TaskState::Running) {
    // Its attempt died with the old master: the rule of any failed attempt (fail_attempt).
    if (job_cancelled(t.job)) {
      t.state = TaskState::Cancelled;
      t.outcome = "the master stopped during the task's attempt " + std::to_string(t.attempts) + "; its job was cancelled";
    } else if (t.attempts >= t.max_attempts) {
      t.state = TaskState::Dead;
      t.outcome = "the master stopped during the task's last attempt (" + std::to_string(t.attempts) + " of " +
                  std::to_string(t.max_attempts) + ")";
    } else {
      t.state = TaskState::Queued;
    }
  }
  if (t.state == TaskState::Delayed && t.ready_at <= now) t.state = TaskState::Queued;
  t.function = names_.acquire(function);
  t.queue = names_.acquire(queue);
  t.worker = names_.acquire(worker);
  next_id_ = std::max(next_id_, t.id + 1);
  auto [it, inserted] = tasks_.emplace(t.id, std::move(t));
  assert(inserted);
  Task& task = it->second;
  ++counts_[task.queue][static_cast<std::size_t>(task.state)];
  if (!protocol::is_final(task.state)) ++unfinished_;
  bytes_ += task.args.size() + task.outcome.size();
  enter(task);
  return task.state != stored;
}

TaskId TaskTable::pick(const WorkerFilter& filter) {
  if (queued_ == 0) return 0;
  const std::uint64_t pairs = std::uint64_t{filter.queues.size()} * filter.functions.size();
  if (pairs <= index_.size()) {
    // Few pairs: look each one up.
    const Entry* best = nullptr;
    for (auto q : filter.queues)
      for (auto f : filter.functions) {
        auto it = buckets_.find(bucket_key(q, f));
        if (it == buckets_.end() || it->second.live == 0) continue;
        const Entry* head = refresh(it->second);
        if (head && (!best || *best < *head)) best = head;
      }
    return best ? best->id : 0;
  }
  // Many pairs: the first non-empty bucket, best first, that the worker serves.
  for (auto it = index_.begin(); it != index_.end();) {
    Bucket& b = buckets_.find(it->second)->second;
    const Task* top = find(b.heap.top().id);
    if (!top || top->state != TaskState::Queued) {
      refresh(b);  // its head was stale: it moved in the index
      it = index_.begin();
      continue;
    }
    if (filter.serves(b.queue, b.function)) return b.heap.top().id;
    ++it;
  }
  return 0;
}

std::uint32_t TaskTable::lease(TaskId id, std::uint32_t worker, TimePoint now) {
  Task& t = get(id);
  assert(t.state == TaskState::Queued);
  auto& b = bucket(t.queue, t.function);
  // pick() left this task on top of its bucket; remove that entry now that it leaves the queue.
  if (!b.heap.empty() && b.heap.top().id == id) b.heap.pop();
  refresh(b);
  ++t.attempts;
  set_worker(t, worker);
  t.deadline = now + std::chrono::milliseconds(t.timeout_ms);
  move_to(t, TaskState::Running);
  return t.attempts;
}

void TaskTable::unlease(TaskId id, std::uint32_t attempt) {
  Task& t = get(id);
  if (t.state != TaskState::Running || t.attempts != attempt) return;
  --t.attempts;
  if (t.attempts == 0) set_worker(t, 0);                                        // no attempt ran anywhere
  move_to(t, job_cancelled(t.job) ? TaskState::Cancelled : TaskState::Queued);  // a cancelled job takes no more attempts
}

void TaskTable::set_outcome(Task& t, std::string outcome) {
  bytes_ -= t.outcome.size();
  t.outcome = std::move(outcome);
  bytes_ += t.outcome.size();
}

void TaskTable::fail_attempt(Task& t, std::string error, TimePoint now) {
  set_outcome(t, std::move(error));
  if (job_cancelled(t.job)) {
    move_to(t, TaskState::Cancelled);  // its job takes no more attempts
  } else if (t.attempts < t.max_attempts) {
    t.ready_at = now + backoff(t.backoff_ms, t.attempts);
    move_to(t, TaskState::Delayed);
    if (t.ready_at <= now) move_to(t, TaskState::Queued);
  } else {
    move_to(t, TaskState::Dead);
  }
}

Status TaskTable::complete(TaskId id, std::uint32_t attempt, bool ok, std::string value, TimePoint now) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return make_error(ErrorCode::UnknownTask, "task " + std::to_string(id) + " does not exist");
  Task& t = it->second;
  if (t.state != TaskState::Running || t.attempts != attempt)
    return make_error(ErrorCode::UnknownTask, "task " + std::to_string(id) + " attempt " + std::to_string(attempt) +
                                                  " is not current (task is " + std::string(to_string(t.state)) + ", attempt " +
                                                  std::to_string(t.attempts) + ")");
  if (ok) {
    set_outcome(t, std::move(value));
    move_to(t, TaskState::Done);
  } else {
    fail_attempt(t, std::move(value), now);
  }
  return Ok{};
}

bool TaskTable::cancel(TaskId id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return false;
  Task& t = it->second;
  if (t.state != TaskState::Delayed && t.state != TaskState::Queued) return false;
  move_to(t, TaskState::Cancelled);
  return true;
}

std::uint64_t TaskTable::cancel_job(JobId job, const std::vector<TaskRange>& tasks) {
  cancelled_jobs_.insert(job);
  std::uint64_t n = 0;
  for (const auto& r : tasks)
    for (TaskId t = r.first; t < r.first + r.count; ++t) n += cancel(t) ? 1 : 0;
  return n;
}

void TaskTable::erase(TaskId id) {
  auto it = tasks_.find(id);
  // An unfinished task stays: erasing it would leave queued_, its bucket and its timers behind.
  if (it == tasks_.end() || !protocol::is_final(it->second.state)) return;
  forget(it->second);
  tasks_.erase(it);
}

void TaskTable::discard(TaskId id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  Task& t = it->second;
  if (t.state == TaskState::Queued) leave_bucket(t);
  if (t.state == TaskState::Running) leases_.erase({t.deadline, t.id});
  if (!protocol::is_final(t.state)) --unfinished_;
  forget(t);
  tasks_.erase(it);
}

void TaskTable::expire(TimePoint now) {
  while (!delayed_.empty() && delayed_.top().at <= now) {
    const auto timer = delayed_.top();
    delayed_.pop();
    auto it = tasks_.find(timer.id);
    if (it == tasks_.end()) continue;
    Task& t = it->second;
    // A stale timer: the task was cancelled, or delayed again with a later time.
    if (t.state != TaskState::Delayed || t.ready_at != timer.at) continue;
    move_to(t, TaskState::Queued);
  }
  while (!leases_.empty() && leases_.begin()->first <= now) {
    Task& t = get(leases_.begin()->second);
    fail_attempt(t, "timed out after " + seconds_text(t.timeout_ms) + " s", now);  // removes the timer
  }
}

std::optional<TimePoint> TaskTable::next_deadline() const {
  std::optional<TimePoint> d;
  if (!delayed_.empty()) d = delayed_.top().at;
  if (!leases_.empty() && (!d || leases_.begin()->first < *d)) d = leases_.begin()->first;
  return d;
}

std::string TaskTable::check_invariants(const RefCounts& extra_refs) const {
  const auto fail = [](auto... parts) {
    std::string s;
    ((s +=
      [](const auto& p) {
        if constexpr (std::is_arithmetic_v<std::decay_t<decltype(p)>>) return std::to_string(p);
        else return std::string(p);
      }(parts)),
     ...);
    return s;
  };
  std::map<std::uint32_t, StateCounts> counts;
  std::unordered_map<std::uint64_t, std::uint64_t> live;  // bucket key -> queued tasks
  std::unordered_map<std::uint32_t, std::uint64_t> refs;  // name id -> references from tasks
  std::uint64_t queued = 0, unfinished = 0, bytes = 0, running = 0;
  for (const auto& [id, t] : tasks_) {
    if (t.id != id) return fail("task ", id, " is stored as task ", t.id);
    if (id >= next_id_) return fail("task ", id, " is at or past the next id ", next_id_);
    ++counts[t.queue][static_cast<std::size_t>(t.state)];
    bytes += t.args.size() + t.outcome.size();
    for (auto n : {t.function, t.queue, t.worker})
      if (n) ++refs[n];
    if (!protocol::is_final(t.state)) ++unfinished;
    if (t.state == TaskState::Queued) {
      ++queued;
      ++live[bucket_key(t.queue, t.function)];
    }
    if (t.state == TaskState::Running) {
      ++running;
      if (!leases_.count({t.deadline, t.id})) return fail("running task ", id, " has no lease timer");
      if (t.attempts == 0) return fail("running task ", id, " has no attempt");
    }
    if (t.attempts > t.max_attempts) return fail("task ", id, " ran ", t.attempts, " attempts of ", t.max_attempts);
  }
  for (const auto& [q, c] : counts_) {
    auto it = counts.find(q);
    if (it == counts.end()) {
      if (std::any_of(c.begin(), c.end(), [](std::uint64_t n) { return n != 0; }))
        return fail("queue ", q, " counts tasks it does not have");
      return fail("queue ", q, " has an empty counts entry");
    }
    if (it->second != c) return fail("the state counts of queue ", names_.name(q), " do not match its tasks");
  }
  if (counts.size() != counts_.size()) return fail("a queue with tasks has no counts");
  if (queued != queued_) return fail("queued() is ", queued_, " but ", queued, " tasks are queued");
  if (unfinished != unfinished_) return fail("unfinished() is ", unfinished_, " but ", unfinished, " tasks are unfinished");
  if (bytes != bytes_) return fail("bytes() is ", bytes_, " but the tasks hold ", bytes);
  if (running != leases_.size()) return fail(leases_.size(), " lease timers for ", running, " running tasks");
  if (live.size() != buckets_.size()) return fail(buckets_.size(), " buckets held for ", live.size(), " with queued tasks");
  std::size_t indexed = 0;
  std::unordered_set<TaskId> in_heaps;  // entries may be stale (tasks that left the queue)
  for (const auto& [key, b] : buckets_) {
    for (auto heap = b.heap; !heap.empty(); heap.pop()) {
      const Task* t = find(heap.top().id);
      if (!t || t->state != TaskState::Queued) continue;  // a stale entry
      if (bucket_key(t->queue, t->function) != key) return fail("queued task ", t->id, " is in another bucket's heap");
      in_heaps.insert(t->id);
    }
    auto it = live.find(key);
    if (it == live.end() || it->second != b.live) return fail("bucket ", b.queue, "/", b.function, " counts ", b.live, " queued tasks");
    if (bucket_key(b.queue, b.function) != key) return fail("bucket ", key, " is keyed wrongly");
    if (b.indexed) {
      ++indexed;
      if (!index_.count({b.head, key})) return fail("bucket ", b.queue, "/", b.function, " is not where the index says");
    }
    if (!b.indexed) return fail("bucket ", b.queue, "/", b.function, " has queued tasks but is not in the index");
  }
  for (const auto& [id, t] : tasks_)
    if (t.state == TaskState::Queued && !in_heaps.count(id)) return fail("queued task ", id, " is missing from its bucket");
  if (indexed != index_.size()) return fail("the index has ", index_.size(), " entries for ", indexed, " buckets");
  if (auto e = names_.check(); !e.empty()) return e;
  for (const auto& [id, n] : extra_refs) refs[id] += n;
  std::uint64_t uses = 0;
  for (const auto& [id, n] : refs) {
    uses += n;
    if (names_.references(id) != n) return fail("name ", names_.name(id), " has ", names_.references(id), " references for ", n, " uses");
  }
  if (names_.references() != uses) return fail(names_.references(), " name references held for ", uses, " uses");
  // Every delayed task has its timer (stale timers of tasks that left may stay).
  std::unordered_set<TaskId> timed;
  for (auto heap = delayed_; !heap.empty(); heap.pop())
    if (const Task* t = find(heap.top().id); t && t->state == TaskState::Delayed && t->ready_at == heap.top().at) timed.insert(t->id);
  for (const auto& [id, t] : tasks_)
    if (t.state == TaskState::Delayed && !timed.count(id)) return fail("delayed task ", id, " has no timer");
  return "";
}

}  // namespace taskmaster
