#include "bench/zmq_ceiling.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "bench/report.h"
#include "bench/workload.h"
#include "protocol/auth.h"
#include "protocol/sockets.h"

namespace taskmaster::bench {

using namespace std::chrono;
namespace proto = protocol;

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
constexpr auto kChildStart = seconds(10);

ResultMsg square(const TaskMsg& t) { return ResultMsg{t.id, t.n, std::uint64_t{t.n} * t.n}; }

// A line over a pipe, within a deadline ("" on timeout, error or end of file).
std::string read_line(int fd, steady_clock::time_point deadline) {
  std::string line;
  for (;;) {
    const auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return "";
    char c;
    if (::read(fd, &c, 1) != 1) return "";
    if (c == '\n') return line;
    line += c;
  }
}

void write_line(int fd, const std::string& line) {
  const std::string s = line + "\n";
  (void)!::write(fd, s.data(), s.size());
}

// A child process, forked before this process makes any ZeroMQ context of its own (a context does
// not survive fork), running `body(in, out)` on two pipes to the parent: `in` reads what the parent
// says (and ends when the parent closes it or dies), `out` writes back. Killed and reaped when this
// goes away. The benchmark's roles run as processes, as PEERS.md's do: threads of one process
// share its caches and scheduler slot and measured 2-3x faster here.
class Forked {
 public:
  explicit Forked(const std::function<void(int in, int out)>& body) {
    int to_child[2], from_child[2];
    if (::pipe(to_child) != 0) return;
    if (::pipe(from_child) != 0) {
      ::close(to_child[0]);
      ::close(to_child[1]);
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(to_child[1]);
      ::close(from_child[0]);
      int code = 0;
      try {
        body(to_child[0], from_child[1]);
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    in_ = to_child[1];
    out_ = from_child[0];
    if (pid_ < 0) stop();
  }
  ~Forked() { stop(); }
  Forked(const Forked&) = delete;
  Forked& operator=(const Forked&) = delete;

  bool ok() const { return pid_ > 0; }
  void say(const std::string& line) const { write_line(in_, line); }
  std::string hear(steady_clock::time_point deadline) const { return read_line(out_, deadline); }
  void stop() {
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    in_ = out_ = -1;
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
};

using Children = std::vector<std::unique_ptr<Forked>>;

Expected<Children> fork_all(unsigned count, const std::function<void(int, int)>& body) {
  Children all;
  for (unsigned i = 0; i < count; ++i) {
    all.push_back(std::make_unique<Forked>(body));
    if (!all.back()->ok()) return make_error(ErrorCode::Internal, std::string("zmq ceiling: cannot fork: ") + std::strerror(errno));
  }
  return all;
}

// Polls `socket` and the parent's pipe; false when the parent is gone (or closed the pipe).
bool wait_for(zmq::socket_t& socket, int parent) {
  for (;;) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, parent, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, milliseconds(1000));
    if (items[1].revents) return false;
    if (items[0].revents) return true;
  }
}

// A pipeline worker process: PULL tasks, PUSH squares, until a stop task or its parent goes.
void pipeline_worker(int in, int) {
  const std::string line = read_line(in, steady_clock::now() + kChildStart);
  const auto space = line.find(' ');
  if (space == std::string::npos) return;
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
  pull.set(zmq::sockopt::linger, 0);
  push.set(zmq::sockopt::linger, 0);
  pull.connect(line.substr(0, space));
  push.connect(line.substr(space + 1));
  zmq::message_t m;
  while (wait_for(pull, in)) {
    while (pull.recv(m, zmq::recv_flags::dontwait)) {
      if (m.size() != sizeof(TaskMsg)) continue;
      TaskMsg t;
      std::memcpy(&t, m.data(), sizeof t);
      if (t.id == kStop) return;
      const ResultMsg r = square(t);
      push.send(zmq::buffer(&r, sizeof r));
    }
  }
}

}  // namespace

Expected<double> zmq_pipeline_tasks_per_s(unsigned workers, std::uint64_t n, std::uint64_t seed) {
  if (n == 0 || n >= kStop) return make_error(ErrorCode::BadField, "zmq ceiling: n out of range");
  auto children = fork_all(workers, pipeline_worker);  // first: no context exists yet
  if (!children) return children.error();
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
  for (auto& c : *children) c->say(vent_ep + " " + sink_ep);
  for (unsigned connected = 0; connected < workers;) {
    zmq::message_t event, address;
    if (!monitor.recv(event)) {
      zmq_socket_monitor(vent.handle(), nullptr, 0);
      return make_error(ErrorCode::Internal, "zmq ceiling: the workers did not connect within 10 s");
    }
    (void)monitor.recv(address);
    ++connected;
  }
  zmq_socket_monitor(vent.handle(), nullptr, 0);

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
  children->clear();
  if (lost)
    return make_error(ErrorCode::Internal, "zmq ceiling: verification failed: " + std::to_string(n - received) + " results never came");
  if (wrong) return make_error(ErrorCode::Internal, "zmq ceiling: verification failed: " + std::to_string(wrong) + " wrong results");
  return static_cast<double>(n) / elapsed;
}

// ---- the two-hop relay ----------------------------------------------------------------------

namespace {

// The relay process: one loop over one ROUTER (the master's socket options, CURVE with a ZAP
// handler), as the master is. A worker says "R" once; a client's task [client, task] goes to the
// next worker as [client, task]; a worker's [client, result] goes back to that client.
void relay_process(int in, int out, const std::string& key, unsigned workers) {
  const auto keys = proto::derive_keys(key);
  zmq::context_t ctx(1);
  proto::ZapHandler zap(ctx, keys.client_public, [](const std::string&, const std::string&) {});
  proto::MasterSocketOptions mo;
  mo.endpoint = "tcp://127.0.0.1:0";
  mo.curve = keys;
  zmq::socket_t router = proto::make_master_socket(ctx, mo);
  write_line(out, proto::bound_endpoint(router));
  std::vector<zmq::message_t> ids;
  std::size_t next = 0;
  bool told = false;
  for (;;) {
    zmq::pollitem_t items[] = {
        {router.handle(), 0, ZMQ_POLLIN, 0}, {zap.socket().handle(), 0, ZMQ_POLLIN, 0}, {nullptr, in, ZMQ_POLLIN, 0}};
    zmq::poll(items, 3, milliseconds(1000));
    if (items[2].revents) return;
    zap.handle_requests();
    std::vector<zmq::message_t> frames;
    for (;;) {
      frames.clear();
      zmq::message_t part;
      if (!router.recv(part, zmq::recv_flags::dontwait)) break;
      frames.push_back(std::move(part));
      while (frames.back().more()) {
        zmq::message_t more;
        (void)router.recv(more);
        frames.push_back(std::move(more));
      }
      if (frames.size() == 2 && frames[1].size() == 1) {  // a worker: "R"
        ids.push_back(std::move(frames[0]));
        if (ids.size() == workers && !told) {
          write_line(out, "ready");
          told = true;
        }
      } else if (frames.size() == 2 && !ids.empty()) {  // a client's task: to the next worker
        zmq::message_t& worker = ids[next++ % ids.size()];
        (void)router.send(zmq::buffer(worker.data(), worker.size()), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        (void)router.send(frames[0], zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        (void)router.send(frames[1], zmq::send_flags::dontwait);
      } else if (frames.size() == 3) {  // a worker's result: to its client
        (void)router.send(frames[1], zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        (void)router.send(frames[2], zmq::send_flags::dontwait);
      }
    }
  }
}

zmq::socket_t relay_peer(zmq::context_t& ctx, const std::string& endpoint, const std::string& key) {
  proto::PeerSocketOptions po;
  po.endpoint = endpoint;
  po.curve = proto::derive_keys(key);
  return proto::make_peer_socket(ctx, po);
}

// A relay worker process: DEALER to the relay, [client, task] in, [client, square] out.
void relay_worker(int in, int, const std::string& key) {
  const std::string endpoint = read_line(in, steady_clock::now() + kChildStart);
  if (endpoint.empty()) return;
  zmq::context_t ctx(1);
  zmq::socket_t s = relay_peer(ctx, endpoint, key);
  s.set(zmq::sockopt::sndtimeo, 10000);
  if (!s.send(zmq::str_buffer("R"))) return;
  zmq::message_t client, task;
  while (wait_for(s, in)) {
    while (s.recv(client, zmq::recv_flags::dontwait)) {
      if (!client.more() || !s.recv(task) || task.size() != sizeof(TaskMsg)) continue;
      TaskMsg t;
      std::memcpy(&t, task.data(), sizeof t);
      const ResultMsg r = square(t);
      (void)s.send(client, zmq::send_flags::sndmore);
      (void)s.send(zmq::buffer(&r, sizeof r));
    }
  }
}

// The client side: verifies each result; `window` tasks in flight at most.
struct RelayClient {
  zmq::socket_t& s;
  std::vector<TaskMsg> tasks;
  std::vector<char> seen;
  std::uint64_t wrong = 0;

  bool take(zmq::message_t& m) {
    ResultMsg r;
    if (m.size() != sizeof r) return ++wrong, true;
    std::memcpy(&r, m.data(), sizeof r);
    if (r.id >= tasks.size() || seen[r.id] || tasks[r.id].n != r.n || r.r != std::uint64_t{r.n} * r.n) ++wrong;
    else seen[r.id] = 1;
    return true;
  }
  // Sends tasks [from, to) keeping at most `window` in flight; false if a result never came.
  bool run(std::size_t from, std::size_t to, std::size_t window, std::vector<double>* us) {
    std::size_t sent = from, got = from;
    zmq::message_t m;
    while (got < to) {
      while (sent < to && sent - got < window) {
        const auto t0 = steady_clock::now();
        if (!s.send(zmq::buffer(&tasks[sent], sizeof(TaskMsg)))) return false;
        ++sent;
        if (us) {  // sequential: one at a time
          if (!s.recv(m)) return false;
          take(m);
          ++got;
          us->push_back(duration<double, std::micro>(steady_clock::now() - t0).count());
        }
      }
      if (got < to && sent > got) {
        if (!s.recv(m)) return false;
        take(m);
        ++got;
      }
    }
    return true;
  }
};

}  // namespace

Expected<RelayFigures> zmq_relay(unsigned workers, std::uint64_t warm, std::uint64_t trips, std::uint64_t n, std::uint64_t seed) {
  if (workers == 0 || warm + trips + n >= kStop) return make_error(ErrorCode::BadField, "relay floor: sizes out of range");
  const std::string key = proto::generate_key();
  auto worker_procs = fork_all(workers, [&key](int in, int out) { relay_worker(in, out, key); });
  if (!worker_procs) return worker_procs.error();
  Forked relay([&key, workers](int in, int out) { relay_process(in, out, key, workers); });
  if (!relay.ok()) return make_error(ErrorCode::Internal, std::string("relay floor: cannot fork: ") + std::strerror(errno));
  const auto deadline = steady_clock::now() + kChildStart;
  const std::string endpoint = relay.hear(deadline);
  if (endpoint.empty()) return make_error(ErrorCode::Internal, "relay floor: the relay did not start");
  for (auto& w : *worker_procs) w->say(endpoint);
  if (relay.hear(deadline) != "ready")
    return make_error(ErrorCode::Internal, "relay floor: the workers did not join the relay within 10 s");

  zmq::context_t ctx(1);
  zmq::socket_t s = relay_peer(ctx, endpoint, key);
  s.set(zmq::sockopt::rcvtimeo, 10000);
  s.set(zmq::sockopt::sndtimeo, 10000);
  RelayClient c{s, std::vector<TaskMsg>(warm + trips + n), std::vector<char>(warm + trips + n, 0)};
  Numbers numbers(seed);
  for (std::size_t i = 0; i < c.tasks.size(); ++i) c.tasks[i] = {static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(numbers.next())};
  std::vector<double> warm_us, us;
  RelayFigures f;
  bool ok = c.run(0, warm, 1, &warm_us) && c.run(warm, warm + trips, 1, &us);
  const auto t0 = steady_clock::now();
  ok = ok && c.run(warm + trips, c.tasks.size(), 1000, nullptr);
  f.tasks_per_s = static_cast<double>(n) / duration<double>(steady_clock::now() - t0).count();
  relay.stop();
  worker_procs->clear();
  if (!ok) return make_error(ErrorCode::Internal, "relay floor: verification failed: a result never came (10 s)");
  if (c.wrong) return make_error(ErrorCode::Internal, "relay floor: verification failed: " + std::to_string(c.wrong) + " wrong results");
  if (std::count(c.seen.begin(), c.seen.end(), 0))
    return make_error(ErrorCode::Internal, "relay floor: verification failed: some results never came");
  f.p50_us = percentile(us, 50);
  f.p99_us = percentile(us, 99);
  return f;
}

}  // namespace taskmaster::bench
