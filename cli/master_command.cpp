// taskmaster master: runs the master in the foreground until SIGINT or SIGTERM.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"
#include "common/log.h"
#include "master/master.h"

namespace taskmaster::cli {
namespace {

struct MasterOptions {
  std::string bind = "tcp://0.0.0.0:5555";
  double heartbeat_s = 1;
  double worker_timeout_s = 3;
  double result_ttl_s = 24 * 3600;
  double handshake_timeout_s = 5;
  std::string data_dir;
  bool in_memory = false;
  std::uint64_t max_queued = 0, max_task_bytes = 0, max_journal_bytes = 0;
  std::string policy = "fair";
  double aging_s = 10;
  std::vector<std::string> queue_policies;  // NAME=shortest-first
  std::string http;                         // HOST:PORT; "": no HTTP endpoint
  bool http_public = false;
  KeyOptions key;
  LogOptions log;
};

// Settings each of which is fine alone but not with the others.
void check_master(const MasterOptions& o) {
  if (o.heartbeat_s >= o.worker_timeout_s)
    throw UsageError("--heartbeat-interval (" + seconds_text(o.heartbeat_s) + " s) must be shorter than --worker-timeout (" +
                     seconds_text(o.worker_timeout_s) + " s): a worker would be presumed dead between two heartbeats");
}

int run_master(const MasterOptions& o) {
  set_log_name("master");
  o.log.apply();
  auto keys = o.key.resolve();
  if (!keys) return report(keys.error());
  StopSignal stop;  // before the context starts its threads
  zmq::context_t ctx;
  MasterConfig config;
  config.socket.endpoint = o.bind;
  config.socket.curve = *keys;
  config.socket.handshake_timeout = to_ms(o.handshake_timeout_s);
  config.socket.heartbeat = to_ms(o.heartbeat_s);
  config.socket.heartbeat_timeout = to_ms(o.worker_timeout_s);
  config.heartbeat = to_ms(o.heartbeat_s);
  config.worker_timeout = to_ms(o.worker_timeout_s);
  config.result_ttl = to_ms(o.result_ttl_s);
  config.max_queued = o.max_queued;
  config.max_task_bytes = o.max_task_bytes;
  config.max_journal_bytes = o.max_journal_bytes;
  config.schedule.fair = o.policy == "fair";
  config.schedule.aging_ms = static_cast<std::uint32_t>(to_ms(o.aging_s).count());
  for (const auto& p : o.queue_policies) config.schedule.shortest_first.push_back(p.substr(0, p.rfind('=')));
  if (!o.in_memory) config.data_dir = o.data_dir.empty() ? default_data_dir() : o.data_dir;
  std::optional<HttpServer::Options> http;
  if (!o.http.empty()) {
    auto endpoint = parse_http_endpoint(o.http);
    if (!endpoint) return report(endpoint.error());
    auto secrets = o.key.http_secrets();
    if (!secrets) return report(secrets.error());
    http = HttpServer::Options{*endpoint, *secrets, o.http_public};
  }
  std::unique_ptr<Master> master;
  try {
    master = std::make_unique<Master>(ctx, config, std::move(http));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmaster: %s\n", e.what());
    return kExitError;
  }
  // The first line of stdout is the endpoint really bound, so that scripts can use port 0.
  std::printf("%s\n", master->endpoint().c_str());
  std::fflush(stdout);
  try {
    master->run(stop.fd());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmaster: %s\n", e.what());
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

void add_master_command(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<MasterOptions>();
  auto* cmd = app.add_subcommand("master", "Run a master: it holds the queues and hands tasks to workers");
  add_endpoint_option(cmd, "-b,--bind", o->bind, protocol::EndpointUse::Bind,
                      "Endpoint to listen on: HOST:PORT (the same as tcp://HOST:PORT), tcp://[IPV6]:PORT or ipc://PATH; "
                      "HOST * (or 0.0.0.0) is every interface; port 0 picks a free port")
      ->capture_default_str();
  add_seconds_option(cmd, "--heartbeat-interval", o->heartbeat_s, 0.01, 3600, "Seconds between heartbeats to each worker")
      ->capture_default_str();
  add_seconds_option(cmd, "--worker-timeout", o->worker_timeout_s, 0.05, 86400,
                     "Seconds of silence after which a worker is presumed dead and its tasks queued again; must be longer "
                     "than --heartbeat-interval, and 3 times as long or more is recommended (a late heartbeat is no death)")
      ->capture_default_str();
  add_seconds_option(cmd, "--result-ttl", o->result_ttl_s, 1, 365 * 86400,
                     "Seconds a job's results are kept after the job ends (at least 1: clients that wait read the last "
                     "outcomes after the job ended)")
      ->capture_default_str();
  add_seconds_option(cmd, "--handshake-timeout", o->handshake_timeout_s, 0.1, 600, "Seconds a new connection has to complete its handshake")
      ->capture_default_str();
  auto* dir = cmd->add_option("-d,--data-dir", o->data_dir,
                              "Directory of the durable journal (default: " + default_data_dir() + "); created if missing")
                  ->check(not_empty("the data directory's name"));
  cmd->add_flag("--in-memory", o->in_memory, "Keep everything in memory only: nothing survives a restart")->excludes(dir);
  const auto defaults = with_default_limits({});
  cmd->add_option("--max-queued", o->max_queued,
                  "Unfinished tasks the master holds at most; a SUBMIT past it is refused (unavailable) and retried by the "
                  "client (default here: " +
                      std::to_string(defaults.max_queued) + ", one per 2 KiB of memory)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  cmd->add_option("--max-task-bytes", o->max_task_bytes,
                  "Bytes of args and results of all tasks held at most (default here: " + std::to_string(defaults.max_task_bytes) +
                      ", a quarter of memory)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 50));
  cmd->add_option("--max-journal-bytes", o->max_journal_bytes,
                  "Refuse submissions while the journal is this big or bigger (default: no bound but the disk's)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 60));
  cmd->add_option("--policy", o->policy,
                  "How queued tasks of one queue and priority take turns: fair (round robin across jobs: a small job "
                  "submitted behind a big one is not kept waiting until the big one drains) or fifo (first queued, first "
                  "served, across all jobs)")
      ->check(CLI::IsMember({"fair", "fifo"}))
      ->capture_default_str();
  add_seconds_option(cmd, "--aging", o->aging_s, 0, 1e6,
                     "Seconds of waiting worth one priority level: a job whose queued tasks waited this long without a turn "
                     "competes as if its priority were one higher, so that low priorities always progress; 0: strict "
                     "priorities")
      ->capture_default_str();
  cmd->add_option("--queue-policy", o->queue_policies,
                  "NAME=shortest-first: queue NAME hands out first the tasks whose function has the shortest average run "
                  "time so far (a function not yet measured first); repeat for several queues")
      ->check([](const std::string& s) {
        const auto eq = s.rfind('=');
        if (eq == std::string::npos || s.substr(eq + 1) != "shortest-first")
          return "'" + s + "': expected NAME=shortest-first (the only per-queue policy)";
        return protocol::is_valid_name(s.substr(0, eq)) ? std::string() : "'" + s + "': invalid queue name '" + s.substr(0, eq) + "'";
      });
  auto* http = cmd->add_option("--http", o->http,
                               "Also serve Prometheus metrics (/metrics), the dashboard (/) and its JSON API on HOST:PORT "
                               "(plain HTTP; PORT alone is 127.0.0.1:PORT; port 0 picks one). Access needs the token derived "
                               "from the key: the master logs the dashboard's login link, `taskmaster dashboard` prints it")
                   ->check([](const std::string& s) {
                     auto e = parse_http_endpoint(s);
                     return e ? std::string() : e.error().message;
                   });
  cmd->add_flag("--http-public", o->http_public,
                "Let anyone who reaches --http read metrics and the API without the token (cancel and retry still need it)")
      ->needs(http);
  add_key_options(cmd, o->key);
  add_log_options(cmd, o->log);
  cmd->footer(std::string("By default every accepted submission and every result is durable before it is acknowledged.\n"
                          "Without a key it refuses to start, unless --insecure (then nothing is authenticated or encrypted).\n"
                          "Prints the bound endpoint (e.g. tcp://0.0.0.0:41234) as the first line of stdout; logs go to stderr.\n"
                          "Stops cleanly on SIGINT or SIGTERM.\n") +
              kExitCodesHelp);
  cmd->callback([o] { check_master(*o); });
  runners[cmd] = [o] { return run_master(*o); };
}

}  // namespace taskmaster::cli
