#include "support/cluster.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include <doctest/doctest.h>

#include "protocol/auth.h"

namespace taskmaster::test {

std::vector<std::string> CommandResult::lines() const {
  std::vector<std::string> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) v.push_back(line);
  return v;
}

std::vector<nlohmann::json> CommandResult::json_lines() const {
  std::vector<nlohmann::json> v;
  for (const auto& line : lines()) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) FAIL("not a JSON line: " << line);
    v.push_back(std::move(j));
  }
  return v;
}

CommandResult finish(ChildProcess& p, std::chrono::milliseconds timeout) {
  const auto t0 = Clock::now();
  CommandResult r;
  auto code = p.wait(timeout);
  if (!code) {
    p.signal(SIGKILL);
    FAIL("command did not finish within " << timeout.count() << " ms; stderr: " << p.err());
  }
  r.code = *code;
  // Everything it wrote is in once both pipes are closed (a child of it could keep them open: then
  // we take what is there after a bound).
  p.wait_eof(10s);
  r.out = p.out();
  r.err = p.err();
  r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  return r;
}

int closed_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TestKey::TestKey() : path_(dir_.path() + "/key") {
  auto s = protocol::write_key_file(path_, protocol::generate_key(), false);
  REQUIRE(s.has_value());
}

std::unique_ptr<ChildProcess> Cluster::start(std::vector<std::string> argv, std::optional<std::string> stdin_data) {
  ChildProcess::Options o;
  o.stdin_data = std::move(stdin_data);
  o.env = key_.env();
  return std::make_unique<ChildProcess>(std::move(argv), o);
}

ClientOptions Cluster::client_options() const {
  ClientOptions o;
  o.endpoint = endpoint_;
  if (!insecure_) {
    auto k = protocol::load_key_file(key_.path());
    REQUIRE(k.has_value());
    o.curve = protocol::derive_keys(k->key);
  }
  return o;
}

Cluster::~Cluster() {
  // Workers first (SIGKILL: a test that wanted a clean drain did it itself), then the master.
  workers_.clear();
  master_.reset();
}

void Cluster::start_master(std::vector<std::string> extra, std::string bind) {
  std::vector<std::string> argv{kTaskmaster, "master", "--bind", bind};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const bool chosen = std::find_if(extra.begin(), extra.end(), [](const std::string& a) {
                        return a == "--in-memory" || a == "--data-dir" || a == "-d";
                      }) != extra.end();
  if (!chosen) argv.insert(argv.end(), {"--data-dir", data_dir()});
  for (auto& a : security()) argv.push_back(a);
  master_ = start(argv);
  auto line = master_->read_line(20s);
  REQUIRE_MESSAGE(line.has_value(), "the master printed no endpoint; stderr: " << master_->err());
  endpoint_ = *line;
  REQUIRE(endpoint_.rfind("tcp://", 0) == 0);
}

std::string Cluster::port() const { return endpoint_.substr(endpoint_.rfind(':') + 1); }

int Cluster::stop_master(int sig) {
  master_->signal(sig);
  auto code = master_->wait(20s);
  REQUIRE_MESSAGE(code.has_value(), "the master did not stop");
  return *code;
}

ChildProcess& Cluster::start_worker(std::vector<std::string> extra) {
  std::vector<std::string> argv{kTaskmaster, "worker", "--connect", endpoint_};
  // --insecure before `extra`, which may end with `-- CMD ARGS...` (worker --function NAME -- CMD).
  for (auto& a : security()) argv.push_back(a);
  argv.insert(argv.end(), extra.begin(), extra.end());
  workers_.push_back(start(argv));
  return *workers_.back();
}

std::unique_ptr<ChildProcess> Cluster::spawn(std::vector<std::string> args, std::optional<std::string> stdin_data) {
  std::vector<std::string> argv{kTaskmaster};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--connect");
  argv.push_back(endpoint_);
  for (auto& a : security()) argv.push_back(a);
  return start(argv, std::move(stdin_data));
}

CommandResult Cluster::run(std::vector<std::string> args, std::optional<std::string> stdin_data, std::chrono::milliseconds timeout) {
  auto p = spawn(std::move(args), std::move(stdin_data));
  return finish(*p, timeout);
}

nlohmann::json Cluster::status() {
  auto r = run({"status", "--json"}, std::nullopt, 20s);
  REQUIRE_MESSAGE(r.code == 0, "status failed: " << r.err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

void Cluster::wait_for_workers(std::size_t n, std::chrono::milliseconds timeout) {
  wait_until([&] { return status()["workers"].size() == n; }, timeout, std::to_string(n) + " workers connected");
}

}  // namespace taskmaster::test
