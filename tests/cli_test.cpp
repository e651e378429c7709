// The command line in-process: argument vectors through cli::run (exit codes of cli/output.h), and
// the output formats. Nothing here needs a master: every command line tested fails before it
// would connect, connects to a closed port (exit 3), or talks to WrongMaster below.
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"

#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "protocol/sockets.h"

namespace taskmaster {
namespace {

using nlohmann::json;
namespace proto = protocol;

std::string joined(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += (s.empty() ? "" : " ") + ("'" + a + "'");
  return s;
}

// A client command that, should its parsing wrongly succeed, fails fast (exit 3) instead of
// waiting for a master.
std::vector<std::string> offline(std::vector<std::string> args) {
  args.insert(args.end(), {"--connect", "tcp://127.0.0.1:1", "--connect-timeout", "0.1"});
  return args;
}

// The same, past the parser: no key needed, so an accepted command line ends in exit 3.
std::vector<std::string> offline_insecure(std::vector<std::string> args) {
  args = offline(std::move(args));
  args.push_back("--insecure");
  return args;
}

// What cli::run returned and wrote to stderr.
struct Ran {
  int code = -1;
  std::string err;
};

Ran run_capturing(std::vector<std::string> args) {
  std::fflush(stderr);
  std::cerr.flush();
  FILE* capture = std::tmpfile();
  REQUIRE(capture != nullptr);
  const int saved = ::dup(2);
  ::dup2(::fileno(capture), 2);
  Ran r;
  r.code = cli::run(std::move(args));
  std::fflush(stderr);
  std::cerr.flush();
  ::dup2(saved, 2);
  ::close(saved);
  std::rewind(capture);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, capture)) > 0;) r.err.append(buf, n);
  std::fclose(capture);
  return r;
}

// A usage error: exit 2 and exactly one line on stderr, "taskmaster: " and the message.
std::string usage_error(const std::vector<std::string>& args) {
  CAPTURE(joined(args));
  const Ran r = run_capturing(args);
  CHECK(r.code == cli::kExitUsage);
  CHECK_MESSAGE(r.err.rfind("taskmaster: ", 0) == 0, r.err);
  CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  CHECK(r.err.back() == '\n');
  return r.err;
}

// TASKMASTER_ADDRESS as given (nullptr: unset) for one scope; the old value comes back after.
class AddressVariable {
 public:
  explicit AddressVariable(const char* value) {
    if (const char* old = std::getenv(cli::kAddressEnv)) old_ = old;
    assign(value);
  }
  ~AddressVariable() { assign(old_ ? old_->c_str() : nullptr); }
  AddressVariable(const AddressVariable&) = delete;
  AddressVariable& operator=(const AddressVariable&) = delete;

 private:
  static void assign(const char* value) {
    if (value) ::setenv(cli::kAddressEnv, value, 1);
    else ::unsetenv(cli::kAddressEnv);
  }
  std::optional<std::string> old_;
};

// A master that breaks the protocol: it answers CANCEL with REPORT and every other request with
// CANCELLED (without security: clients say --insecure).
class WrongMaster {
 public:
  WrongMaster() : socket_(proto::make_master_socket(ctx_, options())), endpoint_(proto::bound_endpoint(socket_)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~WrongMaster() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  static proto::MasterSocketOptions options() {
    proto::MasterSocketOptions o;
    o.endpoint = "tcp://127.0.0.1:0";
    return o;
  }
  void serve() {
    while (!stop_) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));  // then look at stop_ again
      while (auto in = proto::receive(socket_, true)) {
        auto m = in->decode();
        if (!m) continue;
        if (auto* c = std::get_if<proto::Cancel>(&*m)) proto::send_to(socket_, in->identity, proto::Report{c->req, json::object()});
        else if (auto* st = std::get_if<proto::Status>(&*m)) proto::send_to(socket_, in->identity, proto::Cancelled{st->req, 1, 0});
        else if (auto* w = std::get_if<proto::Wait>(&*m)) proto::send_to(socket_, in->identity, proto::Cancelled{w->req, 1, 0});
        else if (auto* sub = std::get_if<proto::Submit>(&*m)) proto::send_to(socket_, in->identity, proto::Cancelled{sub->req, 1, 0});
      }
    }
  }

  zmq::context_t ctx_;
  zmq::socket_t socket_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::vector<std::string> keys(const json& object) {
  std::vector<std::string> k;
  for (const auto& item : object.items()) k.push_back(item.key());
  std::sort(k.begin(), k.end());
  return k;
}

// One line of `--json` output, parsed.
json json_line(proto::JobId job, const proto::Outcome& o) {
  std::string out;
  cli::append_outcome(out, job, o, true);
  REQUIRE(!out.empty());
  CHECK(out.back() == '\n');
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  const json v = json::parse(out, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(v.is_discarded());
  REQUIRE(v.is_object());
  return v;
}

proto::Outcome outcome(proto::TaskId task, std::string args, proto::TaskState status, std::string value, std::uint32_t attempts,
                       std::string worker) {
  proto::Outcome o;
  o.task = task;
  o.args = std::move(args);
  o.status = status;
  o.value = std::move(value);
  o.attempts = attempts;
  o.worker = std::move(worker);
  return o;
}

TEST_SUITE("cli") {

TEST_CASE("bad command lines are usage errors (exit 2)") {
  const std::vector<std::vector<std::string>> cases{
      {},                     // no subcommand
      {"frobnicate"},         // unknown subcommand
      {"--bogus"},            // unknown flag
      {"status", "--bogus"},  // unknown flag of a subcommand
      {"submit"},             // no FUNCTION
      offline({"submit", "square", "1", "--each"}),
      offline({"submit", "square", "1", "--json"}),  // --json needs --wait
      offline({"submit", "square", "1", "--delay=-1"}),
      offline({"submit", "square", "1", "--delay", "-1"}),
      offline({"submit", "square", "1", "--delay", "abc"}),
      offline({"submit", "square", "1", "--max-attempts", "0"}),
      offline({"submit", "square", "1", "--max-attempts", "1001"}),
      offline({"submit", "square", "1", "--timeout", "0"}),
      offline({"submit", "square", "1", "--priority", "high"}),
      offline({"submit", "square", "1", "-q", "bad queue"}),
      offline({"submit", "square", "1", "--queue", ""}),
      offline({"submit", "square", "1", "--idempotency-key", ""}),
      offline({"submit", "square", "1", "--connect-timeout", "0"}),
      offline({"wait", "abc"}),
      offline({"results", "abc"}),
      offline({"cancel", "abc"}),
      offline({"wait", "0"}),
      offline({"wait"}),
      offline({"cancel"}),
      offline({"status", "extra"}),
      offline({"status", "0"}),
      offline({"status", "--watch", "0"}),
      offline({"status", "--watch", "soon"}),
      offline({"job"}),
      offline({"job", "0"}),
      offline({"jobs", "-n", "0"}),
      offline({"jobs", "-n", "1001"}),
      offline({"purge"}),
      offline({"purge", ""}),
      {"worker", "-j", "0"},
      {"worker", "--threads", "4097"},
      {"worker", "-q", "bad/queue"},
      offline({"health", "--timeout", "0"}),
      offline({"health", "--timeout", "-1"}),
      offline({"health", "--retry-timeout", "5"}),  // a probe does not retry
      offline({"health", "extra"}),
      {"--check-args"},  // still needs a subcommand
      {"--check-args", "master", "--bogus"},
      {"--check-args", "worker", "-j", "0"},
      {"--check-args", "master", "--data-dir", "d", "--in-memory"},
      {"master", "--check-args"},  // it goes before the subcommand
  };
  for (const auto& args : cases) {
    CAPTURE(joined(args));
    CHECK(cli::run(args) == cli::kExitUsage);
  }
}

TEST_CASE("an invalid function name is a usage error, found before connecting") {
  CHECK(cli::run(offline({"submit", "bad name!", "1"})) == cli::kExitUsage);
  CHECK(cli::run(offline({"submit", std::string(129, 'f'), "1"})) == cli::kExitUsage);
}

TEST_CASE("--help and --version succeed (exit 0)") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"-h"}, {"--version"}, {"submit", "--help"}, {"worker", "--help"}, {"wait", "--help"}}) {
    CAPTURE(joined(args));
    CHECK(cli::run(args) == cli::kExitOk);
  }
}

TEST_CASE("--check-args parses a whole command line and exits 0 without running it") {
  // Run, each would fail: no master at tcp://127.0.0.1:1 (exit 3), or no key here (exit 4).
  for (const auto& args : std::vector<std::vector<std::string>>{
           offline({"--check-args", "submit", "square", "7", "--wait", "--json", "--timeout", "5"}),
           offline({"--check-args", "health", "--verbose"}), offline({"--check-args", "status", "--json"}),
           offline({"--check-args", "status", "--watch"}), offline({"--check-args", "status", "--watch", "5"}),
           offline({"--check-args", "status", "12"}), offline({"--check-args", "job", "12", "--json"}),
           offline({"--check-args", "jobs", "-n", "5", "--json"}), offline({"--check-args", "purge", "default", "--yes"})}) {
    CAPTURE(joined(args));
    CHECK(cli::run(args) == cli::kExitOk);
    std::vector<std::string> plain(args.begin() + 1, args.end());
    CHECK(cli::run(plain) != cli::kExitOk);
  }
  CHECK(cli::run({"--check-args", "master", "--bind", "tcp://0.0.0.0:5555", "--data-dir", "/data"}) == cli::kExitOk);
  CHECK(cli::run({"--check-args", "worker", "--connect", "tcp://master:5555", "-j", "2", "-q", "a", "-q", "b"}) == cli::kExitOk);
  // Hidden from --help.
  CLI::App app{"taskmaster", "taskmaster"};
  cli::Runners runners;
  cli::add_commands(app, runners);
  CHECK(app.help().find("check-args") == std::string::npos);
  CHECK(app.help().find("health") != std::string::npos);
}

TEST_CASE("format_health is one line: master=ID uptime_s=S workers=N tasks=N") {
  const json report = json::parse(R"({"master": "4f2a", "uptime_s": 12.34, "workers": [{"id": "w1"}, {"id": "w2"}],
                                      "jobs": 2, "tasks": 5000000000})");
  CHECK(cli::format_health(report) == "master=4f2a uptime_s=12.3 workers=2 tasks=5000000000\n");
  CHECK(cli::format_health(json::object()) == "master= uptime_s=0.0 workers=0 tasks=0\n");
}

// A key file that does not exist: a master or worker whose command line is wrongly accepted
// stops at once (exit 4) instead of running.
const std::string kMissingKey = "/nonexistent/taskmaster-test-key";

const std::vector<std::vector<std::string>> kClientCommands{
    {"submit", "square", "1"}, {"wait", "1"}, {"results", "1"}, {"status"}, {"cancel", "1"}};

TEST_CASE("HOST:PORT is tcp://HOST:PORT for every client command") {
  const AddressVariable unset(nullptr);
  for (const auto& command : kClientCommands) {
    for (const std::string endpoint : {"127.0.0.1:1", "-c127.0.0.1:1", "TCP://127.0.0.1:01"}) {
      auto args = command;
      if (endpoint.rfind("-c", 0) == 0) args.push_back(endpoint);
      else args.insert(args.end(), {"--connect", endpoint});
      args.insert(args.end(), {"--connect-timeout", "0.1", "--insecure"});
      CAPTURE(joined(args));
      const Ran r = run_capturing(args);
      CHECK(r.code == cli::kExitUnreachable);  // parsed, normalised and tried: nothing listens on port 1
      CHECK_MESSAGE(r.err.find("the master at tcp://127.0.0.1:1: ") != std::string::npos, r.err);
    }
  }
}

TEST_CASE("a bad endpoint is a usage error that names the option and shows the form expected") {
  const AddressVariable unset(nullptr);
  CHECK(usage_error({"status", "--connect", "tcp://127.0.0.1:99999"}) ==
        "taskmaster: --connect 'tcp://127.0.0.1:99999': port 99999 is out of range (1-65535); expected HOST:PORT or "
        "tcp://HOST:PORT, e.g. tcp://10.0.0.5:5555\n");
  CHECK(usage_error({"status", "-c", "tcp://127.0.0.1:99999"}).rfind("taskmaster: --connect 'tcp://127.0.0.1:99999': ", 0) == 0);
  CHECK(usage_error({"master", "--bind", "tcp://127.0.0.1:99999", "--key-file", kMissingKey}) ==
        "taskmaster: --bind 'tcp://127.0.0.1:99999': port 99999 is out of range (0-65535); expected HOST:PORT or "
        "tcp://HOST:PORT, e.g. tcp://0.0.0.0:5555 (port 0 picks a free port)\n");
  CHECK(usage_error({"master", "-b", "tcp://localhost:5555", "--key-file", kMissingKey})
            .rfind("taskmaster: --bind 'tcp://localhost:5555': 'localhost' is neither an IP address nor a network interface", 0) == 0);
  CHECK(usage_error({"worker", "--connect", "http://master:5555", "--key-file", kMissingKey})
            .rfind("taskmaster: --connect 'http://master:5555': unknown scheme 'http://'", 0) == 0);
  CHECK(usage_error({"bench", "--connect", "127.0.0.1:0"}).rfind("taskmaster: --connect '127.0.0.1:0': port 0 is only for binding", 0) ==
        0);
  for (const std::string bad : {"", "127.0.0.1", "127.0.0.1:abc", "127.0.0.1:-1", "tcp://:5555", "tcp://*:5555", "udp://127.0.0.1:5555",
                                "inproc://master", "127.0.0.1 :5555", "::1:5555", "tcp://[::1]", "tcp://999.1.1.1:5555"}) {
    for (auto args : kClientCommands) {
      args.insert(args.end(), {"--connect", bad, "--connect-timeout", "0.1", "--insecure"});
      usage_error(args);
    }
    usage_error({"worker", "--connect", bad, "--key-file", kMissingKey});
    usage_error({"bench", "--connect", bad});
  }
  for (const std::string bad : {"", "tcp://127.0.0.1:65536", "0.0.0.0", "tcp://0.0.0.0:x", "http://0.0.0.0:80", "tcp://[::1:0"})
    usage_error({"master", "--bind", bad, "--key-file", kMissingKey});
}

TEST_CASE("TASKMASTER_ADDRESS is an endpoint with the same check as --connect") {
  SUBCASE("a bad value is a usage error that names the variable") {
    const AddressVariable bad("tcp://127.0.0.1:99999");
    const std::string expected =
        "taskmaster: TASKMASTER_ADDRESS 'tcp://127.0.0.1:99999': port 99999 is out of range (1-65535); "
        "expected HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:5555\n";
    for (auto args : kClientCommands) {
      args.insert(args.end(), {"--connect-timeout", "0.1", "--insecure"});
      CHECK(usage_error(args) == expected);
    }
    CHECK(usage_error({"worker", "--key-file", kMissingKey}) == expected);
  }
  SUBCASE("HOST:PORT works there too") {
    const AddressVariable address("127.0.0.1:1");
    const Ran r = run_capturing({"status", "--connect-timeout", "0.1", "--insecure"});
    CHECK(r.code == cli::kExitUnreachable);
    CHECK_MESSAGE(r.err.find("the master at tcp://127.0.0.1:1: ") != std::string::npos, r.err);
  }
  SUBCASE("--connect wins over the variable, even a bad one") {
    const AddressVariable bad("http://nowhere");
    CHECK(cli::run(offline_insecure({"status"})) == cli::kExitUnreachable);
    CHECK(cli::run({"worker", "-c", "127.0.0.1:1", "--key-file", kMissingKey}) == cli::kExitAuth);
  }
  SUBCASE("commands without --connect do not read it") {
    const AddressVariable bad("http://nowhere");
    CHECK(cli::run({"master", "--key-file", kMissingKey}) == cli::kExitAuth);
    CHECK(cli::run({"keygen", "--help"}) == cli::kExitOk);
  }
}

TEST_CASE("seconds are finite numbers within their range") {
  const AddressVariable unset(nullptr);
  const std::vector<std::string> not_seconds{"nan",  "NaN", "inf", "-inf", "infinity", "1e400", "-1",  "",  "abc",
                                             "0x10", " 1",  "s",   "ms",   "1x",       "5mm",   "1 s", "1S"};
  // A closed port, and no --connect-timeout of its own: these options are the ones tested.
  auto closed = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--connect", "tcp://127.0.0.1:1", "--insecure"});
    return args;
  };
  CHECK(usage_error(closed({"status", "--connect-timeout", "nan"})) ==
        "taskmaster: --connect-timeout 'nan': expected a duration from 0.001 to " + cli::seconds_text(cli::kMaxWaitSeconds) +
            " seconds (90, 1.5, 30s, 5m, 2h or 500ms)\n");
  for (const auto& v : not_seconds) {
    for (const char* option : {"--connect-timeout", "--retry-timeout"})
      for (auto args : kClientCommands) {
        args.insert(args.end(), {option, v});
        usage_error(closed(args));
      }
    for (const char* option : {"--delay", "--timeout", "--backoff"}) usage_error(offline_insecure({"submit", "square", "1", option, v}));
    for (const char* option : {"--heartbeat-interval", "--worker-timeout", "--result-ttl", "--handshake-timeout"})
      usage_error({"master", option, v, "--key-file", kMissingKey});
    usage_error({"bench", "--timeout", v});
  }
  usage_error(closed({"status", "--connect-timeout", "0"}));
  usage_error(closed({"status", "--connect-timeout", "0.0001"}));  // 0 ms
  usage_error({"master", "--result-ttl", "0", "--key-file", kMissingKey});
}

TEST_CASE("submit's limits are the protocol's: the largest values pass and one more is refused") {
  const AddressVariable unset(nullptr);
  const struct {
    const char* option;
    double max_s;
  } limits[] = {
      {"--delay", proto::kMaxDelayMs / 1000.0}, {"--timeout", proto::kMaxTimeoutMs / 1000.0}, {"--backoff", proto::kMaxBackoffMs / 1000.0}};
  for (const auto& l : limits) {
    CAPTURE(l.option);
    CHECK(cli::run(offline_insecure({"submit", "square", "1", l.option, cli::seconds_text(l.max_s)})) == cli::kExitUnreachable);
    CHECK(usage_error(offline_insecure({"submit", "square", "1", l.option, cli::seconds_text(l.max_s + 0.001)}))
              .find("expected a duration from") != std::string::npos);
  }
  CHECK(cli::run(offline_insecure({"submit", "square", "1", "--timeout", "0.001"})) == cli::kExitUnreachable);
  CHECK(cli::run(offline_insecure({"submit", "square", "1", "--max-attempts", std::to_string(proto::kMaxAttempts)})) ==
        cli::kExitUnreachable);
  for (const std::string& bad : std::vector<std::string>{std::to_string(proto::kMaxAttempts + 1), "99999999999", "-1", "0"})
    usage_error(offline_insecure({"submit", "square", "1", "--max-attempts", bad}));
  CHECK(cli::run(offline_insecure({"submit", "square", "1", "--idempotency-key", std::string(proto::kMaxTextBytes, 'k')})) ==
        cli::kExitUnreachable);
  CHECK(usage_error(offline_insecure({"submit", "square", "1", "--idempotency-key", std::string(proto::kMaxTextBytes + 1, 'k')}))
            .find("the key must be 1 to " + std::to_string(proto::kMaxTextBytes) + " bytes") != std::string::npos);
}

TEST_CASE("job ids are 1 to 2^63 - 1") {
  const AddressVariable unset(nullptr);
  const std::string max = std::to_string(std::numeric_limits<std::int64_t>::max());
  const std::string over = std::to_string(static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1);
  for (const char* command : {"wait", "results", "cancel"}) {
    CHECK(cli::run(offline_insecure({command, max})) == cli::kExitUnreachable);
    for (const std::string& bad : std::vector<std::string>{over, "18446744073709551616", "0", "-1", "1.5", "abc"})
      usage_error(offline_insecure({command, bad}));
  }
}

TEST_CASE("master: --heartbeat-interval must be shorter than --worker-timeout") {
  CHECK(usage_error({"master", "--heartbeat-interval", "5", "--worker-timeout", "3", "--key-file", kMissingKey}) ==
        "taskmaster: --heartbeat-interval (5 s) must be shorter than --worker-timeout (3 s): a worker would be presumed dead "
        "between two heartbeats\n");
  CHECK(usage_error({"master", "--heartbeat-interval", "3", "--key-file", kMissingKey}).find("--worker-timeout (3 s)") !=
        std::string::npos);
  CHECK(usage_error({"master", "--worker-timeout", "0.5", "--key-file", kMissingKey}).find("(1 s) must be shorter") != std::string::npos);
  // Allowed (past the parser, the missing key stops it).
  CHECK(cli::run({"master", "--heartbeat-interval", "1", "--worker-timeout", "1.5", "--key-file", kMissingKey}) == cli::kExitAuth);
}

TEST_CASE("scheduling options: --policy, --aging, --queue-policy and queue weights are checked") {
  CHECK(cli::run({"--check-args", "master", "--policy", "fifo", "--aging", "0", "--queue-policy", "quick=shortest-first"}) == cli::kExitOk);
  CHECK(usage_error({"master", "--policy", "lottery", "--key-file", kMissingKey}).find("--policy") != std::string::npos);
  CHECK(usage_error({"master", "--aging", "-1", "--key-file", kMissingKey}).find("--aging") != std::string::npos);
  CHECK(usage_error({"master", "--queue-policy", "quick=longest-first", "--key-file", kMissingKey}).find("expected NAME=shortest-first") !=
        std::string::npos);
  CHECK(usage_error({"master", "--queue-policy", "bad name=shortest-first", "--key-file", kMissingKey}).find("invalid queue name") !=
        std::string::npos);
  CHECK(cli::run({"--check-args", "worker", "-q", "bulk", "-q", "urgent:3", "-q", "a:b", "-q", "top:1000"}) == cli::kExitOk);
  CHECK(usage_error({"worker", "-q", "urgent:0", "--key-file", kMissingKey}).find("the weight must be from 1 to 1000") !=
        std::string::npos);
  CHECK(usage_error({"worker", "-q", "urgent:1001", "--key-file", kMissingKey}).find("the weight must be from 1 to 1000") !=
        std::string::npos);
  CHECK(usage_error({"worker", "-q", "urgent:99999999999", "--key-file", kMissingKey}).find("the weight must be") != std::string::npos);
}

TEST_CASE("worker: its credit and its queues fit in HELLO") {
  const AddressVariable unset(nullptr);
  const auto most = std::to_string(proto::kMaxSlots - 4096);
  CHECK(cli::run({"worker", "-j", "4096", "--prefetch", most, "--key-file", kMissingKey}) == cli::kExitAuth);
  CHECK(usage_error({"worker", "-j", "4096", "--prefetch", std::to_string(proto::kMaxSlots - 4095), "--key-file", kMissingKey}) ==
        "taskmaster: --threads (4096) plus --prefetch (" + std::to_string(proto::kMaxSlots - 4095) + ") is more than the " +
            std::to_string(proto::kMaxSlots) + " tasks a worker may hold\n");
  usage_error({"worker", "--prefetch", std::to_string(proto::kMaxSlots + 1), "--key-file", kMissingKey});
  std::vector<std::string> queues{"worker", "--key-file", kMissingKey};
  for (std::size_t i = 0; i < proto::kMaxListItems; ++i) queues.insert(queues.end(), {"-q", "q" + std::to_string(i)});
  CHECK(cli::run(queues) == cli::kExitAuth);
  queues.insert(queues.end(), {"-q", "one-more"});
  CHECK(usage_error(queues).find("a worker serves at most " + std::to_string(proto::kMaxListItems) + " queues") != std::string::npos);
  CHECK(cli::run({"worker", "--name", std::string(proto::kMaxTextBytes, 'n'), "--key-file", kMissingKey}) == cli::kExitAuth);
  usage_error({"worker", "--name", std::string(proto::kMaxTextBytes + 1, 'n'), "--key-file", kMissingKey});
  usage_error({"worker", "--name", "", "--key-file", kMissingKey});
}

TEST_CASE("a file or directory option given as empty is refused") {
  usage_error(offline({"status", "--key-file", ""}));
  usage_error({"keygen", "--out", ""});
  usage_error({"master", "--data-dir", "", "--key-file", kMissingKey});
}

TEST_CASE("a reply of the wrong kind ends the command with exit 5 and one line") {
  WrongMaster master;
  const std::vector<std::string> connect{"--connect", master.endpoint(), "--insecure", "--connect-timeout", "5", "--retry-timeout", "5"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), connect.begin(), connect.end());
    return args;
  };
  Ran r = run_capturing(with({"status"}));
  CHECK(r.code == cli::kExitError);
  CHECK(r.err == "taskmaster: the master answered STATUS with CANCELLED\n");
  r = run_capturing(with({"cancel", "1"}));
  CHECK(r.code == cli::kExitError);
  CHECK(r.err == "taskmaster: the master answered CANCEL with REPORT\n");
  // The client library reads these replies with std::get: its exception reaches run()'s handler.
  for (const auto& args : std::vector<std::vector<std::string>>{{"results", "1"}, {"wait", "1"}, {"submit", "square", "1"}}) {
    CAPTURE(joined(args));
    r = run_capturing(with(args));
    CHECK(r.code == cli::kExitError);
    CHECK_MESSAGE(r.err.rfind("taskmaster: ", 0) == 0, r.err);
    CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  }
}

TEST_CASE("a cancelled outcome with a reason shows it, in text and in JSON") {
  std::string out;
  cli::append_outcome(out, 5, outcome(3, "1", proto::TaskState::Cancelled, "not run: job 4 failed", 0, ""), false);
  CHECK(out == "1 -> cancelled (not run: job 4 failed)\n");
  std::string line;
  cli::append_outcome(line, 5, outcome(3, "1", proto::TaskState::Cancelled, "not run: job 4 failed", 0, ""), true);
  const auto j = json::parse(line);
  CHECK(j["status"] == "cancelled");
  CHECK(j["error"] == "not run: job 4 failed");
}

TEST_CASE("text outcomes read ARGS -> RESULT, ARGS -> error: MESSAGE, ARGS -> cancelled") {
  std::string out;
  cli::append_outcome(out, 1, outcome(1, "7", proto::TaskState::Done, "49", 1, "w1"), false);
  CHECK(out == "7 -> 49\n");
  cli::append_outcome(out, 1, outcome(2, "\"x\"", proto::TaskState::Dead, "boom", 3, "w2"), false);
  cli::append_outcome(out, 1, outcome(3, "1", proto::TaskState::Cancelled, "", 0, ""), false);
  CHECK(out == "7 -> 49\n\"x\" -> error: boom\n1 -> cancelled\n");
  std::string structured;
  cli::append_outcome(structured, 1, outcome(4, "[1,{\"a\":2}]", proto::TaskState::Done, "{\"b\":[3]}", 1, "w"), false);
  CHECK(structured == "[1,{\"a\":2}] -> {\"b\":[3]}\n");
}

TEST_CASE("json outcomes have exactly job, task, args, status, result|error, attempts, worker") {
  SUBCASE("done: the result, no error") {
    json v = json_line(12, outcome(34, "7", proto::TaskState::Done, "49", 2, "host-1-ab"));
    CHECK(keys(v) == std::vector<std::string>{"args", "attempts", "job", "result", "status", "task", "worker"});
    CHECK(v["job"] == 12);
    CHECK(v["task"] == 34);
    CHECK(v["args"] == 7);
    CHECK(v["status"] == "done");
    CHECK(v["result"] == 49);
    CHECK(v["attempts"] == 2);
    CHECK(v["worker"] == "host-1-ab");
  }
  SUBCASE("done with structured args and result") {
    json v = json_line(1, outcome(2, "{\"n\":[1,2]}", proto::TaskState::Done, "{\"exit_code\":0,\"stdout\":\"hi\\n\"}", 1, "w"));
    CHECK(v["args"] == json::parse("{\"n\":[1,2]}"));
    CHECK(v["result"] == json::parse("{\"exit_code\":0,\"stdout\":\"hi\\n\"}"));
  }
  SUBCASE("dead: the error as a string, no result") {
    const std::string message = "boom: \"quoted\"\n\tsecond line \\ end";
    json v = json_line(12, outcome(35, "\"x\"", proto::TaskState::Dead, message, 3, "w2"));
    CHECK(keys(v) == std::vector<std::string>{"args", "attempts", "error", "job", "status", "task", "worker"});
    CHECK(v["args"] == "x");
    CHECK(v["status"] == "dead");
    CHECK(v["error"] == message);
    CHECK(v["attempts"] == 3);
    CHECK(v["worker"] == "w2");
  }
  SUBCASE("dead with invalid UTF-8 in the error and the worker name") {
    json v = json_line(1, outcome(2, "1", proto::TaskState::Dead, "bad \xFF byte", 1, "w\xFE"));
    CHECK(v["error"] == "bad \xEF\xBF\xBD byte");
    CHECK(v["worker"] == "w\xEF\xBF\xBD");
  }
  SUBCASE("cancelled: neither result nor error") {
    json v = json_line(12, outcome(36, "1", proto::TaskState::Cancelled, "", 0, ""));
    CHECK(keys(v) == std::vector<std::string>{"args", "attempts", "job", "status", "task", "worker"});
    CHECK(v["status"] == "cancelled");
    CHECK(v["attempts"] == 0);
    CHECK(v["worker"] == "");
  }
}

TEST_CASE("format_status prints the report as aligned tables") {
  const json report = json::parse(R"({
    "master": "4f2a",
    "uptime_s": 12.34,
    "queues": {
      "gpu": {"delayed": 1, "queued": 0, "running": 0, "done": 7, "dead": 0, "cancelled": 4, "waiting": 2},
      "default": {"delayed": 0, "queued": 3, "running": 3, "reserved": 1, "done": 5000000000, "dead": 2, "cancelled": 0,
                  "submitted_per_s": 1.5, "finished_per_s": 0.25, "unserved": {"resize": 2, "crop": 1}}
    },
    "workers": [
      {"id": "w1", "host": "h1", "pid": 10, "slots": 4, "threads": 2, "in_flight": 3, "running": 1, "reserved": 2, "done": 10, "last_heartbeat_s": 0.3},
      {"id": "worker-two", "host": "host2", "pid": 11, "slots": 16, "in_flight": 5, "done": 123456, "last_heartbeat_s": 1.5}
    ],
    "running": 6,
    "reserved": 2,
    "jobs": 2,
    "tasks": 9,
    "waiting_jobs": 1,
    "waiting": [{"job": 5, "after": [3, 4], "pending": [4], "after_success": true, "tasks": 2}],
    "rates": {"submitted_per_s": 10.0, "finished_per_s": 2.5},
    "counters": {"submitted": 9}
  })");
  const std::string expected =
      "master 4f2a, up 12.3 s; 2 jobs, 9 tasks kept\n"
      "\n"
      "queue    queued  running  reserved  delayed  waiting        done  dead  cancelled  in/s  out/s\n"
      "default       3        2         1        0        0  5000000000     2          0   1.5    0.2  NO WORKER\n"
      "gpu           0        0         0        1        2           7     0          4   0.0    0.0\n"
      "queue default: no connected worker serves crop (1 queued), resize (2 queued)\n"
      "\n"
      "job    state  tasks  waits_for          after\n"
      "5    waiting      2          4  3,4 (success)\n"
      "\n"
      "worker       host  threads  slots  running  reserved    done  heartbeat\n"
      "w1             h1        2      4        1         2      10  0.3 s ago\n"
      "worker-two  host2        -     16        5         0  123456  1.5 s ago\n"
      "\n"
      "leased: 6 running, 2 reserved (held by workers, not begun)\n"
      "rates: 10.0 tasks/s submitted, 2.5 tasks/s finished\n";
  CHECK(cli::format_status(report) == expected);
}

TEST_CASE("format_status copes with an empty report") {
  std::string text;
  CHECK_NOTHROW(text = cli::format_status(json::object()));
  CHECK(text.find("master , up 0.0 s; 0 jobs, 0 tasks kept\n") == 0);
  CHECK(text.find("queue  queued  running  reserved  delayed  waiting  done  dead  cancelled  in/s  out/s\n") != std::string::npos);
  CHECK(text.find("no worker connected\n") != std::string::npos);
  CHECK(text.find("waits_for") == std::string::npos);  // no waiting jobs, no table of them
  CHECK(text.find("rates: 0.0 tasks/s submitted, 0.0 tasks/s finished\n") != std::string::npos);
}

TEST_CASE("durations take a unit: 90, 1.5, 30s, 5m, 2h, 500ms") {
  CHECK(cli::parse_duration("90") == 90.0);
  CHECK(cli::parse_duration("1.5") == 1.5);
  CHECK(cli::parse_duration("30s") == 30.0);
  CHECK(cli::parse_duration("5m") == 300.0);
  CHECK(cli::parse_duration("2h") == 7200.0);
  CHECK(cli::parse_duration("500ms") == doctest::Approx(0.5));
  CHECK(cli::parse_duration("1.5h") == 5400.0);
  for (const char* bad : {"", "s", "m", "h", "ms", "nan", "infs", "5mm", "5 m", "m5", "5d", "-"}) {
    CAPTURE(bad);
    CHECK_FALSE(cli::parse_duration(bad).has_value());
  }
  // Through the command line, with the same range checks: 2h is within submit's --delay, 0ms is not a --connect-timeout.
  CHECK(cli::run({"--check-args", "submit", "square", "1", "--delay", "2h", "--timeout", "30s", "--backoff", "500ms"}) == cli::kExitOk);
  CHECK(cli::run({"--check-args", "status", "--connect-timeout", "5m", "--retry-timeout", "1.5"}) == cli::kExitOk);
  CHECK(usage_error({"status", "--connect-timeout", "0ms"}).starts_with("taskmaster: --connect-timeout '0ms': expected a duration"));
  CHECK(usage_error({"status", "--connect-timeout", "100000h"}).starts_with("taskmaster: --connect-timeout '100000h': expected"));
}

TEST_CASE("a JOB argument that is not a job id says so, without a range of 19 digits") {
  for (const char* bad : {"abc", "0", "-1", "1.5", "99999999999999999999", "9223372036854775808", "12x"}) {
    const std::string err = usage_error({"cancel", bad, "--insecure"});
    CHECK(err == std::string("taskmaster: JOB '") + bad + "': not a job id (job ids are whole numbers from 1, as submit prints them)\n");
  }
  CHECK(cli::run({"--check-args", "cancel", "9223372036854775807"}) == cli::kExitOk);
}

TEST_CASE("a misspelled command exits 2 and names the closest one") {
  CHECK(usage_error({"sumbit", "square", "1"}) == "taskmaster: unknown command 'sumbit'; did you mean 'submit'?\n");
  CHECK(usage_error({"wrker"}) == "taskmaster: unknown command 'wrker'; did you mean 'worker'?\n");
  CHECK(usage_error({"--check-args", "stauts"}) == "taskmaster: unknown command 'stauts'; did you mean 'status'?\n");
  CHECK(usage_error({"frobnicate"}) == "taskmaster: unknown command 'frobnicate'; see 'taskmaster help'\n");
}

TEST_CASE("bare taskmaster prints the usage on stderr and exits 2, taskmaster help exits 0") {
  const Ran bare = run_capturing({});
  CHECK(bare.code == cli::kExitUsage);
  CHECK(bare.err.find("Usage: taskmaster") != std::string::npos);
  CHECK(bare.err.find("submit") != std::string::npos);
  CHECK(cli::run({"help"}) == cli::kExitOk);
  CHECK(cli::run({"help", "submit"}) == cli::kExitOk);
  CHECK(usage_error({"help", "sumbit"}) == "taskmaster: help: unknown command 'sumbit'\n");
}

TEST_CASE("every command's --help has a description and an example") {
  CLI::App app;
  cli::Runners runners;
  cli::add_commands(app, runners);
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_group().empty()) continue;
    CAPTURE(sub->get_name());
    CHECK_FALSE(sub->get_description().empty());
    const std::string help = sub->help();
    const auto example = help.find("Example: ");
    REQUIRE(example != std::string::npos);
    CHECK(help.find("taskmaster " + sub->get_name(), example) != std::string::npos);
  }
}

TEST_CASE("CLI11's own usage errors name the command they come from") {
  CHECK(usage_error({"results", "12", "extra"}) == "taskmaster: results: The following argument was not expected: extra\n");
  CHECK(usage_error({"submit", "square", "1", "--json"}) == "taskmaster: submit: --json requires --wait\n");
  CHECK(usage_error({"worker", "-j", "many"}).rfind("taskmaster: worker: --threads: ", 0) == 0);
  CHECK(usage_error({"status", "--frobnicate"}) == "taskmaster: status: The following argument was not expected: --frobnicate\n");
  // Ours already name their option, and no command is named when there is none.
  CHECK(usage_error({"status", "--connect-timeout", "0ms"}).starts_with("taskmaster: --connect-timeout '0ms'"));
  CHECK(usage_error({"--frobnicate"}).find("taskmaster: ") == 0);
}

TEST_CASE("an error of the master's that names a request names the command instead") {
  const auto reported = [](const Error& e) {
    std::fflush(stderr);
    FILE* capture = std::tmpfile();
    const int saved = ::dup(2);
    ::dup2(::fileno(capture), 2);
    const int code = cli::report(e);
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::rewind(capture);
    char buf[512];
    const std::size_t n = std::fread(buf, 1, sizeof buf, capture);
    std::fclose(capture);
    CHECK(code == cli::kExitError);
    return std::string(buf, n);
  };
  cli::set_command_name("results");
  CHECK(reported(Error{ErrorCode::UnknownJob, "WAIT: job 12 does not exist (or its results expired)"}) ==
        "taskmaster: results: job 12 does not exist (or its results expired)\n");
  CHECK(reported(Error{ErrorCode::UnknownJob, "job 12: nothing"}) == "taskmaster: job 12: nothing\n");
  CHECK(reported(Error{ErrorCode::NotAllowed, "ID: x"}) == "taskmaster: ID: x\n");  // too short for a request's name
  cli::set_command_name("");
  CHECK(reported(Error{ErrorCode::UnknownJob, "WAIT: job 12"}) == "taskmaster: WAIT: job 12\n");
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
