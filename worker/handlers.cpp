#include "worker/handlers.h"

#include <stdexcept>
#include <thread>

namespace taskmaster {

using nlohmann::json;

void HandlerRegistry::add(std::string name, Handler handler) {
  if (!protocol::is_valid_name(name))
    throw std::invalid_argument("invalid function name '" + name + "': use 1 to " + std::to_string(protocol::kMaxNameBytes) +
                                " of A-Z a-z 0-9 _ . : -");
  handlers_[std::move(name)] = std::move(handler);
}

const Handler* HandlerRegistry::find(std::string_view name) const {
  auto it = handlers_.find(name);
  return it == handlers_.end() ? nullptr : &it->second;
}

std::vector<std::string> HandlerRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, h] : handlers_) out.push_back(name);
  return out;
}

namespace {

json square(const json& args, const TaskContext&) {
  if (!args.is_number_integer()) throw PermanentError("square: expected an integer, got " + args.dump());
  if (args.is_number_unsigned() && args.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
    throw PermanentError("square: " + args.dump() + " is out of the 64-bit range");
  const auto n = args.get<std::int64_t>();
  std::int64_t r;
  if (__builtin_mul_overflow(n, n, &r))
    throw PermanentError("square: " + std::to_string(n) + " * " + std::to_string(n) + " overflows 64 bits");
  return r;
}

json echo(const json& args, const TaskContext&) { return args; }

json sleep_for(const json& args, const TaskContext& ctx) {
  if (!args.is_number() || args.get<double>() < 0 || args.get<double>() > 7 * 24 * 3600.0)
    throw PermanentError("sleep: expected a number of seconds between 0 and 604800, got " + args.dump());
  using namespace std::chrono;
  const auto until = steady_clock::now() + duration_cast<steady_clock::duration>(duration<double>(args.get<double>()));
  // Wake in short steps: at the attempt's deadline the master has given up on it, and a worker
  // that must stop should not wait for a long sleep.
  for (;;) {
    const auto now = steady_clock::now();
    if (now >= until) return args;
    if (ctx.deadline != steady_clock::time_point{} && now >= ctx.deadline)
      throw std::runtime_error("sleep: interrupted at the task's timeout");
    if (ctx.should_stop()) throw std::runtime_error("sleep: interrupted: the worker is stopping");
    std::this_thread::sleep_for(std::min<steady_clock::duration>(until - now, milliseconds(20)));
  }
}

json fail(const json& args, const TaskContext&) {
  if (args.is_string()) throw std::runtime_error(args.get<std::string>());
  throw std::runtime_error("fail: failed as asked (args " + args.dump() + ")");
}

}  // namespace

void add_builtin_handlers(HandlerRegistry& registry) {
  registry.add("square", square);
  registry.add("echo", echo);
  registry.add("sleep", sleep_for);
  registry.add("fail", fail);
}

}  // namespace taskmaster
