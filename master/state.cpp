#include "master/state.h"

#include <algorithm>

#include "common/log.h"

namespace taskmaster {

using namespace std::chrono;
namespace proto = protocol;

namespace {

template <class... F> struct Overloaded : F... { using F::operator()...; };
template <class... F> Overloaded(F...) -> Overloaded<F...>;

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

}  // namespace

void MasterState::Rates::advance(std::int64_t now_s) {
  if (second == 0) second = now_s;
  while (second < now_s) {
    ++second;
    submitted[second % 10] = 0;
    finished[second % 10] = 0;
  }
}

MasterState::MasterState(MasterConfig config, std::string instance, TimePoint start)
    : config_(std::move(config)), instance_(std::move(instance)), tasks_(this), started_(start), now_(start) {}

void MasterState::turn(TimePoint now) {
  now_ = now;
  tasks_.expire(now);  // delayed tasks due, attempts past their timeout
  if (now >= next_housekeeping_) housekeeping(now);
  dispatch(now);
  answer_waits(now, false);
  for (auto& [id, tasks] : out_acks_)
    if (!tasks.empty()) out_.push_back({id, proto::Ack{std::move(tasks)}});
  out_acks_.clear();
}

Journal::Loaded MasterState::recover(Journal& journal, TimePoint now) {
  now_ = now;
  const auto loaded = journal.load(tasks_, jobs_, now);
  journal_ = &journal;
  dispatch_needed_ = true;
  return loaded;
}

std::optional<TimePoint> MasterState::next_deadline() const {
  auto d = tasks_.next_deadline();
  if (!d || next_housekeeping_ < *d) d = next_housekeeping_;
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
  std::visit(Overloaded{
                 [&](proto::Hello& m) { on_hello(id, m, now); },
                 [&](proto::Credit& m) { on_credit(id, m); },
                 [&](proto::Results& m) { on_results(id, m, now); },
                 [&](proto::Heartbeat&) {
                   if (!workers_.find(id)) reply_error(id, 0, ErrorCode::NotAllowed, "HEARTBEAT: unknown worker; send HELLO");
                 },
                 [&](proto::Bye&) { on_bye(id, now); },
                 [&](proto::Submit& m) { on_submit(id, m, now); },
                 [&](proto::Wait& m) { on_wait(id, m, now); },
                 [&](proto::Cancel& m) { on_cancel(id, m, now); },
                 [&](proto::Status& m) { on_status(id, m, now); },
                 [&](auto& m) {  // a command only the master sends
                   ++counters_.bad_messages;
                   const Error e{ErrorCode::NotAllowed,
                                 std::string(proto::command_name(proto::Message(m))) + " is sent by the master, not to it"};
                   log_bad(id, e);
                   reply_error(id, 0, e.code, e.message);
                 },
             },
             *decoded);
}

void MasterState::on_hello(const std::string& id, proto::Hello& m, TimePoint now) {
  const auto name = tasks_.names().intern(m.worker);
  // The same worker on a new connection (it reconnected before we noticed it was gone): its old
  // session ends, and the attempts it still runs move to the new one.
  std::unordered_map<TaskId, std::uint32_t> carried;
  if (auto* old = workers_.find_by_name(name); old && old->identity != id) {
    for (const auto& r : m.running)
      if (auto it = old->held.find(r.task); it != old->held.end() && it->second == r.attempt) old->held.erase(it);
    drop_worker(old->identity, "worker " + m.worker + " reconnected", now);
  } else if (auto* same = workers_.find(id)) {
    same->held.clear();  // re-HELLO on the same connection: `running` below is the truth
  }
  WorkerSession& w = workers_.add(id, name, now);
  w.host = m.host;
  w.pid = m.pid;
  w.slots = m.slots;
  for (auto& q : m.queues) w.filter.queues.push_back(tasks_.names().intern(q));
  for (auto& f : m.functions) w.filter.functions.push_back(tasks_.names().intern(f));
  // Attempts the worker still runs occupy its slots, whatever became of their tasks meanwhile;
  // their results are checked against the task table when they come.
  for (const auto& r : m.running) w.held[r.task] = r.attempt;
  log_info("worker ", m.worker, " (", m.host, ", pid ", m.pid, ") joined with ", m.slots, " slots, functions ",
           m.functions.size(), ", queues ", m.queues.size());
  reply(id, proto::Welcome{instance_, static_cast<std::uint32_t>(config_.heartbeat.count()),
                           static_cast<std::uint32_t>(config_.worker_timeout.count())});
  dispatch_needed_ = true;
}

void MasterState::on_credit(const std::string& id, const proto::Credit& m) {
  auto* w = workers_.find(id);
  if (!w) return reply_error(id, 0, ErrorCode::NotAllowed, "CREDIT: unknown worker; send HELLO");
  w->slots = m.slots;
  dispatch_needed_ = true;
}

void MasterState::on_results(const std::string& id, proto::Results& m, TimePoint now) {
  auto* w = workers_.find(id);
  if (!w) {
    ++counters_.bad_messages;
    return reply_error(id, 0, ErrorCode::NotAllowed, "RESULTS: unknown worker; send HELLO first");
  }
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
    w->held.erase(it);
    ++w->done;
    auto done = tasks_.complete(r.task, r.attempt, r.ok, std::move(r.value), now);
    if (!done) ++counters_.stale_results;  // timed out, or the worker was presumed dead meanwhile
    acks.push_back(r.task);
  }
  dispatch_needed_ = true;
}

void MasterState::on_bye(const std::string& id, TimePoint now) {
  if (auto* w = workers_.find(id)) {
    log_info("worker ", tasks_.names().name(w->name), " left");
    drop_worker(id, "worker left", now);
  }
}

void MasterState::on_submit(const std::string& id, proto::Submit& m, TimePoint now) {
  Job* job = nullptr;
  if (m.job == 0) {
    if (m.seq != 0) return reply_error(id, m.req, ErrorCode::BadField, "SUBMIT: a new job starts with seq 0");
    if (!m.idempotency_key.empty()) job = jobs_.find_by_key(m.idempotency_key);
    if (job) {  // the same submission again: answer as the first time
      const auto& b = job->batches.front();
      return reply(id, proto::Accepted{m.req, job->id, b.first, b.count, true});
    }
    job = &jobs_.create(m.idempotency_key);
  } else {
    job = jobs_.find(m.job);
    if (!job) return reply_error(id, m.req, ErrorCode::UnknownJob, "SUBMIT: job " + std::to_string(m.job) + " does not exist");
    if (m.seq < job->batches.size()) {
      const auto& b = job->batches[m.seq];
      return reply(id, proto::Accepted{m.req, job->id, b.first, b.count, true});
    }
    if (job->sealed)
      return reply_error(id, m.req, ErrorCode::NotAllowed, "SUBMIT: job " + std::to_string(m.job) + " is complete; it takes no more tasks");
    if (m.seq != job->batches.size())
      return reply_error(id, m.req, ErrorCode::BadField, "SUBMIT: seq " + std::to_string(m.seq) + " is out of order; expected " +
                                                              std::to_string(job->batches.size()));
  }
  Job::Batch batch{tasks_.last_id() + 1, static_cast<std::uint32_t>(m.tasks.size())};
  job->batches.push_back(batch);
  job->total += m.tasks.size();
  for (auto& spec : m.tasks) tasks_.add(job->id, spec, now);
  if (!m.more) jobs_.seal(*job, now);
  if (journal_) {
    journal_->batch_added(job->id, static_cast<std::uint32_t>(job->batches.size() - 1), batch.first, batch.count);
    journal_->job_saved(*job, now);
  }
  waits_dirty_ = true;
  reply(id, proto::Accepted{m.req, job->id, batch.first, batch.count, false});
}

void MasterState::on_wait(const std::string& id, const proto::Wait& m, TimePoint now) {
  PendingWait w{id, m, now + milliseconds(m.timeout_ms)};
  if (try_answer(w, now, m.timeout_ms == 0)) return;
  // Held requests cost memory until they are answered: a bounded number per peer.
  const auto held = std::count_if(waits_.begin(), waits_.end(), [&](const PendingWait& p) { return p.identity == id; });
  if (static_cast<std::size_t>(held) >= proto::kMaxWaitsPerPeer)
    return reply_error(id, m.req, ErrorCode::TooLarge,
                       "WAIT: this peer already has " + std::to_string(held) + " requests held; the limit is " +
                           std::to_string(proto::kMaxWaitsPerPeer));
  waits_.push_back(std::move(w));
}

void MasterState::on_cancel(const std::string& id, const proto::Cancel& m, TimePoint now) {
  Job* job = jobs_.find(m.job);
  if (!job) return reply_error(id, m.req, ErrorCode::UnknownJob, "CANCEL: job " + std::to_string(m.job) + " does not exist");
  std::uint64_t n = 0;
  for (const auto& b : job->batches)
    for (TaskId t = b.first; t < b.first + b.count; ++t) n += tasks_.cancel(t) ? 1 : 0;
  job->cancelled = true;
  jobs_.seal(*job, now);
  if (journal_) journal_->job_saved(*job, now);
  waits_dirty_ = true;
  reply(id, proto::Cancelled{m.req, m.job, n});
}

void MasterState::on_status(const std::string& id, const proto::Status& m, TimePoint now) {
  reply(id, proto::Report{m.req, status_json(now)});
}

// ---- state changes --------------------------------------------------------------------------

void MasterState::on_task_change(const Task& task, std::optional<TaskState> from) {
  const auto now_s = duration_cast<seconds>(now_.time_since_epoch()).count();
  rates_.advance(now_s);
  if (!from) {
    ++counters_.submitted;
    ++rates_.submitted[now_s % 10];
  }
  if (task.state == TaskState::Queued) dispatch_needed_ = true;
  // A failed attempt of a cancelled job is not retried: its task is cancelled instead.
  if (from == TaskState::Running && (task.state == TaskState::Delayed || task.state == TaskState::Queued)) {
    if (Job* job = jobs_.find(task.job); job && job->cancelled) {
      tasks_.cancel(task.id);  // re-enters this listener with the cancelled state
      return;
    }
  }
  std::int64_t finished_seq = -1;
  if (proto::is_final(task.state)) {
    ++counters_.finished;
    ++rates_.finished[now_s % 10];
    if (Job* job = jobs_.find(task.job)) {
      jobs_.task_finished(*job, task.id, task.state != TaskState::Done, now_);
      finished_seq = static_cast<std::int64_t>(job->finished.size()) - 1;
      if (journal_ && job->ended()) journal_->job_saved(*job, now_);
    }
    waits_dirty_ = true;
  }
  // The one place every state change passes: it goes into the journal's open transaction, which
  // the master commits before anything of this turn is sent.
  if (journal_) journal_->task_saved(task, tasks_.names(), finished_seq, now_, !from.has_value());
}

void MasterState::drop_worker(const std::string& identity, const std::string& why, TimePoint now) {
  auto* w = workers_.find(identity);
  if (!w) return;
  const auto held = std::move(w->held);
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
  if (!dispatch_needed_) return;
  dispatch_needed_ = false;
  if (tasks_.queued() == 0) return;
  std::vector<WorkerSession*> ready;
  for (auto& [id, w] : workers_.sessions())
    if (w.free_slots() > 0) ready.push_back(&w);
  if (ready.empty()) return;
  // Start with a different worker each time, and give each at most its share per round, so that
  // a few tasks spread over many workers instead of filling the first one.
  std::rotate(ready.begin(), ready.begin() + static_cast<std::ptrdiff_t>(rr_++ % ready.size()), ready.end());
  std::unordered_map<WorkerSession*, std::pair<proto::Tasks, std::size_t>> batches;  // message, bytes
  while (!ready.empty() && tasks_.queued() > 0) {
    const std::uint64_t share = std::max<std::uint64_t>(1, tasks_.queued() / ready.size());
    for (auto it = ready.begin(); it != ready.end();) {
      WorkerSession& w = **it;
      std::uint64_t n = std::min<std::uint64_t>(w.free_slots(), share);
      bool starved = false;
      for (; n > 0; --n) {
        const TaskId id = tasks_.pick(w.filter);
        if (!id) {
          starved = true;
          break;
        }
        const auto attempt = tasks_.lease(id, w.name, now);
        w.held[id] = attempt;
        const Task& t = *tasks_.find(id);
        auto& [msg, bytes] = batches[&w];
        // Split so that no message nears the size limit (args may be up to 1 MiB each).
        if (bytes + t.args.size() > kReplyBudget && !msg.tasks.empty()) {
          out_.push_back({w.identity, std::move(msg)});
          msg = {};
          bytes = 0;
        }
        bytes += t.args.size() + 96;
        msg.tasks.push_back({id, t.job, attempt, tasks_.names().name(t.function), t.args, t.timeout_ms});
      }
      if (starved || w.free_slots() == 0) it = ready.erase(it);
      else ++it;
    }
  }
  for (auto& [w, batch] : batches)
    if (!batch.first.tasks.empty()) out_.push_back({w->identity, std::move(batch.first)});
}

// ---- clients waiting for outcomes ------------------------------------------------------------

bool MasterState::try_answer(PendingWait& w, TimePoint now, bool timed_out) {
  auto& m = w.request;
  Job* job = m.job ? jobs_.find(m.job) : jobs_.find_by_key(m.idempotency_key);
  if (!job) {
    reply_error(w.identity, m.req, ErrorCode::UnknownJob,
                m.job ? "WAIT: job " + std::to_string(m.job) + " does not exist (or its results expired)"
                      : "WAIT: no job has idempotency key '" + m.idempotency_key + "'");
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
    bytes += t->args.size() + t->outcome.size() + 128;
    proto::Outcome o;
    o.task = t->id;
    o.args = t->args;
    o.status = t->state;
    if (t->state != TaskState::Cancelled) o.value = t->outcome;
    o.attempts = t->attempts;
    o.worker = tasks_.names().name(t->worker);
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
    if (Job* job = jobs_.find(j))
      for (const auto& b : job->batches)
        for (TaskId t = b.first; t < b.first + b.count; ++t) {
          tasks_.erase(t);
          if (journal_) journal_->task_erased(t);
        }
    jobs_.erase(j);
    if (journal_) journal_->job_erased(j);
    ++counters_.expired_jobs;
  }
  answer_waits(now, true);
}

// ---- the outbox -------------------------------------------------------------------------------

void MasterState::reply(const std::string& identity, proto::Message m) { out_.push_back({identity, std::move(m)}); }

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
      if (w) w->held.erase(a.task);
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

void MasterState::log_bad(const std::string& identity, const Error& e) {
  const auto now = now_;
  if (now - log_window_ >= seconds(1)) {
    if (log_budget_ < 0) log_warn("(", -log_budget_, " more bad messages not logged)");
    log_window_ = now;
    log_budget_ = 10;
  }
  if (log_budget_ > 0) {
    --log_budget_;
    log_warn("bad message from peer ", show_id(identity), ": ", error_code_name(e.code), ": ", e.message);
  } else {
    --log_budget_;
  }
}

nlohmann::json MasterState::status_json(TimePoint now) {
  using nlohmann::json;
  const auto now_s = duration_cast<seconds>(now.time_since_epoch()).count();
  rates_.advance(now_s);
  json queues = json::object();
  for (const auto& [q, c] : tasks_.counts()) {
    json counts = json::object();
    for (std::size_t s = 0; s < c.size(); ++s) counts[std::string(to_string(static_cast<TaskState>(s)))] = c[s];
    queues[tasks_.names().name(q)] = counts;
  }
  json workers = json::array();
  for (const auto& [id, w] : workers_.sessions()) {
    json functions = json::array(), queue_names = json::array();
    for (auto f : w.filter.functions) functions.push_back(tasks_.names().name(f));
    for (auto q : w.filter.queues) queue_names.push_back(tasks_.names().name(q));
    workers.push_back({{"id", tasks_.names().name(w.name)},
                       {"host", w.host},
                       {"pid", w.pid},
                       {"slots", w.slots},
                       {"in_flight", w.held.size()},
                       {"done", w.done},
                       {"last_heartbeat_s", duration<double>(now - w.last_heard).count()},
                       {"functions", functions},
                       {"queues", queue_names}});
  }
  std::sort(workers.begin(), workers.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  // Rates over the last 10 s (the current second included), or since the start if shorter.
  const double window = std::clamp<double>(duration<double>(now - started_).count(), 1.0, 10.0);
  std::uint64_t sub = 0, fin = 0;
  for (std::size_t i = 0; i < rates_.submitted.size(); ++i) {
    sub += rates_.submitted[i];
    fin += rates_.finished[i];
  }
  json journal = nullptr;
  if (journal_) journal = {{"path", journal_->path()}, {"bytes", journal_->bytes()}};
  return {{"master", instance_},
          {"journal", journal},
          {"uptime_s", duration<double>(now - started_).count()},
          {"queues", queues},
          {"workers", workers},
          {"jobs", jobs_.size()},
          {"tasks", tasks_.size()},
          {"rates", {{"submitted_per_s", sub / window}, {"finished_per_s", fin / window}}},
          {"counters",
           {{"submitted", counters_.submitted},
            {"finished", counters_.finished},
            {"bad_messages", counters_.bad_messages},
            {"stale_results", counters_.stale_results},
            {"unheld_results", counters_.unheld_results},
            {"workers_lost", counters_.workers_lost},
            {"expired_jobs", counters_.expired_jobs}}}};
}

}  // namespace taskmaster
