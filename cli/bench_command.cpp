// taskmaster bench: the standard workload against a master it starts itself (or an existing one),
// one RESULT line of figures per configuration. The work is in bench/ (bench/bench.h).
#include <cstdio>
#include <memory>

#include "bench/bench.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"
#include "common/log.h"

namespace taskmaster::cli {
namespace {

struct BenchOptions {
  bench::Options bench;
  std::string connect;
  KeyOptions key;
  bool in_memory = false;
  double timeout_s = 600;
};

int run_bench(BenchOptions& o) {
  set_log_name("bench");
  bench::Options b = o.bench;
  b.connect = o.connect;
  b.timeout = std::chrono::seconds(static_cast<long long>(o.timeout_s));
  if (!o.connect.empty()) {
    // An existing master: its key (or --insecure) comes from the usual places, and the workers and
    // `taskmaster submit` started here get the same key options.
    auto keys = o.key.resolve();
    if (!keys) return report(keys.error());
    b.curve = *keys;
    if (o.key.insecure) b.key_args = {"--insecure"};
    else if (!o.key.key_file.empty()) b.key_args = {"--key-file", o.key.key_file};
  } else {
    if (!o.key.key_file.empty()) {
      std::fprintf(stderr, "taskmaster: --key-file is for --connect; the masters the benchmark starts get a fresh key\n");
      return kExitUsage;
    }
    b.insecure = o.key.insecure;
  }
  auto resolved = bench::resolve(b);
  if (!resolved) {
    std::fprintf(stderr, "taskmaster: %s\n", resolved.error().message.c_str());
    return kExitUsage;
  }
  auto status = bench::run(*resolved, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });
  if (!status) {
    if (status.error().code == ErrorCode::BadField) {
      std::fprintf(stderr, "taskmaster: %s\n", status.error().message.c_str());
      return kExitUsage;
    }
    std::fprintf(stderr, "taskmaster bench: %s\n", status.error().message.c_str());
    // A wrong, missing or duplicated result is a failed task; anything else keeps report()'s codes.
    if (bench::is_verification_failure(status.error())) return kExitTaskFailed;
    switch (status.error().code) {
      case ErrorCode::Unreachable: return kExitUnreachable;
      case ErrorCode::AuthFailed: return kExitAuth;
      default: return kExitError;
    }
  }
  return kExitOk;
}

}  // namespace

void add_bench_command(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand(
      "bench", "Benchmark: the standard workload (square) against fresh local masters, one RESULT line per configuration");
  std::string configs;
  for (const auto& c : bench::kConfigs) configs += (configs.empty() ? "" : ",") + c;
  cmd->add_option("--only", o->bench.only, "Configurations to run, comma-separated: " + configs + " (default: all)")->delimiter(',');
  cmd->add_option("--n", o->bench.n, "Tasks per throughput and cli run, comma-separated (default 20000,200000; --quick 2000)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("-w,--workers", o->bench.workers, "Worker processes (one slot each), comma-separated (default 2,4; --quick 2)")
      ->delimiter(',')
      ->check(CLI::Range(1u, 256u));
  cmd->add_option("-j,--worker-threads", o->bench.worker_threads, "Threads (slots) of each worker process, its -j")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  cmd->add_option("-r,--repeat", o->bench.repeat, "Runs per configuration; RESULT is their median, DETAIL lines each run")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  cmd->add_flag("--quick", o->bench.quick, "Small sizes, for a smoke test (well under a minute)");
  auto* durable = cmd->add_flag("--durable", o->bench.durable, "Masters keep a journal in a temporary --data-dir (if this build has one)");
  cmd->add_flag("--in-memory", o->in_memory, "Masters keep everything in memory (the default)")->excludes(durable);
  add_endpoint_option(cmd, "-c,--connect", o->connect, protocol::EndpointUse::Connect,
                      "Benchmark an existing master at this endpoint (HOST:PORT or tcp://HOST:PORT) instead of starting one "
                      "per configuration (its RSS and CPU show as -)");
  add_key_options(cmd, o->key);
  cmd->add_option("--memory-n", o->bench.memory_n, "Tasks queued by the memory configuration (default 1000000; --quick 20000)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--backlog", o->bench.backlog, "Tasks already queued in the backlog runs, comma-separated (default 1000,1000000)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("--sim-workers", o->bench.sim_workers, "Simulated workers of the workers2000 configuration (default 2000; --quick 50)")
      ->check(CLI::Range(1, 20000));
  add_seconds_option(cmd, "--timeout", o->timeout_s, 1, 86400,
                     "Seconds each configuration may take before the benchmark stops everything and fails")
      ->capture_default_str();
  cmd->footer(std::string("Prints one line per configuration: RESULT config=NAME key=value ... (with --repeat, also DETAIL lines);\n"
                          "progress goes to stderr. Every result is verified (n*n, each task exactly once); a wrong run exits 1.\n"
                          "Each configuration gets a fresh master (127.0.0.1, port 0, a fresh key) and fresh worker processes; all are\n"
                          "stopped by PID at the end, on errors and on Ctrl-C. TASKMASTER_BENCH_KEEP=1 keeps their logs.\n") +
              kExitCodesHelp);
  runners[cmd] = [o] { return run_bench(*o); };
}

}  // namespace taskmaster::cli
