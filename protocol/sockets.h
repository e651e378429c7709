// The only place where sockets are created and configured, and where frames cross the wire.
// Security, size limits and heartbeats are set here so that no caller can forget one.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "protocol/auth.h"
#include "protocol/message.h"

namespace taskmaster::protocol {

// The cap of a peer's reconnect backoff (PROTOCOL.md §5.2).
inline constexpr std::chrono::milliseconds kReconnectMax{2000};

// Options the master's ROUTER socket is made with.
struct MasterSocketOptions {
  std::string endpoint = "tcp://0.0.0.0:5555";
  // The keys derived from the shared key: CURVE, with the ZAP handler deciding who gets in.
  // nullopt: no security at all (--insecure).
  std::optional<CurveKeys> curve;
  std::chrono::milliseconds handshake_timeout{5000};  // ZMQ_HANDSHAKE_IVL: stalled connections close
  // Not used for ZMTP pings (see make_master_socket); the protocol's HEARTBEAT does that job.
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds heartbeat_timeout{3000};
  std::function<void(zmq::socket_t&)> before_bind;  // e.g. to attach a ConnectionMonitor
};

// Options a worker's or client's DEALER socket is made with.
struct PeerSocketOptions {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::optional<CurveKeys> curve;            // nullopt: no security (--insecure)
  std::chrono::milliseconds reconnect{100};  // first reconnect delay (libzmq)
  // libzmq doubles the delay up to this, and retries at that pace for as long as it takes: a master
  // that comes back (or a network that heals) is found within about this long.
  std::chrono::milliseconds reconnect_max{kReconnectMax};
  // A connection whose handshake is not done after this is closed and tried again (a master that
  // accepted the TCP connection but is stopped, or a proxy with nothing behind it).
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds heartbeat_timeout{3000};
  bool immediate = true;  // queue nothing on connections that are not complete
  // Called after the options are set and before connect(), e.g. to start a socket monitor that
  // must not miss the first events.
  std::function<void(zmq::socket_t&)> before_connect;
};

// Creates the master's ROUTER socket and binds it. With CURVE keys, a ZapHandler must already
// exist in this context (it is what admits peers; ZAP_ENFORCE_DOMAIN makes libzmq refuse everyone
// if no handler answers, instead of admitting everyone).
// Throws std::runtime_error naming the endpoint when it cannot bind.
zmq::socket_t make_master_socket(zmq::context_t& ctx, const MasterSocketOptions& options);

// Creates a DEALER socket connected to the master. Never blocks: the connection completes in the
// background. Throws std::runtime_error for a malformed endpoint.
zmq::socket_t make_peer_socket(zmq::context_t& ctx, const PeerSocketOptions& options);

// What happened to a connection, as libzmq's socket monitor reports it.
struct ConnectionEvent {
  enum class Kind {
    Accepted,         // master side: a TCP connection came in (value: its fd)
    Connected,        // the handshake succeeded: messages can flow
    Disconnected,     // the connection closed (value: its fd)
    HandshakeFailed,  // the security handshake failed (see describe_handshake_failure)
    Other,
  };
  Kind kind = Kind::Other;
  int event = 0;            // ZMQ_EVENT_*
  std::uint32_t value = 0;  // the event's value (fd, errno, protocol error or ZAP status)
};

// Watches one socket through libzmq's socket monitor. attach() must be called before the socket
// connects or binds (make_peer_socket's before_connect), so that no event is missed.
class ConnectionMonitor {
 public:
  explicit ConnectionMonitor(zmq::context_t& ctx);
  ~ConnectionMonitor();
  ConnectionMonitor(const ConnectionMonitor&) = delete;
  ConnectionMonitor& operator=(const ConnectionMonitor&) = delete;
  void attach(zmq::socket_t& socket);
  // Poll this for ZMQ_POLLIN.
  zmq::socket_t& socket() { return monitor_; }
  // The next event, without blocking.
  std::optional<ConnectionEvent> next();

 private:
  zmq::socket_t monitor_;
  std::string endpoint_;
};

// A sentence for a failed handshake, seen from a peer (worker or client) that connects to
// `endpoint` with (secure) or without a key. Always contains "authentication failed".
std::string describe_handshake_failure(const ConnectionEvent& e, bool secure, const std::string& endpoint);
// True when the failure cannot be a passing accident (a key or mechanism mismatch, a ZAP refusal).
bool is_definite_auth_failure(const ConnectionEvent& e);

// The endpoint a socket really bound, e.g. "tcp://0.0.0.0:41234" (ZMQ_LAST_ENDPOINT).
std::string bound_endpoint(zmq::socket_t& socket);

// One message as received: the frames, and for a ROUTER the sender's identity.
struct Inbound {
  std::string identity;                // empty on a DEALER
  std::vector<zmq::message_t> frames;  // at most kMaxKeptFrames; the rest are counted, not kept
  std::size_t frame_count = 0;         // how many frames the message really had

  static constexpr std::size_t kMaxKeptFrames = 4;
  std::vector<std::string_view> views() const;
  std::size_t bytes() const;
  // Decodes the frames. A message with more frames than kept is a BadFrame error.
  Expected<Message> decode() const;
};

// Receives one whole message without blocking; nullopt if none is waiting.
// `router`: the first frame is the sender's identity. Never throws for a peer's input.
std::optional<Inbound> receive(zmq::socket_t& socket, bool router);

enum class SendResult {
  Sent,
  WouldBlock,  // the peer's queue is full (ZMQ_SNDHWM): nothing was sent
  PeerGone,    // ROUTER: no connected peer has this identity (ZMQ_ROUTER_MANDATORY)
  Failed,      // anything else (the socket is closing)
};

// Sends one message to `identity` through a ROUTER socket without blocking.
SendResult send_to(zmq::socket_t& router, std::string_view identity, const Message& message);
// The same with a body that is already encoded (for callers that build bodies themselves).
SendResult send_to(zmq::socket_t& router, std::string_view identity, std::string_view command, std::string_view body);
// Sends one message through a DEALER socket without blocking.
SendResult send(zmq::socket_t& dealer, const Message& message);
SendResult send(zmq::socket_t& dealer, std::string_view command, std::string_view body);

}  // namespace taskmaster::protocol
