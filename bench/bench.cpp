// The configurations of `taskmaster bench` (bench.h). Each configuration gets its own processes
// (a Setup): a fresh master bound to 127.0.0.1 port 0, its workers, and an in-process client;
// everything is stopped by PID when the Setup goes away, also on errors (and, through the
// InterruptGuard, on Ctrl-C).
#include "bench/bench.h"

#include <stdlib.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/process.h"
#include "bench/report.h"
#include "bench/sim_workers.h"
#include "bench/workload.h"
#include "bench/zmq_ceiling.h"
#include "client/client.h"
#include "common/log.h"

namespace taskmaster::bench {

using namespace std::chrono;
namespace proto = protocol;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr milliseconds kStartTimeout{20000};  // a master or worker must be up within this

// What every configuration of one run shares.
struct Run {
  Options o;
  std::string tmp;                        // temporary directory: key, logs, data directories
  std::optional<proto::CurveKeys> curve;  // what the in-process clients use
  std::vector<std::string> env;           // the environment of every process started
  std::vector<std::string> key_args;      // key options of every process started
  std::string queue = "default";
  bool own_master = true;
  std::vector<std::string> master_args;    // how masters keep state: --in-memory, or nothing (older builds)
  std::string data_fs;                     // durable: the file system type of the data directories
  std::map<unsigned, double> ceiling;      // W -> raw ZeroMQ tasks/s
  std::map<unsigned, RelayFigures> relay;  // W -> the two-hop relay's figures (relay_floor)
  int setups = 0;                          // numbers the log files
  std::function<void(const std::string&)> emit;
};

std::string mode_of(const Run& r) { return !r.own_master ? "external" : r.o.durable ? "durable" : "memory"; }
std::string security_of(const Run& r) { return r.curve ? "curve" : "none"; }

std::optional<double> mib(const std::optional<ProcStats>& s) {
  if (!s) return std::nullopt;
  return static_cast<double>(s->hwm_bytes) / kMiB;
}

// Per 1000 tasks, from two readings of a CPU counter.
std::optional<double> cpu_per_1000(std::optional<double> before, std::optional<double> after, std::uint64_t n) {
  if (!before || !after || n == 0) return std::nullopt;
  return (*after - *before) / static_cast<double>(n) * 1000.0;
}

std::optional<double> cpu_of(const std::optional<ProcStats>& s) {
  if (!s) return std::nullopt;
  return s->cpu_s;
}

std::optional<double> ratio(const Run& r, unsigned workers, double tasks_per_s) {
  if (r.ceiling.empty()) return std::nullopt;
  auto it = r.ceiling.find(workers);
  const double c = it != r.ceiling.end() ? it->second : r.ceiling.begin()->second;
  return tasks_per_s / c;
}

// Against the two-hop relay of the same run (relay_floor): throughput over its ceiling for W, and a
// latency over its floor (the first W's round trips; a sequential trip has one task in flight).
std::optional<double> ratio_to_relay(const Run& r, unsigned workers, double tasks_per_s) {
  if (r.relay.empty()) return std::nullopt;
  auto it = r.relay.find(workers);
  return tasks_per_s / (it != r.relay.end() ? it->second : r.relay.begin()->second).tasks_per_s;
}
Row& add_floor_ratios(const Run& r, Row& row) {
  const auto p50 = row.get("p50_us"), p99 = row.get("p99_us");
  if (r.relay.empty() || !p50 || !p99) return row.num("p50_to_floor", std::nullopt).num("p99_to_floor", std::nullopt);
  const auto& floor = r.relay.begin()->second;
  return row.num("p50_to_floor", *p50 / floor.p50_us, 2).num("p99_to_floor", *p99 / floor.p99_us, 2);
}

Expected<nlohmann::json> master_status(Client& client) {
  auto r = client.call(proto::Status{});
  if (!r) return r.error();
  const auto* report = std::get_if<proto::Report>(&*r);
  if (!report) return unexpected_reply("STATUS", *r);
  return report->status;
}

// The processes and the client of one configuration.
class Setup {
 public:
  Setup(Run& run, std::string name) : run_(run), name_(std::move(name)), number_(++run.setups) {}
  ~Setup() {
    client_.reset();
    std::vector<Child*> all;
    for (auto& w : workers_) all.push_back(w.get());
    stop_all(all);  // workers first: they drain while their master still answers
    if (master_) master_->stop();
  }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  Child* master() { return master_.get(); }
  std::optional<ProcStats> master_stats() { return master_ ? read_proc(master_->pid()) : std::nullopt; }
  // The CPU seconds of every worker process so far.
  std::optional<double> workers_cpu() {
    if (workers_.empty()) return std::nullopt;
    double s = 0;
    for (auto& w : workers_)
      if (auto p = read_proc(w->pid())) s += p->cpu_s;
    return s;
  }

  Status start_master() {
    if (!run_.own_master) {
      endpoint_ = run_.o.connect;
      return Ok{};
    }
    std::vector<std::string> argv = {run_.o.exe, "master", "--bind", "tcp://127.0.0.1:0"};
    argv.insert(argv.end(), run_.key_args.begin(), run_.key_args.end());
    argv.insert(argv.end(), run_.master_args.begin(), run_.master_args.end());
    if (run_.o.durable) {
      // A fresh, empty journal for each configuration, in the temporary directory (never the
      // user's default data directory).
      const std::string dir = run_.tmp + "/data-" + std::to_string(number_);
      std::filesystem::create_directories(dir);
      argv.insert(argv.end(), {"--data-dir", dir});
    }
    master_ = std::make_unique<Child>(argv, child_options(run_.env, log("master"), false, true));
    auto line = master_->read_line(Clock::now() + kStartTimeout);
    if (!line || line->rfind("tcp://", 0) != 0)
      return make_error(ErrorCode::Internal,
                        "the master did not start (no endpoint on its stdout); its log " + log("master") + ":\n" + tail_of(log("master")));
    endpoint_ = *line;
    return Ok{};
  }

  Client& client() { return *client_; }
  Status connect() {
    ClientOptions co;
    co.endpoint = endpoint_;
    co.curve = run_.curve;
    co.connect_timeout = milliseconds(10000);
    co.retry_timeout = milliseconds(30000);
    client_ = std::make_unique<Client>(ctx_, co);
    return client_->connect();
  }

  // Starts `count` worker processes (--worker-threads slots each, or `threads`, with `extra`
  // options) and waits until the master has them all.
  Status start_workers(unsigned count, unsigned threads = 0, const std::vector<std::string>& extra = {}) {
    for (unsigned i = 0; i < count; ++i) {
      std::vector<std::string> argv = {run_.o.exe, "worker",  "--connect",
                                       endpoint_,  "-j",      std::to_string(threads ? threads : run_.o.worker_threads),
                                       "--queue",  run_.queue};
      argv.insert(argv.end(), run_.key_args.begin(), run_.key_args.end());
      argv.insert(argv.end(), extra.begin(), extra.end());
      workers_.push_back(std::make_unique<Child>(argv, child_options(run_.env, log("worker-" + std::to_string(i + 1)), false, false)));
    }
    std::set<std::int64_t> pids;
    for (auto& w : workers_) pids.insert(w->pid());
    const auto deadline = Clock::now() + kStartTimeout;
    for (;;) {
      auto st = master_status(*client_);
      if (!st) return st.error();
      std::size_t seen = 0;
      for (const auto& w : (*st)["workers"])
        if (w.contains("pid") && pids.count(w["pid"].get<std::int64_t>())) ++seen;
      if (seen == pids.size()) return Ok{};
      for (auto& w : workers_)
        if (!w->running())
          return make_error(ErrorCode::Internal, "a worker exited at start; its log " + w->log_path() + ":\n" + tail_of(w->log_path()));
      if (Clock::now() >= deadline)
        return make_error(ErrorCode::Internal, std::to_string(seen) + " of " + std::to_string(pids.size()) +
                                                   " workers joined the master within " + std::to_string(kStartTimeout.count() / 1000) +
                                                   " s");
      std::this_thread::sleep_for(milliseconds(20));  // polling the master's status, bounded by the deadline
    }
  }

  // A failed step, with the master's log for context.
  Error failed(const Error& e) {
    std::string m = name_ + ": " + e.message;
    if (master_) m += "\nthe master's log (" + log("master") + "):\n" + tail_of(log("master"));
    m += "(TASKMASTER_BENCH_KEEP=1 keeps every log of the run)";
    return Error{e.code, m};
  }

  std::string log(const std::string& who) const { return run_.tmp + "/" + std::to_string(number_) + "-" + name_ + "-" + who + ".log"; }

 private:
  Run& run_;
  std::string name_;
  int number_;
  zmq::context_t ctx_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<Child> master_;
  std::vector<std::unique_ptr<Child>> workers_;
  std::string endpoint_;
};

// Returns the failure of `expr` (an Expected or Status), with the setup's context, if it failed.
#define BENCH_TRY(setup, expr)                                    \
  do {                                                            \
    if (auto s_ = (expr); !s_) return (setup).failed(s_.error()); \
  } while (0)

// Master, client, W workers, 100 warm-up tasks: what throughput-like configurations start with.
Status prepare(Setup& s, Run& r, unsigned workers, std::uint64_t seed) {
  BENCH_TRY(s, s.start_master());
  BENCH_TRY(s, s.connect());
  if (workers > 0) {
    BENCH_TRY(s, s.start_workers(workers));
    BENCH_TRY(s, submit_and_collect(s.client(), r.o.quick ? 20 : 100, RunOptions{r.queue, 1000 + seed}));
  }
  return Ok{};
}

// The timed part of a throughput run, with the CPU of everyone involved.
Expected<Row> timed_throughput(Setup& s, Run& r, Row row, unsigned workers, std::uint64_t n, std::uint64_t seed) {
  const auto m0 = s.master_stats();
  const auto w0 = s.workers_cpu();
  const double c0 = own_cpu_s();
  auto got = submit_and_collect(s.client(), n, RunOptions{r.queue, seed});
  if (!got) return s.failed(got.error());
  const auto m1 = s.master_stats();
  const double tps = static_cast<double>(n) / got->seconds;
  row.num("tasks_per_s", tps)
      .num("master_peak_rss_mib", mib(m1), 1)
      .num("master_cpu_s_per_1000", cpu_per_1000(cpu_of(m0), cpu_of(m1), n), 4)
      .num("master_cpu_pct", m0 && m1 ? std::optional<double>((m1->cpu_s - m0->cpu_s) / got->seconds * 100) : std::nullopt)
      .num("workers_cpu_s_per_1000", cpu_per_1000(w0, s.workers_cpu(), n), 4)
      .num("client_cpu_s_per_1000", cpu_per_1000(c0, own_cpu_s(), n), 4)
      .num("outcomes_per_reply", static_cast<double>(n) / static_cast<double>(std::max<std::uint64_t>(1, got->replies)), 1)
      .num("ratio_to_zmq", ratio(r, workers, tps), 4)
      .num("ratio_to_relay", ratio_to_relay(r, workers, tps), 4);
  return row;
}

Row head(const Run& r, const std::string& config) {
  Row row;
  row.config = config;
  row.text("mode", mode_of(r));
  if (!r.data_fs.empty()) row.text("data_fs", r.data_fs);
  row.text("security", security_of(r));
  return row;
}

// ---- the configurations ----------------------------------------------------------------------

Expected<Row> zmq_ceiling(Run& r, unsigned workers, std::uint64_t seed) {
  auto tps = zmq_pipeline_tasks_per_s(workers, r.o.ceiling_n, seed);
  if (!tps) return tps.error();
  Row row;
  row.config = "zmq_ceiling";
  row.num("workers", workers).num("n", static_cast<double>(r.o.ceiling_n)).num("tasks_per_s", *tps).text("roles", "processes");
  return row;
}

Expected<Row> relay_floor(Run& r, unsigned workers, std::uint64_t seed) {
  auto f = zmq_relay(workers, r.o.quick ? 20 : 100, r.o.latency_trips, r.o.ceiling_n, seed);
  if (!f) return f.error();
  Row row;
  row.config = "relay_floor";
  row.text("security", "curve");  // always: it measures what our security costs too
  row.num("workers", workers)
      .num("n", static_cast<double>(r.o.ceiling_n))
      .num("tasks_per_s", f->tasks_per_s)
      .num("trips", static_cast<double>(r.o.latency_trips))
      .num("p50_us", f->p50_us)
      .num("p99_us", f->p99_us)
      .num("ratio_to_zmq", ratio(r, workers, f->tasks_per_s), 4);
  return row;
}

Expected<Row> throughput(Run& r, unsigned workers, std::uint64_t n, std::uint64_t seed) {
  Setup s(r, "throughput-w" + std::to_string(workers) + "-n" + std::to_string(n));
  if (auto ok = prepare(s, r, workers, seed); !ok) return ok.error();
  Row row = head(r, "throughput");
  row.num("workers", workers).num("threads", r.o.worker_threads).num("n", static_cast<double>(n));
  return timed_throughput(s, r, row, workers, n, seed);
}

Expected<Row> latency(Run& r, std::uint64_t seed) {
  Setup s(r, "latency");
  if (auto ok = prepare(s, r, 1, seed); !ok) return ok.error();
  auto warm = round_trips(s.client(), r.o.quick ? 20 : 100, RunOptions{r.queue, 1000 + seed});
  if (!warm) return s.failed(warm.error());
  const auto m0 = s.master_stats();
  auto us = round_trips(s.client(), r.o.latency_trips, RunOptions{r.queue, seed});
  if (!us) return s.failed(us.error());
  const auto m1 = s.master_stats();
  Row row = head(r, "latency");
  row.num("workers", 1)
      .num("threads", r.o.worker_threads)
      .num("n", static_cast<double>(r.o.latency_trips))
      .num("p50_us", percentile(*us, 50))
      .num("p99_us", percentile(*us, 99))
      .num("master_peak_rss_mib", mib(m1), 1)
      .num("master_cpu_s_per_1000", cpu_per_1000(cpu_of(m0), cpu_of(m1), r.o.latency_trips), 4);
  return add_floor_ratios(r, row);
}

// Submission to acknowledgement: the time a client waits for "accepted" (durable: "on disk").
Expected<Row> ack(Run& r, std::uint64_t seed) {
  Setup s(r, "ack");
  if (auto ok = prepare(s, r, 0, seed); !ok) return ok.error();
  auto warm = acks(s.client(), r.o.quick ? 20 : 100, RunOptions{r.queue, 1000 + seed});
  if (!warm) return s.failed(warm.error());
  auto us = acks(s.client(), r.o.latency_trips, RunOptions{r.queue, seed});
  if (!us) return s.failed(us.error());
  Row row = head(r, "ack");
  row.num("n", static_cast<double>(r.o.latency_trips))
      .num("p50_us", percentile(*us, 50))
      .num("p99_us", percentile(*us, 99))
      .num("master_peak_rss_mib", mib(s.master_stats()), 1);
  return add_floor_ratios(r, row);
}

Expected<Row> cli(Run& r, unsigned workers, std::uint64_t n, std::uint64_t seed) {
  Setup s(r, "cli-w" + std::to_string(workers) + "-n" + std::to_string(n));
  if (auto ok = prepare(s, r, workers, seed); !ok) return ok.error();
  Ledger ledger;
  const std::string input = cli_input(n, seed, ledger);
  std::vector<std::string> argv = {r.o.exe, "submit", "square", "--each", "--wait", "--json", "--connect", s.endpoint()};
  if (r.queue != "default") argv.insert(argv.end(), {"--queue", r.queue});
  argv.insert(argv.end(), r.key_args.begin(), r.key_args.end());
  const auto m0 = s.master_stats();
  const auto t0 = Clock::now();
  Child submit(argv, child_options(r.env, s.log("submit"), true, true));
  auto done = run_to_end(submit, input, t0 + r.o.timeout);
  const double elapsed = duration<double>(Clock::now() - t0).count();
  if (!done) return s.failed(done.error());
  const auto m1 = s.master_stats();
  if (done->code != 0)
    return s.failed(Error{ErrorCode::Internal, "taskmaster submit exited " + std::to_string(done->code) + "; its log " + s.log("submit") +
                                                   ":\n" + tail_of(s.log("submit"))});
  if (auto ok = check_cli_output(done->out, ledger); !ok) return s.failed(ok.error());
  const double tps = static_cast<double>(n) / elapsed;
  Row row = head(r, "cli");
  row.num("workers", workers)
      .num("threads", r.o.worker_threads)
      .num("n", static_cast<double>(n))
      .num("tasks_per_s", tps)
      .num("wall_s", elapsed, 3)
      .num("master_peak_rss_mib", mib(m1), 1)
      .num("master_cpu_s_per_1000", cpu_per_1000(cpu_of(m0), cpu_of(m1), n), 4)
      .num("ratio_to_zmq", ratio(r, workers, tps), 4)
      .num("ratio_to_relay", ratio_to_relay(r, workers, tps), 4);
  return row;
}

// Cancels a job left queued (on an existing master it would otherwise stay there).
void cancel(Setup& s, proto::JobId job) {
  if (job) (void)s.client().call(proto::Cancel{0, job});
}

Expected<Row> memory(Run& r, std::uint64_t seed) {
  Setup s(r, "memory");
  if (auto ok = prepare(s, r, 0, seed); !ok) return ok.error();
  const std::string queue = r.own_master ? r.queue : "bench-memory-" + std::to_string(::getpid());
  const auto m0 = s.master_stats();
  proto::JobId job = 0;
  auto elapsed = submit_only(s.client(), r.o.memory_n, RunOptions{queue, seed}, &job);
  if (!elapsed) return s.failed(elapsed.error());
  const auto m1 = s.master_stats();
  auto st = master_status(s.client());
  if (!st) return s.failed(st.error());
  const auto& counts = (*st)["queues"][queue];
  const std::uint64_t queued = counts.is_object() && counts.contains("queued") ? counts["queued"].get<std::uint64_t>() : 0;
  cancel(s, r.own_master ? 0 : job);
  if (r.own_master && queued != r.o.memory_n)
    return s.failed(Error{ErrorCode::Internal, "verification failed: " + std::to_string(r.o.memory_n) +
                                                   " tasks submitted, the master reports " + std::to_string(queued) + " queued"});
  Row row = head(r, "memory");
  std::optional<double> per_task;
  if (m0 && m1) per_task = (static_cast<double>(m1->rss_bytes) - static_cast<double>(m0->rss_bytes)) / static_cast<double>(r.o.memory_n);
  row.num("queued", static_cast<double>(r.o.memory_n))
      .num("bytes_per_task", per_task)
      .num("master_rss_mib", m1 ? std::optional<double>(static_cast<double>(m1->rss_bytes) / kMiB) : std::nullopt, 1)
      .num("master_peak_rss_mib", mib(m1), 1)
      .num("submit_per_s", static_cast<double>(r.o.memory_n) / *elapsed)
      .num("master_cpu_s_per_1000", cpu_per_1000(cpu_of(m0), cpu_of(m1), r.o.memory_n), 4);
  return row;
}

Expected<Row> backlog(Run& r, std::uint64_t queued, std::uint64_t seed) {
  const unsigned workers = r.o.workers.front();
  const std::uint64_t n = r.o.n.front();
  Setup s(r, "backlog-" + std::to_string(queued));
  BENCH_TRY(s, s.start_master());
  BENCH_TRY(s, s.connect());
  // The backlog waits on a queue no worker serves; the timed tasks go to the workers' queue.
  proto::JobId job = 0;
  BENCH_TRY(s, submit_only(s.client(), queued, RunOptions{"bench-backlog-" + std::to_string(::getpid()), 1000 + seed}, &job));
  BENCH_TRY(s, s.start_workers(workers));
  BENCH_TRY(s, submit_and_collect(s.client(), r.o.quick ? 20 : 100, RunOptions{r.queue, 2000 + seed}));
  Row row = head(r, "backlog");
  row.num("queued", static_cast<double>(queued))
      .num("workers", workers)
      .num("threads", r.o.worker_threads)
      .num("n", static_cast<double>(n));
  auto out = timed_throughput(s, r, row, workers, n, seed);
  cancel(s, r.own_master ? 0 : job);
  return out;
}

Expected<Row> workers2000(Run& r, std::uint64_t seed) {
  Setup s(r, "workers" + std::to_string(r.o.sim_workers));
  if (auto ok = prepare(s, r, 0, seed); !ok) return ok.error();
  const auto t0 = Clock::now();
  SimulatedWorkers sims(s.endpoint(), r.curve, r.queue, r.o.sim_workers, 2);
  const auto deadline = t0 + seconds(120);
  while (sims.welcomed() < sims.count()) {
    if (Clock::now() >= deadline)
      return s.failed(Error{ErrorCode::Internal, std::to_string(sims.welcomed()) + " of " + std::to_string(sims.count()) +
                                                     " simulated workers were welcomed within 120 s"});
    if (s.master() && !s.master()->running()) return s.failed(Error{ErrorCode::Internal, "the master exited"});
    std::this_thread::sleep_for(milliseconds(20));  // polling a counter, bounded by the deadline
  }
  const double join_s = duration<double>(Clock::now() - t0).count();
  log_info(sims.count(), " simulated workers joined in ", join_s, " s; measuring the master's idle CPU for ", r.o.idle_s, " s");
  // Let the handshakes' aftermath settle, then measure the master doing nothing but heartbeats.
  std::this_thread::sleep_for(milliseconds(r.o.quick ? 300 : 1000));
  const auto i0 = s.master_stats();
  const auto idle_start = Clock::now();
  std::this_thread::sleep_for(duration<double>(r.o.idle_s));
  const auto i1 = s.master_stats();
  const double idle_wall = duration<double>(Clock::now() - idle_start).count();
  std::optional<double> idle_pct;
  if (i0 && i1) idle_pct = (i1->cpu_s - i0->cpu_s) / idle_wall * 100;
  auto st = master_status(s.client());
  if (!st) return s.failed(st.error());
  const auto connected = (*st)["workers"].size();
  auto got = submit_and_collect(s.client(), r.o.sim_n, RunOptions{r.queue, seed});
  if (!got) return s.failed(got.error());
  const auto m1 = s.master_stats();
  auto spread = sims.tasks_per_worker();
  const auto [lo, hi] = std::minmax_element(spread.begin(), spread.end());
  std::uint64_t total = 0;
  for (auto t : spread) total += t;
  if (sims.bad_tasks() > 0 || total < r.o.sim_n)
    return s.failed(Error{ErrorCode::Internal, "verification failed: the simulated workers ran " + std::to_string(total) + " tasks (" +
                                                   std::to_string(sims.bad_tasks()) + " with bad args) for " + std::to_string(r.o.sim_n) +
                                                   " submitted"});
  Row row = head(r, "workers2000");
  row.num("workers", static_cast<double>(sims.count()))
      .num("connected", static_cast<double>(connected))
      .num("join_s", join_s, 2)
      .num("idle_cpu_pct", idle_pct, 1)
      .num("idle_rss_mib", i1 ? std::optional<double>(static_cast<double>(i1->rss_bytes) / kMiB) : std::nullopt, 1)
      .num("n", static_cast<double>(r.o.sim_n))
      .num("tasks_per_s", static_cast<double>(r.o.sim_n) / got->seconds)
      .num("spread_min", static_cast<double>(*lo))
      .num("spread_max", static_cast<double>(*hi))
      .num("spread_ideal", static_cast<double>(r.o.sim_n) / static_cast<double>(sims.count()), 1)
      .num("master_peak_rss_mib", mib(m1), 1);
  return row;
}

// Reads messages from a raw worker socket until `enough` says so (true) or the deadline (false).
bool receive_until(zmq::socket_t& worker, const std::function<bool(proto::Message&)>& enough, Clock::time_point deadline) {
  zmq::pollitem_t items[] = {{worker.handle(), 0, ZMQ_POLLIN, 0}};
  while (Clock::now() < deadline) {
    zmq::poll(items, 1, milliseconds(50));
    while (auto in = proto::receive(worker, false)) {
      auto m = in->decode();
      if (m && enough(*m)) return true;
    }
  }
  return false;
}

// A worker socket of our own to the setup's master, speaking the protocol directly.
zmq::socket_t raw_worker(zmq::context_t& ctx, const Setup& s, const Run& r) {
  proto::PeerSocketOptions so;
  so.endpoint = s.endpoint();
  so.curve = r.curve;
  return proto::make_peer_socket(ctx, so);
}

// HELLO until WELCOME (the connection may take a moment): false after 100 tries.
bool welcome(zmq::socket_t& worker, const proto::Hello& h) {
  for (int i = 0; i < 100; ++i) {
    (void)proto::send(worker, h);
    if (receive_until(
            worker, [](proto::Message& m) { return std::holds_alternative<proto::Welcome>(m); }, Clock::now() + milliseconds(200)))
      return true;
  }
  return false;
}

// The largest HELLO the protocol allows (1024 functions x 1024 queues, the bench's queue and
// `square` among them) from one raw worker socket, then N tasks: how long the master takes to hand
// them all out, and how long a STATUS sent right behind the SUBMIT waits for its answer.
Expected<Row> big_hello(Run& r, std::uint64_t seed) {
  Setup s(r, "big_hello");
  if (auto ok = prepare(s, r, 0, seed); !ok) return ok.error();
  zmq::context_t ctx;
  zmq::socket_t worker = raw_worker(ctx, s, r);
  proto::Hello h;
  h.worker = "bench-big-hello-" + std::to_string(::getpid());
  h.slots = static_cast<std::uint32_t>(proto::kMaxSlots);
  for (std::size_t i = 0; i + 1 < proto::kMaxListItems; ++i) {
    h.functions.push_back("f" + std::to_string(i));
    h.queues.push_back("q" + std::to_string(i));
  }
  h.functions.push_back("square");
  h.queues.push_back(r.queue);
  const auto n = std::min<std::uint64_t>(r.o.quick ? 2000 : 10000, proto::kMaxSlots);
  if (!welcome(worker, h)) return s.failed(Error{ErrorCode::Internal, "the big worker got no WELCOME"});
  proto::Submit submit;
  submit.idempotency_key = "big-hello-" + std::to_string(seed) + "-" + std::to_string(::getpid());
  for (std::uint64_t i = 0; i < n; ++i) submit.tasks.push_back(proto::TaskSpec{"square", std::to_string(i), r.queue});
  const auto t0 = Clock::now();
  const auto submit_req = s.client().start(submit);
  const auto status_req = s.client().start(proto::Status{});
  std::optional<double> status_ms;
  bool accepted = false;
  while (!accepted || !status_ms) {
    auto got = s.client().next(Clock::now() + seconds(60));
    if (!got) return s.failed(got.error());
    if (!*got) return s.failed(Error{ErrorCode::Internal, "no answer to SUBMIT and STATUS within 60 s"});
    if ((*got)->req == status_req) status_ms = duration<double, std::milli>(Clock::now() - t0).count();
    if ((*got)->req == submit_req) accepted = std::holds_alternative<proto::Accepted>((*got)->message);
  }
  std::uint64_t assigned = 0;
  const bool all = receive_until(
      worker,
      [&](proto::Message& m) {
        if (auto* t = std::get_if<proto::Tasks>(&m)) assigned += t->tasks.size();
        return assigned >= n;
      },
      Clock::now() + seconds(120));
  const double dispatch_s = duration<double>(Clock::now() - t0).count();
  if (!all)
    return s.failed(Error{ErrorCode::Internal, "verification failed: the big worker got " + std::to_string(assigned) + " of " +
                                                   std::to_string(n) + " tasks within 120 s"});
  Row row = head(r, "big_hello");
  row.num("functions", static_cast<double>(h.functions.size()))
      .num("queues", static_cast<double>(h.queues.size()))
      .num("n", static_cast<double>(n))
      .num("dispatch_s", dispatch_s, 3)
      .num("tasks_per_s", static_cast<double>(n) / dispatch_s)
      .num("status_rtt_ms", status_ms, 2)
      .num("master_peak_rss_mib", mib(s.master_stats()), 1);
  return row;
}

// The cost of choosing tasks with many jobs queued: N tasks queued as 1 job, then (on a fresh
// master) as 10,000 jobs, before a raw worker socket asks for all of them at once (CREDIT): the time
// from that CREDIT until every task has reached it is the master's dispatch alone.
struct Dispatch {
  double seconds = 0;
  std::optional<double> master_rss_mib;
};
Expected<Dispatch> dispatch_seconds(Run& r, std::uint64_t seed, std::uint64_t n, std::uint64_t jobs) {
  Setup s(r, "jobs");
  if (auto ok = prepare(s, r, 0, seed); !ok) return ok.error();
  zmq::context_t ctx;
  zmq::socket_t worker = raw_worker(ctx, s, r);
  proto::Hello h;
  h.worker = "bench-jobs-" + std::to_string(::getpid()) + "-" + std::to_string(jobs);
  h.functions = {"square"};
  h.queues = {r.queue};
  h.slots = 0;  // nothing until every task is queued
  if (!welcome(worker, h)) return s.failed(Error{ErrorCode::Internal, "the jobs worker got no WELCOME"});
  // Submit the jobs pipelined, a window at a time.
  const std::uint64_t per_job = n / jobs;
  std::uint64_t sent = 0, accepted = 0;
  std::set<std::uint64_t> outstanding;
  auto beat = Clock::now();
  while (accepted < jobs) {
    // The worker stays alive while the jobs go in (10,000 SUBMITs take seconds on a slow build).
    if (Clock::now() - beat > milliseconds(500)) {
      (void)proto::send(worker, proto::Heartbeat{});
      beat = Clock::now();
    }
    while (sent < jobs && outstanding.size() < 256) {
      proto::Submit submit;
      submit.idempotency_key = "bench-jobs-" + std::to_string(seed) + "-" + std::to_string(::getpid()) + "-" + std::to_string(sent);
      for (std::uint64_t i = 0; i < per_job; ++i) submit.tasks.push_back(proto::TaskSpec{"square", std::to_string(i), r.queue});
      outstanding.insert(s.client().start(submit));
      ++sent;
    }
    auto got = s.client().next(Clock::now() + seconds(60));
    if (!got) return s.failed(got.error());
    if (!*got) return s.failed(Error{ErrorCode::Internal, "no answer to SUBMIT within 60 s"});
    if (!outstanding.erase((*got)->req)) continue;
    if (!std::holds_alternative<proto::Accepted>((*got)->message)) return s.failed(Error{ErrorCode::Internal, "a SUBMIT was refused"});
    ++accepted;
  }
  const auto t0 = Clock::now();
  (void)proto::send(worker, proto::Credit{static_cast<std::uint32_t>(n)});
  std::uint64_t assigned = 0;
  const bool all = receive_until(
      worker,
      [&](proto::Message& m) {
        if (auto* t = std::get_if<proto::Tasks>(&m)) assigned += t->tasks.size();
        return assigned >= per_job * jobs;
      },
      Clock::now() + seconds(120));
  if (!all)
    return s.failed(Error{ErrorCode::Internal, "verification failed: the jobs worker got " + std::to_string(assigned) + " of " +
                                                   std::to_string(per_job * jobs) + " tasks within 120 s"});
  return Dispatch{duration<double>(Clock::now() - t0).count(), mib(s.master_stats())};
}

Expected<Row> jobs(Run& r, std::uint64_t seed) {
  const std::uint64_t n = r.o.quick ? 20000 : 100000;
  auto one = dispatch_seconds(r, seed, n, 1);
  if (!one) return one.error();
  auto many = dispatch_seconds(r, seed, n, 10000);
  if (!many) return many.error();
  Row row = head(r, "jobs");
  row.num("n", static_cast<double>(n))
      .num("tasks_per_s_1_job", static_cast<double>(n) / one->seconds)
      .num("tasks_per_s_10000_jobs", static_cast<double>(n) / many->seconds)
      .num("ratio", one->seconds / many->seconds, 3)
      .num("master_peak_rss_mib", many->master_rss_mib, 1);
  return row;
}

// The first of `candidates` that is an executable file ("" if none).
std::string executable(std::initializer_list<const char*> candidates) {
  for (const char* c : candidates)
    if (::access(c, X_OK) == 0) return c;
  return "";
}

// Runs `argv` with `input` on its stdin to its end; its wall time in seconds, or why it failed.
Expected<double> timed_process(Setup& s, Run& r, std::vector<std::string> argv, const std::string& input, const std::string& who) {
  const auto t0 = Clock::now();
  Child child(std::move(argv), child_options(r.env, s.log(who), true, true));
  auto done = run_to_end(child, input, t0 + r.o.timeout);
  const double elapsed = duration<double>(Clock::now() - t0).count();
  if (!done) return s.failed(done.error());
  if (done->code != 0)
    return s.failed(Error{ErrorCode::Internal,
                          who + " exited " + std::to_string(done->code) + "; its log " + s.log(who) + ":\n" + tail_of(s.log(who))});
  return elapsed;
}

// What an `exec` task costs beyond its command: N x `true` through `taskmaster run --each` on one
// worker with 2 slots, and the same N through `xargs -P2 -n1` on this machine in the same run.
Expected<Row> exec_overhead(Run& r, std::uint64_t seed) {
  (void)seed;
  const std::uint64_t n = r.o.quick ? 200 : 1000;
  const std::string true_path = executable({"/usr/bin/true", "/bin/true"}), xargs = executable({"/usr/bin/xargs", "/bin/xargs"});
  if (true_path.empty()) return make_error(ErrorCode::Internal, "exec: no /usr/bin/true or /bin/true to run");
  Setup s(r, "exec");
  BENCH_TRY(s, s.start_master());
  BENCH_TRY(s, s.connect());
  BENCH_TRY(s, s.start_workers(1, 2, {"--allow-exec"}));
  std::string input;
  for (std::uint64_t i = 1; i <= n; ++i) input += std::to_string(i) + "\n";
  std::vector<std::string> run = {r.o.exe, "run", "--each", "--quiet", "--connect", s.endpoint(), "--queue", r.queue};
  run.insert(run.end(), r.key_args.begin(), r.key_args.end());
  run.insert(run.end(), {"--", true_path});
  // Warm-up: the worker's first exec, the client's first connection.
  if (auto warm = timed_process(s, r, run, "1\n2\n", "run-warmup"); !warm) return warm.error();
  auto ours = timed_process(s, r, run, input, "run");
  if (!ours) return ours.error();
  std::optional<double> theirs;
  if (!xargs.empty()) {
    auto x = timed_process(s, r, {xargs, "-P2", "-n1", true_path}, input, "xargs");
    if (!x) return x.error();
    theirs = *x;
  }
  const auto per_task_ms = [n](std::optional<double> sec) -> std::optional<double> {
    if (!sec) return std::nullopt;
    return *sec / static_cast<double>(n) * 1000.0;
  };
  Row row = head(r, "exec");
  row.num("workers", 1)
      .num("threads", 2)
      .num("n", static_cast<double>(n))
      .num("run_s", *ours, 3)
      .num("xargs_s", theirs, 3)
      .num("run_ms_per_task", per_task_ms(*ours), 3)
      .num("xargs_ms_per_task", per_task_ms(theirs), 3)
      .num("overhead_ms_per_task", theirs ? std::optional<double>(*per_task_ms(*ours) - *per_task_ms(theirs)) : std::nullopt, 3)
      .num("master_peak_rss_mib", mib(s.master_stats()), 1);
  return row;
}

// Runs one configuration `repeat` times (seeds 1..R), prints DETAIL lines, then the median RESULT.
Expected<Row> repeated(Run& r, const std::string& what, const std::function<Expected<Row>(std::uint64_t seed)>& once) {
  std::vector<Row> runs;
  for (unsigned i = 1; i <= r.o.repeat; ++i) {
    log_info("running ", what, r.o.repeat > 1 ? " (run " + std::to_string(i) + " of " + std::to_string(r.o.repeat) + ")" : "");
    Watchdog watchdog(what, duration_cast<milliseconds>(r.o.timeout));
    auto row = once(i);
    if (!row) return row.error();
    if (r.o.repeat > 1) r.emit(format(*row, "DETAIL") + " run=" + std::to_string(i));
    runs.push_back(std::move(*row));
  }
  Row m = median(runs);
  r.emit(format(m));
  return m;
}

bool selected(const Options& o, const std::string& config) { return std::find(o.only.begin(), o.only.end(), config) != o.only.end(); }

Status run_all(Run& r) {
  const Options& o = r.o;
  if (selected(o, "zmq_ceiling"))
    for (unsigned w : o.workers) {
      auto row = repeated(r, "zmq_ceiling workers=" + std::to_string(w), [&](std::uint64_t seed) { return zmq_ceiling(r, w, seed); });
      if (!row) return row.error();
      r.ceiling[w] = *row->get("tasks_per_s");
    }
  if (selected(o, "relay_floor"))
    for (unsigned w : o.workers) {
      auto row = repeated(r, "relay_floor workers=" + std::to_string(w), [&](std::uint64_t seed) { return relay_floor(r, w, seed); });
      if (!row) return row.error();
      r.relay[w] = RelayFigures{*row->get("p50_us"), *row->get("p99_us"), *row->get("tasks_per_s")};
    }
  if (selected(o, "throughput"))
    for (unsigned w : o.workers)
      for (auto n : o.n)
        if (auto row = repeated(r, "throughput workers=" + std::to_string(w) + " n=" + std::to_string(n),
                                [&](std::uint64_t seed) { return throughput(r, w, n, seed); });
            !row)
          return row.error();
  if (selected(o, "latency"))
    if (auto row = repeated(r, "latency", [&](std::uint64_t seed) { return latency(r, seed); }); !row) return row.error();
  if (selected(o, "ack"))
    if (auto row = repeated(r, "ack", [&](std::uint64_t seed) { return ack(r, seed); }); !row) return row.error();
  if (selected(o, "cli"))
    for (unsigned w : o.workers)
      for (auto n : o.n)
        if (auto row = repeated(r, "cli workers=" + std::to_string(w) + " n=" + std::to_string(n),
                                [&](std::uint64_t seed) { return cli(r, w, n, seed); });
            !row)
          return row.error();
  if (selected(o, "memory"))
    if (auto row = repeated(r, "memory", [&](std::uint64_t seed) { return memory(r, seed); }); !row) return row.error();
  if (selected(o, "backlog"))
    for (auto q : o.backlog)
      if (auto row = repeated(r, "backlog queued=" + std::to_string(q), [&](std::uint64_t seed) { return backlog(r, q, seed); }); !row)
        return row.error();
  if (selected(o, "big_hello"))
    if (auto row = repeated(r, "big_hello", [&](std::uint64_t seed) { return big_hello(r, seed); }); !row) return row.error();
  if (selected(o, "jobs"))
    if (auto row = repeated(r, "jobs", [&](std::uint64_t seed) { return jobs(r, seed); }); !row) return row.error();
  if (selected(o, "workers2000"))
    if (auto row = repeated(r, "workers2000", [&](std::uint64_t seed) { return workers2000(r, seed); }); !row) return row.error();
  if (selected(o, "exec"))
    if (auto row = repeated(r, "exec", [&](std::uint64_t seed) { return exec_overhead(r, seed); }); !row) return row.error();
  return Ok{};
}

// `taskmaster master --help` of the binary under test: which options say where its state lives
// (--data-dir for the durable journal, --in-memory to keep none) depends on the build.
Expected<std::string> master_help(const Run& r) {
  Child help({r.o.exe, "master", "--help"}, child_options(r.env, "", true, true));
  auto out = run_to_end(help, "", Clock::now() + seconds(10));
  if (!out) return out.error();
  return out->out;
}

std::string file_system_of(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) return "unknown";
  switch (static_cast<unsigned long>(fs.f_type)) {
    case 0xEF53: return "ext4";
    case 0x01021994: return "tmpfs";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794C7630: return "overlay";
    default: return "other";
  }
}

}  // namespace

Expected<Options> resolve(Options o) {
  for (const auto& c : o.only)
    if (std::find(kConfigs.begin(), kConfigs.end(), c) == kConfigs.end()) {
      std::string all;
      for (const auto& k : kConfigs) all += (all.empty() ? "" : ", ") + k;
      return make_error(ErrorCode::BadField, "unknown configuration '" + c + "' (known: " + all + ")");
    }
  if (o.only.empty()) o.only = kConfigs;
  // Our throughput is printed as a ratio of the raw ZeroMQ ceiling, measured in the same run.
  for (const char* needs : {"throughput", "cli", "backlog"})
    if (selected(o, needs) && !selected(o, "zmq_ceiling")) o.only.insert(o.only.begin(), "zmq_ceiling");
  // ... and of the two-hop relay (latencies as a ratio of its floor).
  for (const char* needs : {"throughput", "cli", "backlog", "latency", "ack"})
    if (selected(o, needs) && !selected(o, "relay_floor")) o.only.insert(o.only.begin(), "relay_floor");
  if (o.workers.empty()) o.workers = o.quick ? std::vector<unsigned>{2} : std::vector<unsigned>{2, 4};
  if (o.n.empty()) o.n = o.quick ? std::vector<std::uint64_t>{2000} : std::vector<std::uint64_t>{20000, 200000};
  if (o.latency_trips == 0) o.latency_trips = o.quick ? 200 : 2000;
  if (o.memory_n == 0) o.memory_n = o.quick ? 20000 : 1000000;
  if (o.backlog.empty()) o.backlog = o.quick ? std::vector<std::uint64_t>{1000, 20000} : std::vector<std::uint64_t>{1000, 1000000};
  if (o.sim_workers == 0) o.sim_workers = o.quick ? 50 : 2000;
  if (o.sim_n == 0) o.sim_n = o.quick ? 1000 : 20000;
  if (o.idle_s <= 0) o.idle_s = o.quick ? 1 : 5;
  if (o.ceiling_n == 0) o.ceiling_n = o.quick ? 20000 : 200000;
  if (o.repeat == 0) o.repeat = 1;
  if (o.exe.empty()) {
    // This very binary, by its name (so that ps and perf show "taskmaster"); /proc/self/exe if it
    // was replaced on disk since it started.
    std::error_code ec;
    o.exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec || o.exe.empty() || o.exe.ends_with(" (deleted)") || ::access(o.exe.c_str(), X_OK) != 0) o.exe = "/proc/self/exe";
  }
  for (auto w : o.workers)
    if (w == 0 || w > 256) return make_error(ErrorCode::BadField, "--workers: each W must be 1 to 256");
  for (auto n : o.n)
    if (n == 0) return make_error(ErrorCode::BadField, "--n: each N must be positive");
  if (o.durable && !o.connect.empty())
    return make_error(ErrorCode::BadField,
                      "--durable applies to the masters the benchmark starts; with --connect the master's own setup applies");
  return o;
}

Status run(const Options& options, const std::function<void(const std::string&)>& emit) {
  auto resolved = resolve(options);
  if (!resolved) return resolved.error();
  Run r;
  r.o = std::move(*resolved);
  r.emit = emit;
  r.own_master = r.o.connect.empty();

  std::string tmpl = (std::filesystem::temp_directory_path() / "taskmaster-bench-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return make_error(ErrorCode::Internal, "cannot make a temporary directory in " + tmpl);
  r.tmp = tmpl;
  const bool keep = std::getenv("TASKMASTER_BENCH_KEEP") != nullptr;  // keep the logs for a post-mortem
  auto remove_tmp = [dir = r.tmp, keep] {
    std::error_code ec;
    if (!keep) std::filesystem::remove_all(dir, ec);
  };
  // From here on, Ctrl-C stops every process started and removes the directory.
  InterruptGuard guard(remove_tmp);
  raise_fd_limit();

  if (r.own_master) {
    r.env = environment({"TASKMASTER_KEY", "TASKMASTER_KEY_FILE", "TASKMASTER_ADDRESS"}, {});
    if (r.o.insecure) {
      r.key_args = {"--insecure"};
    } else {
      // A fresh key for this run: authentication and encryption on, as in production.
      const std::string key = proto::generate_key(), path = r.tmp + "/key";
      if (auto ok = proto::write_key_file(path, key, false); !ok) {
        remove_tmp();
        return ok.error();
      }
      r.env.push_back("TASKMASTER_KEY_FILE=" + path);
      r.curve = proto::derive_keys(key);
    }
  } else {
    r.env = environment({"TASKMASTER_ADDRESS"}, {});
    r.key_args = r.o.key_args;
    r.curve = r.o.curve;
    r.queue = "bench-" + std::to_string(::getpid());  // our workers serve only our tasks
  }
  log_info("taskmaster bench: ", mode_of(r), " master", r.own_master ? "s (one per configuration)" : " at " + r.o.connect, ", security ",
           security_of(r), ", logs in ", r.tmp, keep ? " (kept)" : "");

  Status result = Ok{};
  if (r.own_master) {
    auto help = master_help(r);
    if (!help) {
      result = help.error();
    } else if (r.o.durable && help->find("--data-dir") == std::string::npos) {
      result = make_error(ErrorCode::BadField,
                          "--durable is not supported by this build: 'taskmaster master --help' lists no --data-dir (the durable journal "
                          "is not in yet); run without --durable (in memory)");
    } else if (!r.o.durable && help->find("--in-memory") != std::string::npos) {
      r.master_args = {"--in-memory"};  // else this build's master keeps everything in memory anyway
    }
    if (r.o.durable) r.data_fs = file_system_of(r.tmp);
  }
  if (result) result = run_all(r);
  remove_tmp();
  return result;
}

}  // namespace taskmaster::bench
