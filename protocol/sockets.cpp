// Socket creation and framing. The options and their reasons are in docs/PROTOCOL.md §2 and
// ../shared/RELIABILITY.md §2.7.
#include "protocol/sockets.h"

#include <sys/socket.h>
#include <zmq.h>

#include <atomic>
#include <cstring>
#include <stdexcept>

#include "protocol/endpoint.h"

namespace taskmaster::protocol {
namespace {

int ms(std::chrono::milliseconds d) { return static_cast<int>(d.count()); }

// Options every socket of ours gets. heartbeat 0: no ZMTP pings from this side.
void set_common(zmq::socket_t& s, std::chrono::milliseconds heartbeat, std::chrono::milliseconds heartbeat_timeout) {
  s.set(zmq::sockopt::linger, 0);  // never block on exit for messages a dead peer will not take
  s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxMessageBytes + 4096));
  // ZMTP pings: a dead TCP peer is noticed within heartbeat_timeout instead of TCP's minutes.
  if (heartbeat.count() > 0) {
    s.set(zmq::sockopt::heartbeat_ivl, ms(heartbeat));
    s.set(zmq::sockopt::heartbeat_timeout, ms(heartbeat_timeout));
    s.set(zmq::sockopt::heartbeat_ttl, ms(heartbeat_timeout));
  }
  s.set(zmq::sockopt::tcp_keepalive, 1);
  // Flow control is ours (credit); the high-water marks only bound memory.
  s.set(zmq::sockopt::sndhwm, 100000);
  s.set(zmq::sockopt::rcvhwm, 100000);
}

SendResult send_frames(zmq::socket_t& s, std::string_view identity, std::string_view command, std::string_view body) {
  try {
    const auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
    if (!identity.empty() && !s.send(zmq::buffer(identity.data(), identity.size()), more)) return SendResult::WouldBlock;
    // After the first frame is queued the rest of the message cannot block (libzmq sends a
    // multipart message atomically).
    if (!s.send(zmq::buffer(kSignature.data(), kSignature.size()), more)) return SendResult::WouldBlock;
    s.send(zmq::buffer(command.data(), command.size()), more);
    s.send(zmq::buffer(body.data(), body.size()), zmq::send_flags::dontwait);
    return SendResult::Sent;
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendResult::PeerGone;
    if (e.num() == EAGAIN) return SendResult::WouldBlock;
    return SendResult::Failed;
  }
}

}  // namespace

// Not in Debian's headers (a draft option) but accepted by its libzmq 4.3.4 at run time; see
// ../shared/RELIABILITY.md §0.5. Without it libzmq admits any CURVE client that knows the server's
// public key whenever no ZAP handler answers.
constexpr int kZapEnforceDomain = 93;

zmq::socket_t make_master_socket(zmq::context_t& ctx, const MasterSocketOptions& o) {
  zmq::socket_t s(ctx, zmq::socket_type::router);
  // No ZMTP heartbeats on the master's side: libzmq 4.3.4 cancels a timer per received message in
  // time linear in the number of connections (poller_base_t::cancel_timer), which with 2,000
  // workers cost a quarter of a core while idle. The protocol's own HEARTBEAT finds dead workers
  // (within --worker-timeout), and the peers' ZMTP pings still keep their connections checked.
  set_common(s, std::chrono::milliseconds(0), o.heartbeat_timeout);
  if (o.curve) {
    s.set(zmq::sockopt::curve_server, 1);
    s.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(o.curve->server_secret.data(), o.curve->server_secret.size()));
    s.set(zmq::sockopt::zap_domain, kZapDomain);
    const int enforce = 1;
    if (zmq_setsockopt(s.handle(), kZapEnforceDomain, &enforce, sizeof enforce) != 0)
      throw std::runtime_error(std::string("cannot enforce ZAP authentication (ZMQ_ZAP_ENFORCE_DOMAIN): ") + zmq_strerror(zmq_errno()));
  }
  s.set(zmq::sockopt::handshake_ivl, ms(o.handshake_timeout));
  // A send to a peer that is gone is an error we handle, not a silent drop.
  s.set(zmq::sockopt::router_mandatory, 1);
  // libzmq resolves IPv4 only unless told otherwise; an IPv6 address in brackets needs IPv6.
  if (is_ipv6_endpoint(o.endpoint)) s.set(zmq::sockopt::ipv6, 1);
  if (o.before_bind) o.before_bind(s);
  try {
    s.bind(o.endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot bind " + o.endpoint + ": " + e.what());
  }
  return s;
}

zmq::socket_t make_peer_socket(zmq::context_t& ctx, const PeerSocketOptions& o) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  set_common(s, o.heartbeat, o.heartbeat_timeout);
  s.set(zmq::sockopt::reconnect_ivl, ms(o.reconnect));
  s.set(zmq::sockopt::reconnect_ivl_max, ms(o.reconnect_max));
  s.set(zmq::sockopt::immediate, o.immediate ? 1 : 0);
  s.set(zmq::sockopt::handshake_ivl, ms(o.handshake_timeout));
  // A TCP connect to a host that is cut off is given up after this (the system's own timeout is
  // minutes of SYN retries, 1 s apart then 32 s): a healed network is noticed within seconds.
  s.set(zmq::sockopt::connect_timeout, ms(o.reconnect_max));
  if (o.curve) {
    s.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(o.curve->server_public.data(), o.curve->server_public.size()));
    s.set(zmq::sockopt::curve_publickey, zmq::const_buffer(o.curve->client_public.data(), o.curve->client_public.size()));
    s.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(o.curve->client_secret.data(), o.curve->client_secret.size()));
  }
  if (is_ipv6_endpoint(o.endpoint)) s.set(zmq::sockopt::ipv6, 1);  // as for the master's socket
  if (o.before_connect) o.before_connect(s);
  try {
    s.connect(o.endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot connect to " + o.endpoint + ": " + e.what());
  }
  return s;
}

ConnectionMonitor::ConnectionMonitor(zmq::context_t& ctx) : monitor_(ctx, zmq::socket_type::pair) {
  // A name never used before in this process: libzmq keeps an inproc endpoint bound until the
  // monitored socket is fully closed (in its reaper thread), so a name made from an address the
  // allocator hands out again can still be taken ("Address already in use").
  static std::atomic<std::uint64_t> next{0};
  endpoint_ = "inproc://taskmaster-monitor-" + std::to_string(next.fetch_add(1));
  monitor_.set(zmq::sockopt::linger, 0);
}

// Closing the watched socket stops its monitor; the socket may already be gone here, so it is not
// touched (zmq_socket_monitor on a closed socket reads freed memory).
ConnectionMonitor::~ConnectionMonitor() = default;

void ConnectionMonitor::attach(zmq::socket_t& socket) {
  if (zmq_socket_monitor(socket.handle(), endpoint_.c_str(), ZMQ_EVENT_ALL) != 0)
    throw std::runtime_error(std::string("cannot monitor the socket: ") + zmq_strerror(zmq_errno()));
  monitor_.connect(endpoint_);
}

std::optional<ConnectionEvent> ConnectionMonitor::next() {
  zmq::message_t event, address;
  try {
    if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return std::nullopt;
    (void)monitor_.recv(address);
  } catch (const zmq::error_t&) {
    return std::nullopt;
  }
  ConnectionEvent e;
  if (event.size() < 6) return e;
  std::uint16_t id;
  std::memcpy(&id, event.data(), 2);
  std::memcpy(&e.value, static_cast<const char*>(event.data()) + 2, 4);
  e.event = id;
  switch (id) {
    case ZMQ_EVENT_ACCEPTED: e.kind = ConnectionEvent::Kind::Accepted; break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: e.kind = ConnectionEvent::Kind::Connected; break;
    case ZMQ_EVENT_DISCONNECTED: e.kind = ConnectionEvent::Kind::Disconnected; break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: e.kind = ConnectionEvent::Kind::HandshakeFailed; break;
    default: break;
  }
  return e;
}

bool is_definite_auth_failure(const ConnectionEvent& e) {
  return e.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
         (e.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
          (e.value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH || e.value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC));
}

std::string describe_handshake_failure(const ConnectionEvent& e, bool secure, const std::string& endpoint) {
  const std::string head = "authentication failed with the master at " + endpoint + ": ";
  if (e.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && e.value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    return head + (secure ? "it runs without a key (--insecure), and this side uses one"
                          : "it requires a key, and this side has none (--insecure)");
  if (e.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return head + "it refused this key (status " + std::to_string(e.value) + ")";
  if (!secure) return head + "the security handshake failed (the master probably requires a key)";
  return head + "the security handshake failed: the master has a different key (wrong key?), or runs without a key (--insecure)";
}

std::string bound_endpoint(zmq::socket_t& socket) { return socket.get(zmq::sockopt::last_endpoint); }

std::vector<std::string_view> Inbound::views() const {
  std::vector<std::string_view> v;
  v.reserve(frames.size());
  for (auto& f : frames) v.emplace_back(static_cast<const char*>(f.data()), f.size());
  return v;
}

std::size_t Inbound::bytes() const {
  std::size_t n = 0;
  for (auto& f : frames) n += f.size();
  return n;
}

Expected<Message> Inbound::decode() const {
  if (frame_count != frames.size())
    return make_error(ErrorCode::BadFrame, "expected 3 frames (signature, command, body), got " + std::to_string(frame_count));
  return protocol::decode(views());
}

std::optional<Inbound> receive(zmq::socket_t& socket, bool router) {
  Inbound in;
  try {
    zmq::message_t part;
    if (!socket.recv(part, zmq::recv_flags::dontwait)) return std::nullopt;
    bool more = part.more();
    if (router) {
      in.identity.assign(static_cast<const char*>(part.data()), part.size());
    } else {
      in.frames.push_back(std::move(part));
      in.frame_count = 1;
    }
    // The rest of a multipart message is already here; keep a bounded number of frames.
    while (more) {
      zmq::message_t next;
      if (!socket.recv(next, zmq::recv_flags::none)) break;
      more = next.more();
      ++in.frame_count;
      if (in.frames.size() < Inbound::kMaxKeptFrames) in.frames.push_back(std::move(next));
    }
  } catch (const zmq::error_t&) {
    return std::nullopt;  // EINTR or the context is closing: the caller's loop checks why
  }
  return in;
}

SendResult send_to(zmq::socket_t& router, std::string_view identity, const Message& message) {
  const std::string body = encode_body(message);
  return send_frames(router, identity, command_name(message), body);
}

SendResult send_to(zmq::socket_t& router, std::string_view identity, std::string_view command, std::string_view body) {
  return send_frames(router, identity, command, body);
}

SendResult send(zmq::socket_t& dealer, std::string_view command, std::string_view body) { return send_frames(dealer, {}, command, body); }

SendResult send(zmq::socket_t& dealer, const Message& message) {
  const std::string body = encode_body(message);
  return send_frames(dealer, {}, command_name(message), body);
}

}  // namespace taskmaster::protocol
