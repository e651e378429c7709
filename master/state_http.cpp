// MasterState's answers to the HTTP endpoint (docs/HTTP.md), its metrics and its list of recent
// failures. Read-only but for cancel and retry, which follow the rules of CANCEL and SUBMIT.
#include <algorithm>
#include <charconv>

#include "common/log.h"
#include "master/metrics.h"
#include "master/state.h"

namespace taskmaster {

using namespace std::chrono;
namespace proto = protocol;
using nlohmann::json;

namespace {

constexpr std::size_t kErrorBytes = 500;  // of an error shown in failures
constexpr std::size_t kWorkerTasks = 20;  // attempts listed per worker
constexpr std::size_t kJobFailures = 20;

// A decimal number of at most 2^53, or nullopt.
std::optional<std::uint64_t> parse_id(std::string_view s) {
  if (s.empty() || s.size() > 16) return std::nullopt;
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v > (1ull << 53)) return std::nullopt;
  return v;
}

HttpAnswer answer(int status, json body) {
  HttpAnswer a;
  a.status = status;
  a.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return a;
}
HttpAnswer error(int status, std::string message) { return answer(status, {{"error", std::move(message)}}); }

int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::UnknownJob: return 404;
    case ErrorCode::NotAllowed:
    case ErrorCode::KeyReused: return 409;
    case ErrorCode::TooLarge: return 413;
    case ErrorCode::Unavailable: return 503;
    case ErrorCode::BadField: return 400;
    default: return 500;
  }
}

double since(TimePoint now, TimePoint then) { return duration<double>(now - then).count(); }
double unix_s(system_clock::time_point t) { return duration<double>(t.time_since_epoch()).count(); }

// When the current attempt of a running task was leased.
TimePoint leased_at(const Task& t) { return t.deadline - milliseconds(t.timeout_ms); }

}  // namespace

// ---- what happens to tasks ----------------------------------------------------------------------

void MasterState::observe(const Task& t, std::optional<TaskState> from) {
  const bool was_running = from == TaskState::Running;
  const bool failed = was_running && (t.state == TaskState::Delayed || t.state == TaskState::Dead);
  if (failed) {
    if (failures_.size() >= kFailures) failures_.pop_back();
    Failure f;
    f.at = system_clock::now();
    f.task = t.id;
    f.job = t.job;
    f.function = tasks_.names().name(t.function);
    f.queue = tasks_.names().name(t.queue);
    f.worker = tasks_.names().name(t.worker);
    f.error = t.outcome.substr(0, kErrorBytes);
    f.attempt = t.attempts;
    f.dead = t.state == TaskState::Dead;
    if (f.dead)
      if (auto held = dead_log_.allow("dead", now_))
        log_info("task ", t.id, " of job ", t.job, " (", f.function, ", queue ", f.queue, ") is dead after ", t.attempts,
                 " attempts; the last on ", f.worker.empty() ? std::string("no worker") : "worker " + f.worker, ": ",
                 proto::sanitize_text(f.error, 200), *held ? " (" + std::to_string(*held) + " more dead tasks not logged)" : std::string());
    failures_.push_front(std::move(f));
  }
  if (!metrics_) return;
  const auto& q = tasks_.names().name(t.queue);
  const auto& fn = tasks_.names().name(t.function);
  using E = Metrics::Event;
  if (!from) metrics_->task(E::Submitted, q, fn);
  if (t.state == TaskState::Running) metrics_->task(E::Started, q, fn);
  if (was_running && (t.state == TaskState::Done || failed))
    metrics_->duration(q, fn, std::max(0.0, since(now_, leased_at(t))), t.state == TaskState::Done);
  if (was_running && t.state == TaskState::Done) metrics_->task(E::Succeeded, q, fn);
  if (failed) metrics_->task(E::AttemptFailed, q, fn);
  if (failed && t.state == TaskState::Delayed) metrics_->task(E::Retried, q, fn);
  if (failed && t.state == TaskState::Dead) metrics_->task(E::Dead, q, fn);
  if (t.state == TaskState::Cancelled) metrics_->task(E::Cancelled, q, fn);
}

void MasterState::refresh_metrics(TimePoint now) {
  if (!metrics_) return;
  std::map<std::uint32_t, std::uint64_t> reserved;  // by queue
  std::vector<Metrics::WorkerGauges> workers;
  for (const auto& [id, w] : workers_.sessions()) {
    workers.push_back({tasks_.names().name(w.name), w.running(), w.reserved(), w.threads});
    if (!w.reserve) continue;
    for (const auto& [task, attempt] : w.held)
      if (!w.started.count(task))
        if (const Task* t = tasks_.find(task)) ++reserved[t->queue];
  }
  std::sort(workers.begin(), workers.end(), [](const auto& a, const auto& b) { return a.worker < b.worker; });
  const auto oldest = tasks_.oldest_queued_ms();
  const auto now_ms = duration_cast<milliseconds>(now.time_since_epoch()).count();
  std::vector<Metrics::QueueGauges> queues;
  for (const auto& [q, c] : tasks_.counts()) {
    Metrics::QueueGauges g;
    g.queue = tasks_.names().name(q);
    g.queued = c[static_cast<std::size_t>(TaskState::Queued)];
    g.delayed = c[static_cast<std::size_t>(TaskState::Delayed)];
    g.waiting = c[static_cast<std::size_t>(TaskState::Waiting)];
    g.leased = c[static_cast<std::size_t>(TaskState::Running)];
    g.reserved = reserved[q];
    if (auto it = oldest.find(q); it != oldest.end()) g.oldest_queued_s = std::max<double>(0, (now_ms - it->second) / 1000.0);
    queues.push_back(std::move(g));
  }
  Metrics::Totals t;
  t.workers = workers_.size();
  t.jobs = jobs_.size();
  t.journal_bytes = journal_ ? journal_->bytes() : 0;
  t.task_bytes = tasks_.bytes();
  t.bad_messages = counters_.bad_messages;
  t.stale_results = counters_.stale_results;
  t.workers_lost = counters_.workers_lost;
  t.refused_full = counters_.refused_full;
  t.journal_failures = counters_.journal_failures;
  t.uptime_s = since(now, started_);
  metrics_->set_gauges(queues, workers, t);
}

// ---- retry --------------------------------------------------------------------------------------

Expected<proto::Accepted> MasterState::retry_job(JobId id, TimePoint now) {
  const Job* job = jobs_.find(id);
  if (!job) return Error{ErrorCode::UnknownJob, unknown_job(id)};
  // Each job is retried once: asking again (a resend, a second click) answers the same retry job,
  // found by its key, which the journal keeps with the job. Retry the retry job to go again.
  proto::Submit m;
  m.idempotency_key = std::string(kRetryKeyPrefix) + std::to_string(id);
  if (const Job* done = jobs_.find_by_key(m.idempotency_key)) {
    const auto& b = done->batches.front();
    return proto::Accepted{0, done->id, b.first, b.count, true};
  }
  // Its dead tasks, all of them: only once it has ended, so that none dies after the copy.
  if (!job->ended()) return Error{ErrorCode::NotAllowed, "job " + std::to_string(id) + " has not ended: retry it once it has"};
  for (const auto& b : job->batches)
    for (TaskId tid = b.first; tid < b.first + b.count; ++tid) {
      const Task* t = tasks_.find(tid);
      if (!t || t->state != TaskState::Dead) continue;
      proto::TaskSpec spec;
      spec.function = tasks_.names().name(t->function);
      spec.args = t->args;
      spec.queue = tasks_.names().name(t->queue);
      spec.priority = t->priority;
      spec.timeout_ms = t->timeout_ms;
      spec.max_attempts = t->max_attempts;
      spec.backoff_ms = t->backoff_ms;
      m.tasks.push_back(std::move(spec));
    }
  if (m.tasks.empty()) return Error{ErrorCode::NotAllowed, "job " + std::to_string(id) + " has no dead task to retry"};
  return submit(m, now);
}

// ---- the JSON API -------------------------------------------------------------------------------

json MasterState::api_status(TimePoint now) {
  const auto now_s = duration_cast<seconds>(now.time_since_epoch()).count();
  rates_.advance(now_s);
  const json status = status_json(now);
  // Queues: those holding tasks and those a worker serves.
  std::map<std::string, json> queues;
  const auto oldest = tasks_.oldest_queued_ms();
  const auto now_ms = duration_cast<milliseconds>(now.time_since_epoch()).count();
  for (const auto& [q, c] : tasks_.counts()) {
    json e = {{"name", tasks_.names().name(q)}, {"reserved", 0}, {"served_by", 0}, {"oldest_queued_s", nullptr}};
    for (std::size_t s = 0; s < c.size(); ++s) e[std::string(to_string(static_cast<TaskState>(s)))] = c[s];
    if (auto it = oldest.find(q); it != oldest.end()) e["oldest_queued_s"] = std::max<double>(0, (now_ms - it->second) / 1000.0);
    queues[tasks_.names().name(q)] = std::move(e);
  }
  std::uint64_t threads = 0;
  for (const auto& [id, w] : workers_.sessions()) {
    threads += w.threads ? w.threads : w.slots;
    for (auto q : w.filter.queues) {
      auto& e = queues[tasks_.names().name(q)];
      if (e.is_null()) {
        e = {{"name", tasks_.names().name(q)}, {"reserved", 0}, {"served_by", 0}, {"oldest_queued_s", nullptr}};
        for (std::size_t s = 0; s < proto::kTaskStateCount; ++s) e[std::string(to_string(static_cast<TaskState>(s)))] = 0;
      }
      e["served_by"] = e["served_by"].get<std::uint64_t>() + 1;
    }
    if (!w.reserve) continue;
    for (const auto& [task, attempt] : w.held)
      if (!w.started.count(task))
        if (const Task* t = tasks_.find(task)) {
          auto& e = queues[tasks_.names().name(t->queue)];
          if (e.is_object()) e["reserved"] = e["reserved"].get<std::uint64_t>() + 1;
        }
  }
  json queue_list = json::array();
  std::uint64_t by_state[proto::kTaskStateCount] = {};
  for (auto& [name, e] : queues) {
    for (std::size_t s = 0; s < proto::kTaskStateCount; ++s)
      by_state[s] += e[std::string(to_string(static_cast<TaskState>(s)))].get<std::uint64_t>();
    // "running" of the table counts every leased attempt; here it is those begun.
    e["running"] = e["running"].get<std::uint64_t>() - std::min(e["running"].get<std::uint64_t>(), e["reserved"].get<std::uint64_t>());
    queue_list.push_back(std::move(e));
  }
  // Throughput: the last kSeconds one-second buckets, oldest first.
  json finished = json::array(), failed = json::array(), submitted = json::array();
  for (std::int64_t i = static_cast<std::int64_t>(Rates::kSeconds) - 1; i >= 0; --i) {
    const auto b = static_cast<std::size_t>((now_s - i) % static_cast<std::int64_t>(Rates::kSeconds));
    finished.push_back(rates_.finished[b]);
    failed.push_back(rates_.failed[b]);
    submitted.push_back(rates_.submitted[b]);
  }
  json failures = json::array();
  for (const auto& f : failures_)
    failures.push_back({{"at", unix_s(f.at)},
                        {"task", f.task},
                        {"job", f.job},
                        {"function", f.function},
                        {"queue", f.queue},
                        {"worker", f.worker},
                        {"attempt", f.attempt},
                        {"dead", f.dead},
                        {"error", f.error}});
  const auto count = [&](TaskState s) { return by_state[static_cast<std::size_t>(s)]; };
  return {{"master", instance_},
          {"uptime_s", since(now, started_)},
          {"journal", status["journal"]},
          {"totals",
           {{"queued", count(TaskState::Queued)},
            {"running", status["running"]},
            {"reserved", status["reserved"]},
            {"delayed", count(TaskState::Delayed)},
            {"waiting", count(TaskState::Waiting)},
            {"workers", workers_.size()},
            {"threads", threads},
            {"jobs", jobs_.size()},
            {"unfinished", tasks_.unfinished()}}},
          {"rates", status["rates"]},
          {"queues", std::move(queue_list)},
          {"throughput",
           {{"interval_s", 1},
            {"end", static_cast<std::int64_t>(unix_s(system_clock::now()))},
            {"finished", std::move(finished)},
            {"failed", std::move(failed)},
            {"submitted", std::move(submitted)}}},
          {"failures", std::move(failures)}};
}

json MasterState::api_workers(std::size_t offset, std::size_t limit, TimePoint now) {
  std::vector<const WorkerSession*> all;
  for (const auto& [id, w] : workers_.sessions()) all.push_back(&w);
  const auto& names = tasks_.names();
  std::sort(all.begin(), all.end(), [&](const WorkerSession* a, const WorkerSession* b) {
    return names.name(a->name) != names.name(b->name) ? names.name(a->name) < names.name(b->name) : a->identity < b->identity;
  });
  json list = json::array();
  for (std::size_t i = offset; i < all.size() && i < offset + limit; ++i) {
    const WorkerSession& w = *all[i];
    struct Held {
      const Task* task;
      bool running;
      double for_s;
    };
    std::vector<Held> held;
    for (const auto& [task, attempt] : w.held)
      if (const Task* t = tasks_.find(task); t && t->state == TaskState::Running && t->attempts == attempt)
        held.push_back({t, !w.reserve || w.started.count(task) > 0, std::max(0.0, since(now, leased_at(*t)))});
    const auto shown = std::min(held.size(), kWorkerTasks);
    std::partial_sort(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(shown), held.end(), [](const Held& a, const Held& b) {
      return a.running != b.running ? a.running : a.for_s != b.for_s ? a.for_s > b.for_s : a.task->id < b.task->id;
    });
    json tasks = json::array();
    for (std::size_t k = 0; k < shown; ++k)
      tasks.push_back({{"task", held[k].task->id},
                       {"job", held[k].task->job},
                       {"function", names.name(held[k].task->function)},
                       {"queue", names.name(held[k].task->queue)},
                       {"state", held[k].running ? "running" : "reserved"},
                       {"attempt", held[k].task->attempts},
                       {"for_s", held[k].for_s}});
    json functions = json::array(), queues = json::array();
    for (auto f : w.filter.functions) functions.push_back(names.name(f));
    for (auto q : w.filter.queues) queues.push_back(names.name(q));
    list.push_back({{"id", names.name(w.name)},
                    {"host", w.host},
                    {"pid", w.pid},
                    {"threads", w.threads ? json(w.threads) : json(nullptr)},
                    {"slots", w.slots},
                    {"running", w.running()},
                    {"reserved", w.reserved()},
                    {"done", w.done},
                    {"failed", w.failed},
                    {"last_heartbeat_s", since(now, w.last_heard)},
                    {"queues", std::move(queues)},
                    {"functions", std::move(functions)},
                    {"tasks", std::move(tasks)}});
  }
  return {{"total", all.size()}, {"offset", offset}, {"workers", std::move(list)}};
}

json MasterState::api_job_summary(const Job& job, TimePoint now) {
  const std::uint64_t finished = job.finished.size();
  // An ended job keeps how it ended, even if cancel was asked afterwards.
  std::string state = job.ended()     ? (!job.failed     ? "done"
                                         : job.cancelled ? "cancelled"
                                                         : "failed")
                      : job.cancelled ? "cancelled"
                      : job.waiting   ? "waiting"
                      : !job.sealed   ? "open"
                                      : "running";
  json function = nullptr, queue = nullptr;
  if (!job.batches.empty() && job.batches.front().count)
    if (const Task* t = tasks_.find(job.batches.front().first)) {
      function = tasks_.names().name(t->function);
      queue = tasks_.names().name(t->queue);
    }
  return {{"id", job.id},
          {"state", state},
          {"total", job.total},
          {"done", finished - std::min(finished, job.failed)},
          {"failed", job.failed},
          {"unfinished", job.total - std::min(job.total, finished)},
          {"function", function},
          {"queue", queue},
          {"age_s", job.created ? json(since(now, *job.created)) : json(nullptr)},
          {"ended_s", job.ended_at ? json(since(now, *job.ended_at)) : json(nullptr)},
          {"cancelled", job.cancelled},
          {"after", job.after}};
}

json MasterState::api_jobs(std::optional<JobId> before, std::size_t limit, TimePoint now) {
  std::vector<JobId> ids;
  ids.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_.all())
    if (!before || id < *before) ids.push_back(id);
  const auto shown = std::min(ids.size(), limit);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(shown), ids.end(), std::greater<>());
  json list = json::array();
  for (std::size_t i = 0; i < shown; ++i) list.push_back(api_job_summary(*jobs_.find(ids[i]), now));
  json next = ids.size() > shown ? json(ids[shown - 1]) : json(nullptr);
  return {{"total", jobs_.size()}, {"jobs", std::move(list)}, {"next_before", next}};
}

json MasterState::api_job(const Job& job, TimePoint now) {
  json j = api_job_summary(job, now);
  std::uint64_t counts[proto::kTaskStateCount] = {};
  for (const auto& b : job.batches)
    for (TaskId id = b.first; id < b.first + b.count; ++id)
      if (const Task* t = tasks_.find(id)) ++counts[static_cast<std::size_t>(t->state)];
  json c = json::object();
  for (std::size_t s = 0; s < proto::kTaskStateCount; ++s) c[std::string(to_string(static_cast<TaskState>(s)))] = counts[s];
  j["counts"] = std::move(c);
  // The rate: the job's average since it was submitted (until it ended).
  json rate = nullptr, eta = nullptr;
  if (job.created) {
    const double took = since(job.ended_at ? *job.ended_at : now, *job.created);
    if (took > 0.5 && !job.finished.empty()) {
      const double r = static_cast<double>(job.finished.size()) / took;
      rate = r;
      if (!job.ended()) eta = static_cast<double>(job.total - std::min<std::uint64_t>(job.total, job.finished.size())) / r;
    }
  }
  j["finished_per_s"] = rate;
  j["eta_s"] = eta;
  json failures = json::array();
  for (auto it = job.finished.rbegin(); it != job.finished.rend() && failures.size() < kJobFailures; ++it)
    if (const Task* t = tasks_.find(*it); t && t->state == TaskState::Dead)
      failures.push_back({{"task", t->id},
                          {"attempt", t->attempts},
                          {"worker", tasks_.names().name(t->worker)},
                          {"error", t->outcome.substr(0, kErrorBytes)}});
  j["failures"] = std::move(failures);
  return j;
}

HttpAnswer MasterState::http(const HttpQuery& q, TimePoint now) {
  now_ = now;
  const auto param = [&](const char* name) -> const std::string* {
    auto it = q.params.find(name);
    return it == q.params.end() ? nullptr : &it->second;
  };
  // A number parameter in [lo, hi], or the default.
  const auto number = [&](const char* name, std::uint64_t def, std::uint64_t lo, std::uint64_t hi) -> Expected<std::uint64_t> {
    const std::string* v = param(name);
    if (!v) return def;
    auto n = parse_id(*v);
    if (!n || *n < lo || *n > hi)
      return Error{ErrorCode::BadField,
                   std::string(name) + ": expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi)};
    return *n;
  };
  const bool get = q.method == "GET";
  if (q.path == "/metrics" || q.path == "/api/status" || q.path == "/api/workers" || q.path == "/api/jobs") {
    if (!get) return error(405, q.method + " " + q.path + ": only GET");
    if (q.path == "/metrics") {
      if (!metrics_) return error(404, "no metrics are kept");
      refresh_metrics(now);
      HttpAnswer a;
      a.body = metrics_->render();
      a.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return a;
    }
    if (q.path == "/api/status") return answer(200, api_status(now));
    if (q.path == "/api/workers") {
      auto offset = number("offset", 0, 0, 1ull << 53);
      auto limit = number("limit", 50, 1, 500);
      if (!offset || !limit) return error(400, (!offset ? offset : limit).error().message);
      return answer(200, api_workers(*offset, *limit, now));
    }
    auto limit = number("limit", 20, 1, 200);
    if (!limit) return error(400, limit.error().message);
    std::optional<JobId> before;
    if (param("before")) {
      auto b = number("before", 0, 1, 1ull << 53);
      if (!b) return error(400, "before: not a job id");
      before = *b;
    }
    return answer(200, api_jobs(before, *limit, now));
  }
  constexpr std::string_view kJobs = "/api/jobs/";
  if (q.path.rfind(kJobs, 0) == 0) {
    std::string_view rest = std::string_view(q.path).substr(kJobs.size());
    std::string_view action;
    if (auto slash = rest.find('/'); slash != std::string_view::npos) {
      action = rest.substr(slash + 1);
      rest = rest.substr(0, slash);
    }
    auto id = parse_id(rest);
    if (!id || *id == 0) return error(400, "\"" + std::string(rest.substr(0, 40)) + "\" is not a job id");
    if (!action.empty() && action != "cancel" && action != "retry") return error(404, "no such path: " + q.path.substr(0, 100));
    if (action.empty() != get) return error(405, q.method + " " + q.path.substr(0, 100) + (get ? ": only POST" : ": only GET"));
    const Job* job = jobs_.find(*id);
    if (!job) return error(404, unknown_job(*id));
    if (action.empty()) return answer(200, api_job(*job, now));
    if (action == "cancel") {
      const auto n = cancel_job(*id, now);
      HttpAnswer a = answer(200, {{"job", *id}, {"cancelled", n ? n->cancelled : 0}});
      a.changed = true;
      return a;
    }
    auto accepted = retry_job(*id, now);
    if (!accepted) return error(http_status(accepted.error().code), accepted.error().message);
    HttpAnswer a = answer(
        200,
        {{"job", *id}, {"retry_job", accepted.value().job}, {"tasks", accepted.value().count}, {"duplicate", accepted.value().duplicate}});
    a.changed = true;
    return a;
  }
  return error(404, "no such path: " + q.path.substr(0, 100));
}

}  // namespace taskmaster
