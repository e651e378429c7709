// Tests of the shared key and what is built on it (protocol/auth.h): the key derivation against the
// test vectors of docs/PROTOCOL.md §9 and against libzmq, key files and where the key is found, the
// rate-limited log, and the ZAP handler with real CURVE sockets on loopback, in this process.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "protocol/auth.h"
#include "protocol/probe.h"
#include "protocol/sockets.h"
#include "support/env_guard.h"
#include "support/temp_dir.h"

namespace taskmaster::protocol {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kZeroKey(64, '0');

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- files and the environment -----------------------------------------------------------------

using test::EnvGuard;
using test::TempDir;

void write_file(const std::string& path, const std::string& content, mode_t mode = 0600) {
  fs::create_directories(fs::path(path).parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// ---- keys ----------------------------------------------------------------------------------------

CurveKey from_z85(const std::string& text) {
  CurveKey k{};
  REQUIRE(text.size() == 40);
  REQUIRE(zmq_z85_decode(k.data(), text.c_str()) != nullptr);
  return k;
}

std::string curve_public(const CurveKey& secret) {
  char out[41] = {};
  REQUIRE(zmq_curve_public(out, z85(secret).c_str()) == 0);
  return out;
}

struct Vector {
  int line = 0;
  std::string key;
  std::string server_public, server_secret, client_public, client_secret;
};

// The block after `<!-- vectors: key-derivation -->` in PROTOCOL.md, one vector a line.
std::vector<Vector> spec_vectors() {
  std::ifstream in(std::string(TASKMASTER_SOURCE_DIR) + "/docs/PROTOCOL.md");
  REQUIRE_MESSAGE(in.good(), "cannot read docs/PROTOCOL.md");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::vector<Vector> out;
  int markers = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] != "<!-- vectors: key-derivation -->") continue;
    ++markers;
    REQUIRE_MESSAGE(i + 1 < lines.size(), "marker at the end of the file");
    REQUIRE_MESSAGE(lines[i + 1].rfind("```", 0) == 0, "line " << i + 2 << ": the marker is not followed by a fenced block");
    std::size_t j = i + 2;
    for (; j < lines.size() && lines[j] != "```"; ++j) {
      if (lines[j].empty()) continue;
      std::istringstream fields(lines[j]);
      Vector v;
      v.line = static_cast<int>(j + 1);
      std::string extra;
      fields >> v.key >> v.server_public >> v.server_secret >> v.client_public >> v.client_secret;
      INFO("PROTOCOL.md line " << v.line << ": " << lines[j]);
      REQUIRE_MESSAGE(!v.client_secret.empty(), "a vector needs 5 fields");
      REQUIRE_MESSAGE(!(fields >> extra), "a vector has exactly 5 fields");
      out.push_back(v);
    }
    REQUIRE_MESSAGE(j < lines.size(), "the vectors' fenced block is never closed");
  }
  REQUIRE_MESSAGE(markers == 1, "PROTOCOL.md must have exactly one <!-- vectors: key-derivation --> block");
  return out;
}

// ---- sockets -------------------------------------------------------------------------------------

// A socket and the monitor watching it. The monitor is stopped before the socket closes (a
// ConnectionMonitor must not outlive the socket it watches).
struct Watched {
  std::optional<ConnectionMonitor> monitor;
  std::optional<zmq::socket_t> socket;
  std::vector<ConnectionEvent> events;

  Watched() = default;
  Watched(const Watched&) = delete;
  Watched& operator=(const Watched&) = delete;
  ~Watched() {
    monitor.reset();
    socket.reset();
  }
  void drain() {
    if (!monitor) return;
    while (auto e = monitor->next()) events.push_back(*e);
  }
  std::optional<ConnectionEvent> first(ConnectionEvent::Kind kind) const {
    for (const auto& e : events)
      if (e.kind == kind) return e;
    return std::nullopt;
  }
};

// A peer's DEALER made by make_peer_socket, watched from its first event.
void connect_peer(Watched& w, zmq::context_t& ctx, const std::string& endpoint, std::optional<CurveKeys> curve, bool immediate = true) {
  w.monitor.emplace(ctx);
  PeerSocketOptions o;
  o.endpoint = endpoint;
  o.curve = std::move(curve);
  o.immediate = immediate;
  o.before_connect = [&w](zmq::socket_t& s) { w.monitor->attach(s); };
  w.socket.emplace(make_peer_socket(ctx, o));
}

// A master in miniature: a context, the ZAP handler (with keys, unless told not to), and the CURVE
// ROUTER made by make_master_socket on a free loopback port, watched by a monitor.
struct MiniMaster {
  zmq::context_t ctx;  // first: closed last, after every socket
  std::vector<std::pair<std::string, std::string>> rejects;
  std::optional<ZapHandler> zap;
  Watched router;
  std::string endpoint;
  struct Received {
    std::string identity;
    std::vector<std::string> frames;
  };
  std::vector<Received> received;

  explicit MiniMaster(std::optional<CurveKeys> curve, bool with_zap = true) {
    if (curve && with_zap)
      zap.emplace(ctx, curve->client_public,
                  [this](const std::string& address, const std::string& why) { rejects.emplace_back(address, why); });
    router.monitor.emplace(ctx);
    MasterSocketOptions o;
    o.endpoint = "tcp://127.0.0.1:0";
    o.curve = std::move(curve);
    o.before_bind = [this](zmq::socket_t& s) { router.monitor->attach(s); };
    router.socket.emplace(make_master_socket(ctx, o));
    endpoint = bound_endpoint(*router.socket);
  }

  // One turn of a master's loop: waits (at most 20 ms) for the ZAP handler, the ROUTER or a monitor,
  // then answers ZAP requests, takes the messages and the events.
  void step(Watched* peer = nullptr) {
    std::vector<zmq::pollitem_t> items{{router.socket->handle(), 0, ZMQ_POLLIN, 0}, {router.monitor->socket().handle(), 0, ZMQ_POLLIN, 0}};
    if (zap) items.push_back({zap->socket().handle(), 0, ZMQ_POLLIN, 0});
    if (peer && peer->monitor) items.push_back({peer->monitor->socket().handle(), 0, ZMQ_POLLIN, 0});
    zmq::poll(items.data(), items.size(), 20ms);
    if (zap) zap->handle_requests();
    for (;;) {
      zmq::message_t part;
      if (!router.socket->recv(part, zmq::recv_flags::dontwait)) break;
      Received r{part.to_string(), {}};
      while (part.more()) {
        (void)router.socket->recv(part, zmq::recv_flags::none);
        r.frames.push_back(part.to_string());
      }
      received.push_back(std::move(r));
    }
    router.drain();
    if (peer) peer->drain();
  }

  // Steps until `done` (true) or `timeout` (false).
  bool step_until(const std::function<bool()>& done, std::chrono::milliseconds timeout, Watched* peer = nullptr) {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      step(peer);
    }
    return true;
  }

  bool got(const std::string& text) const {
    for (const auto& r : received)
      if (r.frames.size() == 1 && r.frames[0] == text) return true;
    return false;
  }
};

// Sends `text` until the DEALER takes it (with ZMQ_IMMEDIATE it refuses while not connected),
// stepping the master meanwhile, then steps until the master has it.
bool deliver(MiniMaster& m, Watched& peer, const std::string& text, std::chrono::milliseconds timeout) {
  bool sent = false;
  return m.step_until(
      [&] {
        if (!sent) sent = peer.socket->send(zmq::buffer(text), zmq::send_flags::dontwait).has_value();
        return m.got(text);
      },
      timeout, &peer);
}

CurveKeys with_random_client(CurveKeys k) {
  REQUIRE(sodium_init() >= 0);
  crypto_box_keypair(k.client_public.data(), k.client_secret.data());
  return k;
}

ConnectionEvent event(int id, std::uint32_t value) {
  ConnectionEvent e;
  e.event = id;
  e.value = value;
  e.kind = ConnectionEvent::Kind::HandshakeFailed;
  return e;
}

}  // namespace

TEST_SUITE("auth") {

// ---- derivation ----------------------------------------------------------------------------------

TEST_CASE("derive_keys gives the test vectors of PROTOCOL.md section 9") {
  const auto vectors = spec_vectors();
  REQUIRE(vectors.size() >= 2);
  bool zero_key = false;
  for (const auto& v : vectors) {
    INFO("PROTOCOL.md line " << v.line << ", key " << v.key);
    zero_key = zero_key || v.key == kZeroKey;
    CHECK(v.key.size() >= kMinKeyBytes);
    const auto k = derive_keys(v.key);
    CHECK(z85(k.server_public) == v.server_public);
    CHECK(z85(k.server_secret) == v.server_secret);
    CHECK(z85(k.client_public) == v.client_public);
    CHECK(z85(k.client_secret) == v.client_secret);
    // The vectors are self-consistent: each public key is libzmq's public key of its secret key.
    CHECK(curve_public(from_z85(v.server_secret)) == v.server_public);
    CHECK(curve_public(from_z85(v.client_secret)) == v.client_public);
  }
  CHECK_MESSAGE(zero_key, "the vectors include the key of 64 '0' characters");
}

TEST_CASE("derivation is deterministic, different keys give different pairs, and the server and client pairs differ") {
  const std::string a = generate_key(), b = generate_key();
  const auto ka = derive_keys(a), ka2 = derive_keys(a), kb = derive_keys(b);
  CHECK(ka.server_public == ka2.server_public);
  CHECK(ka.server_secret == ka2.server_secret);
  CHECK(ka.client_public == ka2.client_public);
  CHECK(ka.client_secret == ka2.client_secret);

  CHECK(ka.server_public != kb.server_public);
  CHECK(ka.server_secret != kb.server_secret);
  CHECK(ka.client_public != kb.client_public);
  CHECK(ka.client_secret != kb.client_secret);

  CHECK(ka.server_public != ka.client_public);
  CHECK(ka.server_secret != ka.client_secret);

  // Every byte counts, including a trailing newline: trimming is the key loader's job, not this one's.
  std::string c = a;
  c[63] = c[63] == '0' ? '1' : '0';
  CHECK(derive_keys(c).client_public != ka.client_public);
  CHECK(derive_keys(a + "\n").client_public != ka.client_public);
  // The key is used as text: 64 hex characters are not decoded into 32 bytes.
  CHECK(derive_keys(std::string(32, '\0')).server_public != derive_keys(kZeroKey).server_public);
}

TEST_CASE("the derived public keys are libzmq's zmq_curve_public of the secret keys") {
  for (const std::string& key : {kZeroKey, generate_key(), generate_key(), std::string(100, 'x'), std::string(40, '\xff')}) {
    CAPTURE(key);
    const auto k = derive_keys(key);
    CHECK(curve_public(k.server_secret) == z85(k.server_public));
    CHECK(curve_public(k.client_secret) == z85(k.client_public));
  }
}

TEST_CASE("z85 gives the 40-character Z85 text of a key, which decodes back") {
  const auto k = derive_keys(kZeroKey);
  const std::string text = z85(k.server_public);
  CHECK(text.size() == 40);
  CHECK(from_z85(text) == k.server_public);
  CurveKey zero{};
  CHECK(z85(zero) == std::string(40, '0'));
}

TEST_CASE("generate_key gives 64 lowercase hex characters, different every time") {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string key = generate_key();
    REQUIRE(key.size() == 64);
    for (char ch : key) CHECK(((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')));
    seen.insert(key);
  }
  CHECK(seen.size() == 100);
}

// ---- key files -----------------------------------------------------------------------------------

TEST_CASE("load_key_file trims trailing line ends and white space, and nothing else") {
  TempDir dir;
  const std::string key(32, 'k');
  for (const std::string& tail : {std::string(), std::string("\n"), std::string("\r\n"), std::string(" \t\r\n\n\n")}) {
    CAPTURE(tail.size());
    write_file(dir.path("key"), key + tail);
    auto loaded = load_key_file(dir.path("key"));
    REQUIRE_MESSAGE(loaded, loaded.error().message);
    CHECK(loaded->key == key);
    CHECK(loaded->source == "key file " + dir.path("key"));
  }
  // Leading and inner white space are part of the key.
  write_file(dir.path("key"), "  " + key + " x\n");
  auto loaded = load_key_file(dir.path("key"));
  REQUIRE(loaded);
  CHECK(loaded->key == "  " + key + " x");
  // What keygen writes loads as the key itself.
  const std::string k = generate_key();
  write_file(dir.path("key"), k + "\n");
  loaded = load_key_file(dir.path("key"));
  REQUIRE(loaded);
  CHECK(loaded->key == k);
}

TEST_CASE("load_key_file refuses a key file that group or others can access, and says how to fix it") {
  TempDir dir;
  const std::string path = dir.path("key");
  for (mode_t mode : {0644, 0640, 0604, 0660, 0601, 0610, 0700 | 0070, 0666}) {
    CAPTURE(mode);
    write_file(path, generate_key() + "\n", mode);
    auto loaded = load_key_file(path);
    REQUIRE(!loaded);
    CHECK(loaded.error().code == ErrorCode::AuthFailed);
    CHECK(contains(loaded.error().message, "chmod 600"));
    CHECK(contains(loaded.error().message, path));
    CHECK(contains(loaded.error().message, "group or others"));
  }
  for (mode_t mode : {0600, 0400}) {
    CAPTURE(mode);
    write_file(path, generate_key() + "\n", mode);
    auto loaded = load_key_file(path);
    CHECK_MESSAGE(loaded, (loaded ? "" : loaded.error().message));
  }
}

TEST_CASE("load_key_file refuses empty, short, oversized, missing and non-regular files") {
  TempDir dir;
  auto refused = [](const std::string& path, const std::string& why) {
    CAPTURE(path);
    auto loaded = load_key_file(path);
    REQUIRE(!loaded);
    CHECK(loaded.error().code == ErrorCode::AuthFailed);
    CHECK_MESSAGE(contains(loaded.error().message, why), loaded.error().message);
  };
  write_file(dir.path("empty"), "");
  refused(dir.path("empty"), "empty");
  write_file(dir.path("blank"), "\n \t\r\n");
  refused(dir.path("blank"), "empty");
  write_file(dir.path("short"), std::string(kMinKeyBytes - 1, 'k') + "\n");
  refused(dir.path("short"), "too short");
  write_file(dir.path("huge"), std::string(65537, 'k'));
  refused(dir.path("huge"), "64 KiB");
  refused(dir.path("missing"), "cannot read");
  fs::create_directory(dir.path("dir"));
  ::chmod(dir.path("dir").c_str(), 0700);
  refused(dir.path("dir"), "not a regular file");

  // The limits themselves are accepted: exactly 32 bytes, exactly 64 KiB.
  write_file(dir.path("min"), std::string(kMinKeyBytes, 'k') + "\n");
  CHECK(load_key_file(dir.path("min")));
  write_file(dir.path("max"), std::string(65536, 'k'));
  CHECK(load_key_file(dir.path("max")));
  // A symbolic link is followed.
  fs::create_symlink(dir.path("min"), dir.path("link"));
  auto linked = load_key_file(dir.path("link"));
  REQUIRE(linked);
  CHECK(linked->key == std::string(kMinKeyBytes, 'k'));
}

TEST_CASE("find_key: --key-file, then TASKMASTER_KEY_FILE, then TASKMASTER_KEY, then the default file") {
  TempDir dir;
  EnvGuard env;
  const std::string flag_key(40, 'F'), file_key(40, 'E'), env_key(40, 'K'), xdg_key(40, 'X'), home_key(40, 'H');
  write_file(dir.path("flag.key"), flag_key + "\n");
  write_file(dir.path("env.key"), file_key + "\n");
  write_file(dir.path("xdg/taskmaster/key"), xdg_key + "\n");
  write_file(dir.path("home/.config/taskmaster/key"), home_key + "\n");
  env.set("TASKMASTER_KEY_FILE", dir.path("env.key"));
  env.set("TASKMASTER_KEY", env_key + "\n");
  env.set("XDG_CONFIG_HOME", dir.path("xdg"));
  env.set("HOME", dir.path("home"));

  auto expect = [](const std::string& flag, const std::string& key, const std::string& source) {
    auto found = find_key(flag);
    REQUIRE_MESSAGE(found, found.error().message);
    REQUIRE(found->has_value());
    CHECK((*found)->key == key);
    CHECK((*found)->source == source);
  };
  expect(dir.path("flag.key"), flag_key, "key file " + dir.path("flag.key"));
  expect("", file_key, "key file " + dir.path("env.key"));
  env.set("TASKMASTER_KEY_FILE", "");  // empty: as if unset
  expect("", env_key, "TASKMASTER_KEY");
  env.unset("TASKMASTER_KEY_FILE");
  expect("", env_key, "TASKMASTER_KEY");
  env.unset("TASKMASTER_KEY");
  CHECK(default_key_path() == dir.path("xdg/taskmaster/key"));
  expect("", xdg_key, "key file " + dir.path("xdg/taskmaster/key"));
  env.set("XDG_CONFIG_HOME", "");  // empty: as if unset
  CHECK(default_key_path() == dir.path("home/.config/taskmaster/key"));
  expect("", home_key, "key file " + dir.path("home/.config/taskmaster/key"));
  env.unset("XDG_CONFIG_HOME");
  expect("", home_key, "key file " + dir.path("home/.config/taskmaster/key"));

  // No key anywhere: not an error, just nothing.
  fs::remove(dir.path("home/.config/taskmaster/key"));
  auto none = find_key("");
  REQUIRE(none);
  CHECK(!none->has_value());
  // XDG_CONFIG_HOME, when set, is the only default place: no fallback to HOME.
  write_file(dir.path("home/.config/taskmaster/key"), home_key + "\n");
  env.set("XDG_CONFIG_HOME", dir.path("nowhere"));
  none = find_key("");
  REQUIRE(none);
  CHECK(!none->has_value());
}

TEST_CASE("find_key: a source that is there but unusable is an error, never skipped for the next one") {
  TempDir dir;
  EnvGuard env;
  const std::string good(40, 'G');
  write_file(dir.path("good.key"), good + "\n");
  write_file(dir.path("open.key"), good + "\n", 0644);
  env.set("TASKMASTER_KEY_FILE", dir.path("good.key"));
  env.set("TASKMASTER_KEY", good);
  env.set("XDG_CONFIG_HOME", dir.path("xdg"));
  env.set("HOME", dir.path("home"));

  auto refused = [](const std::string& flag, const std::string& why) {
    auto found = find_key(flag);
    REQUIRE(!found);
    CHECK(found.error().code == ErrorCode::AuthFailed);
    CHECK_MESSAGE(contains(found.error().message, why), found.error().message);
  };
  refused(dir.path("missing.key"), "cannot read");  // the flag's file is missing: no fallback
  refused(dir.path("open.key"), "chmod 600");
  env.set("TASKMASTER_KEY_FILE", dir.path("open.key"));
  refused("", "chmod 600");
  env.unset("TASKMASTER_KEY_FILE");
  env.set("TASKMASTER_KEY", "short");
  refused("", "too short");
  env.set("TASKMASTER_KEY", "");  // set but empty is an error, unlike an empty TASKMASTER_KEY_FILE
  refused("", "empty");
  env.unset("TASKMASTER_KEY");
  write_file(dir.path("xdg/taskmaster/key"), good + "\n", 0640);
  refused("", "chmod 600");
}

TEST_CASE("write_key_file makes its directory, writes mode 0600, and replaces a file only with force") {
  TempDir dir;
  const std::string path = dir.path("a/taskmaster/key");
  const std::string key1 = generate_key(), key2 = generate_key();
  auto written = write_key_file(path, key1, false);
  REQUIRE_MESSAGE(written, written.error().message);
  CHECK(read_file(path) == key1 + "\n");
  CHECK(mode_of(path) == 0600);
  CHECK(mode_of(dir.path("a/taskmaster")) == 0700);
  auto loaded = load_key_file(path);
  REQUIRE(loaded);
  CHECK(loaded->key == key1);

  auto again = write_key_file(path, key2, false);
  REQUIRE(!again);
  CHECK(contains(again.error().message, "already exists"));
  CHECK(contains(again.error().message, "--force"));
  CHECK(read_file(path) == key1 + "\n");

  // With force: replaced, and a wrong mode is fixed.
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  auto forced = write_key_file(path, key2, true);
  REQUIRE_MESSAGE(forced, forced.error().message);
  CHECK(read_file(path) == key2 + "\n");
  CHECK(mode_of(path) == 0600);
  loaded = load_key_file(path);
  REQUIRE(loaded);
  CHECK(loaded->key == key2);
}

// ---- the rate-limited log ------------------------------------------------------------------------

TEST_CASE("RateLimitedLog lets one line a period through per key, then tells how many it held back") {
  RateLimitedLog log(1000ms);
  const auto t0 = Clock::time_point{} + 1h;
  auto first = log.allow("10.0.0.1", t0);
  REQUIRE(first);
  CHECK(*first == 0);
  CHECK(!log.allow("10.0.0.1", t0 + 1ms));
  CHECK(!log.allow("10.0.0.1", t0 + 999ms));
  // Other keys are independent.
  auto other = log.allow("10.0.0.2", t0 + 500ms);
  REQUIRE(other);
  CHECK(*other == 0);
  // A period later: through, with the count of lines held back.
  auto later = log.allow("10.0.0.1", t0 + 1000ms);
  REQUIRE(later);
  CHECK(*later == 2);
  CHECK(!log.allow("10.0.0.1", t0 + 1500ms));
  auto after = log.allow("10.0.0.1", t0 + 5000ms);
  REQUIRE(after);
  CHECK(*after == 1);
  auto quiet = log.allow("10.0.0.1", t0 + 10000ms);
  REQUIRE(quiet);
  CHECK(*quiet == 0);
}

TEST_CASE("RateLimitedLog with a burst lets that many lines a period through, then counts the rest") {
  RateLimitedLog log(1000ms, 3);
  const auto t0 = Clock::time_point{} + 1h;
  // When a line comes (after t0), and what allow says: the count held back before it, or -1 if it
  // is held back itself. Three lines pass, the rest of the period is held back; the next period
  // starts with its first line, which reports the two held back.
  const std::pair<std::chrono::milliseconds, long long> steps[] = {
      {0ms, 0}, {1ms, 0}, {2ms, 0}, {3ms, -1}, {999ms, -1}, {1000ms, 2}, {1001ms, 0},
  };
  for (const auto& step : steps) {
    CAPTURE(step.first.count());
    const auto got = log.allow("", t0 + step.first);
    CHECK((got ? static_cast<long long>(*got) : -1) == step.second);
  }
}

// ---- the ZAP handler -----------------------------------------------------------------------------

TEST_CASE("ZAP requests get 200 only for CURVE with the derived client key (the rule of PROTOCOL.md 9.4)") {
  const auto keys = derive_keys(kZeroKey);
  zmq::context_t ctx;
  std::vector<std::pair<std::string, std::string>> rejects;
  ZapHandler zap(ctx, keys.client_public, [&](const std::string& address, const std::string& why) { rejects.emplace_back(address, why); });
  zmq::socket_t req(ctx, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.connect("inproc://zeromq.zap.01");
  const std::string good(reinterpret_cast<const char*>(keys.client_public.data()), 32);
  const std::string other(reinterpret_cast<const char*>(keys.server_public.data()), 32);

  auto ask = [&](std::vector<std::string> frames) {
    for (std::size_t i = 0; i < frames.size(); ++i)
      req.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    zmq::pollitem_t items[] = {{zap.socket().handle(), 0, ZMQ_POLLIN, 0}};
    const auto deadline = Clock::now() + 5s;
    std::vector<std::string> reply;
    while (reply.empty() && Clock::now() < deadline) {
      zmq::poll(items, 1, 20ms);
      zap.handle_requests();
      zmq::message_t part;
      if (!req.recv(part, zmq::recv_flags::dontwait)) continue;
      reply.push_back(part.to_string());
      while (part.more()) {
        (void)req.recv(part);
        reply.push_back(part.to_string());
      }
    }
    return reply;
  };
  using V = std::vector<std::string>;
  CHECK(ask({"1.0", "7", "taskmaster", "192.0.2.1", "", "CURVE", good}) == V{"1.0", "7", "200", "OK", "", ""});
  CHECK(zap.admitted() == 1);
  CHECK(rejects.empty());

  const V refused{"1.0", "8", "400", "authentication failed", "", ""};
  CHECK(ask({"1.0", "8", "taskmaster", "192.0.2.2", "", "CURVE", other}) == refused);               // another client key
  CHECK(ask({"1.0", "8", "taskmaster", "192.0.2.3", "", "CURVE", good.substr(0, 31)}) == refused);  // truncated
  CHECK(ask({"1.0", "8", "taskmaster", "192.0.2.4", "", "CURVE"}) == refused);                      // no credentials
  CHECK(ask({"1.0", "8", "elsewhere", "192.0.2.5", "", "CURVE", good}) == refused);                 // another domain
  CHECK(ask({"1.0", "8", "taskmaster", "192.0.2.6", "", "NULL"}) == refused);                       // no security
  CHECK(ask({"1.0", "8", "taskmaster", "192.0.2.7", "", "PLAIN", "user", "password"}) == refused);
  CHECK(ask({"2.0", "8", "taskmaster", "192.0.2.8", "", "CURVE", good}) == refused);  // another ZAP version
  CHECK(ask({"1.0", "8", "taskmaster"}) == refused);                                  // malformed
  CHECK(zap.admitted() == 1);
  CHECK(zap.rejected() == 8);
  REQUIRE(rejects.size() == 8);
  CHECK(rejects[0].first == "192.0.2.2");
  CHECK(contains(rejects[0].second, "client key"));
  CHECK(contains(rejects[3].second, "domain"));
  CHECK(contains(rejects[4].second, "NULL"));
  CHECK(contains(rejects[6].second, "malformed"));
  for (const auto& [address, why] : rejects) CHECK(!why.empty());
}

TEST_CASE("a peer with the derived keys gets through the ZAP handler to the master's ROUTER") {
  const auto keys = derive_keys(kZeroKey);
  MiniMaster m(keys);
  Watched peer;
  connect_peer(peer, m.ctx, m.endpoint, keys);
  REQUIRE(deliver(m, peer, "hello", 10s));
  CHECK(m.zap->admitted() >= 1);
  CHECK(m.zap->rejected() == 0);
  CHECK(m.rejects.empty());
  CHECK(peer.first(ConnectionEvent::Kind::Connected));
  CHECK(!peer.first(ConnectionEvent::Kind::HandshakeFailed));
  // And back, routed by the identity the ROUTER gave the connection.
  REQUIRE(m.received.size() == 1);
  const std::string& identity = m.received[0].identity;
  REQUIRE(m.router.socket->send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait));
  REQUIRE(m.router.socket->send(zmq::str_buffer("welcome"), zmq::send_flags::dontwait));
  std::string reply;
  REQUIRE(m.step_until(
      [&] {
        zmq::message_t part;
        if (peer.socket->recv(part, zmq::recv_flags::dontwait)) reply = part.to_string();
        return !reply.empty();
      },
      10s, &peer));
  CHECK(reply == "welcome");
}

TEST_CASE("a peer with the right server key but another client key is refused: logged, counted, nothing delivered") {
  const auto keys = derive_keys(kZeroKey);
  MiniMaster m(keys);
  Watched intruder;
  // Not immediate: its message waits in its queue and would be delivered if the handshake passed.
  connect_peer(intruder, m.ctx, m.endpoint, with_random_client(keys), /*immediate=*/false);
  REQUIRE(intruder.socket->send(zmq::str_buffer("intruder"), zmq::send_flags::dontwait));
  REQUIRE(m.step_until([&] { return m.zap->rejected() >= 1 && intruder.first(ConnectionEvent::Kind::HandshakeFailed); }, 10s, &intruder));
  REQUIRE(!m.rejects.empty());
  CHECK(m.rejects[0].first == "127.0.0.1");
  CHECK(contains(m.rejects[0].second, "client key"));
  CHECK(m.zap->admitted() == 0);
  // The peer learns why: ZAP status 400, a definite authentication failure.
  const auto failure = *intruder.first(ConnectionEvent::Kind::HandshakeFailed);
  CHECK(failure.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  CHECK(failure.value == 400);
  CHECK(is_definite_auth_failure(failure));
  CHECK(contains(describe_handshake_failure(failure, true, m.endpoint), "authentication failed"));
  CHECK(!intruder.first(ConnectionEvent::Kind::Connected));
  // An honest peer connecting afterwards gets through; the intruder's message never arrived.
  Watched peer;
  connect_peer(peer, m.ctx, m.endpoint, keys);
  REQUIRE(deliver(m, peer, "honest", 10s));
  CHECK(!m.got("intruder"));
  CHECK(m.received.size() == 1);
}

TEST_CASE("a peer with another shared key fails the handshake before any ZAP request") {
  const auto keys = derive_keys(kZeroKey);
  MiniMaster m(keys);
  Watched peer;
  connect_peer(peer, m.ctx, m.endpoint, derive_keys(generate_key()), /*immediate=*/false);
  REQUIRE(peer.socket->send(zmq::str_buffer("wrong key"), zmq::send_flags::dontwait));
  REQUIRE(m.step_until(
      [&] { return peer.first(ConnectionEvent::Kind::HandshakeFailed) && m.router.first(ConnectionEvent::Kind::HandshakeFailed); }, 10s,
      &peer));
  // The master cannot open the HELLO: a cryptographic protocol error on its side, no ZAP request.
  const auto master_side = *m.router.first(ConnectionEvent::Kind::HandshakeFailed);
  CHECK(master_side.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
  CHECK(master_side.value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC);
  CHECK(m.zap->admitted() == 0);
  CHECK(m.zap->rejected() == 0);
  CHECK(m.received.empty());
  // The peer only sees its connection closed mid-handshake.
  const auto peer_side = *peer.first(ConnectionEvent::Kind::HandshakeFailed);
  CHECK(peer_side.event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
  CHECK(!is_definite_auth_failure(peer_side));
  const std::string text = describe_handshake_failure(peer_side, true, m.endpoint);
  CHECK(contains(text, "authentication failed"));
  CHECK(contains(text, "different key"));
}

TEST_CASE("without a ZAP handler the CURVE master admits nobody (ZAP_ENFORCE_DOMAIN), even with the right keys") {
  const auto keys = derive_keys(kZeroKey);
  MiniMaster m(keys, /*with_zap=*/false);
  Watched peer;
  connect_peer(peer, m.ctx, m.endpoint, keys, /*immediate=*/false);
  REQUIRE(peer.socket->send(zmq::str_buffer("unchecked"), zmq::send_flags::dontwait));
  REQUIRE(m.step_until(
      [&] { return peer.first(ConnectionEvent::Kind::HandshakeFailed) && m.router.first(ConnectionEvent::Kind::HandshakeFailed); }, 10s,
      &peer));
  CHECK(m.received.empty());
  CHECK(!peer.first(ConnectionEvent::Kind::Connected));
  CHECK(!m.router.first(ConnectionEvent::Kind::Connected));
}

TEST_CASE("a peer without a key meets a keyed master, and a keyed peer an --insecure master: mechanism mismatch") {
  SUBCASE("the peer runs --insecure") {
    MiniMaster m(derive_keys(kZeroKey));
    Watched peer;
    connect_peer(peer, m.ctx, m.endpoint, std::nullopt, /*immediate=*/false);
    REQUIRE(peer.socket->send(zmq::str_buffer("plaintext"), zmq::send_flags::dontwait));
    REQUIRE(m.step_until([&] { return peer.first(ConnectionEvent::Kind::HandshakeFailed).has_value(); }, 10s, &peer));
    const auto e = *peer.first(ConnectionEvent::Kind::HandshakeFailed);
    CHECK(e.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
    CHECK(e.value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH);
    CHECK(is_definite_auth_failure(e));
    CHECK(contains(describe_handshake_failure(e, false, m.endpoint), "requires a key"));
    CHECK(m.received.empty());
    CHECK(m.zap->rejected() == 0);  // refused before ZAP
  }
  SUBCASE("the master runs --insecure") {
    MiniMaster m(std::nullopt);
    Watched peer;
    connect_peer(peer, m.ctx, m.endpoint, derive_keys(kZeroKey), /*immediate=*/false);
    REQUIRE(peer.socket->send(zmq::str_buffer("encrypted"), zmq::send_flags::dontwait));
    REQUIRE(m.step_until([&] { return peer.first(ConnectionEvent::Kind::HandshakeFailed).has_value(); }, 10s, &peer));
    const auto e = *peer.first(ConnectionEvent::Kind::HandshakeFailed);
    CHECK(e.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
    CHECK(e.value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH);
    CHECK(contains(describe_handshake_failure(e, true, m.endpoint), "runs without a key"));
    CHECK(m.received.empty());
  }
}

TEST_CASE("an --insecure master and an --insecure peer talk (NULL mechanism on both sides)") {
  MiniMaster m(std::nullopt);
  Watched peer;
  connect_peer(peer, m.ctx, m.endpoint, std::nullopt);
  REQUIRE(deliver(m, peer, "plain", 10s));
  CHECK(!peer.first(ConnectionEvent::Kind::HandshakeFailed));
}

// ---- what peers are told -------------------------------------------------------------------------

TEST_CASE("describe_handshake_failure always says 'authentication failed' and tells the mechanism mismatches apart") {
  const std::string endpoint = "tcp://192.0.2.1:5555";
  const std::vector<ConnectionEvent> events{
      event(ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL, 104),
      event(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH),
      event(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC),
      event(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND),
      event(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 400),
  };
  for (const auto& e : events) {
    for (bool secure : {true, false}) {
      CAPTURE(e.event);
      CAPTURE(e.value);
      CAPTURE(secure);
      const std::string text = describe_handshake_failure(e, secure, endpoint);
      CHECK(contains(text, "authentication failed"));
      CHECK(contains(text, endpoint));
    }
  }
  const auto& mismatch = events[1];
  const std::string keyed_peer = describe_handshake_failure(mismatch, true, endpoint);
  const std::string keyless_peer = describe_handshake_failure(mismatch, false, endpoint);
  CHECK(keyed_peer != keyless_peer);
  CHECK(contains(keyed_peer, "without a key"));
  CHECK(contains(keyed_peer, "--insecure"));
  CHECK(contains(keyless_peer, "requires a key"));
  CHECK(keyed_peer != describe_handshake_failure(events[0], true, endpoint));
  CHECK(keyless_peer != describe_handshake_failure(events[0], false, endpoint));
  CHECK(contains(describe_handshake_failure(events[4], true, endpoint), "400"));

  CHECK(!is_definite_auth_failure(events[0]));
  CHECK(is_definite_auth_failure(events[1]));
  CHECK(is_definite_auth_failure(events[2]));
  CHECK(!is_definite_auth_failure(events[3]));
  CHECK(is_definite_auth_failure(events[4]));
}

}  // TEST_SUITE

}  // namespace taskmaster::protocol

// ---- the handshake probe (probe.h): a refused key told from a master that is away -------------

namespace taskmaster::protocol {
namespace {

// A TCP listener on loopback that takes connections and, if `close_at_once`, closes each at once (a
// proxy with nothing behind it); else it leaves them unanswered (a stopped process's backlog).
struct RawListener {
  int fd = -1;
  std::string endpoint;
  std::thread closer;
  std::atomic<bool> stop{false};
  explicit RawListener(bool close_at_once) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    endpoint = "tcp://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    if (close_at_once)
      closer = std::thread([this] {
        while (!stop) {
          pollfd p{fd, POLLIN, 0};
          if (::poll(&p, 1, 20) == 1)
            if (const int c = ::accept(fd, nullptr, nullptr); c >= 0) ::close(c);
        }
      });
  }
  ~RawListener() {
    stop = true;
    if (closer.joinable()) closer.join();
    ::close(fd);
  }
};

}  // namespace

TEST_SUITE("auth") {

TEST_CASE("the probe: WELCOME for the right key, refused for another, NULL for an insecure master") {
  const auto keys = derive_keys(kZeroKey);
  MiniMaster m(keys);
  CHECK(probe_master(m.endpoint, keys, 2s) == ProbeVerdict::KeyAccepted);
  CHECK(probe_master(m.endpoint, derive_keys(generate_key()), 2s) == ProbeVerdict::KeyRefused);
  // The master never got as far as asking ZAP, and admitted nobody.
  CHECK(m.zap->admitted() == 0);
  MiniMaster open(std::nullopt);
  CHECK(probe_master(open.endpoint, keys, 2s) == ProbeVerdict::NoKeyRequired);
}

TEST_CASE("the probe: no master answering is never a refused key") {
  const auto keys = derive_keys(kZeroKey);
  {
    RawListener proxy(/*close_at_once=*/true);  // a TCP proxy whose master is down
    CHECK(probe_master(proxy.endpoint, keys, 2s) == ProbeVerdict::NoAnswer);
  }
  {
    RawListener stalled(/*close_at_once=*/false);  // accepted by the kernel, never answered
    const auto t0 = Clock::now();
    CHECK(probe_master(stalled.endpoint, keys, 300ms) == ProbeVerdict::NoAnswer);
    CHECK(Clock::now() - t0 < 2s);  // bounded by its timeout
  }
  std::string closed;
  {
    RawListener gone(false);
    closed = gone.endpoint;
  }
  CHECK(probe_master(closed, keys, 2s) == ProbeVerdict::NoAnswer);  // connection refused
  CHECK(probe_master("tcp://no-such-host.invalid:5555", keys, 2s) == ProbeVerdict::NoAnswer);
}

TEST_CASE("HandshakeJudge: a failure without detail is final only when a probe finds the key refused") {
  const auto keys = derive_keys(kZeroKey);
  ConnectionEvent no_detail;
  no_detail.kind = ConnectionEvent::Kind::HandshakeFailed;
  no_detail.event = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
  const auto t0 = Clock::now();
  {
    RawListener proxy(true);
    HandshakeJudge judge(proxy.endpoint, keys);
    for (int i = 0; i < 5; ++i) CHECK(!judge.failed(no_detail, t0 + i * HandshakeJudge::kProbeInterval));
  }
  MiniMaster m(keys);
  HandshakeJudge wrong(m.endpoint, derive_keys(generate_key()));
  // One refusal is not enough (a master dying between greeting and HELLO looks the same); nor is
  // a second failure before the confirming probe is due. The confirming probe decides.
  CHECK(!wrong.failed(no_detail, t0));
  CHECK(!wrong.failed(no_detail, t0 + HandshakeJudge::kConfirmInterval / 2));
  const auto why = wrong.failed(no_detail, t0 + HandshakeJudge::kConfirmInterval);
  REQUIRE(why);
  CHECK(contains(*why, "authentication failed"));
  HandshakeJudge right(m.endpoint, keys);
  CHECK(!right.failed(no_detail, t0));
  // libzmq's own verdicts need no probe.
  ConnectionEvent refused = no_detail;
  refused.event = ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  refused.value = 400;
  CHECK(right.failed(refused, t0));
  HandshakeJudge insecure(m.endpoint, std::nullopt);
  CHECK(!insecure.failed(no_detail, t0));
}

}  // TEST_SUITE

TEST_SUITE("http token") {

TEST_CASE("the HTTP token and CSRF value derive from the key: fixed for a key, different for another, never the key") {
  const std::string zeros(64, '0');
  const auto a = derive_http_secrets(zeros);
  // docs/HTTP.md's vector (kdf ids 3 and 4, context tmhttp01, from derive_keys' root).
  CHECK(a.token == "802c743d26e69785638b5bdf88e6fdb4");
  CHECK(a.csrf == "abdee6bd21072a6054f0fa9dbc45b4ce");
  CHECK(a.token.size() == 32);
  CHECK(a.token != a.csrf);
  const auto b = derive_http_secrets(zeros.substr(1) + "1");
  CHECK(b.token != a.token);
  CHECK(b.csrf != a.csrf);
  CHECK(derive_http_secrets(zeros).token == a.token);
  CHECK(a.token.find(zeros.substr(0, 8)) == std::string::npos);
}

}  // TEST_SUITE

}  // namespace taskmaster::protocol
