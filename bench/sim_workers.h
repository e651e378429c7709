// Many simulated workers in one process: each is a DEALER socket made by the protocol library
// (so with the keys derived from the shared key, like a real worker) that says HELLO with one slot,
// answers TASKS of `square` at once, and sends HEARTBEAT when it has said nothing for the heartbeat
// interval. A few threads share the sockets. What it measures: what 2,000 connected workers cost the
// master while idle, and how tasks spread across them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "protocol/auth.h"

namespace taskmaster::bench {

class SimulatedWorkers {
 public:
  // Starts `count` workers on `threads` threads, connecting to `endpoint`; they serve `queue`.
  SimulatedWorkers(std::string endpoint, std::optional<protocol::CurveKeys> curve, std::string queue, std::size_t count, unsigned threads);
  // Stops the threads and closes every socket (without BYE: the master is stopped next anyway).
  ~SimulatedWorkers();
  SimulatedWorkers(const SimulatedWorkers&) = delete;
  SimulatedWorkers& operator=(const SimulatedWorkers&) = delete;

  std::size_t count() const { return count_; }
  // Workers that got WELCOME.
  std::size_t welcomed() const { return welcomed_.load(); }
  // Tasks each worker has run so far.
  std::vector<std::uint64_t> tasks_per_worker() const;
  // Tasks whose args were not an integer (answered as failed attempts).
  std::uint64_t bad_tasks() const { return bad_.load(); }

 private:
  struct Sim;
  void loop(std::size_t first, std::size_t end);

  std::string endpoint_;
  std::optional<protocol::CurveKeys> curve_;
  std::string queue_;
  std::size_t count_;
  zmq::context_t ctx_;
  std::vector<std::unique_ptr<Sim>> sims_;
  std::atomic<std::size_t> welcomed_{0};
  std::atomic<std::uint64_t> bad_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace taskmaster::bench
