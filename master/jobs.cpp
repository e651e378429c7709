#include "master/jobs.h"

#include <array>
#include <cassert>

#include <sodium.h>

namespace taskmaster {

namespace {

void hash_u64(crypto_generichash_state& h, std::uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  crypto_generichash_update(&h, b, sizeof b);
}

void hash_text(crypto_generichash_state& h, const std::string& s) {
  hash_u64(h, s.size());
  crypto_generichash_update(&h, reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

void hash_task(crypto_generichash_state& h, const protocol::TaskSpec& t) {
  hash_text(h, t.function);
  hash_text(h, t.queue);
  hash_text(h, t.args);
  hash_u64(h, static_cast<std::uint64_t>(static_cast<std::int64_t>(t.priority)));
  hash_u64(h, t.delay_ms);
  hash_u64(h, t.timeout_ms);
  hash_u64(h, t.max_attempts);
  hash_u64(h, t.backoff_ms);
}

std::string hex_final(crypto_generichash_state& h) {
  unsigned char out[32];
  crypto_generichash_final(&h, out, sizeof out);
  char text[2 * sizeof out + 1];
  sodium_bin2hex(text, sizeof text, out, sizeof out);
  return text;
}

}  // namespace

std::string submission_digest(const std::vector<protocol::TaskSpec>& tasks, const std::vector<JobId>& after, bool after_success) {
  crypto_generichash_state whole, first;
  for (auto* h : {&whole, &first}) {
    crypto_generichash_init(h, nullptr, 0, 32);
    hash_u64(*h, after.size());
    for (JobId a : after) hash_u64(*h, a);
    hash_u64(*h, after_success ? 1 : 0);
  }
  for (const auto& t : tasks) hash_task(whole, t);
  if (!tasks.empty()) hash_task(first, tasks.front());
  return std::to_string(tasks.size()) + " " + hex_final(whole) + " " + hex_final(first);
}

bool same_submission(const std::string& stored, const std::string& again) {
  const auto parts = [](const std::string& d) -> std::optional<std::array<std::string, 3>> {
    const auto a = d.find(' '), b = a == std::string::npos ? a : d.find(' ', a + 1);
    if (b == std::string::npos) return std::nullopt;
    return std::array<std::string, 3>{d.substr(0, a), d.substr(a + 1, b - a - 1), d.substr(b + 1)};
  };
  const auto s = parts(stored), n = parts(again);
  if (!s || !n) return true;
  return (*s)[0] == (*n)[0] ? (*s)[1] == (*n)[1] : (*s)[2] == (*n)[2];
}

const Job& JobTable::create(std::string idempotency_key, std::vector<JobId> after, bool after_success, std::optional<TimePoint> now,
                            std::string digest) {
  const Job& job = restore(next_id_, std::move(idempotency_key), 0, false, false, std::move(digest));
  get(job.id)->created = now;
  if (!after.empty()) wait_for(*get(job.id), std::move(after), after_success);
  return job;
}

void JobTable::wait_for(Job& job, std::vector<JobId> after, bool after_success) {
  for (JobId a : after) dependents_[a].push_back(job.id);
  job.after = std::move(after);
  job.after_success = after_success;
  job.waiting = true;
  waiting_.insert(job.id);
}

void JobTable::restore_waiting(JobId id, std::vector<JobId> after, bool after_success, JobId failed_after) {
  Job* job = get(id);
  if (!job || job->waiting || after.empty()) return;
  wait_for(*job, std::move(after), after_success);
  job->failed_after = failed_after;
}

const std::vector<JobId>* JobTable::waiting_for(JobId id) const {
  auto it = dependents_.find(id);
  return it == dependents_.end() ? nullptr : &it->second;
}

void JobTable::after_failed(JobId id, JobId after) {
  Job* job = get(id);
  if (!job || job->failed_after) return;
  job->failed_after = after;
  tell(*job, JobChange::Updated);
}

void JobTable::stop_waiting(JobId id) {
  Job* job = get(id);
  if (!job || !job->waiting) return;
  unwait(*job);
  tell(*job, JobChange::Updated);
}

void JobTable::unwait(Job& job) {
  job.waiting = false;
  waiting_.erase(job.id);
  for (JobId a : job.after) {
    auto it = dependents_.find(a);
    if (it == dependents_.end()) continue;
    std::erase(it->second, job.id);
    if (it->second.empty()) dependents_.erase(it);
  }
}

const Job& JobTable::restore(JobId id, std::string idempotency_key, std::uint64_t total, bool sealed, bool cancelled, std::string digest) {
  assert(!jobs_.count(id));
  next_id_ = std::max(next_id_, id + 1);
  Job& job = jobs_[id];
  job.id = id;
  job.total = total;
  job.sealed = sealed;
  job.cancelled = cancelled;
  job.digest = std::move(digest);
  if (!idempotency_key.empty()) {
    keys_[idempotency_key] = id;
    job.idempotency_key = std::move(idempotency_key);
  }
  return job;
}

Job* JobTable::get(JobId id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Job* JobTable::find(JobId id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Job* JobTable::find_by_key(const std::string& key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : find(it->second);
}

void JobTable::mark_ended(Job& job, TimePoint now) {
  if (job.ended_at || !job.ended()) return;
  job.ended_at = now;
  ended_.emplace_back(now, job.id);
}

void JobTable::add_batch(JobId id, TaskRange batch, bool last, TimePoint now) {
  Job* job = get(id);
  assert(job && !job->sealed);
  job->batches.push_back(batch);
  job->total += batch.count;
  if (last) {
    job->sealed = true;
    mark_ended(*job, now);
  }
  tell(*job, JobChange::BatchAdded);
}

void JobTable::task_finished(JobId id, TaskId task, bool failed, TimePoint now) {
  Job* job = get(id);
  if (!job) return;
  job->finished.push_back(task);
  if (failed) ++job->failed;
  const bool was = job->ended_at.has_value();
  mark_ended(*job, now);
  if (!was && job->ended_at) tell(*job, JobChange::Updated);
}

void JobTable::seal(JobId id, TimePoint now) {
  Job* job = get(id);
  if (!job || job->sealed) return;
  job->sealed = true;
  mark_ended(*job, now);
  tell(*job, JobChange::Updated);
}

void JobTable::cancel(JobId id, TimePoint now) {
  Job* job = get(id);
  if (!job || (job->cancelled && job->sealed)) return;
  job->cancelled = true;
  job->sealed = true;
  mark_ended(*job, now);
  tell(*job, JobChange::Updated);
}

void JobTable::restore_batch(JobId id, std::uint32_t seq, TaskRange batch) {
  Job* job = get(id);
  if (!job) return;
  if (job->batches.size() <= seq) job->batches.resize(seq + 1);
  job->batches[seq] = batch;
}

void JobTable::restore_finished(JobId id, TaskId task, bool failed) {
  Job* job = get(id);
  if (!job) return;
  job->finished.push_back(task);
  if (failed) ++job->failed;
}

void JobTable::restore_ended(JobId id, TimePoint at) {
  Job* job = get(id);
  if (!job || job->ended_at) return;
  job->ended_at = at;
  // Keep ended_ in time order (journal replay does not come in end order).
  auto it = std::upper_bound(ended_.begin(), ended_.end(), at, [](TimePoint t, const auto& e) { return t < e.first; });
  ended_.insert(it, {at, job->id});
}

void JobTable::drop_last_batch(JobId id, bool was_sealed, TimePoint now) {
  Job* job = get(id);
  if (!job || job->batches.empty()) return;
  const Job::Batch b = job->batches.back();
  job->batches.pop_back();
  job->total -= std::min<std::uint64_t>(job->total, b.count);
  // Tasks of a batch that finish in the turn that made it can only have been cancelled (no attempt
  // of theirs ran): each counted as failed.
  const auto dropped = std::erase_if(job->finished, [&](TaskId t) { return b.contains(t); });
  job->failed -= std::min<std::uint64_t>(job->failed, dropped);
  job->sealed = was_sealed || job->cancelled;  // a cancelled job takes no more tasks
  if (job->ended_at && !job->ended()) {
    job->ended_at.reset();
    std::erase_if(ended_, [&](const auto& e) { return e.second == job->id; });
  }
  mark_ended(*job, now);
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
  if (const Job* job = find(id)) tell(*job, JobChange::Erased);
  discard(id);
}

void JobTable::discard(JobId id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (it->second.waiting) unwait(it->second);
  if (!it->second.idempotency_key.empty()) keys_.erase(it->second.idempotency_key);
  jobs_.erase(it);
  if (!ended_.empty() && ended_.front().second == id) ended_.pop_front();  // the usual case
  else std::erase_if(ended_, [id](const auto& e) { return e.second == id; });
}

}  // namespace taskmaster
