#include "bench/zmq_ceiling.h"

#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "bench/workload.h"

namespace taskmaster::bench {

using namespace std::chrono;

namespace {

// On the wire: a task is {id, n} (8 bytes), a result {id, n, n*n} (16 bytes).
struct TaskMsg {
  std::uint32_t id;
  std::uint32_t n;
};
struct ResultMsg {
  std::uint32_t id;
  std::uint32_t n;
  std::uint64_t r;
};
constexpr std::uint32_t kStop = 0xFFFFFFFF;

void worker(const std::string& tasks_ep, const std::string& results_ep, std::atomic<bool>& stop) {
  zmq::context_t ctx(1);
  zmq::socket_t in(ctx, zmq::socket_type::pull), out(ctx, zmq::socket_type::push);
  in.set(zmq::sockopt::linger, 0);
  out.set(zmq::sockopt::linger, 0);
  out.set(zmq::sockopt::sndtimeo, 10000);
  in.set(zmq::sockopt::rcvtimeo, 100);  // to notice `stop` if a stop message never comes
  in.connect(tasks_ep);
  out.connect(results_ep);
  zmq::message_t m;
  while (!stop) {
    if (!in.recv(m)) continue;
    if (m.size() != sizeof(TaskMsg)) continue;
    TaskMsg t;
    std::memcpy(&t, m.data(), sizeof t);
    if (t.id == kStop) break;
    const ResultMsg r{t.id, t.n, std::uint64_t{t.n} * t.n};
    out.send(zmq::buffer(&r, sizeof r));
  }
}

}  // namespace

Expected<double> zmq_pipeline_tasks_per_s(unsigned workers, std::uint64_t n, std::uint64_t seed) {
  if (n == 0 || n >= kStop) return make_error(ErrorCode::BadField, "zmq ceiling: n out of range");
  zmq::context_t vent_ctx(1), sink_ctx(1);
  zmq::socket_t vent(vent_ctx, zmq::socket_type::push), sink(sink_ctx, zmq::socket_type::pull);
  vent.set(zmq::sockopt::linger, 0);
  sink.set(zmq::sockopt::linger, 0);
  // A lost result fails the run instead of hanging it.
  sink.set(zmq::sockopt::rcvtimeo, 10000);
  vent.set(zmq::sockopt::sndtimeo, 10000);
  vent.bind("tcp://127.0.0.1:*");
  sink.bind("tcp://127.0.0.1:*");
  const std::string vent_ep = vent.get(zmq::sockopt::last_endpoint), sink_ep = sink.get(zmq::sockopt::last_endpoint);

  // Start only when every worker's connection to the ventilator is up; otherwise PUSH would deal
  // the first tasks to the workers that happened to connect first.
  zmq::socket_t monitor(vent_ctx, zmq::socket_type::pair);
  const std::string monitor_ep = "inproc://bench-zmq-ceiling-monitor";
  if (zmq_socket_monitor(vent.handle(), monitor_ep.c_str(), ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
    return make_error(ErrorCode::Internal, std::string("zmq ceiling: cannot monitor: ") + zmq_strerror(zmq_errno()));
  monitor.set(zmq::sockopt::rcvtimeo, 10000);
  monitor.connect(monitor_ep);

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < workers; ++i) threads.emplace_back(worker, vent_ep, sink_ep, std::ref(stop));
  auto finish = [&] {
    stop = true;
    for (auto& t : threads) t.join();
    zmq_socket_monitor(vent.handle(), nullptr, 0);
  };
  for (unsigned connected = 0; connected < workers;) {
    zmq::message_t event, address;
    if (!monitor.recv(event)) {
      finish();
      return make_error(ErrorCode::Internal, "zmq ceiling: the workers did not connect within 10 s");
    }
    (void)monitor.recv(address);
    ++connected;
  }

  // Tasks are made before the clock starts; the ventilator only sends.
  std::vector<TaskMsg> tasks(n);
  Numbers numbers(seed);
  for (std::uint64_t i = 0; i < n; ++i) tasks[i] = {static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(numbers.next())};
  std::vector<char> seen(n, 0);
  std::uint64_t wrong = 0, received = 0;

  const auto t0 = steady_clock::now();
  std::thread ventilator([&] {
    for (const auto& t : tasks)
      if (!vent.send(zmq::buffer(&t, sizeof t))) break;
  });
  zmq::message_t m;
  bool lost = false;
  while (received < n) {
    if (!sink.recv(m)) {
      lost = true;
      break;
    }
    ResultMsg r;
    if (m.size() != sizeof r) {
      ++wrong;
      continue;
    }
    std::memcpy(&r, m.data(), sizeof r);
    ++received;
    if (r.id >= n || seen[r.id] || tasks[r.id].n != r.n || r.r != std::uint64_t{r.n} * r.n) ++wrong;
    else seen[r.id] = 1;
  }
  const double elapsed = duration<double>(steady_clock::now() - t0).count();
  ventilator.join();
  for (unsigned i = 0; i < workers; ++i) {
    const TaskMsg s{kStop, 0};
    vent.send(zmq::buffer(&s, sizeof s), zmq::send_flags::dontwait);
  }
  finish();
  if (lost)
    return make_error(ErrorCode::Internal, "zmq ceiling: verification failed: " + std::to_string(n - received) + " results never came");
  if (wrong) return make_error(ErrorCode::Internal, "zmq ceiling: verification failed: " + std::to_string(wrong) + " wrong results");
  return static_cast<double>(n) / elapsed;
}

}  // namespace taskmaster::bench
