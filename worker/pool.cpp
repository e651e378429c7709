#include "worker/pool.h"

#include <cstring>

namespace taskmaster {

namespace proto = protocol;
using nlohmann::json;

Pool::Pool(zmq::context_t& ctx, const HandlerRegistry& handlers, unsigned threads)
    : ctx_(ctx), handlers_(handlers), results_(ctx, zmq::socket_type::pull) {
  const std::string endpoint = "inproc://taskmaster-pool-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
  results_.set(zmq::sockopt::linger, 0);
  results_.set(zmq::sockopt::rcvhwm, 0);  // bounded by the worker's slots, never by the socket
  results_.bind(endpoint);
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

void Pool::submit(proto::Assignment a) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(a));
  }
  ready_.notify_one();
}

std::optional<proto::Result> Pool::take() {
  zmq::message_t task, attempt, ok, value;
  try {
    if (!results_.recv(task, zmq::recv_flags::dontwait)) return std::nullopt;
    (void)results_.recv(attempt);
    (void)results_.recv(ok);
    (void)results_.recv(value);
  } catch (const zmq::error_t&) {
    return std::nullopt;
  }
  proto::Result r;
  std::memcpy(&r.task, task.data(), sizeof r.task);
  std::memcpy(&r.attempt, attempt.data(), sizeof r.attempt);
  r.ok = *static_cast<const char*>(ok.data()) != 0;
  r.value = value.to_string();
  return r;
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
    r.value = proto::sanitize_text(e.what(), proto::kMaxErrorBytes);
    if (r.value.empty()) r.value = a.function + ": failed";
  } catch (...) {
    r.value = a.function + ": failed with an exception that is not a std::exception";
  }
  return r;
}

void Pool::run_thread(std::string endpoint) {
  zmq::socket_t out(ctx_, zmq::socket_type::push);
  out.set(zmq::sockopt::linger, 0);
  out.set(zmq::sockopt::sndhwm, 0);
  out.connect(endpoint);
  for (;;) {
    proto::Assignment a;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (closing_) return;
      a = std::move(queue_.front());
      queue_.pop_front();
    }
    const proto::Result r = run_one(a);
    const char ok = r.ok ? 1 : 0;
    out.send(zmq::buffer(&r.task, sizeof r.task), zmq::send_flags::sndmore);
    out.send(zmq::buffer(&r.attempt, sizeof r.attempt), zmq::send_flags::sndmore);
    out.send(zmq::buffer(&ok, 1), zmq::send_flags::sndmore);
    out.send(zmq::buffer(r.value), zmq::send_flags::none);
  }
}

}  // namespace taskmaster
