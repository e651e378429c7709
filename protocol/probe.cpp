// The handshake probe of probe.h. The bytes are ZMTP 3.0's greeting (RFC 23) and CurveZMQ's HELLO
// and WELCOME commands (RFC 26), as libzmq 4.3.4 speaks them; docs/PROTOCOL.md §9.5.
#include "protocol/probe.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

namespace taskmaster::protocol {

using namespace std::chrono;

namespace {

using Deadline = steady_clock::time_point;

int remaining_ms(Deadline d) {
  const auto left = duration_cast<milliseconds>(d - steady_clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// A non-blocking socket connected to the endpoint before the deadline, or -1.
int connect_to(const std::string& endpoint, Deadline deadline) {
  int fd = -1;
  auto try_connect = [&](int family, const sockaddr* sa, socklen_t len) {
    fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    if (::connect(fd, sa, len) == 0) return true;
    if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t el = sizeof err;
      if (::poll(&p, 1, remaining_ms(deadline)) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) return true;
    }
    ::close(fd);
    fd = -1;
    return false;
  };
  if (endpoint.rfind("ipc://", 0) == 0) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    const std::string path = endpoint.substr(6);
    if (path.size() >= sizeof sa.sun_path) return -1;
    std::memcpy(sa.sun_path, path.data(), path.size());
    try_connect(AF_UNIX, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
    return fd;
  }
  if (endpoint.rfind("tcp://", 0) != 0) return -1;
  const std::string rest = endpoint.substr(6);
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return -1;
  std::string host = rest.substr(0, colon);
  const std::string port = rest.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return -1;
  for (addrinfo* a = found; a && remaining_ms(deadline) > 0; a = a->ai_next)
    if (try_connect(a->ai_family, a->ai_addr, a->ai_addrlen)) break;
  ::freeaddrinfo(found);
  return fd;
}

bool write_all(int fd, const std::uint8_t* p, std::size_t n, Deadline deadline) {
  while (n > 0) {
    const auto w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EINTR) return false;
    pollfd pf{fd, POLLOUT, 0};
    if (::poll(&pf, 1, remaining_ms(deadline)) != 1) return false;
  }
  return true;
}

enum class Read { Ok, Closed, TimedOut };

Read read_all(int fd, std::uint8_t* p, std::size_t n, Deadline deadline) {
  while (n > 0) {
    const auto r = ::recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) return Read::Closed;
    if (errno == ECONNRESET || errno == EPIPE) return Read::Closed;
    if (errno != EAGAIN && errno != EINTR) return Read::Closed;
    pollfd pf{fd, POLLIN, 0};
    const int ready = ::poll(&pf, 1, remaining_ms(deadline));
    if (ready == 0) return Read::TimedOut;
    if (ready < 0 && errno != EINTR) return Read::Closed;
  }
  return Read::Ok;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string_view to_string(ProbeVerdict v) {
  switch (v) {
    case ProbeVerdict::KeyAccepted: return "key accepted";
    case ProbeVerdict::KeyRefused: return "key refused";
    case ProbeVerdict::NoKeyRequired: return "the master runs without a key";
    case ProbeVerdict::NoAnswer: return "no master answered";
  }
  return "?";
}

ProbeVerdict probe_master(const std::string& endpoint, const CurveKeys& keys, milliseconds timeout) {
  if (sodium_init() < 0) return ProbeVerdict::NoAnswer;
  const Deadline deadline = steady_clock::now() + timeout;
  Fd s{connect_to(endpoint, deadline)};
  if (s.fd < 0) return ProbeVerdict::NoAnswer;

  // ZMTP 3.0 greeting, as a client offering CURVE.
  std::array<std::uint8_t, 64> greeting{};
  greeting[0] = 0xFF;
  greeting[8] = 0x01;
  greeting[9] = 0x7F;
  greeting[10] = 3;  // version 3.0
  greeting[11] = 0;
  std::memcpy(greeting.data() + 12, "CURVE", 5);
  // In two steps, as libzmq sends it: the signature and major version, then the rest once the
  // other side's have come. A master that learns the whole greeting at once and finds a mechanism
  // it does not speak closes before its own greeting is out; this way its greeting is out first.
  std::array<std::uint8_t, 64> theirs{};
  if (!write_all(s.fd, greeting.data(), 11, deadline)) return ProbeVerdict::NoAnswer;
  if (read_all(s.fd, theirs.data(), 11, deadline) != Read::Ok) return ProbeVerdict::NoAnswer;
  if (!write_all(s.fd, greeting.data() + 11, greeting.size() - 11, deadline)) return ProbeVerdict::NoAnswer;
  if (read_all(s.fd, theirs.data() + 11, theirs.size() - 11, deadline) != Read::Ok) return ProbeVerdict::NoAnswer;
  if (theirs[0] != 0xFF || theirs[9] != 0x7F || theirs[10] < 3) return ProbeVerdict::NoAnswer;  // not ZMTP 3
  const std::string mechanism(reinterpret_cast<const char*>(theirs.data()) + 12,
                              strnlen(reinterpret_cast<const char*>(theirs.data()) + 12, 20));
  if (mechanism == "NULL") return ProbeVerdict::NoKeyRequired;
  if (mechanism != "CURVE") return ProbeVerdict::NoAnswer;

  // CurveZMQ HELLO: a fresh transient key C', and Box[64 zero bytes](C' -> S).
  std::array<std::uint8_t, crypto_box_PUBLICKEYBYTES> cn_public{};
  std::array<std::uint8_t, crypto_box_SECRETKEYBYTES> cn_secret{};
  crypto_box_keypair(cn_public.data(), cn_secret.data());
  std::array<std::uint8_t, 8> short_nonce{0, 0, 0, 0, 0, 0, 0, 1};
  std::array<std::uint8_t, crypto_box_NONCEBYTES> nonce{};
  std::memcpy(nonce.data(), "CurveZMQHELLO---", 16);
  std::memcpy(nonce.data() + 16, short_nonce.data(), 8);
  std::array<std::uint8_t, 64> zeros{};
  std::array<std::uint8_t, 64 + crypto_box_MACBYTES> box{};
  if (crypto_box_easy(box.data(), zeros.data(), zeros.size(), nonce.data(), keys.server_public.data(), cn_secret.data()) != 0)
    return ProbeVerdict::NoAnswer;
  sodium_memzero(cn_secret.data(), cn_secret.size());
  std::vector<std::uint8_t> hello;
  hello.push_back(0x04);  // a command frame, short size
  hello.push_back(200);
  const char name[] = "\x05HELLO";
  hello.insert(hello.end(), name, name + 6);
  hello.push_back(1);  // CurveZMQ version 1.0
  hello.push_back(0);
  hello.insert(hello.end(), 72, 0);  // anti-amplification padding
  hello.insert(hello.end(), cn_public.begin(), cn_public.end());
  hello.insert(hello.end(), short_nonce.begin(), short_nonce.end());
  hello.insert(hello.end(), box.begin(), box.end());
  if (!write_all(s.fd, hello.data(), hello.size(), deadline)) return ProbeVerdict::NoAnswer;  // it never read our HELLO

  // The answer: WELCOME if the master could open our box; else it closes the connection (or says
  // ERROR). A master that answered the greeting and then hangs up on our HELLO refused the key.
  std::array<std::uint8_t, 2> head{};
  switch (read_all(s.fd, head.data(), head.size(), deadline)) {
    case Read::Closed: return ProbeVerdict::KeyRefused;
    case Read::TimedOut: return ProbeVerdict::NoAnswer;
    case Read::Ok: break;
  }
  if (head[0] != 0x04 && head[0] != 0x06) return ProbeVerdict::NoAnswer;  // not a command
  // Long sizes (0x06) start with 8 bytes; the command name comes first either way.
  if (head[0] == 0x04 && head[1] == 0) return ProbeVerdict::NoAnswer;  // an empty command
  if (head[0] == 0x06) {
    std::array<std::uint8_t, 7> size_rest{};
    if (read_all(s.fd, size_rest.data(), size_rest.size(), deadline) != Read::Ok) return ProbeVerdict::NoAnswer;
  }
  std::uint8_t command_len = 0;  // the body starts with the command name's length
  if (read_all(s.fd, &command_len, 1, deadline) != Read::Ok) return ProbeVerdict::NoAnswer;
  std::array<char, 256> command{};
  if (command_len == 0 || read_all(s.fd, reinterpret_cast<std::uint8_t*>(command.data()), command_len, deadline) != Read::Ok)
    return ProbeVerdict::NoAnswer;
  const std::string_view got(command.data(), command_len);
  if (got == "WELCOME") return ProbeVerdict::KeyAccepted;
  if (got == "ERROR") return ProbeVerdict::KeyRefused;
  return ProbeVerdict::NoAnswer;
}

std::optional<std::string> HandshakeJudge::failed(const ConnectionEvent& e, steady_clock::time_point now) {
  const bool secure = curve_.has_value();
  if (is_definite_auth_failure(e)) return describe_handshake_failure(e, secure, endpoint_);
  if (!curve_ || now < next_probe_) return std::nullopt;
  const auto verdict = probe_master(endpoint_, *curve_, kProbeTimeout);
  // A refusal is believed when a second probe, a moment later, says the same: a master that dies
  // between its greeting and our HELLO looks like one refusal, not two.
  refusals_ = verdict == ProbeVerdict::KeyRefused ? refusals_ + 1 : 0;
  next_probe_ = now + (refusals_ == 1 ? kConfirmInterval : kProbeInterval);
  switch (verdict) {
    case ProbeVerdict::KeyRefused:
      if (refusals_ < 2) return std::nullopt;
      return describe_handshake_failure(e, secure, endpoint_);
    case ProbeVerdict::NoKeyRequired: {
      ConnectionEvent mismatch = e;
      mismatch.event = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
      mismatch.value = ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH;
      return describe_handshake_failure(mismatch, secure, endpoint_);
    }
    case ProbeVerdict::KeyAccepted:
    case ProbeVerdict::NoAnswer: return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace taskmaster::protocol
