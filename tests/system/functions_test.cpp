// Commands served as named functions (`taskmaster worker --function NAME -- CMD...`), with real
// processes on loopback: a Python function in plain and in --lines mode, failures, and the rule that
// clients run only the named commands.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "support/cluster.h"

namespace taskmaster::test {
namespace {

// A Python function the test writes: reads JSON args, answers {"double": 2*n, "pid": ...};
// with "lines", one JSON line per task; n < 0 exits 7 with a message on stderr.
std::string write_function(const TempDir& dir) {
  const std::string path = dir.path("double.py");
  std::ofstream(path) << R"(import json, os, sys
def answer(args):
    if args < 0:
        sys.stderr.write("negative input: %d\n" % args)
        sys.exit(7)
    return {"double": 2 * args, "pid": os.getpid()}
if len(sys.argv) > 1 and sys.argv[1] == "lines":
    for line in sys.stdin:
        print(json.dumps(answer(json.loads(line))), flush=True)
else:
    print(json.dumps(answer(json.load(sys.stdin))))
)";
  return path;
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("worker --function serves a Python script once per task, stdout the result, a failure its status and stderr") {
  TempDir dir;
  const auto script = write_function(dir);
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2", "--function", "double", "--", "/usr/bin/python3", script});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "double", "--each", "--wait", "--json"}, "1\n2\n3\n");
  REQUIRE(r.code == 0);
  const auto lines = r.json_lines();
  REQUIRE(lines.size() == 3);
  std::set<long long> doubles, pids;
  for (const auto& l : lines) {
    CHECK(l["status"] == "done");
    doubles.insert(l["result"]["double"].get<long long>());
    pids.insert(l["result"]["pid"].get<long long>());
  }
  CHECK(doubles == std::set<long long>{2, 4, 6});
  CHECK(pids.size() == 3);  // a process per task
  auto bad = c.run({"submit", "double", "-5", "--max-attempts", "1", "--wait", "--json"});
  CHECK(bad.code == 1);
  const auto error = bad.json_lines().at(0)["error"].get<std::string>();
  CHECK(error.find("exit code 7") != std::string::npos);
  CHECK(error.find("negative input: -5") != std::string::npos);
  // Only the named commands: exec is not served without --allow-exec.
  const auto functions = c.status()["workers"].at(0)["functions"];
  CHECK(std::find(functions.begin(), functions.end(), "double") != functions.end());
  CHECK(std::find(functions.begin(), functions.end(), "exec") == functions.end());
}

TEST_CASE("worker --function --lines keeps one Python process per thread and restarts one that exits") {
  TempDir dir;
  const auto script = write_function(dir);
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1", "--function", "double", "--lines", "--", "/usr/bin/python3", script, "lines"});
  c.wait_for_workers(1);
  std::string input;
  for (int i = 1; i <= 200; ++i) input += std::to_string(i) + "\n";
  auto r = c.run({"submit", "double", "--each", "--wait", "--json"}, input);
  REQUIRE(r.code == 0);
  const auto lines = r.json_lines();
  REQUIRE(lines.size() == 200);
  std::set<long long> pids;
  long long sum = 0;
  for (const auto& l : lines) {
    sum += l["result"]["double"].get<long long>();
    pids.insert(l["result"]["pid"].get<long long>());
  }
  CHECK(sum == 200 * 201);
  CHECK(pids.size() == 1);  // one process served them all
  // Its process exits: that attempt fails; the next task gets a new process.
  auto bad = c.run({"submit", "double", "-1", "--max-attempts", "1", "--wait", "--json"});
  CHECK(bad.code == 1);
  CHECK(bad.json_lines().at(0)["error"].get<std::string>().find("exit code 7") != std::string::npos);
  auto after = c.run({"submit", "double", "21", "--wait", "--json"});
  REQUIRE(after.code == 0);
  CHECK(after.json_lines().at(0)["result"]["double"] == 42);
  CHECK(pids.count(after.json_lines().at(0)["result"]["pid"].get<long long>()) == 0);
}

TEST_CASE("worker --function-file serves several commands, and bad function options are usage errors") {
  TempDir dir;
  const std::string file = dir.path("functions.json");
  std::ofstream(file) << R"({"upper": ["tr", "a-z", "A-Z"], "greet": ["echo", "hello, {}!"]})";
  Cluster c;
  c.start_master();
  c.start_worker({"--function-file", file});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "upper", "\"abc\"", "--wait", "--json"});
  REQUIRE(r.code == 0);
  CHECK(r.json_lines().at(0)["result"] == "ABC");  // stdin is the JSON "abc"; "ABC" out parses as JSON
  auto g = c.run({"submit", "greet", "\"you\"", "--wait", "--json"});
  REQUIRE(g.code == 0);
  CHECK(g.json_lines().at(0)["result"] == "hello, you!");
  std::ofstream(dir.path("bad.json")) << R"({"x": "tr a-z A-Z"})";
  for (const auto& args : std::vector<std::vector<std::string>>{{"worker", "--function", "f"},
                                                                {"worker", "--lines"},
                                                                {"worker", "--function", "bad name", "--", "true"},
                                                                {"worker", "--function-file", dir.path("bad.json")},
                                                                {"worker", "--function-file", dir.path("missing.json")}}) {
    CAPTURE(args.back());
    auto u = c.run(args);
    CHECK(u.code == 2);
    CHECK(u.err.rfind("taskmaster: ", 0) == 0);
  }
}

TEST_CASE("bad args to a built-in fail at once as permanent, without using the remaining attempts") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "1"});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "square", "\"seven\"", "--max-attempts", "5", "--backoff", "0.5", "--wait", "--json"});
  CHECK(r.code == 1);
  const auto out = r.json_lines().at(0);
  CHECK(out["status"] == "dead");
  CHECK(out["attempts"] == 1);
  CHECK(out["error"].get<std::string>().find("expected an integer") != std::string::npos);
  // An ordinary failure still uses its attempts.
  auto f = c.run({"submit", "fail", "\"flaky\"", "--max-attempts", "3", "--backoff", "0", "--wait", "--json"});
  CHECK(f.code == 1);
  CHECK(f.json_lines().at(0)["attempts"] == 3);
}

TEST_CASE("worker --function -- CMD on an insecure cluster: the command's arguments are its own") {
  // Cluster::start_worker adds --insecure before the extra args, not after the "--".
  Cluster c(true);
  c.start_master();
  c.start_worker({"-j", "1", "--function", "words", "--", "/usr/bin/wc", "-w"});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "words", "\"a b c\"", "--wait", "--json"});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.json_lines().at(0)["result"] == 3);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
