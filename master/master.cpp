#include "master/master.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <random>

#include "common/log.h"

namespace taskmaster {

using namespace std::chrono;
namespace proto = protocol;

namespace {

std::string random_instance() {
  std::random_device rd;
  char buf[20];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

// Where an in-memory master's ids start. Such a master forgets its jobs and tasks when it
// restarts, while workers may still run attempts of them and clients wait on them; ids counted
// from 1 again would let such an attempt finish the new task that got its id, and a client's
// `wait 3` read another job's outcomes. So ids start from the clock: job ids at the milliseconds
// since 2026-01-01, task ids at 4096 per millisecond. An instance would have to create more than
// 1000 jobs, or 4 million tasks, per second it ran for the next one's ids to meet its own; task ids
// stay below 2^53 (exact in a JSON double) until 2095.
std::uint64_t since_2026_ms() {
  constexpr std::int64_t kEpochMs = 1767225600000;  // 2026-01-01T00:00:00Z
  const std::int64_t ms = duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count() - kEpochMs;
  return static_cast<std::uint64_t>(std::max<std::int64_t>(ms, 0));
}

// The address of the peer on the other end of a socket fd, e.g. "10.200.0.2:41234".
std::string peer_address(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return "unknown peer";
  char host[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (sa.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&sa);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (sa.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&sa);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  } else {
    return "local peer";
  }
  return std::string(host) + ":" + std::to_string(port);
}

MasterConfig with_monitor(MasterConfig c, proto::ConnectionMonitor& m) {
  c.socket.before_bind = [&m](zmq::socket_t& s) { m.attach(s); };
  return c;
}

}  // namespace

Master::Master(zmq::context_t& ctx, MasterConfig config, std::optional<HttpServer::Options> http)
    : config_(std::move(config)),
      zap_(config_.socket.curve ? std::make_unique<proto::ZapHandler>(ctx, config_.socket.curve->client_public,
                                                                      [this](const std::string& address, const std::string& why) {
                                                                        log_rejection(address, why, Clock::now());
                                                                      })
                                : nullptr),
      monitor_(ctx),
      journal_(config_.data_dir ? std::make_unique<Journal>(*config_.data_dir) : nullptr),
      instance_(random_instance()) {
  if (http) {
    http_ = std::make_unique<HttpServer>(std::move(*http));
    metrics_ = std::make_unique<Metrics>();
    config_.http_url = http_->url();
  }
  start_state(Clock::now());
  state_->set_metrics(metrics_.get());  // counted from here: replayed tasks are not new
  socket_ = proto::make_master_socket(ctx, with_monitor(config_, monitor_).socket);
}

Master::~Master() = default;

void Master::start_state(TimePoint now) {
  values_ = std::make_unique<ValueQueues>(journal_.get());
  // Every value must have a Python form, whoever put it (a TASKMASTER/1 client may put any JSON).
  values_->set_check([](const std::string& json) -> std::optional<std::string> {
    auto v = pickle::from_json(nlohmann::json::parse(json, nullptr, false));
    if (!v) return v.error().message;
    return std::nullopt;
  });
  if (journal_) values_->load();
  state_ = std::make_unique<MasterState>(config_, instance_, now);
  state_->set_value_queues(values_.get());
  if (!journal_) {
    const auto first = since_2026_ms();
    return state_->start_ids_at(first + 1, first * 4096 + 1);
  }
  const auto t0 = Clock::now();
  const auto loaded = state_->recover(*journal_, now);
  log_info("journal ", journal_->path(), ": ", loaded.jobs, " jobs and ", loaded.tasks, " tasks replayed (", loaded.requeued,
           " were running: each such attempt counts as failed) in ", duration_cast<milliseconds>(Clock::now() - t0).count(), " ms");
  // Replay may have changed some tasks (the running ones): make that durable before serving. If
  // the disk refuses, the next replay derives the same changes again.
  (void)state_->commit(now);
}

std::string Master::endpoint() { return proto::bound_endpoint(socket_); }

std::string Master::serve_python(pyman::ListenerOptions options) {
  pyman::Listener::Backend backend;
  backend.put = [this](std::uint64_t conn, const std::string& queue, std::string json) {
    values_->put({true, {}, 0, conn}, queue, std::move(json), Clock::now());
  };
  backend.get = [this](std::uint64_t conn, const std::string& queue, std::optional<milliseconds> wait) {
    values_->get({true, {}, 0, conn}, queue, wait, Clock::now());
  };
  backend.depth = [this](const std::string& queue) { return values_->depth(queue); };
  backend.closed = [this](std::uint64_t conn) { values_->forget_python(conn); };
  python_ = std::make_unique<pyman::Listener>(std::move(options), std::move(backend));
  values_->set_listener(python_->address());
  return python_->address();
}

void Master::deliver_values() {
  using Kind = ValueQueues::Reply::Kind;
  using AKind = pyman::Listener::Answer::Kind;
  for (auto& r : values_->commit()) {
    bool delivered = false;
    if (r.peer.python) {
      pyman::Listener::Answer a;
      a.kind = r.kind == Kind::Put     ? AKind::Put
               : r.kind == Kind::Value ? AKind::Value
               : r.kind == Kind::Empty ? AKind::Empty
               : r.kind == Kind::Full  ? AKind::Full
                                       : AKind::Failed;
      a.value = r.value;
      a.error = r.error;
      a.value_refused = r.kind == Kind::Failed && r.code == ErrorCode::BadField;
      delivered = python_ && python_->answer(r.peer.conn, a);
    } else {
      proto::Message m = proto::QueueValue{r.peer.req, r.queue, values_->depth(r.queue), std::nullopt};
      if (r.kind == Kind::Value) std::get<proto::QueueValue>(m).value = r.value;
      if (r.kind == Kind::Full || r.kind == Kind::Failed) {
        m = proto::ErrorReply{r.peer.req, r.kind == Kind::Full ? ErrorCode::Unavailable : r.code,
                              "value queue " + r.queue + ": " + r.error};
      }
      delivered = proto::send_to(socket_, r.peer.identity, m) == proto::SendResult::Sent;
    }
    if (!delivered && r.kind == Kind::Value) values_->give_back(r.queue, std::move(r.value));
  }
}

void Master::run(int stop_fd) {
  log_info("serving on ", endpoint(), " (instance ", state_->instance(), ")");
  if (!zap_)
    log_warn("running WITHOUT a key (--insecure): no authentication, no encryption; anyone who can reach ", endpoint(),
             " can submit tasks, run them and read every result");
  if (http_) {
    log_info("HTTP: metrics at ", http_->url(), "/metrics; dashboard: ", http_->login_url());
    if (!zap_) log_warn("HTTP has no token either (--insecure): anyone who reaches ", http_->url(), " can read and cancel");
    if (!is_loopback_host(http_->url().substr(7, http_->url().rfind(':') - 7)))
      log_warn(
          "HTTP is plain text and listens beyond this host: its token can be read on the way; prefer a loopback "
          "address with an ssh tunnel, or a TLS proxy in front");
  }
  std::vector<zmq::pollitem_t> items = {
      {socket_.handle(), 0, ZMQ_POLLIN, 0},
      {monitor_.socket().handle(), 0, ZMQ_POLLIN, 0},
  };
  const auto add_item = [&items](void* socket, int fd) {
    if (!socket && fd < 0) return -1;
    items.push_back({socket, fd, ZMQ_POLLIN, 0});
    return static_cast<int>(items.size()) - 1;
  };
  const int zap_item = zap_ ? add_item(zap_->socket().handle(), -1) : -1;
  const int stop_item = add_item(nullptr, stop_fd);
  const int http_item = http_ ? add_item(nullptr, http_->fd()) : -1;
  const std::size_t count = items.size();  // then the Python listener's sockets, if any
  if (python_) {
    log_info("python manager listener on ", python_->address(), " (multiprocessing.managers, HMAC authkey)");
    if (!python_->loopback())
      log_warn("the python manager listener ", python_->address(),
               " listens beyond this host, and its protocol is plain text: the queues' values can be read on the way; "
               "prefer a loopback address with an ssh tunnel (docs/PYTHON.md)");
  }
  for (;;) {
    // Sleep until a message comes or the state's next deadline.
    auto now = Clock::now();
    milliseconds timeout(100);
    auto d = state_->next_deadline();
    for (auto other : {values_->next_deadline(), python_ ? python_->next_deadline() : std::nullopt})
      if (other && (!d || *other < *d)) d = other;
    if (d) timeout = std::clamp(duration_cast<milliseconds>(*d - now) + milliseconds(1), milliseconds(0), milliseconds(1000));
    if (values_->pending()) timeout = milliseconds(0);
    items.resize(count);
    if (python_)
      for (const auto& p : python_->poll_fds())
        items.push_back({nullptr, p.fd,
                         static_cast<short>(((p.events & pyman::Listener::kReadable) ? ZMQ_POLLIN : 0) |
                                            ((p.events & pyman::Listener::kWritable) ? ZMQ_POLLOUT : 0)),
                         0});
    try {
      zmq::poll(items.data(), items.size(), timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      if (e.num() == ETERM) break;
      throw;
    }
    if (stop_fd >= 0 && (items[stop_item].revents & ZMQ_POLLIN)) break;
    now = Clock::now();
    // Authentication first: a connection waits in its handshake until the handler answers. Each
    // socket is read only when poll says it has something (every read of a ZeroMQ socket costs a
    // system call even when it is empty); what comes after the poll is read at the next turn.
    if (zap_ && (items[static_cast<std::size_t>(zap_item)].revents & ZMQ_POLLIN)) zap_->handle_requests();
    if (items[1].revents & ZMQ_POLLIN) watch_connections(now);
    // Receive what is waiting, a bounded number per turn so that timers are never starved.
    for (std::size_t i = 0; i < config_.max_messages_per_turn; ++i) {
      auto in = proto::receive(socket_, /*router=*/true);
      if (!in) break;
      state_->receive(in->identity, in->decode(), now);
    }
    if (http_item >= 0 && (items[http_item].revents & ZMQ_POLLIN)) serve_http(now);
    if (python_) {
      for (std::size_t i = count; i < items.size(); ++i) {
        const short ev = items[i].revents;
        if (!ev) continue;
        // An error or hang-up shows as readable: the read finds it.
        python_->handle(items[i].fd,
                        static_cast<short>(((ev & (ZMQ_POLLIN | ZMQ_POLLERR)) ? pyman::Listener::kReadable : 0) |
                                           ((ev & ZMQ_POLLOUT) ? pyman::Listener::kWritable : 0)),
                        now);
      }
      python_->turn(now);
    }
    now = Clock::now();
    values_->turn(now);
    state_->turn(now);
    // What promises nothing leaves at once (the workers start while the journal syncs); the rest
    // after the group commit, which MasterState makes: one fsync for the whole turn.
    send_all(state_->take_outbox(), now);
    const auto failures = state_->counters().journal_failures;
    send_all(state_->commit(now), now);
    answer_held_http(state_->counters().journal_failures == failures);
    deliver_values();  // its own commit, after the state's
  }
  answer_held_http(false);
  log_info("stopping: ", state_->tasks().size(), " tasks in memory, ", state_->workers(), " workers connected");
}

void Master::serve_http(TimePoint now) {
  for (auto& p : http_->take()) {
    if (!p->take_it()) continue;  // the HTTP side gave up on it: nothing is done
    HttpAnswer a = state_->http(p->query, now);
    if (a.changed) http_held_.emplace_back(std::move(p), std::move(a));
    else p->answer.set_value(std::move(a));
  }
}

void Master::answer_held_http(bool committed) {
  for (auto& [p, a] : http_held_) {
    if (!committed) {
      a.status = 503;
      a.body = R"({"error":"the journal could not write the change (see the master's log); ask again"})";
    }
    p->answer.set_value(std::move(a));
  }
  http_held_.clear();
}

void Master::send_all(std::vector<MasterState::Outgoing> out, TimePoint now) {
  // ACKs (of workers' RESULTS) last: nothing waits on them, while the OUTCOMES and TASKS of the
  // same turn are what a client waits for; a worker woken by its ACK first would take the CPU from
  // them (2 cores here). Every other message keeps its order.
  std::stable_partition(out.begin(), out.end(),
                        [](const MasterState::Outgoing& o) { return !std::holds_alternative<proto::Ack>(o.message); });
  for (const auto& o : out) send(o, now);
}

void Master::watch_connections(TimePoint now) {
  while (auto e = monitor_.next()) {
    using Kind = proto::ConnectionEvent::Kind;
    if (e->kind == Kind::Accepted) {
      if (peers_.size() > 10000) peers_.clear();  // bounded under a connection flood
      peers_[e->value] = peer_address(static_cast<int>(e->value));
    } else if (e->kind == Kind::HandshakeFailed) {
      failed_ = *e;
    } else if (e->kind == Kind::Connected) {
      failed_.reset();
    } else if (e->kind == Kind::Disconnected) {
      auto it = peers_.find(e->value);
      const std::string address = it == peers_.end() ? "unknown peer" : it->second;
      if (it != peers_.end()) peers_.erase(it);
      // A handshake that failed before any ZAP request (a wrong server key, no key, garbage).
      // ZAP refusals were logged by the handler already.
      if (failed_ && failed_->event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        std::string why = "its security handshake failed (wrong key, no key, or not a taskmaster peer)";
        if (failed_->event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && failed_->value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
          why = zap_ ? "it has no key (it runs with --insecure)" : "it uses a key, and this master runs with --insecure";
        log_rejection(address, why, now);
      }
      failed_.reset();
    }
  }
}

void Master::log_rejection(const std::string& address, const std::string& why, TimePoint now) {
  // The host alone (without the port) so that one peer reconnecting again and again is one source.
  const std::string host = address.substr(0, address.rfind(':'));
  if (metrics_) metrics_->rejected_connection();
  if (auto held = rejections_.allow(host, now)) {
    log_warn("rejected a connection from ", address, ": ", why,
             *held ? " (" + std::to_string(*held) + " more from this host since the last report)" : std::string());
  }
}

void Master::send(const MasterState::Outgoing& out, TimePoint now) {
  // Sends never block: a full queue or a vanished peer comes back as a result the state handles.
  const auto sent = proto::send_to(socket_, out.identity, out.message);
  if (sent == proto::SendResult::Sent) state_->sent(out.identity, now);
  else state_->send_failed(out.identity, out.message, sent, now);
}

}  // namespace taskmaster
