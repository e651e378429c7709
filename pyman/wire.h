// pyman/wire.h: the byte level of Python's multiprocessing.connection, as a server speaks it
// (docs/PYTHON.md, "The BaseManager listener"): length-prefixed frames and the mutual HMAC
// challenge, in its Python <= 3.11 form (HMAC-MD5, unprefixed) and its 3.12+ form
// ({digest}-prefixed, the digest chosen by the side that answers).
// No sockets here: the listener feeds bytes in and sends what comes out.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/expected.h"

namespace taskmaster::pyman {

// A frame: a 4-byte big-endian signed length and the payload; a payload over 0x7fffffff bytes has
// the length -1 and then an 8-byte big-endian length (connection.py's _send_bytes).
std::string frame(std::string_view payload);

// Cuts a byte stream into frames. Bounded: a frame announced larger than `max_bytes`, or a length
// that is negative other than -1, is an error (the connection is then closed).
class FrameReader {
 public:
  explicit FrameReader(std::size_t max_bytes) : max_(max_bytes) {}
  void feed(std::string_view bytes) { buf_.append(bytes); }
  // The next whole frame's payload, nullopt while it is not all here, or an error.
  Expected<std::optional<std::string>> next();
  std::size_t buffered() const { return buf_.size() - pos_; }
  // The bound of a frame's payload (a connection's handshake allows less than its requests).
  std::size_t max() const { return max_; }
  void set_max(std::size_t max_bytes) { max_ = max_bytes; }

 private:
  std::size_t max_;
  std::string buf_;
  std::size_t pos_ = 0;
};

// HMAC of `message` under `key` with one of Python's allowed digests ("md5", "sha256", "sha384",
// "sha3_256", "sha3_384"); nullopt for another name.
std::optional<std::string> hmac(std::string_view digest, std::string_view key, std::string_view message);

// The server's side of the handshake (connection.py: the server runs deliver_challenge, then
// answer_challenge; a client the reverse):
//   1. server -> "#CHALLENGE#{sha256}" + 40 random bytes
//   2. client -> its HMAC of everything after "#CHALLENGE#": "{name}" + digest (3.12+), or a bare
//      16-byte HMAC-MD5 (<= 3.11, which takes the whole text as its challenge)
//   3. server -> "#WELCOME#" if right, else "#FAILURE#" and the connection ends
//   4. client -> "#CHALLENGE#" + 20 random bytes (<= 3.11) or "{sha256}" + 40 bytes (3.12+)
//   5. server -> a bare HMAC-MD5 for the 20-byte form, else "{name}" + HMAC under that digest
//   6. client -> "#WELCOME#" (anything else ends the connection)
class ServerHandshake {
 public:
  explicit ServerHandshake(std::string authkey);
  // Step 1's payload (call once, first).
  std::string challenge();
  enum class State { More, Done, Failed };
  struct Step {
    State state = State::More;
    std::vector<std::string> send;  // payloads to send, in order (before closing, if Failed)
    std::string why;                // for Failed: what went wrong, for the log
  };
  // The next frame from the client.
  Step on_frame(std::string_view payload);

 private:
  std::string key_;
  std::string sent_;  // what our challenge's HMAC covers
  int stage_ = 0;     // 0: challenge not sent; 1: waiting for step 2; 2: step 4; 3: step 6; 4: done
};

inline constexpr std::string_view kChallenge = "#CHALLENGE#";
inline constexpr std::string_view kWelcome = "#WELCOME#";
inline constexpr std::string_view kFailure = "#FAILURE#";

}  // namespace taskmaster::pyman
