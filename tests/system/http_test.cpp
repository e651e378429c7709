// The master's HTTP endpoint end to end (docs/HTTP.md): a real master with --http and a worker on
// loopback, read with an HTTP client; the metrics parsed by Prometheus' own parser
// (tests/metrics_check.py); access, CSRF, cancel and retry; and logs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <thread>

#include <doctest/doctest.h>
#include <httplib.h>

#include "support/cluster.h"

namespace taskmaster::test {
namespace {

using namespace std::chrono_literals;

// The master's HTTP address and token, from the login link it logs.
struct Http {
  std::string host;
  int port = 0;
  std::string token, login;
  httplib::Headers auth() const { return {{"Authorization", "Bearer " + token}}; }
  httplib::Client client() const {
    httplib::Client c(host, port);
    c.set_connection_timeout(5);
    c.set_read_timeout(15);
    return c;
  }
};

Http start_with_http(Cluster& c, std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"--http", "127.0.0.1:0", "--in-memory"});
  c.start_master(extra);
  static const std::regex link(R"(http://(127\.0\.0\.1):([0-9]+)/login\?token=([0-9a-f]{32}))");
  std::smatch m;
  std::string err;
  REQUIRE_MESSAGE(c.master().wait_for_err(
                      [&](const std::string& e) {
                        err = e;
                        return std::regex_search(err, m, link);
                      },
                      10s),
                  c.master().err());
  return Http{m[1], std::stoi(m[2]), m[3], m[0]};
}

// Samples of the metrics text, parsed by Prometheus' parser: name{labels} -> value.
std::map<std::string, double> parse_metrics(const std::string& text) {
  TempDir dir;
  const std::string file = dir.path() + "/metrics.txt";
  std::ofstream(file) << text;
  ChildProcess p({"/usr/bin/python3", std::string(TASKMASTER_SOURCE_DIR) + "/tests/metrics_check.py", file});
  auto r = finish(p, 30s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::map<std::string, double> samples;
  for (const auto& j : r.json_lines()) {
    std::string key = j["name"];
    std::string labels;
    for (const auto& [k, v] : j["labels"].items()) labels += (labels.empty() ? "" : ",") + k + "=" + v.get<std::string>();
    if (!labels.empty()) key += "{" + labels + "}";
    samples[key] = j["value"];
  }
  return samples;
}

std::string cookie_value(const httplib::Result& r, const std::string& name) {
  for (const auto& [k, v] : r->headers)
    if (k == "Set-Cookie" && v.rfind(name + "=", 0) == 0) return v.substr(name.size() + 1, v.find(';') - name.size() - 1);
  return "";
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("http: metrics that Prometheus parses move as a job runs, and the API shows the job and its worker") {
  Cluster c;
  const Http h = start_with_http(c);
  c.start_worker({"-j", "2", "--name", "httpw"});
  c.wait_for_workers(1);
  auto cli = h.client();
  auto none = cli.Get("/metrics");
  REQUIRE(none);
  CHECK(none->status == 401);
  CHECK(cli.Get("/metrics", {{"Authorization", "Bearer 00000000000000000000000000000000"}})->status == 401);
  auto before = cli.Get("/metrics", h.auth());
  REQUIRE(before);
  REQUIRE(before->status == 200);
  CHECK(before->get_header_value("Content-Type").find("text/plain; version=0.0.4") == 0);
  auto m0 = parse_metrics(before->body);
  CHECK(m0["taskmaster_workers_connected"] == 1);
  CHECK(m0.count("taskmaster_tasks_submitted_total{function=square,queue=default}") == 0);

  std::string input;
  for (int i = 0; i < 40; ++i) input += std::to_string(i) + "\n";
  auto ok = c.run({"submit", "square", "--each", "--wait"}, input);
  REQUIRE_MESSAGE(ok.code == 0, ok.err);
  auto bad = c.run({"submit", "fail", "\"boom\"", "--max-attempts", "2", "--backoff", "0.01", "--wait"});
  CHECK(bad.code == 1);

  auto m1 = parse_metrics(cli.Get("/metrics", h.auth())->body);
  CHECK(m1["taskmaster_tasks_submitted_total{function=square,queue=default}"] == 40);
  CHECK(m1["taskmaster_tasks_succeeded_total{function=square,queue=default}"] == 40);
  CHECK(m1["taskmaster_attempts_started_total{function=fail,queue=default}"] == 2);
  CHECK(m1["taskmaster_attempts_failed_total{function=fail,queue=default}"] == 2);
  CHECK(m1["taskmaster_tasks_retried_total{function=fail,queue=default}"] == 1);
  CHECK(m1["taskmaster_tasks_dead_total{function=fail,queue=default}"] == 1);
  CHECK(m1["taskmaster_task_duration_seconds_count{function=square,outcome=ok,queue=default}"] == 40);
  CHECK(m1["taskmaster_worker_threads{worker=httpw}"] == 2);
  CHECK(m1["taskmaster_jobs"] == 2);

  auto status = nlohmann::json::parse(cli.Get("/api/status", h.auth())->body);
  REQUIRE(status["queues"].size() == 1);
  CHECK(status["queues"][0]["name"] == "default");
  CHECK(status["queues"][0]["done"] == 40);
  CHECK(status["queues"][0]["dead"] == 1);
  CHECK(status["totals"]["workers"] == 1);
  CHECK(status["failures"][0]["error"] == "boom");
  CHECK(status["failures"][0]["worker"] == "httpw");
  auto workers = nlohmann::json::parse(cli.Get("/api/workers", h.auth())->body);
  CHECK(workers["workers"][0]["id"] == "httpw");
  CHECK(workers["workers"][0]["done"] == 42);
  CHECK(workers["workers"][0]["failed"] == 2);
  auto jobs = nlohmann::json::parse(cli.Get("/api/jobs", h.auth())->body);
  REQUIRE(jobs["jobs"].size() == 2);
  CHECK(jobs["jobs"][0]["state"] == "failed");
  CHECK(jobs["jobs"][1]["state"] == "done");
  CHECK(jobs["jobs"][1]["done"] == 40);

  // `taskmaster dashboard` prints the same link the master logged; STATUS carries the URL.
  auto d = c.run({"dashboard"});
  REQUIRE_MESSAGE(d.code == 0, d.err);
  CHECK(d.out == h.login + "\n");
  CHECK(c.status()["http"] == "http://127.0.0.1:" + std::to_string(h.port));
}

TEST_CASE("http: the login link sets cookies, a change needs the CSRF value, then cancel and retry work as the CLI's") {
  Cluster c;
  const Http h = start_with_http(c);
  auto cli = h.client();
  auto login = cli.Get("/login?token=" + h.token + "&job=7");
  REQUIRE(login);
  CHECK(login->status == 303);
  CHECK(login->get_header_value("Location") == "/?job=7");
  const std::string token = cookie_value(login, "tm_token"), csrf = cookie_value(login, "tm_csrf");
  CHECK(token == h.token);
  REQUIRE(csrf.size() == 32);
  CHECK(cli.Get("/login?token=" + std::string(32, 'a'))->status == 401);
  // The page itself, embedded in the binary, with the session cookie; without it a login hint.
  auto page = cli.Get("/", {{"Cookie", "tm_token=" + token}});
  CHECK(page->status == 200);
  CHECK(page->body.find("id=\"queues\"") != std::string::npos);
  auto anon = cli.Get("/");
  CHECK(anon->status == 401);
  CHECK(anon->body.find("taskmaster dashboard") != std::string::npos);

  // A job nobody runs (no worker): cancel it from the "browser".
  auto sub = c.run({"submit", "square", "--each"}, "1\n2\n3\n");
  REQUIRE_MESSAGE(sub.code == 0, sub.err);
  const std::string job = sub.lines().at(0);
  const std::string cancel = "/api/jobs/" + job + "/cancel";
  const httplib::Headers with_cookie{{"Cookie", "tm_token=" + token + "; tm_csrf=" + csrf}};
  CHECK(cli.Post(cancel, with_cookie, "", "text/plain")->status == 403);
  auto foreign = with_cookie;
  foreign.emplace("X-CSRF-Token", csrf);
  foreign.emplace("Origin", "http://evil.example");
  CHECK(cli.Post(cancel, foreign, "", "text/plain")->status == 403);
  auto wrong = with_cookie;
  wrong.emplace("X-CSRF-Token", std::string(32, '0'));
  CHECK(cli.Post(cancel, wrong, "", "text/plain")->status == 403);
  CHECK(c.status()["queues"]["default"]["queued"] == 3);  // refused changes changed nothing
  auto good = with_cookie;
  good.emplace("X-CSRF-Token", csrf);
  auto done = cli.Post(cancel, good, "", "text/plain");
  REQUIRE(done);
  CHECK(done->status == 200);
  CHECK(nlohmann::json::parse(done->body)["cancelled"] == 3);
  CHECK(c.status()["queues"]["default"]["cancelled"] == 3);

  // Retry, from the CLI and over HTTP: one new job for the dead tasks, the same one when asked again.
  c.start_worker({"-j", "2"});
  auto bad = c.run({"submit", "fail", "\"x\"", "--max-attempts", "1", "--wait"});
  CHECK(bad.code == 1);
  auto jobs = nlohmann::json::parse(cli.Get("/api/jobs?limit=1", h.auth())->body);
  const std::string failed = std::to_string(jobs["jobs"][0]["id"].get<std::uint64_t>());
  auto r = c.run({"retry", failed});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("1 dead tasks of job " + failed + " queued again") != std::string::npos);
  const std::string retry = r.lines().at(0);
  auto again = cli.Post("/api/jobs/" + failed + "/retry", h.auth(), "", "text/plain");
  REQUIRE(again);
  CHECK(again->status == 200);
  CHECK(std::to_string(nlohmann::json::parse(again->body)["retry_job"].get<std::uint64_t>()) == retry);
  CHECK(nlohmann::json::parse(again->body)["duplicate"] == true);
  auto w = c.run({"wait", retry});
  CHECK(w.code == 1);  // it fails again: "fail" always does
  CHECK(c.run({"retry", "424242"}).code != 0);
}

TEST_CASE("http: junk, floods and slow clients on the HTTP port never stall the master") {
  Cluster c;
  const Http h = start_with_http(c);
  // Half-open and garbage connections, held open while the master serves.
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(h.port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string junk = i % 2 ? std::string("GET /") + std::string(100000, 'A') + " HTTP/1.1\r\n" : "\x16\x03\x01 not http";
    (void)!::write(fd, junk.data(), junk.size());
    fds.push_back(fd);
  }
  // The protocol side answers at once, whatever the HTTP side holds.
  auto s = c.run({"status", "--json"}, std::nullopt, 10s);
  CHECK(s.code == 0);
  // Many requests at once, some with bad tokens or paths: every one answered, the master alive.
  std::vector<std::thread> threads;
  std::atomic<int> answered{0}, ok{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      auto cli = h.client();
      for (int i = 0; i < 25; ++i) {
        const bool good = (i + t) % 3 != 0;
        auto r = cli.Get(good ? "/api/status" : "/api/jobs/%ff%00", good ? h.auth() : httplib::Headers{{"Authorization", "Bearer x"}});
        if (r) ++answered;
        if (r && r->status == 200) ++ok;
      }
    });
  for (auto& t : threads) t.join();
  for (int fd : fds) ::close(fd);
  CHECK(answered.load() == 200);
  CHECK(ok.load() > 100);
  CHECK(c.run({"status"}).code == 0);
  CHECK(c.master().running());
}

// A connected TCP socket to the HTTP port.
int http_socket(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

std::int64_t rss_kb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

TEST_CASE("http: endless headers are cut at 32 KiB, and idle connections hold no thread") {
  Cluster c;
  const Http h = start_with_http(c);
  const auto before = rss_kb(c.master().pid());
  // 8 connections each sending header lines without end: each is closed once past the bound.
  std::vector<std::thread> senders;
  std::atomic<int> cut{0};
  for (int i = 0; i < 8; ++i)
    senders.emplace_back([&] {
      const int fd = http_socket(h.port);
      const std::string line = "X-Pad: " + std::string(8000, 'a') + "\r\n";
      std::string head = "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n";
      (void)!::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
      std::size_t sent = 0;
      while (sent < (64u << 20)) {  // at most 64 MiB: the server cuts far sooner
        const auto n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      if (sent < (64u << 20)) ++cut;
      ::close(fd);
    });
  for (auto& t : senders) t.join();
  CHECK(cut.load() == 8);
  CHECK(rss_kb(c.master().pid()) - before < 64 * 1024);  // not the 8 x 64 MiB sent at it
  // 60 idle connections (under the 64 per address): a real request is still answered at once.
  std::vector<int> idle;
  for (int i = 0; i < 60; ++i) idle.push_back(http_socket(h.port));
  auto cli = h.client();
  auto r = cli.Get("/api/status", h.auth());
  REQUIRE(r);
  CHECK(r->status == 200);
  for (int fd : idle) ::close(fd);
  CHECK(c.master().running());
}

TEST_CASE("http: without the token, a Host that is not this master's is refused (DNS rebinding)") {
  Cluster c(/*insecure=*/true);
  c.start_master({"--http", "127.0.0.1:0", "--in-memory"});
  static const std::regex link(R"(http://127\.0\.0\.1:([0-9]+)/)");
  std::smatch m;
  std::string err;
  REQUIRE(c.master().wait_for_err(
      [&](const std::string& e) {
        err = e;
        return std::regex_search(err, m, link) && err.find("HTTP has no token either") != std::string::npos;  // it warns
      },
      10s));
  httplib::Client cli("127.0.0.1", std::stoi(m[1]));
  CHECK(cli.Get("/api/status")->status == 200);  // public: no key, no token
  CHECK(cli.Get("/api/status", {{"Host", "localhost:1"}})->status == 200);
  auto rebound = cli.Get("/api/status", {{"Host", "attacker.example:80"}});
  REQUIRE(rebound);
  CHECK(rebound->status == 421);
  CHECK(cli.Get("/login", {{"Host", "attacker.example"}})->status == 421);
  // A client may not take the keys the master gives retry jobs.
  auto sub = c.run({"submit", "echo", "1", "--idempotency-key", "retry-of-5"});
  CHECK(sub.code == 5);  // the master's refusal, as every error it answers
  CHECK(sub.err.find("retry-of-") != std::string::npos);
}

TEST_CASE("logs: --log-format json gives one JSON object per line, and --log-level debug on a worker gives a line per task") {
  Cluster c;
  c.start_master({"--in-memory", "--log-format", "json"});
  c.start_worker({"-j", "1", "--log-level", "debug", "--name", "logw"});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "fail", "\"no good\"", "--max-attempts", "1", "--wait"});
  CHECK(r.code == 1);
  REQUIRE(c.master().wait_for_err([](const std::string& e) { return e.find("is dead after 1 attempts") != std::string::npos; }, 10s));
  bool joined = false, dead = false;
  std::istringstream lines(c.master().err());
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE_MESSAGE(j.is_object(), line);
    CHECK(j["component"] == "master");
    CHECK(j["ts"].get<std::string>().size() == 24);
    joined |= j["msg"].get<std::string>().find("worker logw") == 0;
    dead |= j["level"] == "info" && j["msg"].get<std::string>().find("no good") != std::string::npos;
  }
  CHECK(joined);
  CHECK(dead);
  auto& w = *c.workers().at(0);
  CHECK(w.wait_for_err([](const std::string& e) { return e.find("function fail attempt 1 took") != std::string::npos; }, 10s));
  CHECK(w.err().find("failed: no good") != std::string::npos);
  // A level or format that does not exist is a usage error, from the flag or the environment.
  auto p = c.start({kTaskmaster, "master", "--in-memory", "--log-level", "loud"});
  CHECK(finish(*p, 10s).code == 2);
  auto q = c.start({"/usr/bin/env", "TASKMASTER_LOG_FORMAT=yaml", kTaskmaster, "worker", "--connect", c.endpoint()});
  CHECK(finish(*q, 10s).code == 2);
}

TEST_CASE("logs: each journal checkpoint is one info line saying what it moved") {
  Cluster c;
  c.start_master();  // durable
  c.start_worker({"-j", "2"});
  std::string input;
  for (int i = 0; i < 100000; ++i) input += std::to_string(i % 1000) + "\n";
  auto r = c.run({"submit", "square", "--each", "--wait"}, input, 120s);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  // 100,000 durable tasks write more than the 4000 WAL pages (16 MB) that make a checkpoint.
  CHECK(c.master().wait_for_err([](const std::string& e) { return e.find("checkpoint moved") != std::string::npos; }, 10s));
}

}  // TEST_SUITE
}  // namespace taskmaster::test
