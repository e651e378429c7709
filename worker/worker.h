// The worker: one loop over a DEALER socket to the master and the pool's outcome socket.
// It says HELLO with its functions and slots on every new connection, runs the TASKS it gets, sends
// RESULTS (kept until the master's ACK), heartbeats, and drains on request: no new credit, running
// attempts finish, BYE. The dialog is docs/PROTOCOL.md §5.
// It never gives up on an absent master: one socket and one monitor for its whole life, libzmq
// reconnecting with a capped backoff, and HELLO again on every new connection and whenever the
// master has been silent for its timeout. Only a definite answer (a master that answers and refuses
// the key) ends it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "protocol/message.h"
#include "protocol/probe.h"
#include "protocol/sockets.h"
#include "worker/handlers.h"
#include "worker/pool.h"

namespace taskmaster {

struct WorkerConfig {
  protocol::PeerSocketOptions socket;  // the master's endpoint and socket options
  std::string name;                    // "" = host-pid-random
  unsigned threads = 1;                // attempts run at once
  // Tasks held beyond those running, so that a thread never waits for the next one: nullopt sizes
  // it from the measured task durations (about kPrefetchTime of work queued per thread).
  std::optional<unsigned> prefetch;
  // Offer the feature "reserve" (PROTOCOL.md §6.14): the master may take back prefetched attempts
  // not yet begun, and knows which have begun.
  bool reserve = true;
  std::vector<std::string> queues{"default"};  // queues served
  std::vector<std::uint32_t> weights;          // parallel to queues; empty: all equal (HELLO weights)
  // HELLO is repeated while no WELCOME comes: first after hello_min, doubling up to hello_max.
  std::chrono::milliseconds hello_min{250};
  std::chrono::milliseconds hello_max{2000};
  // Until the master's WELCOME says otherwise:
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds master_timeout{3000};
};

// How much work an automatic prefetch keeps queued per thread, and its bound per thread.
inline constexpr std::chrono::milliseconds kPrefetchTime{20};
inline constexpr unsigned kMaxPrefetchPerThread = 1024;

// A draining worker whose master is silent this many master timeouts gives up on delivering its
// last results (the master then runs those tasks again: at least once).
inline constexpr int kDrainPatience = 10;

// How run() ended.
enum class WorkerExit {
  Drained,     // stop requested, every attempt finished and reported
  Stopped,     // asked to stop twice: attempts still running were abandoned
  AuthFailed,  // the master refused this worker's key (or it has none): retrying cannot help
};

class Worker {
 public:
  // REQUIRES: handlers is not empty and outlives the worker.
  Worker(zmq::context_t& ctx, WorkerConfig config, const HandlerRegistry& handlers);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Serves until stop_fd (e.g. a signalfd) is readable, then drains; readable a second time, it
  // stops at once. Each readable event is consumed with read(); stop_fd = -1 never stops.
  WorkerExit run(int stop_fd);

  const std::string& name() const { return name_; }
  // Why run() returned AuthFailed.
  const std::string& auth_error() const { return auth_error_; }

 private:
  enum class State { Joining, Ready };

  void join(std::chrono::steady_clock::time_point now, const char* why);
  // Reads the monitor; false when authentication has failed for good.
  bool watch_connection(std::chrono::steady_clock::time_point now);
  void say_hello(std::chrono::steady_clock::time_point now);
  void handle(protocol::Message& m, std::chrono::steady_clock::time_point now);
  void send(const protocol::Message& m, std::chrono::steady_clock::time_point now);
  // RESULTS of what finished, with the attempts begun since the last report (or STARTED alone).
  void send_results(std::chrono::steady_clock::time_point now);
  // The slots to announce: threads plus prefetch (0 while draining). Re-sized from the pool's
  // measured task durations when the prefetch is automatic.
  std::uint32_t slots() const;
  void resize_credit(std::chrono::steady_clock::time_point now);

  WorkerConfig config_;
  const HandlerRegistry& handlers_;
  std::string name_;
  std::string host_;
  std::uint64_t session_ = 0;  // drawn at start: tells this process from another with its name
  Pool pool_;
  protocol::ConnectionMonitor monitor_;  // watches socket_, for the worker's whole life
  zmq::socket_t socket_;
  protocol::HandshakeJudge judge_;  // tells a refused key from a master that is away
  bool connected_ = false;          // a connection has finished its handshake and not closed since
  std::string auth_error_;
  State state_ = State::Joining;
  bool draining_ = false;
  std::string master_;  // instance id from the last WELCOME

  std::unordered_map<protocol::TaskId, std::uint32_t> running_;     // attempts in the pool
  std::unordered_map<protocol::TaskId, protocol::Result> unacked_;  // sent (or to send), not yet ACKed
  std::vector<protocol::TaskId> to_send_;                           // finished since the last RESULTS
  // Feature "reserve" (PROTOCOL.md §6.14): on when the master's WELCOME lists it.
  bool reserve_ = false;
  std::unordered_set<protocol::TaskId> begun_;  // attempts a thread has begun, not yet finished
  std::vector<protocol::Lease> unreported_;     // begun, still running, not yet told (STARTED)
  std::vector<protocol::Lease> begun_buf_;      // from Pool::take

  unsigned prefetch_ = 0;        // current prefetch (all threads together)
  std::uint32_t announced_ = 0;  // slots last announced to the master
  Pool::Usage last_usage_{};
  std::chrono::steady_clock::time_point next_resize_{};
  std::chrono::milliseconds heartbeat_;
  std::chrono::milliseconds master_timeout_;
  std::chrono::milliseconds backoff_;  // until the next HELLO while Joining
  bool silence_logged_ = false;        // "no word from master" said once per silence
  std::chrono::steady_clock::time_point last_heard_{}, last_sent_{}, next_hello_{};
};

}  // namespace taskmaster
