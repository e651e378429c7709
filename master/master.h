// The master: one event loop over one ROUTER socket. It receives messages, hands them to the
// MasterState (all the rules live there), and sends what the state's outbox holds at the end of
// each turn. The loop is drawn in docs/ARCHITECTURE.md.
// Not thread-safe: run() happens on one thread.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "master/http.h"
#include "master/metrics.h"
#include "master/state.h"
#include "master/value_queues.h"
#include "protocol/auth.h"
#include "protocol/sockets.h"
#include "pyman/listener.h"

namespace taskmaster {

class Master {
 public:
  // Opens the journal (config.data_dir) and replays it, then binds the socket (so that peers find
  // no master until it can serve: a connection refused is retried, never taken for a wrong key);
  // with CURVE keys in config.socket.curve, starts the ZAP handler first. Throws
  // std::runtime_error saying what is wrong if the journal cannot be used or the endpoint cannot
  // be bound. With `http`, also serves metrics and the dashboard there (master/http.h), bound
  // before the socket.
  Master(zmq::context_t& ctx, MasterConfig config, std::optional<HttpServer::Options> http = std::nullopt);
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

  ~Master();
  // The endpoint really bound, e.g. "tcp://127.0.0.1:41234".
  std::string endpoint();

  // Also serves Python's BaseManager clients on options.host:port (pyman/listener.h), from this
  // loop; before run(). Throws std::runtime_error if it cannot listen. Returns the address bound.
  std::string serve_python(pyman::ListenerOptions options);

  // Serves until `stop_fd` (e.g. a signalfd) becomes readable; -1 serves until the context closes.
  void run(int stop_fd);

  const MasterState& state() const { return *state_; }

 private:
  void send(const MasterState::Outgoing& out, TimePoint now);
  void send_all(std::vector<MasterState::Outgoing> out, TimePoint now);
  void start_state(TimePoint now);
  void watch_connections(TimePoint now);
  void log_rejection(const std::string& address, const std::string& why, TimePoint now);
  // Answers the HTTP endpoint's waiting requests from the state; those that change it are kept in
  // http_held_ until the turn's commit.
  void serve_http(TimePoint now);
  void answer_held_http(bool committed);
  // The value queues' replies of the turn, after their commit: to TASKMASTER/1 peers and to the
  // Python listener's connections (a value that cannot be delivered goes back to its queue).
  void deliver_values();

  MasterConfig config_;
  std::unique_ptr<protocol::ZapHandler> zap_;  // before socket_: it must answer from the first connection
  protocol::ConnectionMonitor monitor_;
  std::unique_ptr<Journal> journal_;  // null: in memory only
  std::string instance_;
  std::unique_ptr<HttpServer> http_;  // null: no --http
  std::unique_ptr<Metrics> metrics_;  // with http_
  std::vector<std::pair<std::unique_ptr<HttpServer::Pending>, HttpAnswer>> http_held_;
  std::unique_ptr<ValueQueues> values_;  // before state_, which points to it
  std::unique_ptr<MasterState> state_;
  std::unique_ptr<pyman::Listener> python_;          // null: no --python-manager
  zmq::socket_t socket_;                             // bound once the state is ready
  std::map<std::uint32_t, std::string> peers_;       // fd -> address of connections in their handshake
  std::optional<protocol::ConnectionEvent> failed_;  // a handshake failure waiting for its disconnect
  protocol::RateLimitedLog rejections_;
};

}  // namespace taskmaster
