#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <random>

#include "common/log.h"
#include "common/overloaded.h"

namespace taskmaster {

using namespace std::chrono;
using Clock = steady_clock;
namespace proto = protocol;

namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string default_name(const std::string& host) {
  std::random_device rd;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%04x", static_cast<unsigned>(rd() & 0xFFFF));
  return proto::sanitize_text(host, 200) + "-" + std::to_string(getpid()) + "-" + suffix;
}

}  // namespace

namespace {

proto::PeerSocketOptions watched(proto::PeerSocketOptions o, proto::ConnectionMonitor& m) {
  o.before_connect = [&m](zmq::socket_t& s) { m.attach(s); };
  return o;
}

}  // namespace

Worker::Worker(zmq::context_t& ctx, WorkerConfig config, const HandlerRegistry& handlers)
    : config_(std::move(config)),
      handlers_(handlers),
      host_(host_name()),
      pool_(ctx, handlers, config_.threads),
      monitor_(ctx),
      socket_(proto::make_peer_socket(ctx, watched(config_.socket, monitor_))),
      judge_(config_.socket.endpoint, config_.socket.curve),
      heartbeat_(config_.heartbeat),
      master_timeout_(config_.master_timeout),
      backoff_(config_.hello_min) {
  name_ = config_.name.empty() ? default_name(host_) : config_.name;
  std::random_device rd;
  // 53 bits: exact in any JSON reader.
  session_ = ((static_cast<std::uint64_t>(rd()) << 32) | rd()) & ((std::uint64_t{1} << 53) - 1);
  if (session_ == 0) session_ = 1;
  // Until durations are known: one task queued per thread.
  prefetch_ = config_.prefetch ? *config_.prefetch : pool_.threads();
}

std::uint32_t Worker::slots() const { return draining_ ? 0 : std::min<std::uint32_t>(pool_.threads() + prefetch_, proto::kMaxSlots); }

void Worker::resize_credit(Clock::time_point now) {
  if (config_.prefetch || draining_ || now < next_resize_) return;
  next_resize_ = now + milliseconds(100);
  const auto usage = pool_.usage();
  const auto runs = usage.runs - last_usage_.runs;
  if (runs < 8) return;  // too few to say
  const auto busy = usage.busy - last_usage_.busy;
  last_usage_ = usage;
  // Keep about kPrefetchTime of work queued per thread: many short tasks in flight, no long ones
  // hoarded while another worker could start them.
  const double per_task_ns = std::max(1.0, static_cast<double>(busy.count()) / static_cast<double>(runs));
  const double per_thread = std::clamp(static_cast<double>(duration_cast<nanoseconds>(kPrefetchTime).count()) / per_task_ns, 0.0,
                                       static_cast<double>(kMaxPrefetchPerThread));
  prefetch_ = static_cast<unsigned>(per_thread) * pool_.threads();
  const auto want = slots();
  // Tell the master when the credit changed by more than a quarter (or to or from its minimum).
  if (state_ == State::Ready && (want * 4 > announced_ * 5 || want * 5 < announced_ * 4)) {
    send(proto::Credit{want}, now);
    announced_ = want;
  }
}

void Worker::join(Clock::time_point now, const char* why) {
  if (state_ == State::Ready) log_info(why, "; saying HELLO again");
  state_ = State::Joining;
  backoff_ = config_.hello_min;
  next_hello_ = now;  // at once; then again after hello_min, doubling up to hello_max
}

void Worker::say_hello(Clock::time_point now) {
  proto::Hello h;
  h.worker = name_;
  h.host = host_;
  h.pid = getpid();
  h.functions = handlers_.names();
  h.queues = config_.queues;
  if (config_.weights.size() == config_.queues.size()) h.weights = config_.weights;
  h.slots = slots();
  h.session = session_;
  if (config_.reserve) h.features = {std::string(proto::kFeatureReserve)};
  h.threads = pool_.threads();
  announced_ = h.slots;
  // Everything this worker still holds: attempts running, and outcomes the master has not ACKed.
  for (const auto& [task, attempt] : running_) h.running.push_back({task, attempt});
  for (const auto& [task, r] : unacked_) h.running.push_back({task, r.attempt});
  send(h, now);
  next_hello_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, config_.hello_max);
}

void Worker::send(const proto::Message& m, Clock::time_point now) {
  // With ZMQ_IMMEDIATE nothing is queued while the connection is down; what is lost here is sent
  // again after the next WELCOME (HELLO lists everything held, RESULTS are resent until ACKed).
  if (proto::send(socket_, m) == proto::SendResult::Sent) last_sent_ = now;
}

void Worker::send_results(Clock::time_point now) {
  if (state_ != State::Ready) return;
  if (!reserve_) unreported_.clear();
  if (to_send_.empty()) {
    if (!unreported_.empty()) send(proto::Started{std::move(unreported_)}, now);
    unreported_.clear();
    return;
  }
  proto::Results msg;
  msg.started = std::move(unreported_);
  unreported_.clear();
  std::size_t bytes = 0;
  for (auto task : to_send_) {
    auto it = unacked_.find(task);
    if (it == unacked_.end()) continue;
    if (!msg.results.empty() && (bytes + it->second.value.size() > proto::kMaxMessageBytes / 2 || msg.results.size() >= proto::kMaxBatch)) {
      send(msg, now);
      msg.results.clear();
      msg.started.clear();
      bytes = 0;
    }
    bytes += it->second.value.size() + 64;
    msg.results.push_back(it->second);
  }
  if (!msg.results.empty()) send(msg, now);
  else if (!msg.started.empty()) send(proto::Started{std::move(msg.started)}, now);
  to_send_.clear();
}

void Worker::handle(proto::Message& m, Clock::time_point now) {
  std::visit(Overloaded{
                 [&](proto::Welcome& w) {
                   const bool restarted = !master_.empty() && master_ != w.master;
                   log_info(restarted ? "reconnected to a restarted master " : "connected to master ", w.master, " at ",
                            config_.socket.endpoint, " with ", pool_.threads(), " threads");
                   master_ = w.master;
                   heartbeat_ = milliseconds(w.heartbeat_ms);
                   master_timeout_ = milliseconds(w.timeout_ms);
                   state_ = State::Ready;
                   silence_logged_ = false;
                   // Outcomes the master may not have: send them (again); it drops duplicates.
                   to_send_.clear();
                   for (const auto& [task, r] : unacked_) to_send_.push_back(task);
                   // A new session knows nothing of what has begun: tell it all again.
                   reserve_ = config_.reserve &&
                              std::find(w.features.begin(), w.features.end(), proto::kFeatureReserve) != w.features.end();
                   unreported_.clear();
                   if (reserve_)
                     for (auto task : begun_)
                       if (auto it = running_.find(task); it != running_.end()) unreported_.push_back({task, it->second});
                 },
                 [&](proto::Revoke& r) {
                   // Only what no thread has begun comes back; the rest finishes as usual.
                   auto released = pool_.revoke(r.tasks);
                   for (const auto& a : released) running_.erase(a.task);
                   log_debug("master revoked ", r.tasks.size(), " reserved attempts; ", released.size(), " released");
                   send(proto::Released{std::move(released)}, now);
                 },
                 [&](proto::Tasks& t) {
                   for (const auto& a : t.tasks) running_[a.task] = a.attempt;
                   pool_.submit(std::move(t.tasks));
                 },
                 [&](proto::Ack& a) {
                   for (auto task : a.tasks) unacked_.erase(task);
                 },
                 [&](proto::Heartbeat&) {},
                 [&](proto::ErrorReply& e) {
                   if (e.code == ErrorCode::NotAllowed && state_ == State::Ready) {
                     // The master does not know us: it restarted, or presumed us dead.
                     log_warn("master no longer knows this worker (", e.message, ")");
                     join(now, "master no longer knows this worker");
                   } else if (e.code == ErrorCode::Unavailable && state_ == State::Joining) {
                     // Not serving yet (it is starting): the next HELLO comes after the backoff.
                     log_debug("master says: ", e.message);
                   } else {
                     log_warn("master says: ", error_code_name(e.code), ": ", e.message);
                   }
                 },
                 [&](auto& other) { log_warn("unexpected ", proto::command_name(proto::Message(other)), " from master"); },
             },
             m);
}

bool Worker::watch_connection(Clock::time_point now) {
  while (auto e = monitor_.next()) {
    using Kind = proto::ConnectionEvent::Kind;
    if (e->kind == Kind::Connected) {
      // A new connection: the master sees a new peer, whatever it knew of the old one.
      if (!connected_) log_debug("connected to ", config_.socket.endpoint);
      connected_ = true;
      join(now, "new connection to the master");
    } else if (e->kind == Kind::Disconnected) {
      if (connected_)
        log_warn("connection to the master at ", config_.socket.endpoint, " lost; reconnecting (every ",
                 proto::kReconnectMax.count() / 1000.0, " s at most)");
      connected_ = false;
    } else if (e->kind == Kind::HandshakeFailed) {
      connected_ = false;
      if (auto why = judge_.failed(*e, now)) {
        auth_error_ = *why;
        return false;
      }
    }
  }
  return true;
}

WorkerExit Worker::run(int stop_fd) {
  auto now = Clock::now();
  last_heard_ = now;
  next_hello_ = now;
  int stop_requests = 0;
  for (;;) {
    // Draining ends when nothing runs and everything is acknowledged, or when the master cannot
    // take our results (silent for its timeout: then they are lost and the master runs those tasks
    // again: at least once).
    if (draining_ && running_.empty() &&
        (unacked_.empty() || (state_ != State::Ready && Clock::now() - last_heard_ > kDrainPatience * master_timeout_))) {
      if (state_ == State::Ready) send(proto::Bye{}, Clock::now());
      log_info("drained: ", unacked_.empty() ? "every result delivered" : "master unreachable; undelivered results dropped");
      return WorkerExit::Drained;
    }
    zmq::pollitem_t items[] = {
        {socket_.handle(), 0, ZMQ_POLLIN, 0},
        {pool_.wakeup().handle(), 0, ZMQ_POLLIN, 0},
        {monitor_.socket().handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
    };
    now = Clock::now();
    auto wake = state_ == State::Ready ? std::min(last_sent_ + heartbeat_, last_heard_ + master_timeout_) : next_hello_;
    if (draining_) wake = std::min(wake, last_heard_ + kDrainPatience * master_timeout_);
    const auto timeout = std::clamp(duration_cast<milliseconds>(wake - now) + milliseconds(1), milliseconds(0), milliseconds(1000));
    try {
      zmq::poll(items, stop_fd >= 0 ? 4 : 3, timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    now = Clock::now();
    if (!watch_connection(now)) {
      pool_.stop_now();
      return WorkerExit::AuthFailed;
    }
    if (stop_fd >= 0 && (items[3].revents & ZMQ_POLLIN)) {
      char buf[256];
      (void)::read(stop_fd, buf, sizeof buf);  // consume the signal
      if (++stop_requests >= 2) {
        log_warn("stopping now: ", running_.size(), " running attempts abandoned");
        pool_.stop_now();
        return WorkerExit::Stopped;
      }
      draining_ = true;
      log_info("draining: no new tasks; waiting for ", running_.size(), " running attempts");
      send(proto::Credit{0}, now);
    }
    while (auto in = proto::receive(socket_, /*router=*/false)) {
      last_heard_ = now;
      auto decoded = in->decode();
      if (!decoded) {
        log_warn("bad message from master: ", decoded.error().message);
        continue;
      }
      handle(*decoded, now);
    }
    for (auto& r : pool_.take(&begun_buf_)) {
      running_.erase(r.task);
      begun_.erase(r.task);
      to_send_.push_back(r.task);
      unacked_[r.task] = std::move(r);
    }
    for (const auto& b : begun_buf_) {
      auto it = running_.find(b.task);
      if (it == running_.end() || it->second != b.attempt) continue;  // it has finished already
      begun_.insert(b.task);
      if (reserve_) unreported_.push_back(b);
    }
    send_results(now);
    resize_credit(now);
    if (state_ == State::Joining && now >= next_hello_) say_hello(now);
    if (state_ == State::Ready && now - last_sent_ >= heartbeat_) send(proto::Heartbeat{}, now);
    // A master silent for its timeout may have lost us (restarted, presumed us dead, or was cut
    // off): register again. The socket stays: libzmq reconnects it by itself when the connection
    // breaks (its ZMTP heartbeats notice a dead link), and a new connection says HELLO at once.
    if (now - last_heard_ > master_timeout_ && !silence_logged_) {
      log_warn("no word from master at ", config_.socket.endpoint, " for ", duration_cast<milliseconds>(now - last_heard_).count(), " ms; ",
               connected_ ? "saying HELLO again" : "waiting for the connection to come back");
      silence_logged_ = true;
      join(now, "master silent");
    }
  }
}

}  // namespace taskmaster
