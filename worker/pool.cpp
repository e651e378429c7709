#include "worker/pool.h"

#include "common/log.h"

#include <unordered_map>

namespace taskmaster {

namespace proto = protocol;
using nlohmann::json;

Pool::Pool(zmq::context_t& ctx, const HandlerRegistry& handlers, unsigned threads)
    : ctx_(ctx), handlers_(handlers), wakeup_(ctx, zmq::socket_type::pull) {
  const std::string endpoint = "inproc://taskmaster-pool-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
  wakeup_.set(zmq::sockopt::linger, 0);
  wakeup_.set(zmq::sockopt::rcvhwm, 0);
  wakeup_.bind(endpoint);
  for (unsigned i = 0; i < std::max(1u, threads); ++i) threads_.emplace_back(&Pool::run_thread, this, endpoint);
}

Pool::~Pool() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    queue_.clear();
  }
  ready_.notify_all();
  for (auto& t : threads_) t.join();
}

void Pool::submit(std::vector<proto::Assignment> batch) {
  if (batch.empty()) return;
  const auto n = batch.size();
  {
    std::lock_guard lock(mutex_);
    for (auto& a : batch) queue_.push_back(std::move(a));
  }
  if (n == 1) ready_.notify_one();
  else ready_.notify_all();
}

std::vector<proto::Lease> Pool::revoke(const std::vector<proto::Lease>& attempts) {
  std::vector<proto::Lease> removed;
  if (attempts.empty()) return removed;
  std::unordered_map<proto::TaskId, std::uint32_t> wanted;
  for (const auto& a : attempts) wanted[a.task] = a.attempt;
  std::lock_guard lock(mutex_);
  // Under the lock a thread cannot take one of them meanwhile: each is either removed here or begun.
  std::erase_if(queue_, [&](const proto::Assignment& a) {
    auto it = wanted.find(a.task);
    if (it == wanted.end() || it->second != a.attempt) return false;
    removed.push_back({a.task, a.attempt});
    return true;
  });
  return removed;
}

std::vector<proto::Result> Pool::take(std::vector<proto::Lease>* begun) {
  // Drain the wake-ups first: an outcome added after this point wakes the loop again.
  zmq::message_t m;
  try {
    while (wakeup_.recv(m, zmq::recv_flags::dontwait)) {
    }
  } catch (const zmq::error_t&) {
  }
  std::vector<proto::Result> out;
  std::lock_guard lock(results_mutex_);
  out.swap(results_);
  if (begun) {
    begun->clear();
    begun->swap(begun_);
  } else {
    begun_.clear();
  }
  return out;
}

proto::Result Pool::run_one(const proto::Assignment& a) {
  proto::Result r{a.task, a.attempt, false, {}};
  const Handler* h = handlers_.find(a.function);
  if (!h) {
    r.value = "function '" + a.function + "' is not served by this worker";
    return r;
  }
  TaskContext ctx;
  ctx.task = a.task;
  ctx.job = a.job;
  ctx.attempt = a.attempt;
  ctx.timeout = std::chrono::milliseconds(a.timeout_ms);
  ctx.deadline = std::chrono::steady_clock::now() + ctx.timeout;
  ctx.stopping = &stopping_;
  try {
    const json args = json::parse(a.args);
    const json result = (*h)(args, ctx);
    std::string text = result.dump(-1, ' ', false, json::error_handler_t::replace);
    if (text.size() > proto::kMaxResultBytes) {
      r.value = a.function + ": result is " + std::to_string(text.size()) + " bytes as JSON; the limit is " +
                std::to_string(proto::kMaxResultBytes);
      return r;
    }
    if (proto::json_depth(text) > proto::kMaxValueDepth) {
      r.value = a.function + ": result nests deeper than " + std::to_string(proto::kMaxValueDepth) + " levels";
      return r;
    }
    r.ok = true;
    r.value = std::move(text);
  } catch (const std::exception& e) {
    r.permanent = dynamic_cast<const PermanentError*>(&e) != nullptr;  // retrying cannot fix it
    r.value = proto::sanitize_text(e.what(), proto::kMaxErrorBytes);
    if (r.value.empty()) r.value = a.function + ": failed";
  } catch (...) {
    r.value = a.function + ": failed with an exception that is not a std::exception";
  }
  return r;
}

void Pool::run_thread(std::string endpoint) {
  zmq::socket_t wake(ctx_, zmq::socket_type::push);
  wake.set(zmq::sockopt::linger, 0);
  wake.set(zmq::sockopt::sndhwm, 0);
  wake.connect(endpoint);
  for (;;) {
    proto::Assignment a;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (closing_) return;
      a = std::move(queue_.front());
      queue_.pop_front();
    }
    {
      // Recorded before it runs, so that the loop can tell the master (STARTED); it wakes the loop
      // only if nothing else will, and not when attempts here have been short (below kQuickRun on
      // average): then the outcome follows soon and carries the news (a begun attempt that ended
      // before the loop sends is reported by its result alone, PROTOCOL.md §6.14.1), and the wake-up,
      // a STARTED message and a master turn per task are saved. A long one among short ones is
      // reported at the loop's next wake-up (any message or timer; at most a heartbeat).
      bool first;
      {
        std::lock_guard lock(results_mutex_);
        first = results_.empty() && begun_.empty();
        begun_.push_back({a.task, a.attempt});
      }
      if (first && !runs_quick()) wake.send(zmq::str_buffer("!"), zmq::send_flags::dontwait);
    }
    const auto t0 = std::chrono::steady_clock::now();
    proto::Result r = run_one(a);
    const auto took = std::chrono::steady_clock::now() - t0;
    busy_ns_.fetch_add(static_cast<std::uint64_t>(took.count()), std::memory_order_relaxed);
    // At debug, one line per task where it ran: find a task, and why it failed (the error's first 200 bytes).
    if (log_level() <= LogLevel::Debug)
      log_debug("task ", a.task, " job ", a.job, " function ", a.function, " attempt ", a.attempt, " took ",
                std::chrono::duration<double, std::milli>(took).count(),
                " ms: ", r.ok ? std::string("ok") : "failed: " + r.value.substr(0, 200));
    runs_.fetch_add(1, std::memory_order_relaxed);
    bool first;
    {
      std::lock_guard lock(results_mutex_);
      first = results_.empty();
      results_.push_back(std::move(r));
    }
    if (first) wake.send(zmq::str_buffer("!"), zmq::send_flags::dontwait);
  }
}

}  // namespace taskmaster
