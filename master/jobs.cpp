#include "master/jobs.h"

#include <algorithm>
#include <cassert>

namespace taskmaster {

Job& JobTable::create(std::string idempotency_key) { return restore(next_id_, std::move(idempotency_key)); }

Job& JobTable::restore(JobId id, std::string idempotency_key) {
  assert(!jobs_.count(id));
  next_id_ = std::max(next_id_, id + 1);
  Job& job = jobs_[id];
  job.id = id;
  if (!idempotency_key.empty()) {
    keys_[idempotency_key] = id;
    job.idempotency_key = std::move(idempotency_key);
  }
  return job;
}

Job* JobTable::find(JobId id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

Job* JobTable::find_by_key(const std::string& key) {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : find(it->second);
}

void JobTable::mark_ended(Job& job, TimePoint now) {
  if (job.ended_at || !job.ended()) return;
  job.ended_at = now;
  ended_.emplace_back(now, job.id);
}

void JobTable::restore_ended(Job& job, TimePoint at) {
  if (job.ended_at) return;
  job.ended_at = at;
  // Keep ended_ in time order (journal replay does not come in end order).
  auto it = std::upper_bound(ended_.begin(), ended_.end(), at, [](TimePoint t, const auto& e) { return t < e.first; });
  ended_.insert(it, {at, job.id});
}

void JobTable::task_finished(Job& job, TaskId task, bool failed, TimePoint now) {
  job.finished.push_back(task);
  if (failed) ++job.failed;
  mark_ended(job, now);
}

void JobTable::seal(Job& job, TimePoint now) {
  job.sealed = true;
  mark_ended(job, now);
}

void JobTable::drop_last_batch(Job& job, bool was_sealed, TimePoint now) {
  if (job.batches.empty()) return;
  const Job::Batch b = job.batches.back();
  job.batches.pop_back();
  job.total -= std::min<std::uint64_t>(job.total, b.count);
  // Tasks of a batch that finish in the turn that made it can only have been cancelled (no attempt
  // of theirs ran): each counted as failed.
  const auto dropped = std::erase_if(job.finished, [&](TaskId t) { return t >= b.first && t < b.first + b.count; });
  job.failed -= std::min<std::uint64_t>(job.failed, dropped);
  job.sealed = was_sealed;
  if (job.ended_at && !job.ended()) {
    job.ended_at.reset();
    std::erase_if(ended_, [&](const auto& e) { return e.second == job.id; });
  }
  mark_ended(job, now);
}

void JobTable::forget_created(JobId id) {
  erase(id);
  if (next_id_ == id + 1) next_id_ = id;
}

std::vector<JobId> JobTable::expired(TimePoint now, std::chrono::milliseconds ttl) const {
  std::vector<JobId> out;
  for (const auto& [at, id] : ended_) {
    if (at + ttl > now) break;
    out.push_back(id);
  }
  return out;
}

void JobTable::erase(JobId id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (!it->second.idempotency_key.empty()) keys_.erase(it->second.idempotency_key);
  jobs_.erase(it);
  if (!ended_.empty() && ended_.front().second == id) ended_.pop_front();  // the usual case
  else std::erase_if(ended_, [id](const auto& e) { return e.second == id; });
}

}  // namespace taskmaster
