// pyman/listener.h: the multiprocessing.managers compatibility listener (docs/PYTHON.md, "The
// BaseManager listener"). It serves Python's BaseManager clients (`connect()`, `register(typeid)`,
// the queue proxies) from the master's own loop: non-blocking TCP sockets the loop polls beside its
// ROUTER socket, per-connection buffers with bounds, a bounded number of connections. It decodes
// only the safe pickle subset (pyman/pickle.h). The queues themselves are the master's value queues
// (master/value_queues.h), reached through a Backend; a get that must wait is parked there and
// answered later through answer().
// Not thread-safe: owned by the master's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pyman/pickle.h"
#include "pyman/wire.h"

namespace taskmaster::pyman {

using Clock = std::chrono::steady_clock;

struct ListenerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port
  std::string authkey;     // the bytes of Python's authkey=b'...'
  // The typeids a client may create (`register('get_task_queue')`), each a value queue named by
  // queue_of_typeid(). get_task_queue and get_result_queue are always there.
  std::vector<std::string> typeids;
  std::size_t max_connections = 512;
  std::size_t max_frame_bytes = 4u << 20;      // one message (a pickle) from a client
  std::size_t max_unsent_bytes = 16u << 20;    // replies a client has not read yet
  std::chrono::milliseconds handshake_timeout{10000};  // a new connection's handshake and first request
  // Connections still in their handshake (no authkey shown yet): past this bound the oldest of them
  // is dropped for a new one, so that strangers cannot hold every connection.
  std::size_t max_handshaking = 64;
  // A handshake frame: Python reads these with recv_bytes(256).
  std::size_t max_handshake_frame_bytes = 256;
  // Requests taken from one connection per turn of the loop, so that no client holds the loop.
  std::size_t max_requests_per_turn = 4;
  // What one request may decode to (pyman/pickle.h): small enough that a request costs at most a few
  // milliseconds and megabytes however its memo is used.
  pickle::Limits limits = [] {
    pickle::Limits l;
    l.max_input_bytes = 4u << 20;
    l.max_values = 1u << 16;
    l.max_payload_bytes = 4u << 20;
    return l;
  }();
};

// "get_task_queue" -> "task_queue": a typeid that starts with "get_" names the queue after it;
// any other typeid is the queue's name as it is.
std::string queue_of_typeid(std::string_view typeid_);
// Is this a typeid the listener accepts (a valid queue name once mapped)?
bool valid_typeid(std::string_view typeid_);

class Listener {
 public:
  // What the listener asks of the value queues. conn: the asking connection, given back to answer().
  struct Backend {
    std::function<void(std::uint64_t conn, const std::string& queue, std::string json)> put;
    // wait: nullopt until a value comes, zero not at all.
    std::function<void(std::uint64_t conn, const std::string& queue, std::optional<std::chrono::milliseconds> wait)> get;
    std::function<std::uint64_t(const std::string& queue)> depth;
    std::function<void(std::uint64_t conn)> closed;  // its parked get, if any, is void
  };
  // How a put or get ended.
  struct Answer {
    enum class Kind { Put, Value, Empty, Full, Failed } kind = Kind::Failed;
    std::string value;  // Value: the value as JSON
    std::string error;  // Failed
    bool value_refused = false;  // Failed because of the value itself (too big): ValueError, not OSError
  };

  // Binds and listens; throws std::runtime_error saying why it cannot.
  Listener(ListenerOptions options, Backend backend);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // "127.0.0.1:5000", the address really bound.
  std::string address() const { return address_; }
  std::uint16_t port() const { return port_; }
  bool loopback() const { return loopback_; }

  // The fds to poll and what for (kReadable / kWritable).
  static constexpr short kReadable = 1, kWritable = 2;
  struct PollFd {
    int fd;
    short events;
  };
  std::vector<PollFd> poll_fds() const;
  // After the poll: one fd with what it is ready for.
  void handle(int fd, short revents, Clock::time_point now);
  // Closes connections whose handshake took too long.
  void turn(Clock::time_point now);
  std::optional<Clock::time_point> next_deadline() const;
  // Answers the put or get that `conn` is waiting for. False if that connection is gone (a value
  // should then go back to its queue).
  bool answer(std::uint64_t conn, const Answer& a);
  std::size_t connections() const { return conns_.size(); }

 private:
  struct Conn;
  void accept_all(Clock::time_point now);
  void read(Conn& c);
  void process(Conn& c);
  void on_request(Conn& c, const pickle::Value& request);
  void on_call(Conn& c, const pickle::Value& request);
  void reply(Conn& c, const Answer& a);
  void send(Conn& c, const pickle::Value& message);
  void send_raw(Conn& c, std::string_view payload);
  void flush(Conn& c);
  void close(Conn& c, const std::string& why);
  void reap();
  // Runs f for connection c; an exception from it closes that connection only.
  template <class F>
  void guarded(Conn& c, F&& f);
  const std::string* queue_of_ident(const pickle::Value& ident) const;

  ListenerOptions options_;
  Backend backend_;
  int fd_ = -1;
  std::string address_;
  std::uint16_t port_ = 0;
  bool loopback_ = true;
  std::map<std::string, std::string> typeids_;  // typeid -> queue
  std::map<std::uint64_t, std::unique_ptr<Conn>> conns_;
  std::map<int, std::uint64_t> by_fd_;
  std::uint64_t next_conn_ = 1;
  // accept() found no file descriptor left: the listening socket is not polled until then.
  std::optional<Clock::time_point> accept_paused_until_;
  // Log lines about clients: at most 20 a second, then how many were left out.
  std::int64_t log_second_ = 0;
  int log_count_ = 0;
  std::uint64_t log_dropped_ = 0;
  void warn(const std::string& line);
};

}  // namespace taskmaster::pyman
