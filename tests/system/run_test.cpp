// The run path end to end: streaming `submit --each`, `taskmaster run` on an --allow-exec worker.
#include <signal.h>

#include <fstream>
#include <map>
#include <set>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// `sh -c SCRIPT` with the cluster's key in its environment.
std::unique_ptr<ChildProcess> shell(Cluster& c, const std::string& script, std::optional<std::string> stdin_data = std::nullopt) {
  return c.start({"/bin/sh", "-c", script}, std::move(stdin_data));
}

// Standard input that stays open: a writer that prints `first`, then waits for `flag` to exist
// (at most 60 s) before it prints `rest` and closes the pipe.
std::string slow_writer(const std::string& first, const std::string& flag, const std::string& rest) {
  return "(printf '" + first + "'; n=0; while [ ! -e '" + flag + "' ] && [ $n -lt 3000 ]; do n=$((n+1)); sleep 0.02; done; printf '" +
         rest + "')";
}

// `taskmaster run --connect ENDPOINT OPTIONS... -- COMMAND...`
std::unique_ptr<ChildProcess> run_cmd(Cluster& c, std::vector<std::string> options, std::vector<std::string> command,
                                      std::optional<std::string> stdin_data = std::nullopt) {
  std::vector<std::string> argv{kTaskmaster, "run", "--connect", c.endpoint()};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.push_back("--");
  argv.insert(argv.end(), command.begin(), command.end());
  return c.start(argv, std::move(stdin_data));
}

CommandResult run_to_end(Cluster& c, std::vector<std::string> options, std::vector<std::string> command,
                         std::optional<std::string> stdin_data = std::nullopt) {
  auto p = run_cmd(c, std::move(options), std::move(command), std::move(stdin_data));
  return finish(*p, 60s);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("submit --each submits lines as they arrive: the first outcome comes while standard input is open") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  TempDir dir;
  const std::string flag = dir.path() + "/flag";
  auto p = shell(c,
                 slow_writer("3\\n", flag, "4\\n5\\n") + " | '" + kTaskmaster + "' submit square --each --wait --connect " + c.endpoint());
  auto first = p->read_line(20s);
  REQUIRE_MESSAGE(first.has_value(), p->err());
  CHECK(*first == "3 -> 9");
  CHECK(p->running());  // its input is still open: the writer waits for the flag
  std::ofstream(flag).put('x');
  std::set<std::string> rest;
  for (int i = 0; i < 2; ++i) {
    auto line = p->read_line(20s);
    REQUIRE(line.has_value());
    rest.insert(*line);
  }
  CHECK(rest == std::set<std::string>{"4 -> 16", "5 -> 25"});
  CHECK(p->wait(20s) == 0);
}

TEST_CASE("submit --each without --wait on a slow pipe: tasks are queued before the input ends") {
  Cluster c;
  c.start_master();
  TempDir dir;
  const std::string flag = dir.path() + "/flag";
  auto p = shell(c, slow_writer("1\\n2\\n", flag, "3\\n") + " | '" + kTaskmaster + "' submit square --each --connect " + c.endpoint());
  // No worker: the two tasks wait in the queue while the submitter still reads.
  wait_until(
      [&] {
        auto q = c.status()["queues"];
        return q.contains("default") && q["default"].value("queued", 0) == 2;
      },
      20s, "two tasks queued");
  CHECK(p->running());
  std::ofstream(flag).put('x');
  CHECK(p->wait(20s) == 0);
  CHECK(c.status()["queues"]["default"].value("queued", 0) == 3);
}

TEST_CASE("run relays the command's stdout, stderr and exit code, and 128+N for signal N") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2", "--allow-exec"});
  auto r = run_to_end(c, {}, {"sh", "-c", "printf 'out\\n'; printf err >&2; exit 7"});
  CHECK(r.code == 7);
  CHECK(r.out == "out\n");
  CHECK(r.err.find("err") != std::string::npos);
  CHECK(r.err.find("taskmaster: job ") != std::string::npos);  // the job id, on stderr
  auto killed = run_to_end(c, {"--quiet"}, {"sh", "-c", "kill -TERM $$"});
  CHECK(killed.code == 128 + SIGTERM);
  CHECK(killed.err.empty());  // --quiet: no job line
  auto ok = run_to_end(c, {"--quiet"}, {"true"});
  CHECK(ok.code == 0);
  CHECK(ok.out.empty());
  auto usage = run_to_end(c, {"--timeout", "nope"}, {"true"});
  CHECK(usage.code == 2);
}

TEST_CASE("run --each -k prints in input order, the exit code counts the failed commands") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "4", "--allow-exec"});
  // The first items run longest, so they finish last; 1 and 2 fail.
  const std::vector<std::string> cmd{"sh", "-c", "sleep 0.{}; echo item-{}; [ {} != 1 ] && [ {} != 2 ]"};
  auto r = run_to_end(c, {"--each", "-k"}, cmd, "3\n1\n2\n0\n");
  CHECK(r.code == 2);
  CHECK(r.out == "item-3\nitem-1\nitem-2\nitem-0\n");
  // Without -k: the same lines, as they finish.
  auto u = run_to_end(c, {"--each", "--quiet"}, cmd, "3\n0\n");
  CHECK(u.code == 0);
  auto lines = u.lines();
  CHECK(std::set<std::string>(lines.begin(), lines.end()) == std::set<std::string>{"item-3", "item-0"});
  // {} absent: the item is appended; the count of failures stops at 100.
  std::string many;
  for (int i = 0; i < 101; ++i) many += std::to_string(i) + "\n";
  auto capped = run_to_end(c, {"--each", "--quiet"}, {"sh", "-c", "exit 1", "sh"}, many);
  CHECK(capped.code == 100);
  auto appended = run_to_end(c, {"--each", "-k", "--quiet"}, {"echo", "x"}, "a b\nc\n");
  CHECK(appended.code == 0);
  CHECK(appended.out == "x a b\nx c\n");
}

TEST_CASE("run --joblog writes a header and one line per command") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2", "--allow-exec"});
  TempDir dir;
  const std::string log = dir.path() + "/joblog";
  auto r = run_to_end(c, {"--each", "--quiet", "--joblog", log}, {"sh", "-c", "exit {}"}, "0\n3\n");
  CHECK(r.code == 1);
  std::ifstream in(log);
  std::string line;
  std::vector<std::vector<std::string>> rows;
  while (std::getline(in, line)) rows.push_back(split(line, '\t'));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == std::vector<std::string>{"item", "worker", "start", "duration_s", "exit_code"});
  std::map<std::string, std::string> code_of;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    REQUIRE(rows[i].size() == 5);
    CHECK_FALSE(rows[i][1].empty());
    CHECK(std::stod(rows[i][2]) > 1.6e9);  // Unix time
    CHECK(std::stod(rows[i][3]) >= 0);
    code_of[rows[i][0]] = rows[i][4];
  }
  CHECK(code_of == std::map<std::string, std::string>{{"0", "0"}, {"3", "3"}});
  auto bad = run_to_end(c, {"--joblog", dir.path() + "/no/such/dir/log"}, {"true"});
  CHECK(bad.code == 2);
  CHECK(bad.err.find("joblog") != std::string::npos);
}

TEST_CASE("run relays output that is not text byte for byte") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1", "--allow-exec"});
  auto r = run_to_end(c, {"--quiet"}, {"printf", "\\377\\000\\001\\n"});
  CHECK(r.code == 0);
  CHECK(r.out == std::string("\xff\x00\x01\n", 4));
}

TEST_CASE("run says when no worker serves exec, and again when one comes") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});  // no --allow-exec
  auto p = run_cmd(c, {}, {"echo", "hi"});
  CHECK(p->wait_for_err(
      [](const std::string& e) { return e.find("no connected worker serves exec on queue default") != std::string::npos; }, 20s));
  c.start_worker({"-j", "1", "--allow-exec"});
  CHECK(p->wait_for_err([](const std::string& e) { return e.find("serving exec on queue default is connected now") != std::string::npos; },
                        20s));
  CHECK(p->wait(20s) == 0);
  CHECK(p->out() == "hi\n");
}

TEST_CASE("Ctrl-C on run says how to follow or cancel the job, and exits 130") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1", "--allow-exec"});
  auto p = run_cmd(c, {}, {"sleep", "30"});
  std::string job;
  REQUIRE(p->wait_for_err(
      [&](const std::string& e) {
        const auto at = e.find("taskmaster: job ");
        if (at == std::string::npos || e.find(':', at + 16) == std::string::npos) return false;
        job = e.substr(at + 16, e.find(':', at + 16) - at - 16);
        return true;
      },
      20s));
  p->signal(SIGINT);
  CHECK(p->wait(20s) == 130);
  CHECK(p->err().find("taskmaster wait " + job) != std::string::npos);
  CHECK(p->err().find("taskmaster cancel " + job) != std::string::npos);
  auto cancel = c.run({"cancel", job});
  CHECK(cancel.code == 0);
}

TEST_CASE("submit --wait names its job on stderr, its --json outcomes carry function and queue, and it warns of no worker") {
  Cluster c;
  c.start_master();
  auto p = c.spawn({"submit", "square", "4", "--queue", "q1", "--wait", "--json"});
  CHECK(p->wait_for_err(
      [](const std::string& e) { return e.find("taskmaster: job ") != std::string::npos && e.find(": 1 task") != std::string::npos; },
      20s));
  CHECK(p->wait_for_err([](const std::string& e) { return e.find("no connected worker serves square on queue q1") != std::string::npos; },
                        20s));
  c.start_worker({"-j", "1", "--queue", "q1"});
  CHECK(p->wait(20s) == 0);
  const auto j = nlohmann::json::parse(p->out());
  CHECK(j["function"] == "square");
  CHECK(j["queue"] == "q1");
  CHECK(j["result"] == 16);
}

TEST_CASE("Ctrl-C on submit --wait and on wait says how to resume or cancel, and exits 130") {
  Cluster c;
  c.start_master();  // no worker: the task waits
  auto p = c.spawn({"submit", "square", "4", "--wait"});
  REQUIRE(p->wait_for_err([](const std::string& e) { return e.find("taskmaster: job ") != std::string::npos; }, 20s));
  p->signal(SIGINT);
  CHECK(p->wait(20s) == 130);
  const auto err = p->err();
  const auto at = err.find("taskmaster: job ") + 16;
  const std::string job = err.substr(at, err.find(':', at) - at);
  CHECK(err.find("`taskmaster wait " + job + "`") != std::string::npos);
  CHECK(err.find("`taskmaster cancel " + job + "`") != std::string::npos);
  auto w = c.spawn({"wait", job});
  REQUIRE(w->wait_for_err(
      [&](const std::string& e) { return e.find("taskmaster: job " + job + ": 0 of 1 tasks finished") != std::string::npos; }, 20s));
  w->signal(SIGINT);
  CHECK(w->wait(20s) == 130);
  CHECK(w->err().find("`taskmaster cancel " + job + "`") != std::string::npos);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
