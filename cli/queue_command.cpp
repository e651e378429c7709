// taskmaster queue put NAME VALUE / queue get NAME: the value queues (QUEUE_PUT, QUEUE_GET;
// docs/PROTOCOL.md §6.17), which the Python BaseManager listener serves too (docs/PYTHON.md).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {

namespace proto = protocol;

namespace {

struct QueueOptions {
  ConnectionOptions connection;
  std::string queue, value;
  bool string = false;
  double timeout_s = 0;
};

// VALUE: JSON if it parses as JSON, else the text as a JSON string (with --string, always the text).
std::string value_json(const QueueOptions& o) {
  if (!o.string) {
    auto j = nlohmann::json::parse(o.value, nullptr, false);
    if (!j.is_discarded()) return j.dump();
  }
  return nlohmann::json(o.value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int ask_value(const QueueOptions& o, proto::Message request, const char* command, bool get) {
  auto options = o.connection.client();
  if (!options) return report(options.error());
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  // A get is held by the master for its timeout: no resending before then.
  auto r = client.call(std::move(request), to_ms(o.timeout_s) + std::chrono::seconds(5));
  if (!r) {
    if (r.error().code == ErrorCode::UnknownCommand)
      return report(Error{ErrorCode::NotAllowed,
                          std::string("queue: the master is too old for value queues (it does not know ") + command + "); upgrade it"});
    return report(r.error());
  }
  const auto* v = std::get_if<proto::QueueValue>(&*r);
  if (!v) return unexpected_reply(command, *r);
  if (!get) {
    std::fprintf(stderr, "taskmaster: queue %s: %llu values\n", v->queue.c_str(), static_cast<unsigned long long>(v->depth));
    return kExitOk;
  }
  if (!v->value) {
    std::fprintf(stderr, "taskmaster: queue %s is empty\n", v->queue.c_str());
    return kExitTaskFailed;
  }
  std::printf("%s\n", v->value->c_str());
  return kExitOk;
}

}  // namespace

void add_queue_command(CLI::App& app, Runners& runners) {
  auto* queue = app.add_subcommand("queue", "Put values in and take them from the value queues (those of the Python BaseManager listener)");
  queue->require_subcommand(1);
  queue->footer(
      "Value queues hold JSON values in FIFO order, durably (journalled before a put is acknowledged). They are separate\n"
      "from task queues. A Python client of `taskmaster master --python-manager` reaches queue task_queue through\n"
      "register('get_task_queue') (docs/PYTHON.md).\n"
      "Example: taskmaster queue put task_queue 42");

  auto put = std::make_shared<QueueOptions>();
  auto* p = queue->add_subcommand("put", "Put one value at the end of a value queue");
  p->add_option("NAME", put->queue, "The queue")->required()->check([](const std::string& s) {
    return proto::is_valid_name(s) ? std::string() : "invalid queue name '" + s + "' ([A-Za-z0-9_.:-], at most 128)";
  });
  p->add_option("VALUE", put->value, "The value, as JSON (42, \"text\", [1, 2], {\"a\": 1}); text that is not JSON is taken as a string")
      ->required();
  p->add_flag("--string", put->string, "VALUE is a string as it is, even if it reads as JSON (e.g. 42 as \"42\")");
  add_connection_options(p, put->connection);
  p->footer(
      "Prints the queue's depth on stderr. Example: taskmaster queue put task_queue 42\n"
      "Exit codes: 0 put (durable); 2 usage; 3 master unreachable; 4 authentication failed; 5 other (a value with no\n"
      "Python form, such as {\"$bytes\": \"not base64\"}; a master too old for value queues)");
  const Runner run_put = [put] { return ask_value(*put, proto::QueuePut{0, put->queue, value_json(*put)}, "QUEUE_PUT", false); };

  auto get = std::make_shared<QueueOptions>();
  auto* g = queue->add_subcommand("get", "Take the first value of a value queue and print it as JSON");
  g->add_option("NAME", get->queue, "The queue")->required()->check([](const std::string& s) {
    return proto::is_valid_name(s) ? std::string() : "invalid queue name '" + s + "' ([A-Za-z0-9_.:-], at most 128)";
  });
  add_seconds_option(g, "--timeout", get->timeout_s, 0, 3600, "Seconds to wait for a value when the queue is empty (0: do not wait)")
      ->capture_default_str();
  add_connection_options(g, get->connection);
  g->footer(
      "Prints the value as one line of JSON (a Python tuple is {\"$tuple\": [...]}, bytes {\"$bytes\": \"BASE64\"}: docs/PYTHON.md).\n"
      "Example: taskmaster queue get result_queue --timeout 10\n"
      "Exit codes: 0 a value printed; 1 the queue was empty (for --timeout seconds); 2 usage; 3 master unreachable;\n"
      "4 authentication failed; 5 other (a master too old for value queues)");
  const Runner run_get = [get] {
    return ask_value(*get, proto::QueueGet{0, get->queue, static_cast<std::uint32_t>(to_ms(get->timeout_s).count())}, "QUEUE_GET", true);
  };
  // The dispatcher runs top-level commands: `queue` runs the one of its two that was given.
  runners[queue] = [p, run_put, run_get] { return p->parsed() ? run_put() : run_get(); };
}

}  // namespace taskmaster::cli
