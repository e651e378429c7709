// Jobs after jobs end to end (submit --after, --after-success): real master and worker processes on
// loopback, driven through the CLI, with a kill -9 of the master while jobs wait. The order jobs ran
// in is read from a log file their tasks append to, not from times.
#include <signal.h>

#include <fstream>
#include <sstream>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// An exec task's args: a shell command that waits for `gate` (if given), then appends `line` to `log`.
std::string logging_task(const std::string& log, const std::string& line, const std::string& gate = "") {
  std::string sh;
  if (!gate.empty()) sh = "while [ ! -e '" + gate + "' ]; do sleep 0.02; done; ";
  sh += "echo " + line + " >> '" + log + "'";
  return nlohmann::json::array({"sh", "-c", sh}).dump();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Where `line` first appears in `lines` (npos if not at all).
std::size_t first(const std::vector<std::string>& lines, const std::string& line) {
  const auto it = std::find(lines.begin(), lines.end(), line);
  return it == lines.end() ? std::string::npos : static_cast<std::size_t>(it - lines.begin());
}

std::string submit(Cluster& c, std::vector<std::string> args, std::optional<std::string> input = std::nullopt) {
  args.insert(args.begin(), "submit");
  auto r = c.run(args, input);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return r.lines().at(0);
}

void touch(const std::string& path) { std::ofstream(path) << "go\n"; }

// The jobs the master lists as waiting (0 if it does not answer now).
std::size_t waiting_jobs(Cluster& c) {
  auto r = c.run({"status", "--json", "--connect-timeout", "2"}, std::nullopt, 30s);
  if (r.code != 0) return 0;
  return nlohmann::json::parse(r.out).value("waiting_jobs", std::size_t{0});
}

// The jobs of the scenario: a (two tasks held at the gate), f (fails, after a), b (after a and f:
// runs although f failed), cb (after-success b: runs), cf (after-success f: cancelled).
struct Chain {
  std::string a, f, b, cb, cf;
};

Chain submit_chain(Cluster& c, const std::string& log, const std::string& gate) {
  Chain j;
  j.a = submit(c, {"exec", "--each"}, logging_task(log, "a", gate) + "\n" + logging_task(log, "a", gate) + "\n");
  j.f = submit(c, {"fail", "\"f failed\"", "--max-attempts", "1", "--after", j.a});
  j.b = submit(c, {"exec", logging_task(log, "b"), "--after", j.a + "," + j.f});
  j.cb = submit(c, {"exec", logging_task(log, "cb"), "--after-success", j.b});
  j.cf = submit(c, {"exec", logging_task(log, "cf"), "--after-success", j.f});
  return j;
}

// Once the gate is open: every job ends, in chain order, cf cancelled with the reason.
void check_chain(Cluster& c, const Chain& j, const std::string& log) {
  auto cb = c.run({"wait", j.cb});
  CHECK_MESSAGE(cb.code == 0, cb.err);
  auto cf = c.run({"wait", j.cf});
  CHECK(cf.code == 1);  // its task is cancelled
  CHECK(cf.out.find("-> cancelled (") != std::string::npos);
  CHECK(cf.out.find("job " + j.f) != std::string::npos);
  auto f = c.run({"wait", j.f});
  CHECK(f.code == 1);
  CHECK(f.out.find("error: f failed") != std::string::npos);
  CHECK(c.run({"wait", j.b}).code == 0);
  const auto lines = read_lines(log);
  INFO("log: " << [&] {
    std::string s;
    for (const auto& l : lines) s += l + " ";
    return s;
  }());
  // a first (a task of it may run twice across a restart: at least once), then b, then cb; cf never.
  REQUIRE(first(lines, "a") != std::string::npos);
  REQUIRE(first(lines, "b") != std::string::npos);
  REQUIRE(first(lines, "cb") != std::string::npos);
  CHECK(first(lines, "a") < first(lines, "b"));
  CHECK(first(lines, "b") < first(lines, "cb"));
  CHECK(std::count(lines.begin(), lines.end(), "b") == 1);
  CHECK(std::count(lines.begin(), lines.end(), "cb") == 1);
  CHECK(first(lines, "cf") == std::string::npos);
  CHECK(waiting_jobs(c) == 0);
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("--after chains: a callback runs after failed tasks, --after-success is cancelled with the reason") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "4", "--allow-exec"});
  c.wait_for_workers(1);
  TempDir dir;
  const std::string log = dir.path("log"), gate = dir.path("go");
  const Chain j = submit_chain(c, log, gate);
  // Until a ends, everything after it waits, and status says for what.
  const auto st = c.status();
  CHECK(st["waiting_jobs"] == 4);
  CHECK(st["waiting"][0]["job"] == std::stoll(j.f));
  CHECK(st["waiting"][0]["pending"] == nlohmann::json::array({std::stoll(j.a)}));
  auto text = c.run({"status"});
  CHECK(text.out.find("waits_for") != std::string::npos);
  CHECK(read_lines(log).empty());
  touch(gate);
  check_chain(c, j, log);
}

TEST_CASE("--after refuses an unknown job with exit 5 and a one-line message, bad lists with exit 2") {
  Cluster c;
  c.start_master();
  auto r = c.run({"submit", "echo", "1", "--after", "424242"});
  CHECK(r.code == 5);
  CHECK(r.err.find("job 424242 does not exist") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  for (const char* bad : {"", "1,,2", "x", "0", "-3"}) {
    CAPTURE(bad);
    auto u = c.run({"submit", "echo", "1", "--after", bad});
    CHECK(u.code == 2);
    CHECK(u.err.find("--after") != std::string::npos);
  }
  auto both = c.run({"submit", "echo", "1", "--after", "1", "--after-success", "1"});
  CHECK(both.code == 2);
}

TEST_CASE("kill -9 of a durable master while jobs wait: after the restart they still wait, then run or are cancelled") {
  Cluster c;
  c.start_master();
  const std::string bind = c.endpoint();
  c.start_worker({"-j", "4", "--allow-exec"});
  c.wait_for_workers(1);
  TempDir dir;
  const std::string log = dir.path("log"), gate = dir.path("go");
  const Chain j = submit_chain(c, log, gate);
  REQUIRE(waiting_jobs(c) == 4);
  // `submit --wait` of a waiting job waits through the wait and the restart.
  auto waiting_client = c.spawn({"submit", "echo", "\"late\"", "--after", j.cb, "--wait"});
  wait_until([&] { return waiting_jobs(c) == 5; }, 30s, "the fifth job waiting");
  c.stop_master(SIGKILL);
  c.start_master({}, bind);
  CHECK(waiting_jobs(c) == 5);
  CHECK(read_lines(log).empty());
  touch(gate);
  check_chain(c, j, log);
  auto late = finish(*waiting_client, 60s);
  CHECK_MESSAGE(late.code == 0, late.err);
  CHECK(late.out == "\"late\" -> \"late\"\n");
}

}  // TEST_SUITE

}  // namespace taskmaster::test
