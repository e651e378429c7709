#include "master/master.h"

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

}  // namespace

Master::Master(zmq::context_t& ctx, MasterConfig config)
    : config_(std::move(config)), socket_(proto::make_master_socket(ctx, config_.socket)), state_(config_, random_instance()) {}

std::string Master::endpoint() { return proto::bound_endpoint(socket_); }

void Master::run(int stop_fd) {
  log_info("serving on ", endpoint(), " (instance ", state_.instance(), ")");
  zmq::pollitem_t items[] = {
      {socket_.handle(), 0, ZMQ_POLLIN, 0},
      {nullptr, stop_fd, ZMQ_POLLIN, 0},
  };
  const int count = stop_fd >= 0 ? 2 : 1;
  for (;;) {
    // Sleep until a message comes or the state's next deadline.
    auto now = Clock::now();
    milliseconds timeout(100);
    if (auto d = state_.next_deadline()) timeout = std::clamp(duration_cast<milliseconds>(*d - now) + milliseconds(1), milliseconds(0), milliseconds(1000));
    try {
      zmq::poll(items, count, timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      if (e.num() == ETERM) break;
      throw;
    }
    if (count == 2 && (items[1].revents & ZMQ_POLLIN)) break;
    now = Clock::now();
    // Receive what is waiting, a bounded number per turn so that timers are never starved.
    for (std::size_t i = 0; i < config_.max_messages_per_turn; ++i) {
      auto in = proto::receive(socket_, /*router=*/true);
      if (!in) break;
      state_.receive(in->identity, in->decode(), now);
    }
    now = Clock::now();
    state_.turn(now);
    flush(now);
  }
  log_info("stopping: ", state_.tasks().size(), " tasks in memory, ", state_.workers(), " workers connected");
}

void Master::flush(TimePoint now) {
  // Sends never block: a full queue or a vanished peer comes back as a result the state handles.
  for (auto& out : state_.take_outbox()) {
    const auto sent = proto::send_to(socket_, out.identity, out.message);
    if (sent == proto::SendResult::Sent) state_.sent(out.identity, now);
    else state_.send_failed(out.identity, out.message, sent, now);
  }
}

}  // namespace taskmaster
