// Telling a refused key from a master that is away (PROTOCOL.md §9.5).
//
// With a different shared key a peer derives another server key, the master cannot open the
// peer's CURVE HELLO, and it closes the connection without a word: libzmq then reports only
// HANDSHAKE_FAILED_NO_DETAIL, exactly what a master restarting mid-handshake or a TCP proxy whose
// master is down look like. Counting such failures mistakes restarts for wrong keys. Instead, after
// such a failure the peer asks the endpoint itself: it opens a plain TCP connection, sends a ZMTP
// greeting and a CurveZMQ HELLO made with its own keys, and reads what comes back. A master that
// answers the greeting and then closes the connection on our HELLO has refused the key: that is
// definite. Anything else (no greeting, a connection refused or cut short, a timeout) says only that
// no master answered, and the peer keeps trying.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "protocol/auth.h"
#include "protocol/sockets.h"

namespace taskmaster::protocol {

enum class ProbeVerdict {
  KeyAccepted,    // a CURVE master answered our HELLO with WELCOME: the key is right
  KeyRefused,     // a CURVE master answered the greeting, then refused our HELLO: another key
  NoKeyRequired,  // the master's greeting announces NULL: it runs with --insecure
  NoAnswer,       // no master answered (refused, closed before a greeting, timed out, not ZMTP)
};
std::string_view to_string(ProbeVerdict v);

// One probe of a tcp:// or ipc:// endpoint, waiting at most `timeout` in all. Never throws.
ProbeVerdict probe_master(const std::string& endpoint, const CurveKeys& keys, std::chrono::milliseconds timeout);

// Judges each failed handshake of one peer socket.
class HandshakeJudge {
 public:
  // curve: the peer's keys; nullopt for an --insecure peer (only libzmq's own verdicts count).
  HandshakeJudge(std::string endpoint, std::optional<CurveKeys> curve) : endpoint_(std::move(endpoint)), curve_(std::move(curve)) {}
  // A failed handshake: the sentence to stop with when the failure is definite (libzmq's verdict
  // for a mechanism or key mismatch, or a probe that found the key refused); nullopt to retry.
  // Probes at most once per `kProbeInterval`; a probe blocks for at most `kProbeTimeout`.
  std::optional<std::string> failed(const ConnectionEvent& e, std::chrono::steady_clock::time_point now);

  static constexpr std::chrono::milliseconds kProbeInterval{2000};
  static constexpr std::chrono::milliseconds kProbeTimeout{1000};

 private:
  std::string endpoint_;
  std::optional<CurveKeys> curve_;
  std::chrono::steady_clock::time_point next_probe_{};
};

}  // namespace taskmaster::protocol
