// Runs handlers on N threads. Attempts go in with submit(); outcomes are collected in a list that
// the worker's loop takes in one go. The loop is woken through an inproc socket only when that list
// goes from empty to non-empty, so a burst of outcomes costs one wake-up, not one per task.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "protocol/message.h"
#include "worker/handlers.h"

namespace taskmaster {

class Pool {
 public:
  // Starts `threads` threads.
  Pool(zmq::context_t& ctx, const HandlerRegistry& handlers, unsigned threads);
  // Finishes the attempts already started, drops those not started, joins the threads.
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  void submit(std::vector<protocol::Assignment> batch);
  // Removes these attempts if no thread has begun them; returns those removed (they never run).
  std::vector<protocol::Lease> revoke(const std::vector<protocol::Lease>& attempts);
  // Readable when outcomes are waiting; poll it for ZMQ_POLLIN.
  zmq::socket_t& wakeup() { return wakeup_; }
  // Every outcome ready now (and clears the wake-up), and the attempts threads began since the last
  // take() (in `begun`, if given).
  std::vector<protocol::Result> take(std::vector<protocol::Lease>* begun = nullptr);
  // Asks running handlers to give up (TaskContext::should_stop).
  void stop_now() { stopping_ = true; }
  unsigned threads() const { return static_cast<unsigned>(threads_.size()); }
  // Attempts run so far and the time they took, for sizing the worker's credit.
  struct Usage {
    std::uint64_t runs = 0;
    std::chrono::nanoseconds busy{0};
  };
  Usage usage() const {
    return {runs_.load(std::memory_order_relaxed), std::chrono::nanoseconds(busy_ns_.load(std::memory_order_relaxed))};
  }
  // Attempts here have been short: at least kQuickRuns of them, kQuickRun on average or less.
  static constexpr std::uint64_t kQuickRuns = 8;
  static constexpr std::chrono::nanoseconds kQuickRun{std::chrono::milliseconds(1)};
  bool runs_quick() const {
    const auto u = usage();
    return u.runs >= kQuickRuns && u.busy <= kQuickRun * static_cast<std::int64_t>(u.runs);
  }

 private:
  void run_thread(std::string endpoint);
  protocol::Result run_one(const protocol::Assignment& a);

  zmq::context_t& ctx_;
  const HandlerRegistry& handlers_;
  zmq::socket_t wakeup_;
  std::mutex mutex_;  // guards queue_, closing_
  std::condition_variable ready_;
  std::deque<protocol::Assignment> queue_;
  bool closing_ = false;
  std::mutex results_mutex_;  // guards results_, begun_
  std::vector<protocol::Result> results_;
  std::vector<protocol::Lease> begun_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> runs_{0}, busy_ns_{0};
  std::vector<std::thread> threads_;
};

}  // namespace taskmaster
