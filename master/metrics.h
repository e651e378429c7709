// The master's Prometheus metrics (docs/HTTP.md, "Metrics"): counters of what happens to tasks by
// queue and function, task durations, and gauges refreshed from the state when scraped. Built on
// prometheus-cpp's core library (registry, families, text format); the HTTP endpoint that serves
// them is master/http.h.
// Not thread-safe: owned by the master's loop, which updates it and renders it (HTTP threads ask
// the loop for the text, they never touch this).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T> class Family;
}  // namespace prometheus

namespace taskmaster {

class Metrics {
 public:
  // Distinct (queue, function) pairs given their own series; the rest share queue="_other",
  // function="_other" so that names chosen by clients cannot grow the scrape without bound.
  // The same bound holds for per-queue gauges; per-worker gauges stop at kMaxWorkerSeries workers.
  static constexpr std::size_t kMaxSeries = 500;
  static constexpr std::size_t kMaxWorkerSeries = 1000;

  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // What happened to one task of `queue` and `function`. duration_s: from the attempt's lease to its
  // result.
  enum class Event { Submitted, Started, Succeeded, AttemptFailed, Retried, Dead, Cancelled };
  void task(Event e, const std::string& queue, const std::string& function);
  void duration(const std::string& queue, const std::string& function, double seconds, bool ok);
  void commit(double seconds);  // one journal commit
  void rejected_connection();   // a peer refused by the security handshake

  // Gauges, set before each render (MasterState::refresh_metrics).
  struct QueueGauges {
    std::string queue;
    std::uint64_t queued = 0, delayed = 0, waiting = 0, leased = 0, reserved = 0;
    double oldest_queued_s = 0;  // 0: none queued
  };
  struct WorkerGauges {
    std::string worker;
    std::uint64_t running = 0, reserved = 0, threads = 0;
  };
  struct Totals {
    std::uint64_t workers = 0, jobs = 0, journal_bytes = 0, bad_messages = 0, stale_results = 0, workers_lost = 0, refused_full = 0,
                  journal_failures = 0, task_bytes = 0;
    double uptime_s = 0;
  };
  void set_gauges(const std::vector<QueueGauges>& queues, const std::vector<WorkerGauges>& workers, const Totals& totals);

  // Prometheus text format 0.0.4.
  std::string render() const;

 private:
  struct Series;
  Series& series(const std::string& queue, const std::string& function);
  // Counters kept by MasterCounters: brought up to the value (they only grow).
  static void set_counter(prometheus::Counter& c, std::uint64_t value);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>*submitted_, *started_, *succeeded_, *failed_, *retried_, *dead_, *cancelled_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Gauge>*queue_tasks_, *oldest_, *worker_attempts_, *worker_threads_;
  prometheus::Gauge *workers_, *jobs_, *journal_bytes_, *task_bytes_, *uptime_;
  prometheus::Counter *bad_messages_, *stale_results_, *workers_lost_, *refused_full_, *journal_failures_, *rejected_;
  prometheus::Histogram* commit_;
  std::unordered_map<std::string, std::unique_ptr<Series>> series_;  // key: queue '\0' function
  std::unordered_map<std::string, std::vector<prometheus::Gauge*>> queue_gauges_, worker_gauges_;
};

}  // namespace taskmaster
