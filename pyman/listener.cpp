#include "pyman/listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "common/log.h"

namespace taskmaster::pyman {

namespace pk = pickle;
using namespace std::chrono;

namespace {

// What a queue proxy may call (create's `exposed`): Python's AutoProxy makes these methods.
const std::vector<std::string> kExposed = {"empty", "full", "get", "get_nowait", "put", "put_nowait", "qsize"};

pk::Value exposed_tuple() {
  pk::Items items;
  for (const auto& m : kExposed) items.push_back(pk::str(m));
  return pk::tuple(std::move(items));
}

pk::Value message(const char* kind, pk::Value v) { return pk::tuple({pk::str(kind), std::move(v)}); }

// ('#TRACEBACK', text): the client raises RemoteError showing the text.
pk::Value traceback(const std::string& exception, const std::string& why) {
  return message("#TRACEBACK", pk::str("Traceback (most recent call last):\n  (in the taskmaster master)\n" + exception + ": " + why + "\n"));
}

std::string numeric_address(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST] = {}, port[NI_MAXSERV] = {};
  if (::getnameinfo(sa, len, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0) return "unknown peer";
  const bool v6 = sa->sa_family == AF_INET6;
  return (v6 ? "[" : "") + std::string(host) + (v6 ? "]:" : ":") + port;
}

bool is_loopback(const sockaddr* sa) {
  if (sa->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a);
  }
  return false;
}

// An argument by position or by keyword; nullptr when absent.
const pk::Value* argument(const pk::Value& args, const pk::Value& kwds, std::size_t pos, const char* name) {
  if (args.is(pk::Kind::Tuple) && pos < args.items.size()) return &args.items[pos];
  if (kwds.is(pk::Kind::Dict)) return kwds.find(name);
  return nullptr;
}

// Text from a client in a message: at most 200 bytes of it, cut at a character's start.
std::string clip(std::string s) {
  if (s.size() <= 200) return s;
  std::size_t n = 200;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s + "...";
}

std::string short_repr(const pk::Value& v) { return clip(pk::repr(v)); }

bool truthy(const pk::Value& v) {
  switch (v.kind) {
    case pk::Kind::None: return false;
    case pk::Kind::Bool: return v.boolean;
    case pk::Kind::Int: return v.integer != 0;
    case pk::Kind::Float: return v.real != 0;
    default: return true;
  }
}

}  // namespace

std::string queue_of_typeid(std::string_view t) { return std::string(t.starts_with("get_") && t.size() > 4 ? t.substr(4) : t); }

bool valid_typeid(std::string_view t) {
  const std::string q = queue_of_typeid(t);
  if (q.empty() || q.size() > 128) return false;
  for (char c : q)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' || c == '-')) return false;
  return true;
}

struct Listener::Conn {
  std::uint64_t id = 0;
  int fd = -1;
  std::string peer;
  FrameReader reader;
  ServerHandshake handshake;
  enum class Phase { Handshake, Request, Serving } phase = Phase::Handshake;
  Clock::time_point deadline;  // of the handshake and first request
  std::string out;
  std::size_t out_pos = 0;
  bool busy = false;   // a put or get is with the backend
  bool busy_get = false;
  bool closing = false;  // close once `out` is sent
  bool dead = false;     // closed; removed by reap()
  bool more = false;     // requests left in `reader` after this turn's share
  std::string queue;   // Serving: the queue of the request in progress
  Conn(std::size_t max_frame, std::string key) : reader(max_frame), handshake(std::move(key)) {}
};

Listener::Listener(ListenerOptions options, Backend backend) : options_(std::move(options)), backend_(std::move(backend)) {
  for (const char* t : {"get_task_queue", "get_result_queue"}) typeids_[t] = queue_of_typeid(t);
  for (const auto& t : options_.typeids) {
    if (!valid_typeid(t)) throw std::runtime_error("--python-queue " + t + ": not a valid queue name ([A-Za-z0-9_.:-], at most 128)");
    typeids_[t] = queue_of_typeid(t);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string host = options_.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = std::to_string(options_.port);
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("--python-manager " + options_.host + ":" + port + ": " + ::gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      fd_ = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (fd_ < 0) throw std::runtime_error("--python-manager " + options_.host + ":" + port + ": cannot listen: " + why);
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  address_ = numeric_address(reinterpret_cast<sockaddr*>(&sa), len);
  port_ = static_cast<std::uint16_t>(std::stoi(address_.substr(address_.rfind(':') + 1)));
  loopback_ = is_loopback(reinterpret_cast<sockaddr*>(&sa));
}

Listener::~Listener() {
  for (auto& [id, c] : conns_)
    if (!c->dead) ::close(c->fd);
  if (fd_ >= 0) ::close(fd_);
}

void Listener::warn(const std::string& line) {
  const auto s = duration_cast<seconds>(Clock::now().time_since_epoch()).count();
  if (s != log_second_) {
    if (log_dropped_) log_warn("python listener: ", log_dropped_, " more such lines left out");
    log_second_ = s;
    log_count_ = 0;
    log_dropped_ = 0;
  }
  if (++log_count_ <= 20) log_warn("python listener: ", line);
  else ++log_dropped_;
}

std::vector<Listener::PollFd> Listener::poll_fds() const {
  std::vector<PollFd> out;
  out.reserve(conns_.size() + 1);
  if (!accept_paused_until_ || Clock::now() >= *accept_paused_until_) out.push_back({fd_, kReadable});
  for (const auto& [id, c] : conns_) {
    if (c->dead) continue;
    short ev = 0;
    if (!c->closing) ev |= kReadable;
    if (c->out_pos < c->out.size()) ev |= kWritable;
    out.push_back({c->fd, ev});
  }
  return out;
}

void Listener::handle(int fd, short revents, Clock::time_point now) {
  if (fd == fd_) {
    if (revents & kReadable) accept_all(now);
    return;
  }
  const auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return;
  Conn& c = *conns_.at(it->second);
  if (c.dead) return;
  guarded(c, [&] {
    if (revents & kWritable) flush(c);
    if (!c.dead && (revents & kReadable)) read(c);
  });
  reap();
}

template <class F>
void Listener::guarded(Conn& c, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    // A request this code did not foresee: that client loses its connection, the master goes on.
    close(c, std::string("internal error on its request: ") + e.what());
  }
}

void Listener::accept_all(Clock::time_point now) {
  accept_paused_until_.reset();
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage sa{};
    socklen_t len = sizeof sa;
    const int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The connection stays in the backlog and the socket readable: not polled for 100 ms, so
        // that the loop does not spin on it.
        accept_paused_until_ = now + milliseconds(100);
        warn(std::string("accept: ") + std::strerror(errno) + "; new connections wait 100 ms");
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        warn(std::string("accept: ") + std::strerror(errno));
      }
      return;
    }
    const std::string peer = numeric_address(reinterpret_cast<sockaddr*>(&sa), len);
    if (conns_.size() >= options_.max_connections) {
      warn("refused a connection from " + peer + ": already " + std::to_string(conns_.size()) + " connections (the bound)");
      ::close(fd);
      continue;
    }
    // Strangers may not hold every connection: past the bound of handshakes, the oldest goes.
    Conn* oldest = nullptr;
    std::size_t handshaking = 0;
    for (auto& [cid, other] : conns_)
      if (!other->dead && other->phase == Conn::Phase::Handshake) {
        ++handshaking;
        if (!oldest) oldest = other.get();
      }
    if (oldest && handshaking >= options_.max_handshaking) {
      close(*oldest, "dropped for a new connection: already " + std::to_string(handshaking) + " connections in their handshake (the bound)");
      reap();
    }
    auto c = std::make_unique<Conn>(options_.max_handshake_frame_bytes, options_.authkey);
    c->id = next_conn_++;
    c->fd = fd;
    c->peer = peer;
    c->deadline = now + options_.handshake_timeout;
    Conn& ref = *c;
    by_fd_[fd] = c->id;
    conns_[c->id] = std::move(c);
    send_raw(ref, ref.handshake.challenge());
  }
}

void Listener::read(Conn& c) {
  char buf[65536];
  for (std::size_t total = 0; total < (1u << 20);) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.reader.feed(std::string_view(buf, static_cast<std::size_t>(n)));
      total += static_cast<std::size_t>(n);
      // A client sends one request at a time: more than a frame's bound waiting is not a client.
      if (c.reader.buffered() > c.reader.max() + 16) return close(c, "it sent more than a message's bound without waiting");
      continue;
    }
    if (n == 0) return close(c, "");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return close(c, std::string("read: ") + std::strerror(errno));
  }
  process(c);
}

void Listener::process(Conn& c) {
  c.more = false;
  for (std::size_t taken = 0; !c.dead && !c.busy && !c.closing;) {
    if (c.phase != Conn::Phase::Handshake && taken++ == options_.max_requests_per_turn) {
      c.more = c.reader.buffered() > 0;  // the rest at the next turn (turn())
      return;
    }
    auto f = c.reader.next();
    if (!f) return close(c, f.error().message);
    if (!*f) return;
    const std::string& payload = **f;
    if (c.phase == Conn::Phase::Handshake) {
      auto step = c.handshake.on_frame(payload);
      for (const auto& p : step.send) send_raw(c, p);
      if (step.state == ServerHandshake::State::Failed) {
        warn("refused " + c.peer + ": " + step.why);
        c.closing = true;
        flush(c);
        return;
      }
      if (step.state == ServerHandshake::State::Done) {
        c.phase = Conn::Phase::Request;
        c.reader.set_max(options_.max_frame_bytes);
      }
      continue;
    }
    auto request = pk::decode(payload, options_.limits);
    if (!request) {
      warn("refused a message from " + c.peer + ": " + request.error().message);
      send(c, traceback("UnpicklingError", request.error().message));
      if (c.phase == Conn::Phase::Request) c.closing = true;
      flush(c);
      continue;
    }
    if (c.phase == Conn::Phase::Request) on_request(c, *request);
    else on_call(c, *request);
  }
}

const std::string* Listener::queue_of_ident(const pk::Value& ident) const {
  if (!ident.is(pk::Kind::Str)) return nullptr;
  for (const auto& [t, q] : typeids_)
    if (q == ident.text) return &q;
  return nullptr;
}

// The first request of a connection (Server.handle_request): one answer, then the connection ends,
// except after accept_connection, which makes it a proxy's connection (Server.serve_client).
void Listener::on_request(Conn& c, const pk::Value& r) {
  c.closing = true;
  if (!r.is(pk::Kind::Tuple) || r.items.size() != 4 || !r.items[1].is(pk::Kind::Str))
    return send(c, traceback("ValueError", "a request is (id, name, args, kwds); got " + short_repr(r)));
  const std::string& name = r.items[1].text;
  const pk::Value& args = r.items[2];
  const pk::Value& kwds = r.items[3];
  const pk::Value* first = args.is(pk::Kind::Tuple) && !args.items.empty() ? &args.items[0] : nullptr;
  if (name == "dummy") return send(c, message("#RETURN", pk::none()));
  if (name == "create") {
    if (!first || !first->is(pk::Kind::Str)) return send(c, traceback("TypeError", "create() needs a typeid"));
    const auto it = typeids_.find(first->text);
    if (it == typeids_.end())
      return send(c, traceback("KeyError", "'" + clip(first->text) + "' is not a typeid this master serves (it serves " +
                                               [this] {
                                                 std::string s;
                                                 for (const auto& [t, q] : typeids_) s += (s.empty() ? "" : ", ") + t;
                                                 return s;
                                               }() +
                                               "; more with --python-queue)"));
    if (args.items.size() > 1 || (kwds.is(pk::Kind::Dict) && !kwds.entries.empty()))
      return send(c, traceback("TypeError", "the master's queues take no arguments"));
    return send(c, message("#RETURN", pk::tuple({pk::str(it->second), exposed_tuple()})));
  }
  if (name == "incref" || name == "decref") {
    if (!first || !queue_of_ident(*first)) return send(c, traceback("KeyError", first ? short_repr(*first) : "no id"));
    return send(c, message("#RETURN", pk::none()));
  }
  if (name == "get_methods") return send(c, message("#RETURN", exposed_tuple()));
  if (name == "number_of_objects") return send(c, message("#RETURN", pk::integer(static_cast<std::int64_t>(typeids_.size()))));
  if (name == "debug_info") return send(c, message("#RETURN", pk::str("taskmaster master: value queues " + address_ + "\n")));
  if (name == "accept_connection") {
    c.closing = false;
    c.phase = Conn::Phase::Serving;
    return send(c, message("#RETURN", pk::none()));
  }
  if (name == "shutdown") return send(c, traceback("NotImplementedError", "a taskmaster master is not shut down by its clients"));
  send(c, traceback("AssertionError", "'" + clip(name) + "' unrecognized"));
}

// A proxy's method call: (id, method, args, kwds).
void Listener::on_call(Conn& c, const pk::Value& r) {
  if (!r.is(pk::Kind::Tuple) || r.items.size() != 4 || !r.items[1].is(pk::Kind::Str))
    return send(c, traceback("ValueError", "a call is (id, method, args, kwds); got " + short_repr(r)));
  const std::string* queue = queue_of_ident(r.items[0]);
  if (!queue) return send(c, traceback("KeyError", short_repr(r.items[0])));
  const std::string& method = r.items[1].text;
  const pk::Value& args = r.items[2];
  const pk::Value& kwds = r.items[3];
  if (method == "qsize") return send(c, message("#RETURN", pk::integer(static_cast<std::int64_t>(backend_.depth(*queue)))));
  if (method == "empty") return send(c, message("#RETURN", pk::boolean(backend_.depth(*queue) == 0)));
  if (method == "full") return send(c, message("#RETURN", pk::boolean(false)));
  if (method == "put" || method == "put_nowait") {
    const pk::Value* item = argument(args, kwds, 0, "item");
    if (!item) item = argument(args, kwds, 0, "obj");
    if (!item) return send(c, traceback("TypeError", clip(method) + "() missing 1 required positional argument: 'item'"));
    c.busy = true;
    c.busy_get = false;
    c.queue = *queue;
    return backend_.put(c.id, *queue, pk::to_json(*item).dump());
  }
  if (method == "get" || method == "get_nowait") {
    std::optional<milliseconds> wait = milliseconds(0);
    if (method == "get") {
      const pk::Value* block = argument(args, kwds, 0, "block");
      const pk::Value* timeout = argument(args, kwds, 1, "timeout");
      if (!block || truthy(*block)) {
        wait = std::nullopt;
        if (timeout && !timeout->is(pk::Kind::None)) {
          double s = 0;
          if (timeout->is(pk::Kind::Int)) s = static_cast<double>(timeout->integer);
          else if (timeout->is(pk::Kind::Bool)) s = timeout->boolean ? 1 : 0;  // Python's True == 1
          else if (timeout->is(pk::Kind::Float)) s = timeout->real;
          else if (timeout->is(pk::Kind::BigInt)) s = timeout->text.starts_with('-') ? -1 : 1e9;  // beyond int64: capped below
          else return send(c, traceback("TypeError", "timeout must be a number, not " + std::string(pk::kind_name(timeout->kind))));
          if (!(s >= 0) || std::isinf(s)) return send(c, traceback("ValueError", "'timeout' must be a non-negative number"));
          wait = milliseconds(static_cast<std::int64_t>(std::min(s, 1e9) * 1000));
        }
      }
    }
    c.busy = true;
    c.busy_get = true;
    c.queue = *queue;
    return backend_.get(c.id, *queue, wait);
  }
  if (method == "__repr__" || method == "__str__") return send(c, message("#RETURN", pk::str("<taskmaster value queue " + *queue + ">")));
  send(c, traceback("AttributeError", "method '" + clip(method) + "' of a taskmaster value queue is not in exposed=" + pk::repr(exposed_tuple())));
}

bool Listener::answer(std::uint64_t conn, const Answer& a) {
  const auto it = conns_.find(conn);
  if (it == conns_.end() || it->second->dead || !it->second->busy) return false;
  Conn& c = *it->second;
  c.busy = false;
  guarded(c, [&] { reply(c, a); });
  const bool alive = !c.dead;
  reap();
  return alive;
}

void Listener::reply(Conn& c, const Answer& a) {
  using K = Answer::Kind;
  switch (a.kind) {
    case K::Put: send(c, message("#RETURN", pk::none())); break;
    case K::Value: {
      auto v = pk::from_json(nlohmann::json::parse(a.value, nullptr, false));
      if (!v) send(c, traceback("ValueError", "the value in queue " + c.queue + " has no Python form: " + v.error().message));
      else send(c, message("#RETURN", *v));
      break;
    }
    case K::Empty: send(c, message("#ERROR", pk::exception("queue", "Empty", {}))); break;
    case K::Full: send(c, message("#ERROR", pk::exception("queue", "Full", {}))); break;
    case K::Failed: send(c, traceback(a.value_refused ? "ValueError" : "OSError", a.error)); break;
  }
  if (!c.dead) process(c);  // a request that came while this one waited
}

void Listener::send(Conn& c, const pk::Value& m) { send_raw(c, pk::encode(m)); }

void Listener::send_raw(Conn& c, std::string_view payload) {
  if (c.dead) return;
  if (c.out.size() - c.out_pos + payload.size() > options_.max_unsent_bytes) return close(c, "it does not read its replies");
  c.out += frame(payload);
  flush(c);
}

void Listener::flush(Conn& c) {
  while (!c.dead && c.out_pos < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_pos += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    return close(c, std::string("write: ") + std::strerror(errno));
  }
  if (c.dead) return;
  c.out.clear();
  c.out_pos = 0;
  if (c.closing) close(c, "");
}

void Listener::close(Conn& c, const std::string& why) {
  if (c.dead) return;
  if (!why.empty()) warn("closed the connection of " + c.peer + ": " + why);
  ::close(c.fd);
  by_fd_.erase(c.fd);
  c.dead = true;
  if (c.busy) backend_.closed(c.id);
}

void Listener::reap() { std::erase_if(conns_, [](const auto& e) { return e.second->dead; }); }

void Listener::turn(Clock::time_point now) {
  for (auto& [id, c] : conns_) {
    // A connection still in its handshake or first request, even one whose last reply is still
    // unread (`closing`), has until its deadline.
    if (!c->dead && c->phase != Conn::Phase::Serving && now >= c->deadline)
      close(*c, "no handshake and request within " + std::to_string(options_.handshake_timeout.count()) + " ms");
    if (!c->dead && c->more && !c->busy && !c->closing) {
      Conn& conn = *c;  // clang 14 cannot capture a structured binding
      guarded(conn, [&] { process(conn); });
    }
  }
  reap();
}

std::optional<Clock::time_point> Listener::next_deadline() const {
  for (const auto& [id, c] : conns_)
    if (!c->dead && c->more && !c->busy && !c->closing) return Clock::now();  // requests waiting: at once
  std::optional<Clock::time_point> d;
  if (accept_paused_until_) d = accept_paused_until_;
  for (const auto& [id, c] : conns_)
    if (!c->dead && c->phase != Conn::Phase::Serving && (!d || c->deadline < *d)) d = c->deadline;
  return d;
}

}  // namespace taskmaster::pyman
