#include "master/state.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/log.h"
#include "common/overloaded.h"
#include "master/metrics.h"

namespace taskmaster {

using namespace std::chrono;
namespace proto = protocol;

namespace {

// Identities are binary; logs show them as hex.
std::string show_id(const std::string& identity) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (unsigned char c : identity) {
    s += kHex[c >> 4];
    s += kHex[c & 0xF];
  }
  return s;
}

// Outcome bodies are kept well under the message limit.
constexpr std::size_t kReplyBudget = proto::kMaxMessageBytes / 2;
constexpr milliseconds kHousekeeping{100};
// After a failed commit, how often the master tries the disk again.
constexpr milliseconds kCommitRetry{500};
constexpr std::size_t kResaveAtOnce = 4096;
// Lanes of one turn's SUBMITs considered for overtaking reserved attempts; past this, the rest wait
// their turn behind what is reserved.
constexpr std::size_t kMaxNewLanes = 64;
// Idle workers served by stealing per dispatch.
constexpr std::size_t kMaxThievesPerTurn = 16;

bool has_feature(const std::vector<std::string>& features, std::string_view name) {
  return std::find(features.begin(), features.end(), name) != features.end();
}
// Waiting jobs listed in a REPORT (the count is always whole).
constexpr std::size_t kStatusWaitingJobs = 100;

}  // namespace

void MasterState::Rates::advance(std::int64_t now_s) {
  if (second == 0 || now_s - second > static_cast<std::int64_t>(kSeconds)) {
    if (second != 0) submitted.fill(0), finished.fill(0), failed.fill(0);
    second = now_s;
  }
  while (second < now_s) {
    ++second;
    submitted[second % kSeconds] = 0;
    finished[second % kSeconds] = 0;
    failed[second % kSeconds] = 0;
  }
}

MasterConfig with_default_limits(MasterConfig c) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  const std::uint64_t memory = pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : 4ull << 30;
  if (c.max_queued == 0) c.max_queued = std::max<std::uint64_t>(100000, memory / 2048);
  if (c.max_task_bytes == 0) c.max_task_bytes = memory / 4;
  return c;
}

MasterState::MasterState(MasterConfig config, std::string instance, TimePoint start)
    : config_(with_default_limits(std::move(config))),
      instance_(std::move(instance)),
      tasks_(this, config_.schedule),
      jobs_(this),
      started_(start),
      now_(start) {}

void MasterState::start_ids_at(JobId first_job, TaskId first_task) {
  jobs_.set_next_id(first_job);
  tasks_.set_next_id(first_task);
  first_job_ = first_job;
}

void MasterState::turn(TimePoint now) {
  now_ = now;
  tasks_.expire(now);  // delayed tasks due, attempts past their timeout
  if (now >= next_housekeeping_) housekeeping(now);
  release_waiting(now);  // jobs whose prerequisites ended in this turn
  dispatch(now);
  answer_waits(now, false);
  for (auto& [id, tasks] : out_acks_)
    for (std::size_t i = 0; i < tasks.size(); i += proto::kMaxBatch)
      push(id, proto::Ack{std::vector<TaskId>(tasks.begin() + static_cast<std::ptrdiff_t>(i),
                                              tasks.begin() + static_cast<std::ptrdiff_t>(std::min(tasks.size(), i + proto::kMaxBatch)))});
  out_acks_.clear();
}

MasterState::Recovered MasterState::recover(Journal& journal, TimePoint now) {
  now_ = now;
  auto c = journal.load(now);
  journal_ = &journal;
  Recovered r;
  for (auto& j : c.jobs) {
    jobs_.restore(j.id, std::move(j.idempotency_key), j.total, j.sealed, j.cancelled, std::move(j.digest));
    if (j.waiting) jobs_.restore_waiting(j.id, std::move(j.after), j.after_success, j.failed_after);
    if (j.cancelled) tasks_.restore_cancelled_job(j.id);
  }
  r.jobs = c.jobs.size();
  for (const auto& b : c.batches) jobs_.restore_batch(b.job, b.seq, b.tasks);
  // Tasks in their jobs' finish order; those the restart rule finished get their places after it.
  std::unordered_map<JobId, std::vector<std::pair<std::int64_t, TaskId>>> finished;
  std::vector<TaskId> changed;
  for (auto& row : c.tasks) {
    const TaskId id = row.task.id;
    const JobId job = row.task.job;
    const bool was_running = row.task.state == TaskState::Running;
    const bool rule = tasks_.restore(std::move(row.task), row.function, row.queue, row.worker, now);
    const Task& t = *tasks_.find(id);
    if (was_running) ++r.requeued;
    if (rule) changed.push_back(id);
    // A finished task without a place (none recorded) gets one after the others, as the rule's do.
    if (proto::is_final(t.state)) finished[job].emplace_back(rule || row.finished_seq < 0 ? INT64_MAX : row.finished_seq, id);
    else if (rule) save_task(t, -1, false);  // queued by the rule: saved as such
  }
  r.tasks = c.tasks.size();
  c.tasks.clear();
  c.tasks.shrink_to_fit();
  jobs_.set_next_id(c.next_job);
  tasks_.set_next_id(c.next_task);
  for (auto& [job, list] : finished) {
    std::sort(list.begin(), list.end());
    for (const auto& [seq, id] : list) {
      const Task& t = *tasks_.find(id);
      jobs_.restore_finished(job, id, t.state != TaskState::Done);
      if (seq == INT64_MAX)
        if (const Job* j = jobs_.find(job)) save_task(t, static_cast<std::int64_t>(j->finished.size()) - 1, false);
    }
  }
  for (const auto& j : c.jobs)
    if (j.ended_at) jobs_.restore_ended(j.id, *j.ended_at);
  // Jobs that end only now (the rule finished their last task) get their end time.
  for (TaskId id : changed)
    if (const Job* job = jobs_.find(tasks_.find(id)->job); job && job->ended() && !job->ended_at) {
      jobs_.restore_ended(job->id, now);
      save_job(*job);
    }
  // Waiting jobs whose prerequisites ended (the restart rule may have ended some): released now,
  // and written by the next commit.
  for (JobId j : std::vector<JobId>(jobs_.waiting().begin(), jobs_.waiting().end())) check_waiting(j, now);
  release_waiting(now);
  journal_bytes_ = journal.bytes();
  durable_tasks_ = tasks_.last_id() + 1;
  dispatch_needed_ = true;
  return r;
}

std::optional<TimePoint> MasterState::next_deadline() const {
  auto d = tasks_.next_deadline();
  if (!d || next_housekeeping_ < *d) d = next_housekeeping_;
  if (resave_needed_ && next_commit_retry_ < *d) d = next_commit_retry_;
  return d;
}

// ---- incoming messages ----------------------------------------------------------------------

void MasterState::receive(const std::string& id, Expected<proto::Message> decoded, TimePoint now) {
  now_ = now;
  if (auto* w = workers_.find(id)) w->last_heard = now;  // any message counts as a heartbeat
  if (!decoded) {
    ++counters_.bad_messages;
    log_bad(id, decoded.error());
    reply_error(id, 0, decoded.error().code, decoded.error().message);
    return;
  }
  std::visit(
      Overloaded{
          [&](proto::Hello& m) { on_hello(id, m, now); },
          [&](proto::Credit& m) { on_credit(id, m); },
          [&](proto::Results& m) { on_results(id, m, now); },
          [&](proto::Heartbeat&) {
            if (!workers_.find(id)) reply_error(id, 0, ErrorCode::NotAllowed, "HEARTBEAT: unknown worker; send HELLO");
          },
          [&](proto::Bye&) { on_bye(id, now); },
          [&](proto::Started& m) {
            if (auto* w = workers_.find(id)) on_started(*w, m.tasks);
            else reply_error(id, 0, ErrorCode::NotAllowed, "STARTED: unknown worker; send HELLO");
          },
          [&](proto::Released& m) { on_released(id, m); },
          [&](proto::Submit& m) { on_submit(id, m, now); },
          [&](proto::Wait& m) { on_wait(id, m, now); },
          [&](proto::Cancel& m) { on_cancel(id, m, now); },
          [&](proto::Retry& m) {
            auto accepted = retry_job(m.job, now);
            if (!accepted) return reply_error(id, m.req, accepted.error().code, "RETRY: " + accepted.error().message);
            accepted.value().req = m.req;
            reply(id, std::move(accepted.value()));
          },
          [&](proto::Status& m) { on_status(id, m, now); },
          [&](proto::Purge& m) {
            reply(id, proto::Purged{m.req, m.queue, purge_queue(m.queue)});
          },
          [&](proto::QueuePut& m) {
            if (!values_) return reply_error(id, m.req, ErrorCode::Unavailable, "QUEUE_PUT: this master has no value queues");
            values_->put({false, id, m.req, 0}, m.queue, std::move(m.value), now);
          },
          [&](proto::QueueGet& m) {
            if (!values_) return reply_error(id, m.req, ErrorCode::Unavailable, "QUEUE_GET: this master has no value queues");
            values_->get({false, id, m.req, 0}, m.queue, milliseconds(m.timeout_ms), now);
          },
          [&](auto& m) {  // a command only the master sends
            ++counters_.bad_messages;
            const Error e{ErrorCode::NotAllowed, std::string(proto::command_name(proto::Message(m))) + " is sent by the master, not to it"};
            log_bad(id, e);
            reply_error(id, 0, e.code, e.message);
          },
      },
      *decoded);
}

void MasterState::on_hello(const std::string& id, proto::Hello& m, TimePoint now) {
  auto& names = tasks_.names();
  if (auto* same = workers_.find(id)) {
    // HELLO again on the same connection (the worker's WELCOME was slow to come, or it thought us
    // silent): the session goes on. Attempts it holds stay held, those in flight to it included;
    // `running` can only add to them.
    same->slots = m.slots;
    for (const auto& r : m.running) same->held.try_emplace(r.task, r.attempt);
    same->ceiling = std::max<std::size_t>(m.slots, same->held.size());
    // After WELCOME the worker tells again what has begun; a REVOKE in flight is answered or lost.
    same->reserve = has_feature(m.features, proto::kFeatureReserve);
    same->threads = m.threads;
    same->revokes = 0;
    same->steal_for.clear();
    proto::Welcome welcome{instance_, static_cast<std::uint32_t>(config_.heartbeat.count()),
                           static_cast<std::uint32_t>(config_.worker_timeout.count())};
    if (same->reserve) welcome.features.emplace_back(proto::kFeatureReserve);
    reply(id, std::move(welcome));
    dispatch_needed_ = true;
    return;
  }
  // The same worker process on a new connection (it reconnected before we noticed it was gone):
  // its old session ends, and the attempts it still runs move to the new one.
  const auto name = names.acquire(m.worker);  // the new session's reference
  if (auto* old = workers_.find_process(id, name, m.session, m.host, m.pid)) {
    for (const auto& r : m.running)
      if (auto it = old->held.find(r.task); it != old->held.end() && it->second == r.attempt) old->forget(r.task);
    drop_worker(old->identity, "worker " + m.worker + " reconnected", now);
  } else if (auto* twin = workers_.find_by_name(name)) {
    log_warn("worker ", m.worker, " (", m.host, ", pid ", m.pid, ") has the same name as a connected worker (", twin->host, ", pid ",
             twin->pid, "); both serve, told apart by their session in status");
  }
  WorkerSession& w = workers_.add(id, name, now);
  w.host = m.host;
  w.pid = m.pid;
  w.session = m.session;
  w.slots = m.slots;
  w.reserve = has_feature(m.features, proto::kFeatureReserve);
  w.threads = m.threads;
  // One reference per distinct name (a HELLO may repeat one).
  const auto acquire_all = [&](std::vector<std::string>& list, std::vector<std::uint32_t>& ids) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    for (const auto& n : list) ids.push_back(names.acquire(n));
  };
  if (!m.weights.empty()) {
    // Weights go with their queues through the sort; a repeated queue keeps its largest weight.
    std::map<std::string, std::uint32_t> weight;
    for (std::size_t i = 0; i < m.queues.size(); ++i) weight[m.queues[i]] = std::max(weight[m.queues[i]], m.weights[i]);
    acquire_all(m.queues, w.filter.queues);
    for (const auto& q : m.queues) w.filter.weights.push_back(weight[q]);
  } else {
    acquire_all(m.queues, w.filter.queues);
  }
  acquire_all(m.functions, w.filter.functions);
  w.filter.normalize();
  // Attempts the worker still runs occupy its slots, whatever became of their tasks meanwhile;
  // their results are checked against the task table when they come.
  for (const auto& r : m.running) w.held[r.task] = r.attempt;
  w.ceiling = std::max<std::size_t>(m.slots, w.held.size());
  log_info("worker ", m.worker, " (", m.host, ", pid ", m.pid, ") joined with ", m.slots, " slots, functions ", m.functions.size(),
           ", queues ", m.queues.size());
  proto::Welcome welcome{instance_, static_cast<std::uint32_t>(config_.heartbeat.count()),
                         static_cast<std::uint32_t>(config_.worker_timeout.count())};
  if (w.reserve) welcome.features.emplace_back(proto::kFeatureReserve);
  reply(id, std::move(welcome));
  dispatch_needed_ = true;
}

void MasterState::on_credit(const std::string& id, const proto::Credit& m) {
  auto* w = workers_.find(id);
  if (!w) return reply_error(id, 0, ErrorCode::NotAllowed, "CREDIT: unknown worker; send HELLO");
  w->slots = m.slots;
  w->ceiling = std::max<std::size_t>(m.slots, w->held.size());
  dispatch_needed_ = true;
}

void MasterState::on_results(const std::string& id, proto::Results& m, TimePoint now) {
  auto* w = workers_.find(id);
  if (!w) {
    ++counters_.bad_messages;
    return reply_error(id, 0, ErrorCode::NotAllowed, "RESULTS: unknown worker; send HELLO first");
  }
  on_started(*w, m.started);
  auto& acks = out_acks_[id];
  for (auto& r : m.results) {
    auto it = w->held.find(r.task);
    if (it == w->held.end() || it->second != r.attempt) {
      // Not this worker's to finish. Acknowledged anyway, so that it stops resending.
      ++counters_.unheld_results;
      log_debug("dropped result for task ", r.task, " attempt ", r.attempt, ": not held by worker ", show_id(id));
      acks.push_back(r.task);
      continue;
    }
    w->forget(r.task);
    ++w->done;
    if (!r.ok) ++w->failed;
    auto done = tasks_.complete(r.task, r.attempt, r.ok, std::move(r.value), now, r.permanent);
    if (!done) ++counters_.stale_results;  // timed out, or the worker was presumed dead meanwhile
    acks.push_back(r.task);
  }
  dispatch_needed_ = true;
}

void MasterState::on_started(WorkerSession& w, const std::vector<proto::Lease>& started) {
  for (const auto& s : started)
    if (auto it = w.held.find(s.task); it != w.held.end() && it->second == s.attempt && w.started.insert(s.task).second)
      dispatch_needed_ = true;  // its threads may be all busy now: an idle worker may take its reserved ones (steal)
}

void MasterState::on_released(const std::string& id, const proto::Released& m) {
  auto* w = workers_.find(id);
  if (!w) return reply_error(id, 0, ErrorCode::NotAllowed, "RELEASED: unknown worker; send HELLO");
  if (w->revokes > 0) --w->revokes;
  std::size_t released = 0;
  for (const auto& r : m.tasks) {
    auto it = w->held.find(r.task);
    // Only an attempt this session holds, as that attempt, asked back and not told begun: anything
    // else is stale (or a peer giving back what it may be running: never leased twice).
    if (it == w->held.end() || it->second != r.attempt || w->started.count(r.task) || !w->revoked.count(r.task)) continue;
    w->forget(r.task);
    tasks_.unlease(r.task, r.attempt);  // not counted; queued again in its place, or cancelled
    ++released;
  }
  // The idle worker they were taken back for is served first (lease_queued), and may steal again.
  if (!w->steal_for.empty()) {
    if (auto* thief = workers_.find(w->steal_for)) {
      thief->stealing_until = {};
      if (released) steal_first_.push_back(thief->identity);
    }
    w->steal_for.clear();
  }
  if (released) dispatch_needed_ = true;
}

void MasterState::note_new_lanes(const std::vector<TaskRange>& ranges) {
  // Each (queue, function, job, priority) of the queued tasks, for overtake().
  for (const auto& r : ranges)
    for (TaskId t = r.first; t < r.first + r.count && new_lanes_.size() < kMaxNewLanes; ++t) {
      const Task* task = tasks_.find(t);
      if (!task || task->state != TaskState::Queued) continue;
      const NewLane lane{task->queue, task->function, task->job, task->priority};
      if (std::none_of(new_lanes_.begin(), new_lanes_.end(), [&](const NewLane& l) {
            return l.queue == lane.queue && l.function == lane.function && l.job == lane.job && l.priority == lane.priority;
          }))
        new_lanes_.push_back(lane);
    }
}

void MasterState::revoke(WorkerSession& w, std::vector<proto::Lease> attempts) {
  if (attempts.empty()) return;
  ++w.revokes;
  w.revoke_sent = now_;
  for (const auto& a : attempts) w.revoked.insert(a.task);
  push(w.identity, proto::Revoke{std::move(attempts)});
}

bool MasterState::revoke_pending(WorkerSession& w, TimePoint now) {
  // An answer lost with its connection, or a worker that never answers: after a worker timeout the
  // master may ask again (the attempts it asked for run where they are, or are failed with the session).
  if (w.revokes > 0 && now - w.revoke_sent > config_.worker_timeout) {
    w.revokes = 0;
    w.steal_for.clear();
  }
  return w.revokes > 0;
}

void MasterState::on_bye(const std::string& id, TimePoint now) {
  if (auto* w = workers_.find(id)) {
    log_info("worker ", tasks_.names().name(w->name), " left");
    drop_worker(id, "worker left", now);
  }
}

void MasterState::on_submit(const std::string& id, proto::Submit& m, TimePoint now) {
  if (m.idempotency_key.rfind(kRetryKeyPrefix, 0) == 0)
    return reply_error(id, m.req, ErrorCode::BadField,
                       "SUBMIT: idempotency_key: keys that begin with \"" + std::string(kRetryKeyPrefix) + "\" are the master's (RETRY)");
  auto accepted = submit(m, now);
  if (!accepted) return reply_error(id, m.req, accepted.error().code, accepted.error().message);
  reply(id, std::move(accepted.value()));
}

Expected<proto::Accepted> MasterState::submit(proto::Submit& m, TimePoint now) {
  const auto refuse = [](ErrorCode code, std::string message) { return Error{code, std::move(message)}; };
  const Job* job = nullptr;
  if (m.job == 0) {
    if (m.seq != 0) return refuse(ErrorCode::BadField, "SUBMIT: a new job starts with seq 0");
    if (!m.idempotency_key.empty()) job = jobs_.find_by_key(m.idempotency_key);
    if (job && !same_submission(job->digest, submission_digest(m.tasks, m.after, m.after_success)))
      return refuse(ErrorCode::KeyReused, "SUBMIT: idempotency key '" + m.idempotency_key + "' was used for a different job (" +
                                              std::to_string(job->id) + "): another function, queue, args or options");
    if (job) {  // the same submission again: answer as the first time
      const auto& b = job->batches.front();
      return proto::Accepted{m.req, job->id, b.first, b.count, true};
    }
  } else {
    job = jobs_.find(m.job);
    if (!job) return refuse(ErrorCode::UnknownJob, "SUBMIT: " + unknown_job(m.job));
    if (m.seq < job->batches.size()) {
      const auto& b = job->batches[m.seq];
      return proto::Accepted{m.req, job->id, b.first, b.count, true};
    }
    if (job->sealed) return refuse(ErrorCode::NotAllowed, "SUBMIT: job " + std::to_string(m.job) + " is complete; it takes no more tasks");
    if (m.seq != job->batches.size())
      return refuse(ErrorCode::BadField,
                    "SUBMIT: seq " + std::to_string(m.seq) + " is out of order; expected " + std::to_string(job->batches.size()));
  }
  std::vector<JobId> after;
  if (!job && !m.after.empty()) {
    // Every job named must exist now: a job can only wait for older ones, so no cycle can form.
    for (JobId a : m.after) {
      if (a == jobs_.next_id())
        return refuse(ErrorCode::BadField, "SUBMIT: after: job " + std::to_string(a) + " would be this job: a job cannot wait for itself");
      if (!jobs_.find(a)) return refuse(ErrorCode::UnknownJob, "SUBMIT: after: " + unknown_job(a));
      if (std::find(after.begin(), after.end(), a) == after.end()) after.push_back(a);
    }
  }
  if (auto refusal = over_bounds(m)) {
    ++counters_.refused_full;
    return refuse(refusal->code, "SUBMIT: " + refusal->message);
  }
  const bool created = !job;
  if (created)
    job = &jobs_.create(m.idempotency_key, std::move(after), m.after_success, now,
                        m.idempotency_key.empty() ? std::string() : submission_digest(m.tasks, m.after, m.after_success));
  const TaskRange batch{tasks_.last_id() + 1, static_cast<std::uint32_t>(m.tasks.size())};
  if (journal_) batches_.push_back({job->id, created, job->sealed, batch});
  // The job's change (journalled by on_job_change) before its tasks', which each journal themselves.
  jobs_.add_batch(job->id, batch, !m.more, now);
  const auto lanes_before = tasks_.lanes_created();
  for (auto& spec : m.tasks) tasks_.add(job->id, spec, now, job->waiting);
  if (tasks_.lanes_created() != lanes_before) note_new_lanes({batch});
  if (job->waiting) check_waiting(job->id, now);  // its prerequisites may have ended already
  waits_dirty_ = true;
  return proto::Accepted{m.req, job->id, batch.first, batch.count, false};
}

std::optional<Error> MasterState::over_bounds(const proto::Submit& m) const {
  const std::uint64_t n = m.tasks.size();
  if (n == 0) return std::nullopt;  // closing a job holds nothing more
  std::uint64_t bytes = 0;
  for (const auto& t : m.tasks) bytes += t.args.size();
  const auto limit = [](std::uint64_t v, const char* flag) { return std::to_string(v) + " (" + flag + ")"; };
  if (n > config_.max_queued)
    return Error{ErrorCode::TooLarge, std::to_string(n) + " tasks in one batch; the master holds at most " +
                                          limit(config_.max_queued, "--max-queued") + " unfinished tasks"};
  if (tasks_.unfinished() + n > config_.max_queued)
    return Error{ErrorCode::Unavailable, "the master holds " + std::to_string(tasks_.unfinished()) + " unfinished tasks; its limit is " +
                                             limit(config_.max_queued, "--max-queued") + "; try again when workers have caught up"};
  if (tasks_.bytes() + bytes > config_.max_task_bytes)
    return Error{bytes > config_.max_task_bytes ? ErrorCode::TooLarge : ErrorCode::Unavailable,
                 "the tasks held take " + std::to_string(tasks_.bytes()) + " bytes of args and results; the limit is " +
                     limit(config_.max_task_bytes, "--max-task-bytes") + "; try again when jobs have ended and their results expired"};
  if (journal_ && config_.max_journal_bytes && journal_bytes_ >= config_.max_journal_bytes)
    return Error{ErrorCode::Unavailable, "the journal takes " + std::to_string(journal_bytes_) + " bytes; the limit is " +
                                             limit(config_.max_journal_bytes, "--max-journal-bytes")};
  return std::nullopt;
}

void MasterState::on_wait(const std::string& id, const proto::Wait& m, TimePoint now) {
  PendingWait w{id, m, now + milliseconds(m.timeout_ms)};
  if (try_answer(w, now, m.timeout_ms == 0)) return;
  // Held requests cost memory until they are answered: a bounded number per peer.
  const auto held = std::count_if(waits_.begin(), waits_.end(), [&](const PendingWait& p) { return p.identity == id; });
  if (static_cast<std::size_t>(held) >= proto::kMaxWaitsPerPeer)
    return reply_error(
        id, m.req, ErrorCode::TooLarge,
        "WAIT: this peer already has " + std::to_string(held) + " requests held; the limit is " + std::to_string(proto::kMaxWaitsPerPeer));
  waits_.push_back(std::move(w));
}

void MasterState::on_cancel(const std::string& id, const proto::Cancel& m, TimePoint now) {
  auto n = cancel_job(m.job, now);
  if (!n) return reply_error(id, m.req, ErrorCode::UnknownJob, "CANCEL: " + unknown_job(m.job));
  n->req = m.req;
  reply(id, *n);
}

std::optional<proto::Cancelled> MasterState::cancel_job(JobId id, TimePoint now) {
  const Job* job = jobs_.find(id);
  if (!job) return std::nullopt;
  proto::Cancelled n{0, id, tasks_.cancel_job(job->id, job->batches)};  // waiting tasks too
  jobs_.cancel(job->id, now);
  // Attempts of the job that workers hold but have not begun: asked back; released, they end
  // cancelled (TaskTable::unlease) and never run.
  // The others (begun, or held by a worker without the feature) finish.
  for (auto& [wid, w] : workers_.sessions()) {
    std::vector<proto::Lease> back;
    for (const auto& [task, attempt] : w.held) {
      const Task* t = tasks_.find(task);
      if (!t || t->job != job->id || t->state != TaskState::Running) continue;
      if (w.reserve && t->attempts == attempt && !w.started.count(task)) back.push_back({task, attempt});
      else ++n.running;
    }
    n.reserved += back.size();
    if (!back.empty()) revoke(w, std::move(back));
  }
  jobs_.stop_waiting(job->id);
  waits_dirty_ = true;
  return n;
}

std::uint64_t MasterState::purge_queue(const std::string& queue) {
  const std::uint32_t q = tasks_.names().find(queue);
  if (!q) return 0;
  std::vector<TaskId> ids;
  tasks_.for_each([&](const Task& t) {
    if (t.queue == q && (t.state == TaskState::Queued || t.state == TaskState::Delayed)) ids.push_back(t.id);
  });
  std::sort(ids.begin(), ids.end());
  // Each becomes cancelled as CANCEL cancels one (journalled the same way, on_task_change).
  const std::string why = "purged from queue " + queue;
  std::uint64_t n = 0;
  for (TaskId id : ids) n += tasks_.cancel(id, why) ? 1 : 0;
  if (n) waits_dirty_ = true;
  return n;
}

void MasterState::on_status(const std::string& id, const proto::Status& m, TimePoint now) {
  if (m.job) {
    const Job* job = jobs_.find(m.job);
    if (!job) return reply_error(id, m.req, ErrorCode::UnknownJob, "STATUS: " + unknown_job(m.job));
    return reply(id, proto::Report{m.req, {{"job", api_job(*job, now)}}});
  }
  if (m.jobs) return reply(id, proto::Report{m.req, api_jobs(std::nullopt, m.jobs, now)});
  reply(id, proto::Report{m.req, status_json(now)});
}

// ---- state changes --------------------------------------------------------------------------

void MasterState::on_task_change(const Task& task, std::optional<TaskState> from) {
  const auto now_s = duration_cast<seconds>(now_.time_since_epoch()).count();
  rates_.advance(now_s);
  if (!from) {
    ++counters_.submitted;
    ++rates_.submitted[now_s % Rates::kSeconds];
    queue_rates_[task.queue].add(now_s, false);
  }
  if (task.state == TaskState::Queued) dispatch_needed_ = true;
  std::int64_t finished_seq = -1;
  if (proto::is_final(task.state)) {
    ++counters_.finished;
    ++rates_.finished[now_s % Rates::kSeconds];
    queue_rates_[task.queue].add(now_s, true);
    if (task.state != TaskState::Done) ++rates_.failed[now_s % Rates::kSeconds];
    jobs_.task_finished(task.job, task.id, task.state != TaskState::Done, now_);
    if (const Job* job = jobs_.find(task.job)) finished_seq = static_cast<std::int64_t>(job->finished.size()) - 1;
    waits_dirty_ = true;
  }
  // The one place every state change passes: it goes into the journal's open transaction, which
  // the master commits before anything of this turn that depends on it is sent.
  save_task(task, finished_seq, !from.has_value());
  observe(task, from);
}

void MasterState::on_job_change(const Job& job, JobChange change) {
  // Every change of a job passes here, as every task's passes on_task_change.
  switch (change) {
    case JobChange::BatchAdded: {
      if (journal_) {
        const auto& b = job.batches.back();
        journal_->batch_added(job.id, static_cast<std::uint32_t>(job.batches.size() - 1), b.first, b.count);
      }
      save_job(job);
      break;
    }
    case JobChange::Updated: save_job(job); break;
    case JobChange::Erased: erase_job_row(job.id); break;
  }
  // A job that ended may release those that wait for it (release_waiting, after the change).
  if (change != JobChange::Erased && job.ended_at && jobs_.waiting_for(job.id)) prerequisites_ended_.push_back(job.id);
  waits_dirty_ = true;
}

// ---- jobs after jobs --------------------------------------------------------------------------

void MasterState::release_waiting(TimePoint now) {
  // Releasing a job may end it (its tasks cancelled), which may release the next: until none is left.
  while (!prerequisites_ended_.empty()) {
    std::vector<JobId> ended;
    ended.swap(prerequisites_ended_);
    for (JobId p : ended)
      if (const auto* list = jobs_.waiting_for(p))
        for (JobId d : std::vector<JobId>(*list)) check_waiting(d, now);
  }
}

void MasterState::check_waiting(JobId id, TimePoint now) {
  const Job* job = jobs_.find(id);
  if (!job || !job->waiting) return;
  bool pending = false;
  for (JobId a : job->after) {
    const Job* p = jobs_.find(a);
    if (!p) continue;  // it ended and its results expired; how it ended was recorded when it ended
    if (!p->ended()) pending = true;
    else if (p->failed > 0) jobs_.after_failed(id, a);  // recorded now: `a` may expire before the job is released
  }
  // A job still taking batches waits for its last one, so that all its tasks go (or are cancelled) together.
  if (pending || !job->sealed) return;
  const JobId failed = job->failed_after;
  jobs_.stop_waiting(id);
  if (job->after_success && failed) {
    const std::string why = "not run: job " + std::to_string(failed) +
                            ", which it waited for with --after-success, ended with tasks not done";
    tasks_.cancel_job(id, job->batches, why);
    jobs_.cancel(id, now);
  } else {
    const auto lanes_before = tasks_.lanes_created();
    tasks_.release_job(job->batches, now);
    if (tasks_.lanes_created() != lanes_before) note_new_lanes(job->batches);
  }
  waits_dirty_ = true;
}

// ---- the journal ------------------------------------------------------------------------------

void MasterState::save_task(const Task& task, std::int64_t finished_seq, bool is_new) {
  if (!journal_) return;
  journal_->task_saved(task, tasks_.names(), finished_seq, now_, is_new);
  dirty_tasks_.push_back(task.id);
}

void MasterState::save_job(const Job& job) {
  if (!journal_) return;
  journal_->job_saved(job, now_);
  dirty_jobs_.push_back(job.id);
}

void MasterState::erase_task_row(TaskId id) {
  if (!journal_) return;
  journal_->task_erased(id);
  dirty_tasks_.push_back(id);
}

void MasterState::erase_job_row(JobId id) {
  if (!journal_) return;
  journal_->job_erased(id);
  dirty_jobs_.push_back(id);
}

std::vector<MasterState::Outgoing> MasterState::commit(TimePoint now) {
  now_ = now;
  std::vector<Outgoing> held;
  held.swap(held_);
  if (!journal_) return held;
  if (resave_needed_) {
    // The disk refused the last commit. Each retry writes every row changed since the last good
    // commit: when those are many, retry at most every kCommitRetry, and until then this turn
    // fails as that one did.
    if (now < next_commit_retry_ && dirty_tasks_.size() + dirty_jobs_.size() > kResaveAtOnce) {
      journal_->abandon();
      return commit_failed(Error{ErrorCode::Unavailable, last_journal_failure_}, std::move(held), now, /*attempted=*/false);
    }
    resave();
  }
  const bool wrote = !dirty_tasks_.empty() || !dirty_jobs_.empty();
  const auto t0 = Clock::now();
  if (auto s = journal_->commit(); !s) return commit_failed(s.error(), std::move(held), now, /*attempted=*/true);
  if (metrics_ && wrote) metrics_->commit(duration<double>(Clock::now() - t0).count());
  if (resave_needed_) log_info("journal ", journal_->path(), " is writable again; ", dirty_tasks_.size(), " task changes written");
  resave_needed_ = false;
  dirty_tasks_.clear();
  dirty_jobs_.clear();
  batches_.clear();
  durable_tasks_ = tasks_.last_id() + 1;
  return held;
}

void MasterState::resave() {
  for (auto* v : {&dirty_tasks_, &dirty_jobs_}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  for (JobId j : dirty_jobs_) {
    if (const Job* job = jobs_.find(j)) {
      journal_->job_saved(*job, now_);
      journal_->batches_saved(*job);
    } else {
      journal_->job_erased(j);
    }
  }
  std::unordered_map<JobId, std::unordered_map<TaskId, std::int64_t>> seqs;  // finish order of jobs met
  for (TaskId t : dirty_tasks_) {
    const Task* task = tasks_.find(t);
    if (!task) {
      journal_->task_erased(t);
      continue;
    }
    std::int64_t seq = -1;
    if (proto::is_final(task->state)) {
      if (const Job* job = jobs_.find(task->job)) {
        auto [it, fresh] = seqs.try_emplace(job->id);
        if (fresh)
          for (std::size_t i = 0; i < job->finished.size(); ++i) it->second[job->finished[i]] = static_cast<std::int64_t>(i);
        if (auto f = it->second.find(t); f != it->second.end()) seq = f->second;
      }
    }
    journal_->task_saved(*task, tasks_.names(), seq, now_, /*is_new=*/true);
  }
  journal_->next_ids_saved(jobs_.next_id(), tasks_.last_id() + 1);
}

std::vector<MasterState::Outgoing> MasterState::commit_failed(const Error& e, std::vector<Outgoing> held, TimePoint now, bool attempted) {
  if (attempted) {
    ++counters_.journal_failures;
    next_commit_retry_ = now + kCommitRetry;
  }
  last_journal_failure_ = e.message;
  if (!resave_needed_ || now - last_journal_error_ >= seconds(10)) {
    log_error(e.message,
              "; requests that need the journal are refused (unavailable) until it can be written; workers, leases"
              " and running attempts are kept");
    last_journal_error_ = now;
  }
  resave_needed_ = true;
  // Undo this turn's submissions, newest first: none of them was acknowledged, and none will be.
  // Their ids are not given again: a peer may have seen one (a WAIT by key resolved to the job).
  std::vector<Job::Batch> undone;
  std::vector<JobId> forgotten;
  for (auto it = batches_.rbegin(); it != batches_.rend(); ++it) {
    for (TaskId t = it->batch.first; t < it->batch.first + it->batch.count; ++t) tasks_.discard(t);
    counters_.submitted -= std::min<std::uint64_t>(counters_.submitted, it->batch.count);
    if (it->created) {
      jobs_.discard(it->job);
      tasks_.forget_job(it->job);
      forgotten.push_back(it->job);
    } else {
      jobs_.drop_last_batch(it->job, it->was_sealed, now);
    }
    undone.push_back(it->batch);
  }
  batches_.clear();
  // WAITs held for a job that is gone: by key, they look it up again; by id, they are answered.
  std::erase_if(waits_, [&](PendingWait& w) {
    if (std::find(forgotten.begin(), forgotten.end(), w.request.job) == forgotten.end()) return false;
    if (!w.request.idempotency_key.empty()) {
      w.request.job = 0;
      return false;
    }
    held.push_back({w.identity, proto::ErrorReply{w.request.req, ErrorCode::Unavailable, "the job's submission was not kept; ask again"}});
    return true;
  });
  const auto discarded = [&](TaskId t) {
    return std::any_of(undone.begin(), undone.end(), [t](const Job::Batch& b) { return b.contains(t); });
  };
  if (!undone.empty())
    for (auto& [id, w] : workers_.sessions()) {
      std::erase_if(w.held, [&](const auto& h) { return discarded(h.first); });
      std::erase_if(w.started, [&](TaskId t) { return discarded(t); });
      std::erase_if(w.revoked, [&](TaskId t) { return discarded(t); });
    }
  const std::string why = "the master could not write its journal (" + e.message + ")";
  std::vector<Outgoing> now_out;
  for (auto& o : held) {
    std::visit(Overloaded{
                   [&](proto::Accepted& a) {
                     // A batch undone here, whether this reply was the first or a repeat's.
                     const bool mine = std::any_of(undone.begin(), undone.end(),
                                                   [&](const Job::Batch& b) { return b.first == a.first_task && b.count == a.count; });
                     if (!mine) return now_out.push_back(std::move(o));  // a batch made durable earlier
                     now_out.push_back({o.identity, proto::ErrorReply{a.req, ErrorCode::Unavailable,
                                                                      why + "; nothing of this submission was kept: submit it again"}});
                   },
                   [&](proto::Cancelled& c) {
                     now_out.push_back({o.identity, proto::ErrorReply{c.req, ErrorCode::Unavailable,
                                                                      why + "; job " + std::to_string(c.job) +
                                                                          " is cancelled here but not yet on disk: cancel it again"}});
                   },
                   [&](proto::Outcomes& r) {
                     now_out.push_back({o.identity, proto::ErrorReply{r.req, ErrorCode::Unavailable, why + "; ask again"}});
                   },
                   [&](proto::Ack&) { held_.push_back(std::move(o)); },  // the results are kept: acknowledged once on disk
                   [&](proto::Tasks& t) {
                     std::erase_if(t.tasks, [&](const proto::Assignment& a) { return discarded(a.task); });
                     if (!t.tasks.empty()) now_out.push_back(std::move(o));
                   },
                   [&](auto&) { now_out.push_back(std::move(o)); },  // errors and reports promise nothing
               },
               o.message);
  }
  waits_dirty_ = true;
  dispatch_needed_ = true;
  return now_out;
}

void MasterState::drop_worker(const std::string& identity, const std::string& why, TimePoint now) {
  auto* w = workers_.find(identity);
  if (!w) return;
  const auto held = std::move(w->held);
  auto& names = tasks_.names();
  names.release(w->name);
  for (auto q : w->filter.queues) names.release(q);
  for (auto f : w->filter.functions) names.release(f);
  workers_.remove(identity);
  for (const auto& [task, attempt] : held) (void)tasks_.complete(task, attempt, false, why, now);
  dispatch_needed_ = true;
}

void MasterState::lose_worker(const std::string& identity, const std::string& why, TimePoint now) {
  auto* w = workers_.find(identity);
  if (!w) return;
  const std::string name = tasks_.names().name(w->name);
  log_warn("worker ", name, " presumed dead (", why, "); its ", w->held.size(), " tasks go back to the queue");
  ++counters_.workers_lost;
  drop_worker(identity, "worker " + name + " presumed dead (" + why + ")", now);
}

void MasterState::dispatch(TimePoint now) {
  // While the journal cannot be written no lease could be recorded and no result acknowledged:
  // hand out nothing new (the workers keep what they hold) until it can.
  if (resave_needed_) return;
  if (!dispatch_needed_) return;
  dispatch_needed_ = false;
  just_leased_.clear();
  lease_queued(now);
  overtake(now);
  steal(now);
  steal_first_.clear();
}

void MasterState::lease_queued(TimePoint now) {
  if (tasks_.queued() == 0) return;
  std::vector<WorkerSession*> ready;
  for (auto& [id, w] : workers_.sessions())
    if (w.free_slots() > 0) ready.push_back(&w);
  if (ready.empty()) return;
  // Start with a different worker each time, and give each at most its share per round, so that
  // a few tasks spread over many workers instead of filling the first one.
  std::rotate(ready.begin(), ready.begin() + static_cast<std::ptrdiff_t>(rr_++ % ready.size()), ready.end());
  // Workers that reserved attempts were taken back for go first, and fill up (steal()).
  std::size_t first = 0;
  for (const auto& id : steal_first_)
    for (std::size_t i = first; i < ready.size(); ++i)
      if (ready[i]->identity == id) {
        std::rotate(ready.begin() + static_cast<std::ptrdiff_t>(first), ready.begin() + static_cast<std::ptrdiff_t>(i),
                    ready.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        ++first;
        break;
      }
  steal_first_.clear();
  std::unordered_map<WorkerSession*, std::pair<proto::Tasks, std::size_t>> batches;  // message, bytes
  while (!ready.empty() && tasks_.queued() > 0) {
    const std::uint64_t share = std::max<std::uint64_t>(1, tasks_.queued() / ready.size());
    for (auto it = ready.begin(); it != ready.end();) {
      WorkerSession& w = **it;
      const bool thief = static_cast<std::size_t>(it - ready.begin()) < first;
      std::uint64_t n = thief ? w.free_slots() : std::min<std::uint64_t>(w.free_slots(), share);
      bool starved = false;
      for (; n > 0; --n) {
        const TaskId id = tasks_.pick(w.filter);
        if (!id) {
          starved = true;
          break;
        }
        const auto attempt = tasks_.lease(id, w.name, now);
        if (w.reserve) {  // an earlier attempt of it that timed out here is no longer what it holds
          w.started.erase(id);
          w.revoked.erase(id);
        }
        w.held[id] = attempt;
        if (!new_lanes_.empty()) just_leased_.insert(id);
        const Task& t = *tasks_.find(id);
        auto& [msg, bytes] = batches[&w];
        // Split so that no message nears the size limit (args may be up to 1 MiB each).
        if (bytes + t.args.size() > kReplyBudget && !msg.tasks.empty()) {
          push(w.identity, std::move(msg));
          msg = {};
          bytes = 0;
        }
        bytes += t.args.size() + 96;
        msg.tasks.push_back({id, t.job, attempt, tasks_.names().name(t.function), t.args, t.timeout_ms});
      }
      if (starved || w.free_slots() == 0) {
        it = ready.erase(it);
        if (thief) --first;
      } else {
        ++it;
      }
    }
    first = 0;  // one round first; then shares as usual
  }
  for (auto& [w, batch] : batches)
    if (!batch.first.tasks.empty()) push(w->identity, std::move(batch.first));
}

// A reserved attempt the master may still take back: held by `w` as the task's current attempt,
// not begun.
namespace {
bool revocable(const WorkerSession& w, const Task* t, std::uint32_t attempt) {
  return t && t->state == TaskState::Running && t->attempts == attempt && !w.started.count(t->id);
}
}  // namespace

void MasterState::overtake(TimePoint now) {
  if (new_lanes_.empty()) return;
  auto lanes = std::move(new_lanes_);
  new_lanes_.clear();
  // Only lanes still waiting: no worker had a free slot for them.
  std::erase_if(lanes, [&](const NewLane& l) { return !tasks_.has_queued(l.queue, l.function, l.job, l.priority); });
  if (lanes.empty()) return;
  const bool fair = tasks_.policy().fair;
  std::vector<const NewLane*> mine;
  for (auto& [id, w] : workers_.sessions()) {
    if (!w.reserve || w.reserved() == 0 || revoke_pending(w, now)) continue;
    mine.clear();
    for (const auto& l : lanes)
      if (w.filter.serves(l.queue, l.function)) mine.push_back(&l);
    if (mine.empty()) continue;
    // What the new lanes come before (PROTOCOL.md §8.6): a lower priority, or under fair
    // scheduling another job of at most the same priority. All of it comes back and is leased again
    // in order: taking back only some would put the new tasks behind the rest in the worker.
    std::vector<proto::Lease> back;
    for (const auto& [task, attempt] : w.held) {
      const Task* t = tasks_.find(task);
      // Those leased in this very dispatch are in order already.
      if (!revocable(w, t, attempt) || just_leased_.count(task)) continue;
      for (const NewLane* l : mine)
        if (t->queue == l->queue && (t->priority < l->priority || (fair && t->job != l->job && t->priority <= l->priority))) {
          back.push_back({task, attempt});
          break;
        }
    }
    revoke(w, std::move(back));
  }
}

namespace {
// Do two sorted lists share an element?
bool overlap(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b) {
  for (auto i = a.begin(), j = b.begin(); i != a.end() && j != b.end();) {
    if (*i == *j) return true;
    if (*i < *j) ++i;
    else ++j;
  }
  return false;
}
}  // namespace

void MasterState::steal(TimePoint now) {
  std::vector<WorkerSession*> thieves, victims;
  for (auto& [id, w] : workers_.sessions()) {
    // After lease_queued, a worker with a free slot has nothing queued for it. One that attempts are
    // being taken back for waits for them before it asks again.
    if (w.free_slots() > 0 && w.idle_threads() > 0) {
      if (now >= w.stealing_until) thieves.push_back(&w);
    } else if (w.reserve && w.reserved() > 0 && w.threads && w.started.size() >= w.threads && !revoke_pending(w, now)) {
      victims.push_back(&w);
    }
  }
  if (thieves.empty() || victims.empty()) return;
  std::sort(victims.begin(), victims.end(), [](const WorkerSession* a, const WorkerSession* b) { return a->reserved() > b->reserved(); });
  // Only thieves some victim could serve (by queue and function: the cheap test), a different few first each time.
  std::erase_if(thieves, [&](const WorkerSession* t) {
    return std::none_of(victims.begin(), victims.end(), [&](const WorkerSession* v) {
      return overlap(t->filter.queues, v->filter.queues) && overlap(t->filter.functions, v->filter.functions);
    });
  });
  if (thieves.empty()) return;
  std::rotate(thieves.begin(), thieves.begin() + static_cast<std::ptrdiff_t>(rr_ % thieves.size()), thieves.end());
  if (thieves.size() > kMaxThievesPerTurn) thieves.resize(kMaxThievesPerTurn);
  for (WorkerSession* thief : thieves) {
    for (WorkerSession* victim : victims) {
      if (victim->revokes > 0 || !overlap(thief->filter.queues, victim->filter.queues) ||
          !overlap(thief->filter.functions, victim->filter.functions))
        continue;
      // Half of what waits there (work stealing's split), as much as the idle worker takes.
      const std::size_t want = std::min<std::size_t>(thief->free_slots(), (victim->reserved() + 1) / 2);
      std::vector<proto::Lease> back;
      for (const auto& [task, attempt] : victim->held) {
        const Task* t = tasks_.find(task);
        if (!revocable(*victim, t, attempt) || !thief->filter.serves(t->queue, t->function)) continue;
        back.push_back({task, attempt});
        if (back.size() >= want) break;
      }
      if (back.empty()) continue;
      revoke(*victim, std::move(back));
      victim->steal_for = thief->identity;
      thief->stealing_until = now + config_.worker_timeout;  // until the answer comes (on_released)
      break;
    }
  }
}

// ---- clients waiting for outcomes ------------------------------------------------------------

bool MasterState::try_answer(PendingWait& w, TimePoint now, bool timed_out) {
  auto& m = w.request;
  const Job* job = m.job ? jobs_.find(m.job) : jobs_.find_by_key(m.idempotency_key);
  if (!job) {
    reply_error(w.identity, m.req, ErrorCode::UnknownJob,
                m.job ? "WAIT: " + unknown_job(m.job)
                      : "WAIT: no job has idempotency key '" + m.idempotency_key + "'" +
                            (journal_ ? "" : " (this master runs without a journal: it forgets its jobs when it restarts)"));
    return true;
  }
  m.job = job->id;  // from now on, by id
  const bool fresh = job->finished.size() > m.after;
  if (!fresh && !job->ended() && !timed_out && now < w.deadline) return false;
  proto::Outcomes out;
  out.req = m.req;
  out.job = job->id;
  out.after = std::min<std::uint64_t>(m.after, job->finished.size());
  std::size_t bytes = 0;
  for (std::uint64_t i = out.after; i < job->finished.size() && out.outcomes.size() < m.max; ++i) {
    const Task* t = tasks_.find(job->finished[i]);
    if (!t) continue;  // cannot happen: tasks outlive their job's entry
    if (!out.outcomes.empty() && bytes + t->args.size() + t->outcome.size() > kReplyBudget) break;
    bytes += t->args.size() + t->outcome.size() + 256;  // + task, status, worker, function, queue
    proto::Outcome o;
    o.task = t->id;
    o.args = t->args;
    o.status = t->state;
    o.value = t->outcome;  // cancelled: why, if known
    o.attempts = t->attempts;
    o.worker = tasks_.names().name(t->worker);
    o.function = tasks_.names().name(t->function);
    o.queue = tasks_.names().name(t->queue);
    out.outcomes.push_back(std::move(o));
  }
  out.finished = job->finished.size();
  out.total = job->total;
  out.sealed = job->sealed;
  reply(w.identity, std::move(out));
  return true;
}

void MasterState::answer_waits(TimePoint now, bool timers) {
  if (waits_.empty() || (!waits_dirty_ && !timers)) return;
  waits_dirty_ = false;
  std::erase_if(waits_, [&](PendingWait& w) { return try_answer(w, now, false); });
}

// ---- timers -----------------------------------------------------------------------------------

void MasterState::housekeeping(TimePoint now) {
  next_housekeeping_ = now + kHousekeeping;
  for (const auto& id : workers_.silent(now, config_.worker_timeout))
    lose_worker(id, "no heartbeat for " + seconds_text(config_.worker_timeout.count()) + " s", now);
  for (auto& [id, w] : workers_.sessions())
    if (now - w.last_sent >= config_.heartbeat) reply(id, proto::Heartbeat{});
  for (JobId j : jobs_.expired(now, config_.result_ttl)) {
    if (const Job* job = jobs_.find(j))
      for (const auto& b : job->batches)
        for (TaskId t = b.first; t < b.first + b.count; ++t) {
          tasks_.erase(t);
          erase_task_row(t);
        }
    release_waiting(now);  // what waits for it learns how it ended before it goes
    jobs_.erase(j);        // on_job_change erases its row
    tasks_.forget_job(j);
    ++counters_.expired_jobs;
  }
  if (journal_) journal_bytes_ = journal_->bytes();
  answer_waits(now, true);
}

std::string MasterState::unknown_job(JobId job) const {
  // An in-memory master's job ids start from the clock: an id below this instance's first one was
  // given by an earlier instance.
  if (!journal_ && job < first_job_)
    return "job " + std::to_string(job) + " is gone: the master restarted without a journal (--in-memory) and forgot it";
  return "job " + std::to_string(job) + " does not exist (or its results expired)";
}

// ---- the outbox -------------------------------------------------------------------------------

void MasterState::reply(const std::string& identity, proto::Message m) { push(identity, std::move(m)); }

void MasterState::push(std::string identity, proto::Message m) {
  // REVOKE promises nothing either: the sooner it arrives, the fewer attempts have begun.
  bool now = !journal_ || std::holds_alternative<proto::Welcome>(m) || std::holds_alternative<proto::Heartbeat>(m) ||
             std::holds_alternative<proto::Revoke>(m);
  // A task id reaches a worker only once the task's creation is durable: after a crash or a failed
  // commit the id would not exist (or be given again), and an attempt of a task that never existed
  // must not finish another.
  if (const auto* t = std::get_if<proto::Tasks>(&m))
    now = !journal_ || std::none_of(t->tasks.begin(), t->tasks.end(), [&](const proto::Assignment& a) { return a.task >= durable_tasks_; });
  (now ? out_ : held_).push_back({std::move(identity), std::move(m)});
}

void MasterState::reply_error(const std::string& identity, std::uint64_t req, ErrorCode code, std::string message) {
  reply(identity, proto::ErrorReply{req, code, std::move(message)});
}

void MasterState::sent(const std::string& identity, TimePoint now) {
  if (auto* w = workers_.find(identity)) w->last_sent = now;
}

void MasterState::send_failed(const std::string& identity, const proto::Message& m, proto::SendResult why, TimePoint now) {
  now_ = now;
  auto* w = workers_.find(identity);
  if (auto* t = std::get_if<proto::Tasks>(&m)) {
    // Never reached the worker: the attempts do not count, the tasks go back to the queue.
    for (const auto& a : t->tasks) {
      if (w) w->forget(a.task);
      tasks_.unlease(a.task, a.attempt);
    }
  }
  if (why == proto::SendResult::PeerGone) lose_worker(identity, "its connection is gone", now);
}

std::vector<MasterState::Outgoing> MasterState::take_outbox() {
  std::vector<Outgoing> out;
  out.swap(out_);
  return out;
}

// ---- diagnostics ------------------------------------------------------------------------------

std::string MasterState::check_invariants() const {
  TaskTable::RefCounts worker_refs;                 // name id -> references the sessions hold
  std::set<std::pair<TaskId, std::uint32_t>> held;  // (task, attempt) some session holds
  for (const auto& [id, w] : workers_.sessions()) {
    for (const auto* ids : {&w.filter.queues, &w.filter.functions})
      for (auto n : *ids)
        if (n) ++worker_refs[n];
    if (w.name) ++worker_refs[w.name];
    if (w.held.size() > std::max<std::size_t>(w.slots, w.ceiling))
      return "worker " + tasks_.names().name(w.name) + " holds " + std::to_string(w.held.size()) + " attempts with credit for " +
             std::to_string(w.slots);
    for (const auto& h : w.held) held.insert(h);
    for (auto t : w.started)
      if (!w.held.count(t)) return "worker " + tasks_.names().name(w.name) + " has task " + std::to_string(t) + " begun but not held";
    for (auto t : w.revoked)
      if (!w.held.count(t)) return "worker " + tasks_.names().name(w.name) + " has task " + std::to_string(t) + " asked back but not held";
  }
  if (auto e = tasks_.check_invariants(worker_refs); !e.empty()) return e;
  std::string bad;
  tasks_.for_each([&](const Task& t) {
    if (!bad.empty()) return;
    if (t.state == TaskState::Running && !held.count({t.id, t.attempts}))
      bad = "task " + std::to_string(t.id) + " is running attempt " + std::to_string(t.attempts) + ", which no worker holds";
    else if (tasks_.job_cancelled(t.job) &&
             (t.state == TaskState::Queued || t.state == TaskState::Delayed || t.state == TaskState::Waiting))
      bad = "task " + std::to_string(t.id) + " of a cancelled job is " + std::string(proto::to_string(t.state));
    else if (const Job* j = jobs_.find(t.job); (t.state == TaskState::Waiting) != (j && j->waiting && t.state != TaskState::Cancelled))
      bad = "task " + std::to_string(t.id) + " is " + std::string(proto::to_string(t.state)) + " in a job that " +
            (j && j->waiting ? "waits" : "does not wait");
  });
  if (!bad.empty()) return bad;
  std::size_t cancelled = 0;
  for (const auto& [id, j] : jobs_.all()) {
    std::uint64_t in_batches = 0;
    for (const auto& b : j.batches) in_batches += b.count;
    if (in_batches != j.total)
      return "job " + std::to_string(id) + " counts " + std::to_string(j.total) + " tasks in batches of " + std::to_string(in_batches);
    if (j.finished.size() > j.total) return "job " + std::to_string(id) + " has more finished tasks than tasks";
    std::uint64_t failed = 0;
    std::set<TaskId> seen;
    for (TaskId t : j.finished) {
      const Task* task = tasks_.find(t);
      if (!seen.insert(t).second) return "job " + std::to_string(id) + " lists task " + std::to_string(t) + " twice as finished";
      if (!task || task->job != id || !proto::is_final(task->state))
        return "job " + std::to_string(id) + " lists task " + std::to_string(t) + " as finished, which it is not";
      failed += task->state == TaskState::Done ? 0 : 1;
    }
    if (failed != j.failed) return "job " + std::to_string(id) + "'s failed count is wrong";
    if (j.ended_at.has_value() != j.ended()) return "job " + std::to_string(id) + "'s end time does not match whether it ended";
    if (j.cancelled != tasks_.job_cancelled(id)) return "job " + std::to_string(id) + "'s cancel mark differs in the task table";
    cancelled += j.cancelled ? 1 : 0;
    if (j.waiting != (jobs_.waiting().count(id) > 0)) return "job " + std::to_string(id) + " is not in the waiting set as it should";
    if (j.waiting && j.cancelled) return "job " + std::to_string(id) + " is cancelled and still waiting";
    for (JobId a : j.waiting ? j.after : std::vector<JobId>{}) {
      const auto* list = jobs_.waiting_for(a);
      if (!list || std::count(list->begin(), list->end(), id) != 1)
        return "job " + std::to_string(id) + " is not listed as waiting for job " + std::to_string(a);
      if (a >= id) return "job " + std::to_string(id) + " waits for a later job, " + std::to_string(a);
    }
  }
  if (cancelled != tasks_.cancelled_jobs()) return "the task table marks jobs cancelled that do not exist";
  return "";
}

void MasterState::log_bad(const std::string& identity, const Error& e) {
  const auto held = bad_message_log_.allow("", now_);
  if (!held) return;
  if (*held > 0) log_warn("(", *held, " more bad messages not logged)");
  log_warn("bad message from peer ", show_id(identity), ": ", error_code_name(e.code), ": ", e.message);
}

void MasterState::QueueRate::add(std::int64_t now_s, bool finished_now) {
  const auto slot = static_cast<std::size_t>(now_s % 10);
  if (second[slot] != now_s) {
    second[slot] = now_s;
    submitted[slot] = finished[slot] = 0;
  }
  ++(finished_now ? finished : submitted)[slot];
}

std::pair<double, double> MasterState::QueueRate::per_s(std::int64_t now_s, double window) const {
  std::uint64_t sub = 0, fin = 0;
  for (std::size_t i = 0; i < 10; ++i)
    if (now_s - second[i] < 10) {
      sub += submitted[i];
      fin += finished[i];
    }
  return {sub / window, fin / window};
}

nlohmann::json MasterState::status_json(TimePoint now) {
  using nlohmann::json;
  const auto now_s = duration_cast<seconds>(now.time_since_epoch()).count();
  rates_.advance(now_s);
  // Rates over the last 10 s (the current second included), or since the start if shorter.
  const double window = std::clamp<double>(duration<double>(now - started_).count(), 1.0, 10.0);
  // Leased attempts by queue: begun (running) or held by a worker, not begun (reserved).
  std::unordered_map<std::uint32_t, std::uint64_t> reserved_in;
  for (const auto& [id, w] : workers_.sessions())
    if (w.reserve)
      for (const auto& [task, attempt] : w.held)
        if (!w.started.count(task))
          if (const Task* t = tasks_.find(task)) ++reserved_in[t->queue];
  // Queued tasks of a function that no connected worker serves on that queue: nothing will run them.
  std::unordered_map<std::uint32_t, std::map<std::string, std::uint64_t>> unserved;
  for (const auto& p : tasks_.queued_pairs()) {
    bool served = false;
    for (const auto& [id, w] : workers_.sessions()) served = served || w.filter.serves(p.queue, p.function);
    if (!served) unserved[p.queue][tasks_.names().name(p.function)] += p.queued;
  }
  json queues = json::object();
  for (const auto& [q, c] : tasks_.counts()) {
    json counts = json::object();
    for (std::size_t s = 0; s < c.size(); ++s) counts[std::string(to_string(static_cast<TaskState>(s)))] = c[s];
    const auto r = reserved_in.find(q);
    counts["reserved"] = r == reserved_in.end() ? 0 : r->second;
    const auto rate = queue_rates_.find(q);
    const auto [sub, fin] = rate == queue_rates_.end() ? std::pair{0.0, 0.0} : rate->second.per_s(now_s, window);
    counts["submitted_per_s"] = sub;
    counts["finished_per_s"] = fin;
    json none = json::object();
    if (const auto u = unserved.find(q); u != unserved.end())
      for (const auto& [function, n] : u->second) none[function] = n;
    counts["unserved"] = none;
    queues[tasks_.names().name(q)] = counts;
  }
  // Rates of queues that have no task left and saw none for 10 s are forgotten.
  std::erase_if(queue_rates_, [&](const auto& e) {
    return !tasks_.counts().count(e.first) &&
           std::all_of(e.second.second.begin(), e.second.second.end(), [&](std::int64_t s) { return now_s - s >= 10; });
  });
  json workers = json::array();
  std::uint64_t running = 0, reserved = 0;
  for (const auto& [id, w] : workers_.sessions()) {
    running += w.running();
    reserved += w.reserved();
    json functions = json::array(), queue_names = json::array();
    for (auto f : w.filter.functions) functions.push_back(tasks_.names().name(f));
    for (auto q : w.filter.queues) queue_names.push_back(tasks_.names().name(q));
    workers.push_back({{"id", tasks_.names().name(w.name)},
                       {"session", w.session},
                       {"host", w.host},
                       {"pid", w.pid},
                       {"slots", w.slots},
                       {"in_flight", w.held.size()},
                       {"running", w.running()},
                       {"reserved", w.reserved()},
                       {"threads", w.threads ? json(w.threads) : json(nullptr)},
                       {"done", w.done},
                       {"last_heartbeat_s", duration<double>(now - w.last_heard).count()},
                       {"functions", functions},
                       {"queues", queue_names}});
  }
  std::sort(workers.begin(), workers.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  std::uint64_t sub = 0, fin = 0;
  for (std::int64_t i = 0; i < 10; ++i) {
    sub += rates_.submitted[(now_s - i) % Rates::kSeconds];
    fin += rates_.finished[(now_s - i) % Rates::kSeconds];
  }
  // Jobs after jobs: those still waiting, by id (the first kStatusWaitingJobs), with what they wait for.
  json waiting = json::array();
  for (JobId j : jobs_.waiting()) {
    if (waiting.size() >= kStatusWaitingJobs) break;
    const Job& job = *jobs_.find(j);
    json pending = json::array();
    for (JobId a : job.after)
      if (const Job* p = jobs_.find(a); p && !p->ended()) pending.push_back(a);
    waiting.push_back({{"job", j}, {"after", job.after}, {"pending", pending}, {"after_success", job.after_success}, {"tasks", job.total}});
  }
  json journal = nullptr;
  if (journal_) journal = {{"path", journal_->path()}, {"bytes", journal_->bytes()}, {"writable", !resave_needed_}};
  json report = {
      {"master", instance_},
      {"http", config_.http_url.empty() ? nlohmann::json(nullptr) : nlohmann::json(config_.http_url)},
      {"journal", journal},
      {"uptime_s", duration<double>(now - started_).count()},
      {"queues", queues},
      {"workers", workers},
      {"running", running},
      {"reserved", reserved},
      {"jobs", jobs_.size()},
      {"waiting_jobs", jobs_.waiting().size()},
      {"waiting", waiting},
      {"tasks", tasks_.size()},
      {"rates", {{"submitted_per_s", sub / window}, {"finished_per_s", fin / window}}},
      {"counters",
       {{"submitted", counters_.submitted},
        {"finished", counters_.finished},
        {"bad_messages", counters_.bad_messages},
        {"stale_results", counters_.stale_results},
        {"unheld_results", counters_.unheld_results},
        {"workers_lost", counters_.workers_lost},
        {"expired_jobs", counters_.expired_jobs},
        {"refused_full", counters_.refused_full},
        {"journal_failures", counters_.journal_failures}}},
      {"limits",
       {{"max_queued", config_.max_queued}, {"max_task_bytes", config_.max_task_bytes}, {"max_journal_bytes", config_.max_journal_bytes}}},
      {"unfinished", tasks_.unfinished()},
      {"task_bytes", tasks_.bytes()}};
  if (values_) {
    report["value_queues"] = values_->status();
    report["python_manager"] = values_->listener().empty() ? json(nullptr) : json(values_->listener());
  }
  return report;
}

}  // namespace taskmaster
