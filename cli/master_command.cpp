// taskmaster master: runs the master in the foreground until SIGINT or SIGTERM.
#include <cerrno>
#include <cstdio>
#include <cstring>
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
  std::string python_manager;  // HOST:PORT; "": no BaseManager listener
  std::string python_authkey_file;
  std::vector<std::string> python_queues;  // typeids besides get_task_queue and get_result_queue
  KeyOptions key;
  LogOptions log;
};

// --python-authkey-file: the file's bytes are the authkey, as Python's authkey=b'...', except one
// trailing newline ("\n" or "\r\n"), which is dropped: a file written by `echo KEY > FILE` holds
// KEY. An empty key is refused.
Expected<std::string> read_authkey(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Error{ErrorCode::BadField, "--python-authkey-file " + path + ": " + std::strerror(errno)};
  std::string key;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0 && key.size() < (1u << 20);) key.append(buf, n);
  std::fclose(f);
  if (key.ends_with("\r\n")) key.resize(key.size() - 2);
  else if (key.ends_with('\n')) key.pop_back();
  if (key.empty()) return Error{ErrorCode::BadField, "--python-authkey-file " + path + " is empty: an authkey is needed"};
  return key;
}

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
  std::optional<pyman::ListenerOptions> python;
  if (!o.python_manager.empty()) {
    auto endpoint = parse_http_endpoint(o.python_manager);
    if (!endpoint) return report(Error{ErrorCode::BadField, "--python-manager" + endpoint.error().message.substr(6)});
    auto key = read_authkey(o.python_authkey_file);
    if (!key) return report(key.error());
    python = pyman::ListenerOptions{};
    python->host = endpoint->host;
    python->port = static_cast<std::uint16_t>(endpoint->port);
    python->authkey = *key;
    python->typeids = o.python_queues;
  }
  std::unique_ptr<Master> master;
  try {
    master = std::make_unique<Master>(ctx, config, std::move(http));
    if (python) master->serve_python(std::move(*python));
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
  auto* pym = cmd->add_option("--python-manager", o->python_manager,
                              "Also serve Python's multiprocessing.managers BaseManager clients (connect(), register('get_task_queue'), "
                              "the queues' put/get) on HOST:PORT (PORT alone is 127.0.0.1:PORT; port 0 picks one): the queues are "
                              "this master's durable value queues (`taskmaster queue`). Plain text: keep it on loopback and use an "
                              "ssh tunnel (docs/PYTHON.md); off unless given")
                  ->check([](const std::string& s) {
                    auto e = parse_http_endpoint(s);
                    return e ? std::string() : "--python-manager" + e.error().message.substr(6);
                  });
  auto* pykey = cmd->add_option("--python-authkey-file", o->python_authkey_file,
                                "File whose bytes are the BaseManager authkey (authkey=b'...'), one trailing newline dropped")
                    ->check(CLI::ExistingFile);
  pym->needs(pykey);
  pykey->needs(pym);
  cmd->add_option("--python-queue", o->python_queues,
                  "Another typeid a Python client may register, besides get_task_queue and get_result_queue; typeid get_NAME "
                  "is the value queue NAME (get_task_queue: task_queue), any other typeid the queue of its own name; repeatable")
      ->needs(pym)
      ->check([](const std::string& s) { return pyman::valid_typeid(s) ? std::string() : "'" + s + "': not a valid queue name"; });
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
