#include "master/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace taskmaster {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// Task durations: 1 ms to 1 h.
const prometheus::Histogram::BucketBoundaries kDurationBuckets{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
// Journal commits: 100 µs to 5 s.
const prometheus::Histogram::BucketBoundaries kCommitBuckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                             0.025,  0.05,    0.1,    0.25,  1,      5};

}  // namespace

struct Metrics::Series {
  prometheus::Counter *submitted, *started, *succeeded, *failed, *retried, *dead, *cancelled;
  prometheus::Histogram *ok, *failed_duration;
};

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  const auto counter = [&r](const char* name, const char* help) { return &BuildCounter().Name(name).Help(help).Register(r); };
  submitted_ = counter("taskmaster_tasks_submitted_total", "Tasks accepted by the master.");
  started_ = counter("taskmaster_attempts_started_total", "Attempts leased to a worker.");
  succeeded_ = counter("taskmaster_tasks_succeeded_total", "Tasks that ended done.");
  failed_ = counter("taskmaster_attempts_failed_total", "Attempts that failed (an error, a timeout or a lost worker).");
  retried_ = counter("taskmaster_tasks_retried_total", "Failed attempts that will be tried again.");
  dead_ = counter("taskmaster_tasks_dead_total", "Tasks that failed their last attempt.");
  cancelled_ = counter("taskmaster_tasks_cancelled_total", "Tasks cancelled before they ran.");
  duration_ = &BuildHistogram()
                   .Name("taskmaster_task_duration_seconds")
                   .Help("Time from an attempt's lease to its result, by outcome.")
                   .Register(r);
  queue_tasks_ =
      &BuildGauge().Name("taskmaster_queue_tasks").Help("Unfinished tasks by queue and state (leased includes reserved).").Register(r);
  oldest_ = &BuildGauge()
                 .Name("taskmaster_queue_oldest_task_age_seconds")
                 .Help("How long the oldest queued task of the queue has waited.")
                 .Register(r);
  worker_attempts_ =
      &BuildGauge().Name("taskmaster_worker_in_flight").Help("Attempts a worker holds, by state (running or reserved).").Register(r);
  worker_threads_ = &BuildGauge().Name("taskmaster_worker_threads").Help("Threads a worker said it runs (0: not said).").Register(r);
  const auto gauge = [&r](const char* name, const char* help) { return &BuildGauge().Name(name).Help(help).Register(r).Add({}); };
  workers_ = gauge("taskmaster_workers_connected", "Workers with a session.");
  jobs_ = gauge("taskmaster_jobs", "Jobs held (running, or ended with results kept).");
  journal_bytes_ = gauge("taskmaster_journal_size_bytes", "The journal's size on disk (0 in memory).");
  task_bytes_ = gauge("taskmaster_task_bytes", "Bytes of args and results held.");
  uptime_ = gauge("taskmaster_uptime_seconds", "Seconds since the master started serving.");
  const auto total = [&](const char* name, const char* help) { return &counter(name, help)->Add({}); };
  bad_messages_ = total("taskmaster_bad_messages_total", "Messages refused as malformed or not allowed.");
  stale_results_ = total("taskmaster_stale_results_total", "Results for attempts that were no longer current.");
  workers_lost_ = total("taskmaster_workers_lost_total", "Workers presumed dead after a silence.");
  refused_full_ = total("taskmaster_submissions_refused_total", "SUBMITs refused by a bound (--max-queued and the like).");
  journal_failures_ = total("taskmaster_journal_commit_failures_total", "Journal commits that failed.");
  rejected_ = total("taskmaster_connections_rejected_total", "Connections refused by the security handshake (wrong or no key).");
  commit_ = &BuildHistogram()
                 .Name("taskmaster_journal_commit_seconds")
                 .Help("Time of one journal commit (one fsync per loop turn).")
                 .Register(r)
                 .Add({}, kCommitBuckets);
}

Metrics::~Metrics() = default;

Metrics::Series& Metrics::series(const std::string& queue, const std::string& function) {
  std::string key = queue;
  key += '\0';
  key += function;
  auto it = series_.find(key);
  if (it != series_.end()) return *it->second;
  if (series_.size() >= kMaxSeries) {
    static const std::string kOther = std::string("_other") + '\0' + "_other";
    if (key != kOther) return series("_other", "_other");
  }
  const prometheus::Labels l{{"queue", queue}, {"function", function}};
  auto s = std::make_unique<Series>();
  s->submitted = &submitted_->Add(l);
  s->started = &started_->Add(l);
  s->succeeded = &succeeded_->Add(l);
  s->failed = &failed_->Add(l);
  s->retried = &retried_->Add(l);
  s->dead = &dead_->Add(l);
  s->cancelled = &cancelled_->Add(l);
  s->ok = &duration_->Add({{"queue", queue}, {"function", function}, {"outcome", "ok"}}, kDurationBuckets);
  s->failed_duration = &duration_->Add({{"queue", queue}, {"function", function}, {"outcome", "failed"}}, kDurationBuckets);
  return *series_.emplace(std::move(key), std::move(s)).first->second;
}

void Metrics::task(Event e, const std::string& queue, const std::string& function) {
  Series& s = series(queue, function);
  switch (e) {
    case Event::Submitted: s.submitted->Increment(); break;
    case Event::Started: s.started->Increment(); break;
    case Event::Succeeded: s.succeeded->Increment(); break;
    case Event::AttemptFailed: s.failed->Increment(); break;
    case Event::Retried: s.retried->Increment(); break;
    case Event::Dead: s.dead->Increment(); break;
    case Event::Cancelled: s.cancelled->Increment(); break;
  }
}

void Metrics::duration(const std::string& queue, const std::string& function, double seconds, bool ok) {
  Series& s = series(queue, function);
  (ok ? s.ok : s.failed_duration)->Observe(seconds);
}

void Metrics::commit(double seconds) { commit_->Observe(seconds); }
void Metrics::rejected_connection() { rejected_->Increment(); }

void Metrics::set_counter(prometheus::Counter& c, std::uint64_t value) {
  const double now = static_cast<double>(value);
  if (now > c.Value()) c.Increment(now - c.Value());
}

void Metrics::set_gauges(const std::vector<QueueGauges>& queues, const std::vector<WorkerGauges>& workers, const Totals& t) {
  // Per-queue and per-worker series live as long as their queue or worker: made again at each refresh.
  for (auto& [name, gauges] : queue_gauges_)
    for (auto* g : gauges) (g == gauges.back() ? oldest_ : queue_tasks_)->Remove(g);
  queue_gauges_.clear();
  for (const auto& q : queues) {
    if (queue_gauges_.size() >= kMaxSeries) break;  // the first kMaxSeries queues, by name
    auto& gs = queue_gauges_[q.queue];
    const auto add = [&](const char* state, std::uint64_t v) {
      auto& g = queue_tasks_->Add({{"queue", q.queue}, {"state", state}});
      g.Set(static_cast<double>(v));
      gs.push_back(&g);
    };
    add("queued", q.queued);
    add("delayed", q.delayed);
    add("waiting", q.waiting);
    add("leased", q.leased);
    add("reserved", q.reserved);
    auto& age = oldest_->Add({{"queue", q.queue}});
    age.Set(q.oldest_queued_s);
    gs.push_back(&age);  // last: oldest_'s
  }
  for (auto& [name, gauges] : worker_gauges_)
    for (auto* g : gauges) (g == gauges.back() ? worker_threads_ : worker_attempts_)->Remove(g);
  worker_gauges_.clear();
  for (const auto& w : workers) {
    if (worker_gauges_.size() >= kMaxWorkerSeries) break;
    auto& gs = worker_gauges_[w.worker];
    if (!gs.empty()) continue;  // a name twice (two sessions): the first
    auto& running = worker_attempts_->Add({{"worker", w.worker}, {"state", "running"}});
    running.Set(static_cast<double>(w.running));
    auto& reserved = worker_attempts_->Add({{"worker", w.worker}, {"state", "reserved"}});
    reserved.Set(static_cast<double>(w.reserved));
    auto& threads = worker_threads_->Add({{"worker", w.worker}});
    threads.Set(static_cast<double>(w.threads));
    gs = {&running, &reserved, &threads};  // last: worker_threads_'s
  }
  workers_->Set(static_cast<double>(t.workers));
  jobs_->Set(static_cast<double>(t.jobs));
  journal_bytes_->Set(static_cast<double>(t.journal_bytes));
  task_bytes_->Set(static_cast<double>(t.task_bytes));
  uptime_->Set(t.uptime_s);
  set_counter(*bad_messages_, t.bad_messages);
  set_counter(*stale_results_, t.stale_results);
  set_counter(*workers_lost_, t.workers_lost);
  set_counter(*refused_full_, t.refused_full);
  set_counter(*journal_failures_, t.journal_failures);
}

std::string Metrics::render() const { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

}  // namespace taskmaster
