#include "master/task_table.h"

#include <algorithm>
#include <cassert>
#include <cstdio>

namespace taskmaster {

std::uint32_t Names::intern(std::string_view name) {
  if (name.empty()) return 0;
  if (auto it = ids_.find(std::string(name)); it != ids_.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(names_.size());
  names_.emplace_back(name);
  ids_.emplace(std::string(name), id);
  return id;
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
    case S::Running: return to == S::Done || to == S::Delayed || to == S::Queued || to == S::Dead;
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

void TaskTable::move_to(Task& t, TaskState to) {
  assert(allowed(t.state, to));
  const TaskState from = t.state;
  auto& c = counts_[t.queue];
  --c[static_cast<std::size_t>(from)];
  ++c[static_cast<std::size_t>(to)];
  if (from == TaskState::Queued) {
    --queued_;
    --bucket(t.queue, t.function).live;
  }
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
  t.function = names_.intern(spec.function);
  t.queue = names_.intern(spec.queue);
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

void TaskTable::restore(Task t, TimePoint now) {
  assert(!tasks_.count(t.id));
  // A running attempt died with the old master: the task is queued again, the attempt counted.
  if (t.state == TaskState::Running) t.state = TaskState::Queued;
  if (t.state == TaskState::Delayed && t.ready_at <= now) t.state = TaskState::Queued;
  next_id_ = std::max(next_id_, t.id + 1);
  auto [it, inserted] = tasks_.emplace(t.id, std::move(t));
  assert(inserted);
  Task& task = it->second;
  ++counts_[task.queue][static_cast<std::size_t>(task.state)];
  if (!protocol::is_final(task.state)) ++unfinished_;
  bytes_ += task.args.size() + task.outcome.size();
  enter(task);
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
  t.worker = worker;
  t.deadline = now + std::chrono::milliseconds(t.timeout_ms);
  move_to(t, TaskState::Running);
  return t.attempts;
}

void TaskTable::unlease(TaskId id, std::uint32_t attempt) {
  Task& t = get(id);
  if (t.state != TaskState::Running || t.attempts != attempt) return;
  --t.attempts;
  if (t.attempts == 0) t.worker = 0;  // no attempt ran anywhere
  move_to(t, TaskState::Queued);
}

void TaskTable::set_outcome(Task& t, std::string outcome) {
  bytes_ -= t.outcome.size();
  t.outcome = std::move(outcome);
  bytes_ += t.outcome.size();
}

void TaskTable::fail_attempt(Task& t, std::string error, TimePoint now) {
  set_outcome(t, std::move(error));
  if (t.attempts < t.max_attempts) {
    t.ready_at = now + backoff(t.backoff_ms, t.attempts);
    if (t.ready_at <= now) {
      move_to(t, TaskState::Delayed);
      // The listener may have cancelled it meanwhile (its job was cancelled).
      if (t.state == TaskState::Delayed) move_to(t, TaskState::Queued);
    } else {
      move_to(t, TaskState::Delayed);
    }
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
                                                  " is not current (task is " + std::string(to_string(t.state)) +
                                                  ", attempt " + std::to_string(t.attempts) + ")");
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

void TaskTable::erase(TaskId id) {
  auto it = tasks_.find(id);
  // An unfinished task stays: erasing it would leave queued_, its bucket and its timers behind.
  if (it == tasks_.end() || !protocol::is_final(it->second.state)) return;
  --counts_[it->second.queue][static_cast<std::size_t>(it->second.state)];
  bytes_ -= it->second.args.size() + it->second.outcome.size();
  tasks_.erase(it);
}

void TaskTable::discard(TaskId id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  Task& t = it->second;
  --counts_[t.queue][static_cast<std::size_t>(t.state)];
  if (t.state == TaskState::Queued) {
    --queued_;
    --bucket(t.queue, t.function).live;
  }
  if (t.state == TaskState::Running) leases_.erase({t.deadline, t.id});
  if (!protocol::is_final(t.state)) --unfinished_;
  bytes_ -= t.args.size() + t.outcome.size();
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

}  // namespace taskmaster
