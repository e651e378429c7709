// Runs handlers on N threads. Attempts go in with submit(); each outcome comes back as one message
// on an inproc socket that the worker's loop polls, so the loop never blocks on a handler.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "protocol/message.h"
#include "worker/handlers.h"

namespace taskmaster {

class Pool {
 public:
  // Starts `threads` threads. Outcomes are sent to a PULL socket bound at results_endpoint()
  // (the caller polls it through results()).
  Pool(zmq::context_t& ctx, const HandlerRegistry& handlers, unsigned threads);
  // Finishes the attempts already started, drops those not started, joins the threads.
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  void submit(protocol::Assignment assignment);
  // The socket outcomes arrive on; poll it for ZMQ_POLLIN.
  zmq::socket_t& results() { return results_; }
  // Takes one outcome if one is waiting.
  std::optional<protocol::Result> take();
  // Asks running handlers to give up (TaskContext::should_stop).
  void stop_now() { stopping_ = true; }
  unsigned threads() const { return static_cast<unsigned>(threads_.size()); }

 private:
  void run_thread(std::string endpoint);
  protocol::Result run_one(const protocol::Assignment& a);

  zmq::context_t& ctx_;
  const HandlerRegistry& handlers_;
  zmq::socket_t results_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<protocol::Assignment> queue_;
  bool closing_ = false;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
};

}  // namespace taskmaster
