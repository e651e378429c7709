// The shared auth key, the CURVE key pairs derived from it, and the ZAP handler that admits only
// peers holding it. The derivation and the handshake are specified in docs/PROTOCOL.md §9.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "common/expected.h"

namespace taskmaster::protocol {

using CurveKey = std::array<std::uint8_t, 32>;

// The key pairs every peer derives from the shared key. Whoever holds the shared key can compute
// all four; the master uses the server pair, workers and clients the client pair.
struct CurveKeys {
  CurveKey server_public{}, server_secret{}, client_public{}, client_secret{};
};

// Shortest shared key accepted, in bytes. `taskmaster keygen` makes 64.
inline constexpr std::size_t kMinKeyBytes = 32;

// BLAKE2b-256 with personal "taskmaster-key", then crypto_kdf ids 1 (server) and 2 (client) in
// context "tmcurve1", each seed turned into a key pair by crypto_box_seed_keypair.
CurveKeys derive_keys(std::string_view shared_key);

// The HTTP endpoint's secrets (docs/HTTP.md, "Access"): the token that grants access and the value
// a cookie-authenticated POST must carry in X-CSRF-Token, each 16 bytes as 32 lowercase hex
// characters: crypto_kdf ids 3 and 4 in context "tmhttp01" from the same root as derive_keys.
struct HttpSecrets {
  std::string token, csrf;
};
HttpSecrets derive_http_secrets(std::string_view shared_key);

// A new random shared key: 32 random bytes as 64 lowercase hex characters.
std::string generate_key();

// Z85 text of a 32-byte key (40 characters), as ZeroMQ tools print keys.
std::string z85(const CurveKey& key);

// Where the shared key comes from, in this order: the --key-file flag, TASKMASTER_KEY_FILE, the key
// itself in TASKMASTER_KEY, else the default file ($XDG_CONFIG_HOME/taskmaster/key, or
// ~/.config/taskmaster/key). Returns the key and where it came from; nullopt if no source has one
// (the default file does not exist). A source that exists but is unusable is an error that says
// why: unreadable, readable by group or others (as ssh refuses), empty, or too short.
struct LoadedKey {
  std::string key;
  std::string source;  // "key file /path", "TASKMASTER_KEY"
};
Expected<std::optional<LoadedKey>> find_key(const std::string& key_file_flag);
Expected<LoadedKey> load_key_file(const std::string& path);
std::string default_key_path();

// The shared key as every taskmaster command loads it (find_key's order), for programs that embed
// the worker or client library (examples/custom_worker.cpp): the key, or an AuthFailed error whose
// message says why there is none, e.g. "no key: make one with 'taskmaster keygen' ...", "cannot read
// key file F: ...", "... is too short".
Expected<std::string> load_key(const std::string& key_file_flag = "");

// Writes a new key to `path` (mode 0600, parent directories made 0700). Refuses to overwrite an
// existing file unless `force`.
taskmaster::Status write_key_file(const std::string& path, const std::string& key, bool force);

// The ZAP handler (RFC 27): answers libzmq's authentication requests for the master's socket,
// admitting only CURVE clients whose long-term public key is `client_public`. It must be created
// before the master's socket binds (libzmq then always asks it), and its socket polled by the
// master's loop.
class ZapHandler {
 public:
  // Told of each rejected peer: its IP address and why.
  using RejectLog = std::function<void(const std::string& address, const std::string& why)>;
  ZapHandler(zmq::context_t& ctx, const CurveKey& client_public, RejectLog on_reject);
  zmq::socket_t& socket() { return socket_; }
  // Answers every request waiting on the socket; never blocks.
  void handle_requests();
  std::uint64_t admitted() const { return admitted_; }
  std::uint64_t rejected() const { return rejected_; }

 private:
  zmq::socket_t socket_;
  CurveKey client_public_;
  RejectLog on_reject_;
  std::uint64_t admitted_ = 0, rejected_ = 0;
};

// The ZAP domain the master's socket uses.
inline constexpr const char* kZapDomain = "taskmaster";

// Rate-limits log lines per key (e.g. per peer address): at most `burst` in a `period` (which starts
// with the first line let through after the previous one ended); the lines held back are counted and
// reported with the first one of the next period.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(std::chrono::milliseconds period = std::chrono::seconds(1), std::uint32_t burst = 1)
      : period_(period), burst_(burst) {}
  // Returns the number of lines suppressed for this key since the last period that let one through
  // (0 within a period), or nullopt if this one must be suppressed too.
  std::optional<std::uint64_t> allow(const std::string& key, std::chrono::steady_clock::time_point now);

 private:
  struct Window {
    std::chrono::steady_clock::time_point start{};  // {}: none yet
    std::uint32_t used = 0;                         // lines let through in it
    std::uint64_t held = 0;                         // lines suppressed since its start
  };
  std::chrono::milliseconds period_;
  std::uint32_t burst_;
  std::map<std::string, Window> windows_;
};

}  // namespace taskmaster::protocol
