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
  if (!from) return to == S::Delayed || to == S::Queued || to == S::Waiting;
  switch (*from) {
    case S::Waiting: return to == S::Delayed || to == S::Queued || to == S::Cancelled;
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
  if (!weights.empty()) {
    weights.resize(queues.size(), 1);
    std::vector<std::pair<std::uint32_t, std::uint32_t>> pairs;
    for (std::size_t i = 0; i < queues.size(); ++i) pairs.emplace_back(queues[i], std::max<std::uint32_t>(weights[i], 1));
    // Sorted by queue, the largest weight first, so that unique keeps it.
    std::sort(pairs.begin(), pairs.end(),
              [](const auto& a, const auto& b) { return a.first != b.first ? a.first < b.first : a.second > b.second; });
    pairs.erase(std::unique(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.first == b.first; }), pairs.end());
    queues.clear();
    weights.clear();
    for (const auto& [q, w] : pairs) {
      queues.push_back(q);
      weights.push_back(w);
    }
  } else {
    std::sort(queues.begin(), queues.end());
    queues.erase(std::unique(queues.begin(), queues.end()), queues.end());
  }
  std::sort(functions.begin(), functions.end());
  functions.erase(std::unique(functions.begin(), functions.end()), functions.end());
  credit.assign(queues.size(), 0);
}

bool WorkerFilter::weighted() const {
  return !weights.empty() && std::any_of(weights.begin(), weights.end(), [&](std::uint32_t w) { return w != weights.front(); });
}

bool WorkerFilter::serves(std::uint32_t queue, std::uint32_t function) const {
  assert(std::is_sorted(queues.begin(), queues.end()) && std::is_sorted(functions.begin(), functions.end()));
  return std::binary_search(queues.begin(), queues.end(), queue) && std::binary_search(functions.begin(), functions.end(), function);
}

TaskTable::TaskTable(TaskListener* listener, SchedulePolicy policy)
    : listener_(listener),
      policy_(std::move(policy)),
      // Without aging, W is past any difference of turn times (2^40 ms: 34 years), and priority ×
      // W (|priority| <= 10^6 < 2^20) stays far inside 64 bits.
      weight_ms_(policy_.aging_ms ? std::int64_t{policy_.aging_ms} : std::int64_t{1} << 40) {}

TaskTable::Bucket& TaskTable::bucket(std::uint32_t queue, std::uint32_t function) {
  auto [it, inserted] = buckets_.try_emplace(bucket_key(queue, function));
  if (inserted) {
    it->second.queue = queue;
    it->second.function = function;
  }
  return it->second;
}

TaskTable::Turn TaskTable::turn_at(std::int32_t priority, std::int64_t ms, std::uint64_t seq) const {
  return {std::int64_t{priority} * weight_ms_ - ms, seq};
}

void TaskTable::set_turn(Bucket& b, Lane& lane, Turn turn) {
  if (lane.turn == turn) return;
  auto node = b.order.extract(lane.turn);  // moves the node: no allocation per turn
  assert(!node.empty());
  node.key() = turn;
  lane.turn = turn;
  b.order.insert(std::move(node));
}

void TaskTable::settle(Bucket& b, const LaneKey& key, Lane& lane) {
  while (!lane.heap.empty()) {
    const Task* t = find(lane.heap.top().id);
    if (t && t->state == TaskState::Queued) break;
    lane.heap.pop();
  }
  // First come first served: the lane's place is that of its oldest task.
  if (!policy_.fair && !lane.heap.empty()) set_turn(b, lane, turn_at(key.second, lane.heap.top().at_ms, lane.heap.top().id));
}

void TaskTable::reindex(Bucket& b) {
  auto& index = queues_[b.queue];
  const std::uint64_t key = bucket_key(b.queue, b.function);
  if (b.order.empty()) {
    if (b.indexed) index.buckets.erase({b.head, key});
    b.indexed = false;
    return;
  }
  const Turn head = b.order.begin()->first;
  if (b.indexed && b.head == head) return;
  if (b.indexed) {
    auto node = index.buckets.extract({b.head, key});
    assert(!node.empty());
    node.value().first = head;
    index.buckets.insert(std::move(node));
  } else {
    if (index.buckets.empty()) {
      const auto& sf = policy_.shortest_first;
      index.shortest_first = std::find(sf.begin(), sf.end(), names_.name(b.queue)) != sf.end();
    }
    index.buckets.insert({head, key});
  }
  b.head = head;
  b.indexed = true;
}

void TaskTable::leave_bucket(const Task& t) {
  --queued_;
  auto it = buckets_.find(bucket_key(t.queue, t.function));
  assert(it != buckets_.end() && it->second.live > 0);
  Bucket& b = it->second;
  const LaneKey key = lane_key(t);
  auto lane = b.lanes.find(key);
  assert(lane != b.lanes.end() && lane->second.live > 0);
  --b.live;
  if (--lane->second.live == 0) {
    // Nothing queued is left in it: what its heap holds are entries of tasks that left. Free it,
    // and the bucket with it if it was the last, so that lanes, buckets and the names they are
    // keyed by do not accumulate.
    b.order.erase(lane->second.turn);
    b.lanes.erase(lane);
  } else if (!policy_.fair) {
    settle(b, key, lane->second);
  }
  if (b.live > 0) {
    reindex(b);
    return;
  }
  auto q = queues_.find(b.queue);
  if (b.indexed) q->second.buckets.erase({b.head, it->first});
  if (q->second.buckets.empty()) queues_.erase(q);
  buckets_.erase(it);
}

std::size_t TaskTable::lanes() const {
  std::size_t n = 0;
  for (const auto& [key, b] : buckets_) n += b.lanes.size();
  return n;
}

std::optional<double> TaskTable::expected_ms(std::uint32_t function) const {
  auto it = durations_.find(function);
  if (it == durations_.end() || function == 0 || names_.references(function) == 0 || it->second.function != names_.name(function))
    return std::nullopt;
  return it->second.ms;
}

void TaskTable::record_duration(const Task& t, TimePoint now) {
  const auto started = t.deadline - std::chrono::milliseconds(t.timeout_ms);
  const double ms = std::max(0.0, std::chrono::duration<double, std::milli>(now - started).count());
  auto [it, inserted] = durations_.try_emplace(t.function);
  Average& a = it->second;
  if (inserted || a.function != names_.name(t.function)) {
    a.function = names_.name(t.function);
    a.ms = ms;
  } else {
    a.ms += (ms - a.ms) / 8;  // an exponential moving average: about the last 8 attempts
  }
  // Forget the averages of functions nobody names any more (their ids go to other names).
  if (durations_.size() > 2 * names_.size() + 64)
    for (auto d = durations_.begin(); d != durations_.end();)
      d = names_.references(d->first) == 0 || d->second.function != names_.name(d->first) ? durations_.erase(d) : std::next(d);
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
      const LaneKey key = lane_key(t);
      auto [it, created] = b.lanes.try_emplace(key);
      Lane& lane = it->second;
      // Back from a worker unbegun: where it was, ahead of those queued after it was picked.
      const Entry e{rejoin_front_ && !lane.heap.empty() ? std::min(now_ms_, lane.heap.top().at_ms) : now_ms_, t.id};
      if (created) {
        ++lanes_created_;
        // A job that had nothing queued here takes its turn after those waiting now (fair); first
        // come first served: its place is that of its task.
        lane.turn = turn_at(t.priority, now_ms_, policy_.fair ? ++seq_ : t.id);
        b.order.emplace(lane.turn, key);
      }
      lane.heap.push(e);
      ++lane.live;
      ++b.live;
      ++queued_;
      if (!policy_.fair && lane.heap.top().id == t.id) settle(b, key, lane);
      reindex(b);
      break;
    }
    case TaskState::Delayed: delayed_.push({t.ready_at, t.id, 0}); break;
    case TaskState::Running: leases_.insert({t.deadline, t.id}); break;
    default: break;
  }
}

TaskId TaskTable::add(JobId job, const protocol::TaskSpec& spec, TimePoint now, bool waiting) {
  now_ms_ = std::max(now_ms_, ms_of(now));
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
  t.state = waiting ? TaskState::Waiting : spec.delay_ms > 0 ? TaskState::Delayed : TaskState::Queued;
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
  now_ms_ = std::max(now_ms_, ms_of(now));
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

TaskTable::Bucket* TaskTable::best_in(std::uint32_t q, QueueIndex& index, const WorkerFilter& filter) {
  Bucket* best = nullptr;
  double best_ms = 0;
  const auto consider = [&](Bucket& b) {
    if (!index.shortest_first) {
      if (!best || BestFirst{}(b.head, best->head)) best = &b;
      return;
    }
    // A function never measured goes first, so that it gets measured.
    const double ms = expected_ms(b.function).value_or(0.0);
    if (!best || ms < best_ms || (ms == best_ms && BestFirst{}(b.head, best->head))) {
      best = &b;
      best_ms = ms;
    }
  };
  if (filter.functions.size() <= index.buckets.size()) {
    // Few functions: look each one up.
    for (auto f : filter.functions)
      if (auto it = buckets_.find(bucket_key(q, f)); it != buckets_.end()) consider(it->second);
    return best;
  }
  // Many functions: the queue's buckets, best first, that the worker serves (shortest-first: all).
  for (const auto& [head, key] : index.buckets) {
    Bucket& b = buckets_.find(key)->second;
    if (!std::binary_search(filter.functions.begin(), filter.functions.end(), b.function)) continue;
    consider(b);
    if (!index.shortest_first) break;
  }
  return best;
}

TaskId TaskTable::pick(WorkerFilter& filter) {
  if (queued_ == 0 || filter.queues.empty()) return 0;
  Bucket* chosen = nullptr;
  if (filter.queues.size() == 1) {
    auto it = queues_.find(filter.queues.front());
    if (it != queues_.end()) chosen = best_in(it->first, it->second, filter);
  } else if (!filter.weighted()) {
    // Equal weights: the next of the worker's queues, after the one served last, that has a task for
    // it. Walk the shorter of its queues and the queues holding tasks.
    const auto& mine = filter.queues;
    if (mine.size() <= queues_.size()) {
      const auto start = std::upper_bound(mine.begin(), mine.end(), filter.last_queue) - mine.begin();
      for (std::size_t i = 0; i < mine.size() && !chosen; ++i) {
        const std::uint32_t q = mine[(static_cast<std::size_t>(start) + i) % mine.size()];
        if (auto it = queues_.find(q); it != queues_.end()) chosen = best_in(q, it->second, filter);
      }
    } else {
      auto it = queues_.upper_bound(filter.last_queue);
      for (std::size_t i = 0; i < queues_.size() && !chosen; ++i, ++it) {
        if (it == queues_.end()) it = queues_.begin();
        if (std::binary_search(mine.begin(), mine.end(), it->first)) chosen = best_in(it->first, it->second, filter);
      }
    }
    if (chosen) filter.last_queue = chosen->queue;
  } else {
    // Weights: smooth weighted round robin over the queues that have a task for the worker (each
    // gains its weight, the richest is served and pays the total), so that over any round each
    // queue's share is its weight's, evenly spread.
    std::int64_t total = 0;
    std::size_t best_i = 0;
    for (std::size_t i = 0; i < filter.queues.size(); ++i) {
      auto it = queues_.find(filter.queues[i]);
      if (it == queues_.end()) continue;
      Bucket* b = best_in(it->first, it->second, filter);
      if (!b) continue;
      filter.credit[i] += filter.weights[i];
      total += filter.weights[i];
      if (!chosen || filter.credit[i] > filter.credit[best_i]) {
        chosen = b;
        best_i = i;
      }
    }
    if (chosen) filter.credit[best_i] -= total;
  }
  if (!chosen) return 0;
  auto& [key, lane] = *chosen->lanes.find(chosen->order.begin()->second);
  settle(*chosen, key, lane);
  reindex(*chosen);  // fifo: skipping a stale entry may have moved the lane's turn
  return lane.heap.top().id;
}

std::uint32_t TaskTable::lease(TaskId id, std::uint32_t worker, TimePoint now) {
  now_ms_ = std::max(now_ms_, ms_of(now));
  Task& t = get(id);
  assert(t.state == TaskState::Queued);
  auto& b = bucket(t.queue, t.function);
  const LaneKey key = lane_key(t);
  Lane& lane = b.lanes.find(key)->second;
  // pick() left this task on top of its lane; remove that entry now that it leaves the queue.
  if (lane.heap.top().id == id) lane.heap.pop();
  // Fair: the job had its turn; it comes again after every other job waiting here.
  if (policy_.fair && lane.live > 1) set_turn(b, lane, turn_at(t.priority, now_ms_, ++seq_));
  ++t.attempts;
  set_worker(t, worker);
  t.deadline = now + std::chrono::milliseconds(t.timeout_ms);
  move_to(t, TaskState::Running);  // leaves the lane (and frees it if it was the last task)
  return t.attempts;
}

void TaskTable::unlease(TaskId id, std::uint32_t attempt) {
  Task& t = get(id);
  if (t.state != TaskState::Running || t.attempts != attempt) return;
  --t.attempts;
  if (t.attempts == 0) set_worker(t, 0);  // no attempt ran anywhere
  rejoin_front_ = true;
  move_to(t, job_cancelled(t.job) ? TaskState::Cancelled : TaskState::Queued);  // a cancelled job takes no more attempts
  rejoin_front_ = false;
}

std::map<std::uint32_t, std::int64_t> TaskTable::oldest_queued_ms() const {
  std::map<std::uint32_t, std::int64_t> oldest;
  for (const auto& [key, b] : buckets_)
    for (const auto& [lane_key, lane] : b.lanes) {
      if (!lane.live || lane.heap.empty()) continue;
      auto [it, fresh] = oldest.try_emplace(b.queue, lane.heap.top().at_ms);
      if (!fresh) it->second = std::min(it->second, lane.heap.top().at_ms);
    }
  return oldest;
}

std::vector<TaskTable::QueuedPair> TaskTable::queued_pairs() const {
  std::vector<QueuedPair> out;
  out.reserve(buckets_.size());
  for (const auto& [key, b] : buckets_)
    if (b.live) out.push_back({b.queue, b.function, b.live});
  return out;
}

bool TaskTable::has_queued(std::uint32_t queue, std::uint32_t function, JobId job, std::int32_t priority) const {
  auto b = buckets_.find(bucket_key(queue, function));
  if (b == buckets_.end()) return false;
  auto lane = b->second.lanes.find({policy_.fair ? job : 0, priority});
  return lane != b->second.lanes.end() && lane->second.live > 0;
}

void TaskTable::set_outcome(Task& t, std::string outcome) {
  bytes_ -= t.outcome.size();
  t.outcome = std::move(outcome);
  bytes_ += t.outcome.size();
}

void TaskTable::fail_attempt(Task& t, std::string error, TimePoint now, bool permanent) {
  set_outcome(t, std::move(error));
  if (job_cancelled(t.job)) {
    move_to(t, TaskState::Cancelled);  // its job takes no more attempts
  } else if (t.attempts < t.max_attempts && !permanent) {
    t.ready_at = now + backoff(t.backoff_ms, t.attempts);
    move_to(t, TaskState::Delayed);
    if (t.ready_at <= now) move_to(t, TaskState::Queued);
  } else {
    move_to(t, TaskState::Dead);
  }
}

Status TaskTable::complete(TaskId id, std::uint32_t attempt, bool ok, std::string value, TimePoint now, bool permanent) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return make_error(ErrorCode::UnknownTask, "task " + std::to_string(id) + " does not exist");
  Task& t = it->second;
  if (t.state != TaskState::Running || t.attempts != attempt)
    return make_error(ErrorCode::UnknownTask, "task " + std::to_string(id) + " attempt " + std::to_string(attempt) +
                                                  " is not current (task is " + std::string(to_string(t.state)) + ", attempt " +
                                                  std::to_string(t.attempts) + ")");
  now_ms_ = std::max(now_ms_, ms_of(now));
  record_duration(t, now);
  if (ok) {
    set_outcome(t, std::move(value));
    move_to(t, TaskState::Done);
  } else {
    fail_attempt(t, std::move(value), now, permanent);
  }
  return Ok{};
}

bool TaskTable::cancel(TaskId id, std::string_view reason) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return false;
  Task& t = it->second;
  if (t.state != TaskState::Delayed && t.state != TaskState::Queued && t.state != TaskState::Waiting) return false;
  if (!reason.empty()) set_outcome(t, std::string(reason));
  move_to(t, TaskState::Cancelled);
  return true;
}

std::uint64_t TaskTable::cancel_job(JobId job, const std::vector<TaskRange>& tasks, std::string_view reason) {
  cancelled_jobs_.insert(job);
  std::uint64_t n = 0;
  for (const auto& r : tasks)
    for (TaskId t = r.first; t < r.first + r.count; ++t) n += cancel(t, reason) ? 1 : 0;
  return n;
}

std::uint64_t TaskTable::release_job(const std::vector<TaskRange>& tasks, TimePoint now) {
  now_ms_ = std::max(now_ms_, ms_of(now));
  std::uint64_t n = 0;
  for (const auto& r : tasks)
    for (TaskId id = r.first; id < r.first + r.count; ++id) {
      auto it = tasks_.find(id);
      if (it == tasks_.end() || it->second.state != TaskState::Waiting) continue;
      Task& t = it->second;
      move_to(t, t.ready_at > now ? TaskState::Delayed : TaskState::Queued);  // --delay counts from the submission
      ++n;
    }
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
  now_ms_ = std::max(now_ms_, ms_of(now));
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
  std::unordered_set<TaskId> in_heaps;             // entries may be stale (tasks that left the queue)
  std::map<std::uint32_t, std::size_t> per_queue;  // indexed buckets per queue
  for (const auto& [key, b] : buckets_) {
    std::uint64_t lane_live = 0;
    if (b.lanes.size() != b.order.size())
      return fail("bucket ", b.queue, "/", b.function, " orders ", b.order.size(), " of ", b.lanes.size(), " lanes");
    for (const auto& [lk, lane] : b.lanes) {
      if (lane.live == 0) return fail("bucket ", b.queue, "/", b.function, " keeps an empty lane");
      auto o = b.order.find(lane.turn);
      if (o == b.order.end() || o->second != lk) return fail("a lane of bucket ", b.queue, "/", b.function, " is not where its order says");
      std::uint64_t n = 0;
      for (auto heap = lane.heap; !heap.empty(); heap.pop()) {
        const Task* t = find(heap.top().id);
        if (!t || t->state != TaskState::Queued) continue;  // a stale entry
        if (bucket_key(t->queue, t->function) != key || lane_key(*t) != lk)
          return fail("queued task ", t->id, " is in another lane's heap");
        if (in_heaps.insert(t->id).second) ++n;
      }
      if (n != lane.live) return fail("a lane of bucket ", b.queue, "/", b.function, " counts ", lane.live, " queued tasks for ", n);
      lane_live += n;
    }
    auto it = live.find(key);
    if (it == live.end() || it->second != b.live || lane_live != b.live)
      return fail("bucket ", b.queue, "/", b.function, " counts ", b.live, " queued tasks");
    if (bucket_key(b.queue, b.function) != key) return fail("bucket ", key, " is keyed wrongly");
    if (!b.indexed) return fail("bucket ", b.queue, "/", b.function, " has queued tasks but is not in the index");
    if (!(b.head == b.order.begin()->first)) return fail("bucket ", b.queue, "/", b.function, " is indexed by a lane that is not its best");
    ++indexed;
    ++per_queue[b.queue];
    auto q = queues_.find(b.queue);
    if (q == queues_.end() || !q->second.buckets.count({b.head, key}))
      return fail("bucket ", b.queue, "/", b.function, " is not where the index says");
  }
  for (const auto& [id, t] : tasks_)
    if (t.state == TaskState::Queued && !in_heaps.count(id)) return fail("queued task ", id, " is missing from its bucket");
  std::size_t in_index = 0;
  for (const auto& [q, index] : queues_) {
    if (index.buckets.empty()) return fail("queue ", q, " is indexed with no buckets");
    if (per_queue[q] != index.buckets.size())
      return fail("the index of queue ", q, " has ", index.buckets.size(), " entries for ", per_queue[q], " buckets");
    in_index += index.buckets.size();
  }
  if (indexed != in_index) return fail("the index has ", in_index, " entries for ", indexed, " buckets");
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
