#include "bench/sim_workers.h"

#include <unistd.h>

#include <charconv>
#include <chrono>

#include "common/overloaded.h"
#include "protocol/sockets.h"

namespace taskmaster::bench {

using namespace std::chrono;
namespace proto = protocol;

namespace {

constexpr milliseconds kHelloRetry{2000};   // HELLO again if no WELCOME came
constexpr milliseconds kNotConnected{100};  // HELLO could not leave (no connection yet): try again soon
constexpr milliseconds kScan{50};           // how often the timers of every worker are checked

}  // namespace

struct SimulatedWorkers::Sim {
  zmq::socket_t socket;
  std::string name;
  bool welcomed = false;
  milliseconds heartbeat{1000};
  steady_clock::time_point next_hello{}, last_sent{};
  std::atomic<std::uint64_t> tasks{0};
};

SimulatedWorkers::SimulatedWorkers(std::string endpoint, std::optional<proto::CurveKeys> curve, std::string queue, std::size_t count,
                                   unsigned threads)
    : endpoint_(std::move(endpoint)), curve_(std::move(curve)), queue_(std::move(queue)), count_(count) {
  ctx_.set(zmq::ctxopt::io_threads, 2);
  ctx_.set(zmq::ctxopt::max_sockets, static_cast<int>(count + 64));
  proto::PeerSocketOptions so;
  so.endpoint = endpoint_;
  so.curve = curve_;
  for (std::size_t i = 0; i < count; ++i) {
    auto s = std::make_unique<Sim>();
    s->socket = proto::make_peer_socket(ctx_, so);
    s->name = "bench-sim-" + std::to_string(::getpid()) + "-" + std::to_string(i);
    sims_.push_back(std::move(s));
  }
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(count)));
  const std::size_t per = (count + threads - 1) / threads;
  for (std::size_t first = 0; first < count; first += per)
    threads_.emplace_back(&SimulatedWorkers::loop, this, first, std::min(count, first + per));
}

SimulatedWorkers::~SimulatedWorkers() {
  stop_ = true;
  for (auto& t : threads_) t.join();
  sims_.clear();  // close every socket before the context
}

std::vector<std::uint64_t> SimulatedWorkers::tasks_per_worker() const {
  std::vector<std::uint64_t> v;
  for (const auto& s : sims_) v.push_back(s->tasks.load());
  return v;
}

void SimulatedWorkers::loop(std::size_t first, std::size_t end) {
  std::vector<zmq::pollitem_t> items;
  for (std::size_t i = first; i < end; ++i) items.push_back({sims_[i]->socket.handle(), 0, ZMQ_POLLIN, 0});
  auto send = [](Sim& s, const proto::Message& m, steady_clock::time_point now) {
    const bool sent = proto::send(s.socket, m) == proto::SendResult::Sent;
    if (sent) s.last_sent = now;
    return sent;
  };
  auto handle = [&](Sim& s, proto::Message& m, steady_clock::time_point now) {
    std::visit(Overloaded{
                   [&](proto::Welcome& w) {
                     if (!s.welcomed) ++welcomed_;
                     s.welcomed = true;
                     if (w.heartbeat_ms > 0) s.heartbeat = milliseconds(w.heartbeat_ms);
                   },
                   [&](proto::Tasks& t) {
                     proto::Results r;
                     for (const auto& a : t.tasks) {
                       std::int64_t n = 0;
                       auto [p, ec] = std::from_chars(a.args.data(), a.args.data() + a.args.size(), n);
                       const bool ok = ec == std::errc() && p == a.args.data() + a.args.size() && n >= 0 && n <= 3037000499;
                       if (!ok) ++bad_;
                       r.results.push_back({a.task, a.attempt, ok, ok ? std::to_string(n * n) : "bench: args are not an integer"});
                       ++s.tasks;
                     }
                     send(s, r, now);
                   },
                   [&](proto::ErrorReply& e) {
                     if (e.code == ErrorCode::NotAllowed && s.welcomed) {  // the master forgot us: HELLO again
                       s.welcomed = false;
                       --welcomed_;
                       s.next_hello = now;
                     }
                   },
                   [&](auto&) {},  // HEARTBEAT, ACK
               },
               m);
  };
  proto::Hello hello;
  hello.host = "bench";
  hello.pid = ::getpid();
  hello.functions = {"square"};
  hello.queues = {queue_};
  hello.slots = 1;
  auto next_scan = steady_clock::now();
  while (!stop_) {
    try {
      zmq::poll(items.data(), items.size(), kScan);
    } catch (const zmq::error_t&) {
      continue;  // EINTR
    }
    const auto now = steady_clock::now();
    for (std::size_t k = 0; k < items.size(); ++k) {
      if (!(items[k].revents & ZMQ_POLLIN)) continue;
      Sim& s = *sims_[first + k];
      while (auto in = proto::receive(s.socket, false)) {
        auto m = in->decode();
        if (m) handle(s, *m, now);
      }
    }
    if (now < next_scan) continue;
    next_scan = now + kScan;
    for (std::size_t i = first; i < end; ++i) {
      Sim& s = *sims_[i];
      if (!s.welcomed && now >= s.next_hello) {
        hello.worker = s.name;
        s.next_hello = now + (send(s, hello, now) ? kHelloRetry : kNotConnected);
      } else if (s.welcomed && now - s.last_sent >= s.heartbeat) {
        send(s, proto::Heartbeat{}, now);
      }
    }
  }
}

}  // namespace taskmaster::bench
