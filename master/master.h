// The master: one event loop over one ROUTER socket. It receives messages, hands them to the
// MasterState (all the rules live there), and sends what the state's outbox holds at the end of
// each turn. The loop is drawn in docs/ARCHITECTURE.md.
// Not thread-safe: run() happens on one thread.
#pragma once

#include <string>

#include <zmq.hpp>

#include "master/state.h"

namespace taskmaster {

class Master {
 public:
  // Binds the socket. Throws std::runtime_error (naming the endpoint) if it cannot.
  Master(zmq::context_t& ctx, MasterConfig config);
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

  // The endpoint really bound, e.g. "tcp://127.0.0.1:41234".
  std::string endpoint();

  // Serves until `stop_fd` (e.g. a signalfd) becomes readable; -1 serves until the context closes.
  void run(int stop_fd);

  const MasterState& state() const { return state_; }

 private:
  void flush(TimePoint now);

  MasterConfig config_;
  zmq::socket_t socket_;
  MasterState state_;
};

}  // namespace taskmaster
