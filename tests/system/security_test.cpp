// The auth key and hostile input, against real master processes on loopback.
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <doctest/doctest.h>

#include "protocol/auth.h"
#include "protocol/sockets.h"
#include "support/cluster.h"

namespace taskmaster::test {

namespace proto = protocol;

namespace {

// A hand-driven DEALER connection to a master, for sending what no honest peer sends.
class RawPeer {
 public:
  RawPeer(const std::string& endpoint, std::optional<proto::CurveKeys> curve, bool limit_size = true)
      : monitor_(ctx_), socket_(ctx_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    if (!limit_size) socket_.set(zmq::sockopt::maxmsgsize, int64_t{-1});
    if (curve) {
      socket_.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(curve->server_public.data(), 32));
      socket_.set(zmq::sockopt::curve_publickey, zmq::const_buffer(curve->client_public.data(), 32));
      socket_.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(curve->client_secret.data(), 32));
    }
    monitor_.attach(socket_);
    socket_.connect(endpoint);
  }
  // Waits for the handshake's outcome: true once it succeeded, false if it failed or timed out.
  bool handshake(std::chrono::milliseconds timeout, proto::ConnectionEvent* failure = nullptr) {
    const auto deadline = Clock::now() + timeout;
    zmq::pollitem_t items[] = {{monitor_.socket().handle(), 0, ZMQ_POLLIN, 0}};
    while (Clock::now() < deadline) {
      zmq::poll(items, 1, std::chrono::milliseconds(50));
      while (auto e = monitor_.next()) {
        if (e->kind == proto::ConnectionEvent::Kind::Connected) return true;
        if (e->kind == proto::ConnectionEvent::Kind::HandshakeFailed) {
          if (failure) *failure = *e;
          return false;
        }
      }
    }
    return false;
  }
  void send(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i)
      socket_.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  void send(const proto::Message& m) { send(proto::encode(m)); }
  // The next message the master sends, decoded, waiting at most `timeout`.
  std::optional<proto::Message> receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      zmq::poll(items, 1, std::chrono::milliseconds(50));
      if (auto in = proto::receive(socket_, false)) {
        auto m = in->decode();
        if (m) return std::move(*m);
      }
    }
    return std::nullopt;
  }
  // The next ERROR reply (skipping heartbeats and the like).
  std::optional<proto::ErrorReply> error(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto m = receive(deadline - Clock::now() > 0ms ? std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                                                     : 0ms);
      if (m && std::holds_alternative<proto::ErrorReply>(*m)) return std::get<proto::ErrorReply>(*m);
    }
    return std::nullopt;
  }

 private:
  zmq::context_t ctx_;
  proto::ConnectionMonitor monitor_;
  zmq::socket_t socket_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

proto::CurveKeys keys_of(const Cluster& c) { return *c.client_options().curve; }

// The master still works: a normal job through the real CLI.
void check_still_serving(Cluster& c) {
  auto r = c.run({"submit", "square", "--each", "--wait", "--json"}, "2\n3\n", 30s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  long long sum = 0;
  for (const auto& j : r.json_lines()) sum += j["result"].get<long long>();
  CHECK(sum == 13);
  CHECK(c.master().running());
}

}  // namespace

TEST_SUITE("security") {

TEST_CASE("a wrong key gets exit 4 and 'authentication failed', quickly - the master logs it and serves on") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  TestKey other;
  for (const auto& args : std::vector<std::vector<std::string>>{{"submit", "square", "1"}, {"status"}, {"wait", "1"}}) {
    CAPTURE(args[0]);
    std::vector<std::string> argv{kTaskmaster};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--connect", c.endpoint(), "--key-file", other.path()});
    auto p = c.start(argv);
    auto r = finish(*p, 20s);
    CHECK(r.code == 4);
    CHECK(r.err.find("authentication failed") != std::string::npos);
    CHECK(r.err.find(c.endpoint()) != std::string::npos);
    CHECK(r.elapsed < 5s);
  }
  // A worker with the wrong key says so and exits, rather than retrying forever.
  auto w = c.start({kTaskmaster, "worker", "--connect", c.endpoint(), "--key-file", other.path()});
  auto wr = finish(*w, 30s);
  CHECK(wr.code == 4);
  CHECK(wr.err.find("authentication failed") != std::string::npos);
  CHECK(c.master().wait_for_err([](const std::string& e) { return e.find("rejected a connection from 127.0.0.1") != std::string::npos; },
                                10s));
  auto st = c.status();
  CHECK(st["counters"]["submitted"] == 0);  // the wrong key submitted nothing
  CHECK(st["workers"].size() == 1);         // and no worker joined with it
  check_still_serving(c);
}

TEST_CASE("no key: clients exit 4, the master refuses to start unless --insecure, and says so loudly then") {
  TempDir home;
  // An environment with no key anywhere: no TASKMASTER_KEY*, an empty home.
  std::vector<std::string> env{"HOME=" + home.path(), "XDG_CONFIG_HOME=" + home.path() + "/config",
                               "TASKMASTER_KEY_FILE=", "TASKMASTER_KEY_UNSET=1"};
  ::unsetenv("TASKMASTER_KEY");
  auto master = std::make_unique<ChildProcess>(std::vector<std::string>{kTaskmaster, "master", "--bind", "tcp://127.0.0.1:0"},
                                               ChildProcess::Options{std::nullopt, env});
  auto r = finish(*master, 20s);
  CHECK(r.code == 4);
  CHECK(r.err.find("no key") != std::string::npos);
  CHECK(r.err.find("taskmaster keygen") != std::string::npos);
  auto client = std::make_unique<ChildProcess>(std::vector<std::string>{kTaskmaster, "status", "--connect", "tcp://127.0.0.1:9"},
                                               ChildProcess::Options{std::nullopt, env});
  auto cr = finish(*client, 20s);
  CHECK(cr.code == 4);
  CHECK(cr.err.find("no key") != std::string::npos);

  Cluster insecure(true);
  insecure.start_master();
  CHECK(
      insecure.master().wait_for_err([](const std::string& e) { return e.find("WITHOUT a key (--insecure)") != std::string::npos; }, 10s));
  insecure.start_worker({"-j", "1"});
  check_still_serving(insecure);
  // A client with a key meets an insecure master: told which side lacks what.
  auto keyed = insecure.start({kTaskmaster, "status", "--connect", insecure.endpoint(), "--key-file", insecure.key().path()});
  auto kr = finish(*keyed, 20s);
  CHECK(kr.code == 4);
  CHECK(kr.err.find("runs without a key (--insecure)") != std::string::npos);
}

TEST_CASE("a key file that group or others can read is refused, as ssh does - so are empty and short keys") {
  Cluster c;
  c.start_master();
  TempDir dir;
  const std::string path = dir.path() + "/key";
  SUBCASE("mode 0644") {
    REQUIRE(proto::write_key_file(path, proto::generate_key(), false).has_value());
    ::chmod(path.c_str(), 0644);
    auto r = c.run({"status", "--key-file", path});
    CHECK(r.code == 4);
    CHECK(r.err.find("chmod 600 " + path) != std::string::npos);
  }
  SUBCASE("empty") {
    REQUIRE(proto::write_key_file(path, "", false).has_value());
    auto r = c.run({"status", "--key-file", path});
    CHECK(r.code == 4);
    CHECK(r.err.find("is empty") != std::string::npos);
  }
  SUBCASE("too short") {
    REQUIRE(proto::write_key_file(path, "abc", false).has_value());
    auto r = c.run({"status", "--key-file", path});
    CHECK(r.code == 4);
    CHECK(r.err.find("too short") != std::string::npos);
  }
  SUBCASE("missing") {
    auto r = c.run({"status", "--key-file", path});
    CHECK(r.code == 4);
    CHECK(r.err.find("No such file") != std::string::npos);
  }
}

TEST_CASE("a client that knows only the server's public key is refused by the ZAP handler") {
  Cluster c;
  c.start_master();
  auto keys = keys_of(c);
  // Right server key, a client key pair of its own: the CURVE handshake works, ZAP says 400.
  proto::CurveKeys forged = keys;
  crypto_box_keypair(forged.client_public.data(), forged.client_secret.data());
  RawPeer peer(c.endpoint(), forged);
  proto::ConnectionEvent failure;
  CHECK_FALSE(peer.handshake(5s, &failure));
  CHECK(failure.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  CHECK(failure.value == 400);
  CHECK(
      c.master().wait_for_err([](const std::string& e) { return e.find("not derived from this master's key") != std::string::npos; }, 10s));
  // The right keys get in.
  RawPeer good(c.endpoint(), keys);
  CHECK(good.handshake(5s));
}

TEST_CASE("without a ZAP handler answering, ZAP_ENFORCE_DOMAIN still refuses unknown client keys") {
  // In this process: a CURVE master socket with no ZAP handler in its context. libzmq's default
  // would admit any client that knows the server key ("Stonehouse"); the master socket must not.
  zmq::context_t ctx;
  proto::MasterSocketOptions o;
  o.endpoint = "tcp://127.0.0.1:0";
  o.curve = proto::derive_keys(proto::generate_key());
  auto server = proto::make_master_socket(ctx, o);
  proto::CurveKeys forged = *o.curve;
  crypto_box_keypair(forged.client_public.data(), forged.client_secret.data());
  RawPeer peer(proto::bound_endpoint(server), forged);
  CHECK_FALSE(peer.handshake(3s));
  peer.send(proto::Status{1});
  zmq::pollitem_t items[] = {{server.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, std::chrono::milliseconds(500));
  CHECK_FALSE(proto::receive(server, true).has_value());  // nothing got through
}

TEST_CASE("random bytes, stalled connections and oversized messages do not hurt the master") {
  Cluster c;
  c.start_master({"--handshake-timeout", "1"});
  c.start_worker({"-j", "1"});
  const int port = std::stoi(c.port());
  std::mt19937 rng(7);
  std::vector<int> stalled;
  for (int i = 0; i < 5; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    if (i % 2 == 0) {
      std::string junk(2000, '\0');
      for (auto& ch : junk) ch = static_cast<char>(rng());
      (void)::write(fd, junk.data(), junk.size());
    }
    stalled.push_back(fd);  // the others send nothing at all
  }
  // A peer with the right key sends a message over the size limit: the master drops that
  // connection (libzmq's ZMQ_MAXMSGSIZE) and carries on.
  RawPeer big(c.endpoint(), keys_of(c), /*limit_size=*/false);
  REQUIRE(big.handshake(5s));
  big.send({std::string(proto::kSignature), "STATUS", std::string(proto::kMaxMessageBytes + 8192, ' ')});
  CHECK_FALSE(big.receive(1500ms).has_value());
  check_still_serving(c);
  for (int fd : stalled) ::close(fd);
}

TEST_CASE("every kind of malformed message gets its error reply, and the master serves on") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  RawPeer peer(c.endpoint(), keys_of(c));
  REQUIRE(peer.handshake(5s));
  const std::string sig(proto::kSignature);
  std::string deep(100000, '[');
  struct Case {
    std::vector<std::string> frames;
    ErrorCode code;
  };
  const std::vector<Case> cases{
      {{sig, "STATUS"}, ErrorCode::BadFrame},
      {{sig, "STATUS", "{}", "extra"}, ErrorCode::BadFrame},
      {{"TASKMASTER/0", "STATUS", "{}"}, ErrorCode::BadSignature},
      {{sig, "SELFDESTRUCT", "{}"}, ErrorCode::UnknownCommand},
      {{sig, "SUBMIT", "{not json"}, ErrorCode::BadJson},
      {{sig, "SUBMIT", deep}, ErrorCode::BadJson},
      {{sig, "SUBMIT", "[1,2]"}, ErrorCode::BadField},
      {{sig, "SUBMIT", R"({"tasks":[{"function":"square","args":1},{"function":"bad name!"}]})"}, ErrorCode::BadField},
      {{sig, "SUBMIT", R"({"tasks":[{"function":"square","priority":"high"}]})"}, ErrorCode::BadField},
      {{sig, "WAIT", R"({"job":-1})"}, ErrorCode::BadField},
      {{sig, "SUBMIT", "{\"tasks\":[{\"function\":\"echo\",\"args\":\"" + std::string(proto::kMaxArgsBytes + 10, 'x') + "\"}]}"},
       ErrorCode::TooLarge},
      {{sig, "RESULTS", R"({"results":[]})"}, ErrorCode::NotAllowed},  // not a worker
      {{sig, "TASKS", R"({"tasks":[]})"}, ErrorCode::NotAllowed},      // only the master sends TASKS
      {{sig, "STATUS", "\xff\xfe{}"}, ErrorCode::BadJson},
  };
  for (const auto& k : cases) {
    CAPTURE(k.frames.size() > 1 ? k.frames[1] : std::string());
    CAPTURE(error_code_name(k.code));
    peer.send(k.frames);
    auto e = peer.error(10s);
    REQUIRE(e.has_value());
    CHECK(e->code == k.code);
  }
  // A batch with one bad task is rejected whole, naming the task's index.
  peer.send({sig, "SUBMIT", R"({"tasks":[{"function":"square","args":1},{"function":"square","max_attempts":0}]})"});
  auto e = peer.error(10s);
  REQUIRE(e.has_value());
  CHECK(e->message.find("tasks[1]") != std::string::npos);
  auto st = c.status();
  CHECK(st["counters"]["submitted"] == 0);
  CHECK(st["counters"]["bad_messages"].get<int>() >= static_cast<int>(cases.size()));
  check_still_serving(c);
}

TEST_CASE("a worker cannot finish a task it does not hold, nor replay a result") {
  Cluster c;
  c.start_master();
  // The impostor registers as a worker for a function nobody else serves... so it holds nothing
  // of the real job, which a real worker runs.
  RawPeer impostor(c.endpoint(), keys_of(c));
  REQUIRE(impostor.handshake(5s));
  impostor.send(proto::Hello{"impostor", "h", 1, {"nothing"}, {"default"}, 1, {}});
  REQUIRE(impostor.receive(5s).has_value());  // WELCOME
  auto s = c.run({"submit", "sleep", "1"});
  const std::string job = s.lines().at(0);
  const proto::TaskId task = std::stoull(job);  // the first job's first task has id 1 too
  impostor.send(proto::Results{{proto::Result{task, 1, true, "\"forged\""}}});
  impostor.send(proto::Results{{proto::Result{task, 1, true, "\"forged again\""}}});
  wait_until([&] { return c.status()["counters"]["unheld_results"] == 2; }, 10s, "both forged results counted");
  c.start_worker({"-j", "1"});
  auto w = c.run({"wait", job, "--json"});
  REQUIRE(w.code == 0);
  CHECK(w.json_lines().at(0)["result"] == 1);  // the real result, not the forged one
}

TEST_CASE("with the key, a known payload never appears on the wire - without it, it does") {
  if (::geteuid() != 0 || ::access("/usr/bin/tcpdump", X_OK) != 0) {
    MESSAGE("skipped: needs root and tcpdump to capture loopback traffic");
    return;
  }
  for (bool insecure : {false, true}) {
    CAPTURE(insecure);
    Cluster c(insecure);
    c.start_master();
    c.start_worker({"-j", "1"});
    c.wait_for_workers(1);
    TempDir dir;
    const std::string pcap = dir.path() + "/wire.pcap";
    ChildProcess dump({"/usr/bin/tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w", pcap, "tcp port " + c.port()});
    REQUIRE(dump.wait_for_err([](const std::string& e) { return e.find("listening on") != std::string::npos; }, 20s));
    const std::string canary = "canary-7f3a9c1e-payload";
    auto r = c.run({"submit", "echo", "\"" + canary + "\"", "--wait"});
    CHECK(r.code == 0);
    CHECK(r.out.find(canary) != std::string::npos);
    dump.signal(SIGINT);
    REQUIRE(dump.wait(20s).has_value());
    const std::string bytes = read_file(pcap);
    CHECK(bytes.size() > 500);  // the capture saw the traffic
    CHECK((bytes.find(canary) != std::string::npos) == insecure);
  }
}

}  // TEST_SUITE

}  // namespace taskmaster::test
