// The BaseManager listener (`master --python-manager`, docs/PYTHON.md) with Python's own client:
// Debian's /usr/bin/python3 runs the example's task_worker.py and a task_master.py-style client
// (tests/python_manager/) and the checks of tests/python_manager/checks.py against a real master.
#include <signal.h>

#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

const std::string kScripts = std::string(TASKMASTER_SOURCE_DIR) + "/tests/python_manager";
const std::string kPython = "/usr/bin/python3";

// A master with the listener on a free loopback port, and the authkey "abc" in a file written as
// `echo abc > FILE` writes it (with its newline, which is not part of the key).
struct PyCluster {
  Cluster c;
  TempDir dir;
  std::string port;
  explicit PyCluster(std::vector<std::string> extra = {}) {
    std::ofstream(dir.path("authkey")) << "abc\n";
    start(std::move(extra));
  }
  void start(std::vector<std::string> extra = {}) {
    extra.insert(extra.end(), {"--python-manager", "127.0.0.1:0", "--python-authkey-file", dir.path("authkey")});
    c.start_master(extra);
    const auto st = c.status();
    REQUIRE(st.value("python_manager", nlohmann::json()).is_string());
    const std::string address = st["python_manager"].get<std::string>();
    REQUIRE(address.starts_with("127.0.0.1:"));
    port = address.substr(address.rfind(':') + 1);
  }
  std::vector<std::string> env(std::vector<std::string> more = {}) const {
    more.insert(more.end(), {"TM_HOST=127.0.0.1", "TM_PORT=" + port, "TM_AUTHKEY=abc", "PYTHONDONTWRITEBYTECODE=1"});
    return more;
  }
  std::unique_ptr<ChildProcess> python(const std::string& script, std::vector<std::string> args, std::vector<std::string> more_env = {}) {
    args.insert(args.begin(), {kPython, kScripts + "/" + script});
    return std::make_unique<ChildProcess>(args, ChildProcess::Options{std::nullopt, env(std::move(more_env))});
  }
  CommandResult check(std::vector<std::string> args) {
    auto p = python("checks.py", std::move(args));
    return finish(*p, 60s);
  }
};

}  // namespace

TEST_SUITE("python manager") {

TEST_CASE("the example's task_worker.py serves a task_master.py-style client: every result right") {
  PyCluster py;
  auto worker = py.python("task_worker.py", {}, {"TM_SLEEP=0", "TM_GET_TIMEOUT=5"});
  auto master = py.python("task_master.py", {}, {"TM_RESULT_TIMEOUT=20"});
  const auto m = finish(*master, 60s);
  INFO(m.out, m.err);
  CHECK(m.code == 0);
  CHECK(m.out.find("all 10 results right") != std::string::npos);
  const auto w = finish(*worker, 60s);
  INFO(w.out, w.err);
  CHECK(w.code == 0);
  CHECK(w.out.find("worker exit.") != std::string::npos);
  CHECK(w.out.find("task queue is empty") == std::string::npos);
}

TEST_CASE("several Python workers at once share 40 tasks and every result is right") {
  PyCluster py;
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(py.python("task_worker.py", {}, {"TM_SLEEP=0", "TM_TASKS=40", "TM_GET_TIMEOUT=0.2"}));
  auto master = py.python("task_master.py", {}, {"TM_TASKS=40", "TM_RESULT_TIMEOUT=20"});
  const auto m = finish(*master, 90s);
  INFO(m.out, m.err);
  CHECK(m.code == 0);
  CHECK(m.out.find("all 40 results right") != std::string::npos);
  std::size_t ran = 0;
  for (auto& w : workers) {
    const auto r = finish(*w, 60s);
    CHECK(r.code == 0);
    for (std::size_t at = 0; (at = r.out.find("run task", at)) != std::string::npos; ++at) ++ran;
  }
  CHECK(ran == 40);  // each task was handed to exactly one worker
}

TEST_CASE("a wrong authkey fails on the Python side with AuthenticationError, and the master says why") {
  PyCluster py;
  const auto r = py.check({"wrong_key"});
  INFO(r.out, r.err);
  CHECK(r.code == 0);
  CHECK(r.out.find("AuthenticationError") != std::string::npos);
  CHECK(py.c.master().wait_for_err([](const std::string& e) { return e.find("wrong authkey") != std::string::npos; }, 10s));
}

TEST_CASE("a pickle that names os.system is refused to that client, nothing runs, and the master serves the others") {
  PyCluster py;
  TempDir t;
  const auto r = py.check({"evil", t.path("marker")});
  INFO(r.out, r.err);
  CHECK(r.code == 0);
  CHECK(!std::filesystem::exists(t.path("marker")));
  CHECK(py.check({"put", "1", "'two'"}).code == 0);
  CHECK(py.check({"get", "task_queue", "1", "'two'"}).code == 0);
}

TEST_CASE(
    "hostile requests with the authkey: a refusal cut inside a character, memo bombs, a big handshake frame, and the master serves on") {
  PyCluster py;
  const auto r = py.check({"hostile"});
  INFO(r.out, r.err);
  CHECK(r.code == 0);
  CHECK(py.c.master().running());
  CHECK(py.check({"put", "1", "'after'"}).code == 0);
  CHECK(py.check({"get", "task_queue", "1", "'after'"}).code == 0);
}

TEST_CASE("oversized, negative and cut-short frames close that connection with a log line, and the master serves on") {
  PyCluster py;
  const auto r = py.check({"garbage"});
  INFO(r.out, r.err);
  CHECK(r.code == 0);
  CHECK(py.c.master().wait_for_err([](const std::string& e) { return e.find("over the bound") != std::string::npos; }, 10s));
  CHECK(py.c.master().wait_for_err([](const std::string& e) { return e.find("negative") != std::string::npos; }, 10s));
  CHECK(py.c.master().running());
}

TEST_CASE("values survive a master kill -9 between put and get: types kept (int, str, tuple, bytes, dict, big int)") {
  PyCluster py;
  const std::vector<std::string> values = {"1", "'x'", "(1, 'a')", "b'\\x00\\xff'", "{'a': [1.5, None], 2: True}", "2**100"};
  std::vector<std::string> args = {"put"};
  args.insert(args.end(), values.begin(), values.end());
  const auto put = py.check(args);
  INFO(put.out, put.err);
  REQUIRE(put.code == 0);
  CHECK(py.c.status()["value_queues"]["task_queue"]["depth"] == values.size());
  py.c.stop_master(SIGKILL);
  py.start();
  std::vector<std::string> get = {"get", "task_queue"};
  get.insert(get.end(), values.begin(), values.end());
  const auto r = py.check(get);
  INFO(r.out, r.err);
  CHECK(r.code == 0);
}

TEST_CASE("taskmaster queue put and get interoperate with Python's get and put, and an empty get") {
  PyCluster py;
  CHECK(py.c.run({"queue", "put", "task_queue", "42"}).code == 0);
  CHECK(py.c.run({"queue", "put", "task_queue", "not json"}).code == 0);
  CHECK(py.c.run({"queue", "put", "task_queue", "--string", "7"}).code == 0);
  const auto status = py.c.run({"status"});
  CHECK(status.out.find("value queues: task_queue 3") != std::string::npos);
  CHECK(py.check({"get", "task_queue", "42", "'not json'", "'7'"}).code == 0);
  CHECK(py.check({"put_result", "done"}).code == 0);
  const auto got = py.c.run({"queue", "get", "result_queue"});
  CHECK(got.code == 0);
  CHECK(got.out == "\"done\"\n");
  const auto empty = py.c.run({"queue", "get", "result_queue", "--timeout", "0.3"});
  CHECK(empty.code == 1);
  CHECK(empty.err.find("is empty") != std::string::npos);
  CHECK(py.check({"empty"}).code == 0);  // queue.Empty after the get's timeout
  // A value with no Python form is refused, and nothing is put.
  const auto bad = py.c.run({"queue", "put", "task_queue", R"({"$bytes": "!!"})"});
  CHECK(bad.code == 5);
  CHECK(py.c.status()["value_queues"].value("task_queue", nlohmann::json::object()).value("depth", 0) == 0);
}

TEST_CASE("a Python get that waits is answered when a value comes, while the master serves others") {
  PyCluster py;
  auto waiting = py.python("checks.py", {"get", "task_queue", "'late'"});
  wait_until([&] { return py.c.status()["value_queues"].value("task_queue", nlohmann::json::object()).value("waiting", 0) == 1; }, 20s,
             "the get to wait in the master");
  CHECK(py.c.run({"status"}).code == 0);  // the loop is not blocked
  CHECK(py.c.run({"queue", "put", "task_queue", "late"}).code == 0);
  const auto r = finish(*waiting, 30s);
  INFO(r.out, r.err);
  CHECK(r.code == 0);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
