// taskmaster worker: runs tasks for a master until SIGTERM, then drains.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"
#include "common/log.h"
#include "worker/worker.h"

namespace taskmaster::cli {
namespace {

struct WorkerOptions {
  std::string endpoint = kDefaultConnect;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> queues;
  bool allow_exec = false;
  int prefetch = -1;  // -1: automatic
  bool no_reserve = false;
  std::string name;
  std::string function;              // --function NAME, run as `command`
  std::vector<std::string> command;  // after --
  bool lines = false;
  std::string function_file;
  std::map<std::string, CommandFunction> functions;  // both, once parsed
  KeyOptions key;
  LogOptions log;
};

// "NAME[:WEIGHT]" as a queue and its weight (1 when absent). A name may hold ':' itself; only a
// last part of digits is a weight.
std::pair<std::string, std::uint32_t> queue_and_weight(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 == s.size() ||
      !std::all_of(s.begin() + static_cast<std::ptrdiff_t>(colon) + 1, s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return {s, 1};
  const std::string digits = s.substr(colon + 1);
  const std::uint32_t w = digits.size() > 4 ? protocol::kMaxQueueWeight + 1 : static_cast<std::uint32_t>(std::stoul(digits));
  return {s.substr(0, colon), w};
}

// Settings each of which is fine alone but not with the others.
void check_worker(const WorkerOptions& o) {
  // The credit (threads plus prefetch) travels in HELLO, which the master refuses above kMaxSlots.
  if (o.prefetch >= 0 && std::uint64_t{o.threads} + static_cast<std::uint64_t>(o.prefetch) > protocol::kMaxSlots)
    throw UsageError("--threads (" + std::to_string(o.threads) + ") plus --prefetch (" + std::to_string(o.prefetch) +
                     ") is more than the " + std::to_string(protocol::kMaxSlots) + " tasks a worker may hold");
  if (!o.function.empty() && o.command.empty())
    throw UsageError("--function " + o.function + " needs its command after --: taskmaster worker --function " + o.function +
                     " -- CMD ARGS...");
  if (o.function.empty() && !o.command.empty())
    throw UsageError("a command (" + o.command.front() + ") is given without --function NAME to serve it as");
  if (o.lines && o.function.empty()) throw UsageError("--lines applies to --function NAME -- CMD...; none is given");
  if (o.queues.size() > protocol::kMaxListItems)
    throw UsageError("--queue is given " + std::to_string(o.queues.size()) + " times; a worker serves at most " +
                     std::to_string(protocol::kMaxListItems) + " queues");
}

// --function and --function-file as one map; a name given twice is a usage error.
void load_functions(WorkerOptions& o) {
  o.functions.clear();
  if (!o.function_file.empty()) {
    std::ifstream in(o.function_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) throw UsageError("--function-file " + o.function_file + ": cannot be read");
    try {
      o.functions = parse_function_file(text.str());
    } catch (const std::exception& e) {
      throw UsageError("--function-file " + o.function_file + ": " + e.what());
    }
  }
  if (!o.function.empty()) {
    if (o.functions.count(o.function)) throw UsageError("function '" + o.function + "' is given by --function and --function-file");
    o.functions[o.function] = CommandFunction{o.command, o.lines};
  }
}

int run_worker(const WorkerOptions& o) {
  set_log_name("worker");
  o.log.apply();
  auto keys = o.key.resolve();
  if (!keys) return report(keys.error());
  StopSignal stop;  // before the context and the pool start their threads
  HandlerRegistry handlers;
  add_builtin_handlers(handlers);
  if (o.allow_exec) add_exec_handler(handlers);
  for (const auto& [name, f] : o.functions) add_command_handler(handlers, name, f);
  WorkerConfig config;
  config.socket.endpoint = o.endpoint;
  config.socket.curve = *keys;
  config.threads = o.threads;
  if (o.prefetch >= 0) config.prefetch = static_cast<unsigned>(o.prefetch);
  config.reserve = !o.no_reserve;
  if (!o.queues.empty()) config.queues.clear();
  for (const auto& q : o.queues) {
    auto [name, weight] = queue_and_weight(q);
    config.queues.push_back(name);
    config.weights.push_back(weight);
  }
  // All weights equal: send none, as a worker without weights does.
  if (std::all_of(config.weights.begin(), config.weights.end(), [&](auto w) { return w == config.weights.front(); }))
    config.weights.clear();
  config.name = o.name;
  zmq::context_t ctx;
  try {
    Worker worker(ctx, config, handlers);
    if (!config.socket.curve) log_warn("running WITHOUT a key (--insecure): tasks and results cross the network unencrypted");
    log_info("worker ", worker.name(), " serving ", handlers.names().size(), " functions on ", o.threads, " threads");
    const auto how = worker.run(stop.fd());
    if (how == WorkerExit::AuthFailed) {
      std::fprintf(stderr, "taskmaster: %s\n", worker.auth_error().c_str());
      return kExitAuth;
    }
    return how == WorkerExit::Drained ? kExitOk : kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmaster: %s\n", e.what());
    return kExitError;
  }
}

}  // namespace

void add_worker_command(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<WorkerOptions>();
  auto* cmd = app.add_subcommand("worker", "Run a worker: it connects to a master and runs the tasks it is given");
  add_endpoint_option(cmd, "-c,--connect", o->endpoint, protocol::EndpointUse::Connect,
                      "The master's endpoint: HOST:PORT (the same as tcp://HOST:PORT), tcp://[IPV6]:PORT or ipc://PATH", kAddressEnv)
      ->capture_default_str();
  cmd->add_option("-j,--threads", o->threads, "Tasks run at once (default: the number of cores)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  cmd->add_option("-q,--queue", o->queues,
                  "A queue to serve, NAME or NAME:WEIGHT (weight 1 to " + std::to_string(protocol::kMaxQueueWeight) +
                      ", default 1); repeat for several: they take turns, each as often as its weight says, instead of "
                      "the first being drained before the next (default: default)")
      ->check([](const std::string& s) {
        const auto [name, weight] = queue_and_weight(s);
        if (!protocol::is_valid_name(name)) return "invalid queue name '" + name + "'";
        if (weight < 1 || weight > protocol::kMaxQueueWeight)
          return "'" + s + "': the weight must be from 1 to " + std::to_string(protocol::kMaxQueueWeight);
        return std::string();
      });
  cmd->add_option("--prefetch", o->prefetch,
                  "Tasks held beyond the running ones (default: automatic, about 20 ms of work per thread); --threads plus "
                  "--prefetch is at most " +
                      std::to_string(protocol::kMaxSlots))
      ->check(CLI::Range(0, static_cast<int>(protocol::kMaxSlots)));
  cmd->add_flag("--no-reserve", o->no_reserve,
                "Do not let the master take back prefetched tasks not yet begun (the protocol feature 'reserve', PROTOCOL.md "
                "§8.6): behave as workers before it did");
  cmd->add_flag("--allow-exec", o->allow_exec, "Also serve 'exec' (runs command lines sent by any client: trusted setups only)");
  cmd->add_option("--name", o->name, "The worker's name in status (default: HOST-PID-RANDOM)")->check([](const std::string& s) {
    return !s.empty() && s.size() <= protocol::kMaxTextBytes
               ? std::string()
               : "the name must be 1 to " + std::to_string(protocol::kMaxTextBytes) + " bytes";
  });
  add_key_options(cmd, o->key);
  add_log_options(cmd, o->log);
  cmd->footer(std::string("Built-in functions: square, echo, sleep, fail (and exec with --allow-exec).\n"
                          "Your own: taskmaster worker --function wc -- wc -w, or --function f --lines -- python3 -u f.py;\n"
                          "clients can run only these named commands (exec only with --allow-exec).\n"
                          "SIGTERM or SIGINT drains: no new tasks, running ones finish, then exit 0; a second one stops at once.\n") +
              kExitCodesHelp);
  cmd->add_option("--function", o->function,
                  "Serve NAME by running the command given after --, once per task: the task's args as JSON on its "
                  "standard input and in place of {} in its arguments (a string bare), its standard output the result "
                  "(JSON if it parses, else text); a non-zero exit or a signal fails the attempt")
      ->type_name("NAME")
      ->check([](const std::string& s) { return protocol::is_valid_name(s) ? std::string() : "invalid function name '" + s + "'"; });
  cmd->add_flag("--lines", o->lines,
                "With --function: keep one process per thread running, write it one line of JSON args per task and read "
                "one line back as the result (fast functions: no process start per task)");
  cmd->add_option("--function-file", o->function_file,
                  "A JSON file of more functions to serve: {\"NAME\": [\"CMD\", \"ARG\"], \"NAME2\": {\"command\": [...], "
                  "\"lines\": true}}")
      ->check(CLI::ExistingFile);
  cmd->add_option("command", o->command, "The command of --function NAME, after --")->type_name("CMD");
  cmd->callback([o] {
    check_worker(*o);
    load_functions(*o);
  });
  runners[cmd] = [o] { return run_worker(*o); };
}

}  // namespace taskmaster::cli
