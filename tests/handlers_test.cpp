// The built-in functions, the handler registry, and the exec handler (real child processes).
#include "worker/handlers.h"

#include <doctest/doctest.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"
#include "worker/subprocess.h"

namespace taskmaster {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// A context whose attempt may run for `timeout` from now.
TaskContext context(std::chrono::milliseconds timeout = 60s) {
  TaskContext ctx;
  ctx.task = 1;
  ctx.job = 1;
  ctx.attempt = 1;
  ctx.timeout = timeout;
  ctx.deadline = SteadyClock::now() + timeout;
  return ctx;
}

json call(const HandlerRegistry& reg, std::string_view name, const json& args, const TaskContext& ctx = context()) {
  const Handler* h = reg.find(name);
  REQUIRE(h != nullptr);
  return (*h)(args, ctx);
}

HandlerRegistry builtins() {
  HandlerRegistry reg;
  add_builtin_handlers(reg);
  return reg;
}

HandlerRegistry exec_only(ExecLimits limits = {}) {
  HandlerRegistry reg;
  add_exec_handler(reg, limits);
  return reg;
}

// The message of the exception `f` throws; fails the test if it throws none.
template <class F> std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  FAIL("no exception thrown");
  return "";
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

double seconds_since(SteadyClock::time_point start) { return std::chrono::duration<double>(SteadyClock::now() - start).count(); }

using test::TempDir;

// Makes this process the reaper of its orphaned descendants while in scope, so that a killed
// grandchild does not linger as a zombie waiting for init (which would keep kill(pid, 0) working).
struct SubreaperScope {
  SubreaperScope() { REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
  ~SubreaperScope() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

// Polls until process `pid` no longer exists (reaping it if it became our zombie), for at most `limit`.
bool wait_until_gone(pid_t pid, std::chrono::milliseconds limit) {
  const auto until = SteadyClock::now() + limit;
  for (;;) {
    ::waitpid(pid, nullptr, WNOHANG);  // ECHILD unless it was reparented to us
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    if (SteadyClock::now() >= until) return false;
    std::this_thread::sleep_for(10ms);
  }
}

pid_t read_pid(const std::filesystem::path& file) {
  std::ifstream in(file);
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

TEST_SUITE("handlers") {

TEST_CASE("square squares 64-bit integers") {
  const auto reg = builtins();
  CHECK(call(reg, "square", 7) == 49);
  CHECK(call(reg, "square", -7) == 49);
  CHECK(call(reg, "square", 0) == 0);
  CHECK(call(reg, "square", 3037000499LL).get<std::int64_t>() == 9223372030926249001LL);
  CHECK(call(reg, "square", -3037000499LL).get<std::int64_t>() == 9223372030926249001LL);
  CHECK(call(reg, "square", json::parse("12")) == 144);  // unsigned in nlohmann's eyes
}

TEST_CASE("square reports overflow and rejects what is not an integer") {
  const auto reg = builtins();
  SUBCASE("the first square past 2^63 - 1 overflows") {
    const auto e = error_of([&] { call(reg, "square", 3037000500LL); });
    CHECK(contains(e, "overflow"));
    CHECK_THROWS_AS(call(reg, "square", -3037000500LL), PermanentError);
    CHECK_THROWS_AS(call(reg, "square", INT64_MIN), PermanentError);
  }
  SUBCASE("an unsigned integer beyond int64") {
    CHECK_THROWS_AS(call(reg, "square", json::parse("9223372036854775808")), PermanentError);
    CHECK_THROWS_AS(call(reg, "square", json::parse("18446744073709551615")), PermanentError);
  }
  SUBCASE("non-integers") {
    for (const char* text : {"2.0", "2.5", "\"3\"", "true", "null", "[3]", "{\"n\":3}", "1e3"}) {
      CAPTURE(text);
      CHECK_THROWS_AS(call(reg, "square", json::parse(text)), PermanentError);
    }
  }
}

TEST_CASE("echo returns its args") {
  const auto reg = builtins();
  for (const char* text : {"null", "1", "\"hé\"", "[1,\"two\",{\"three\":3.5}]", "{\"a\":{\"b\":[]}}"}) {
    CAPTURE(text);
    CHECK(call(reg, "echo", json::parse(text)) == json::parse(text));
  }
}

TEST_CASE("fail fails with the string it is given, or says what it was given") {
  const auto reg = builtins();
  CHECK(error_of([&] { call(reg, "fail", "disk on fire"); }) == "disk on fire");
  const auto e = error_of([&] { call(reg, "fail", json::parse("[1,2]")); });
  CHECK(contains(e, "fail"));
  CHECK(contains(e, "[1,2]"));
  CHECK_THROWS_AS(call(reg, "fail", nullptr), std::runtime_error);
}

TEST_CASE("sleep returns its args after the time, and stops early at the deadline or when the worker stops") {
  const auto reg = builtins();
  SUBCASE("a short sleep") {
    const auto start = SteadyClock::now();
    CHECK(call(reg, "sleep", 0.05) == 0.05);
    CHECK(seconds_since(start) >= 0.05);
    CHECK(call(reg, "sleep", 0) == 0);
  }
  SUBCASE("a sleep past the deadline") {
    const auto start = SteadyClock::now();
    const auto e = error_of([&] { call(reg, "sleep", 30, context(100ms)); });
    CHECK(contains(e, "timeout"));
    CHECK(seconds_since(start) >= 0.1);
    CHECK(seconds_since(start) < 10);
  }
  SUBCASE("the worker stopping") {
    std::atomic<bool> stopping{true};
    auto ctx = context();
    ctx.stopping = &stopping;
    const auto start = SteadyClock::now();
    const auto e = error_of([&] { call(reg, "sleep", 30, ctx); });
    CHECK(contains(e, "stopping"));
    CHECK(seconds_since(start) < 10);
  }
  SUBCASE("bad args") {
    for (const char* text : {"-1", "\"1\"", "null", "[1]", "604801"}) {
      CAPTURE(text);
      CHECK_THROWS_AS(call(reg, "sleep", json::parse(text)), std::invalid_argument);
    }
  }
}

TEST_CASE("the registry takes valid names only, lists them sorted, and finds handlers") {
  HandlerRegistry reg;
  CHECK(reg.empty());
  const Handler h = [](const json&, const TaskContext&) { return json(1); };
  for (const auto& bad : std::vector<std::string>{"", "bad name!", "a/b", "é", std::string(129, 'x')}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(reg.add(bad, h), std::invalid_argument);
  }
  CHECK(reg.empty());
  reg.add("zeta", h);
  reg.add("alpha", h);
  reg.add("My.func:v2-beta_1", h);
  reg.add(std::string(128, 'x'), h);
  CHECK(reg.names() == std::vector<std::string>{"My.func:v2-beta_1", "alpha", std::string(128, 'x'), "zeta"});
  CHECK(reg.find("alpha") != nullptr);
  CHECK(reg.find("beta") == nullptr);
  CHECK(reg.find("Alpha") == nullptr);

  // Adding a name again replaces its handler.
  reg.add("alpha", [](const json&, const TaskContext&) { return json(2); });
  CHECK(reg.names().size() == 4);
  CHECK(call(reg, "alpha", nullptr) == 2);

  CHECK(builtins().names() == std::vector<std::string>{"echo", "fail", "sleep", "square"});
  CHECK(exec_only().names() == std::vector<std::string>{"exec"});
}

TEST_CASE("exec runs a command and returns its exit code and output") {
  const auto reg = exec_only();
  const json r = call(reg, "exec", json::array({"/bin/echo", "hi"}));
  CHECK(r.size() == 6);
  CHECK(r["exit_code"] == 0);
  CHECK(r["signal"] == 0);
  CHECK(r["stdout"] == "hi\n");
  CHECK(r["stderr"] == "");
  CHECK(r["stdout_truncated"] == false);
  CHECK(r["stderr_truncated"] == false);
  // The program is looked up in PATH.
  CHECK(call(reg, "exec", json::array({"echo", "a b", "c"}))["stdout"] == "a b c\n");
}

TEST_CASE("exec reports a non-zero exit code as a result, and captures stderr") {
  const auto reg = exec_only();
  const json r = call(reg, "exec", json::array({"sh", "-c", "echo out; echo oops >&2; exit 3"}));
  CHECK(r["exit_code"] == 3);
  CHECK(r["signal"] == 0);
  CHECK(r["stdout"] == "out\n");
  CHECK(r["stderr"] == "oops\n");
}

TEST_CASE("exec reports a command killed by a signal") {
  const auto reg = exec_only();
  const json r = call(reg, "exec", json::array({"sh", "-c", "kill -TERM $$"}));
  CHECK(r["signal"] == SIGTERM);
  CHECK(r["exit_code"] == -1);
}

TEST_CASE("exec keeps at most max_output_bytes of each stream and says it cut") {
  const auto reg = exec_only(ExecLimits{.max_output_bytes = 10});
  SUBCASE("over the limit") {
    const json r = call(reg, "exec", json::array({"sh", "-c", "printf 0123456789abcdef; printf ABCDEFGHIJK >&2"}));
    CHECK(r["stdout"] == "0123456789");
    CHECK(r["stdout_truncated"] == true);
    CHECK(r["stderr"] == "ABCDEFGHIJ");
    CHECK(r["stderr_truncated"] == true);
    CHECK(r["exit_code"] == 0);
  }
  SUBCASE("exactly the limit") {
    const json r = call(reg, "exec", json::array({"sh", "-c", "printf 0123456789"}));
    CHECK(r["stdout"] == "0123456789");
    CHECK(r["stdout_truncated"] == false);
    CHECK(r["stderr_truncated"] == false);
  }
  SUBCASE("a lot of output is read to the end, not left to block the command") {
    const json r = call(exec_only(ExecLimits{.max_output_bytes = 100}), "exec",
                        json::array({"sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2"}));
    CHECK(r["stdout"] == std::string(100, 'x'));
    CHECK(r["stdout_truncated"] == true);
    CHECK(r["stderr"] == "done\n");
    CHECK(r["exit_code"] == 0);
  }
}

TEST_CASE("exec replaces invalid UTF-8 in the output") {
  const auto reg = exec_only();
  const json r = call(reg, "exec", json::array({"sh", "-c", "printf 'a\\377b'; printf '\\300x' >&2"}));
  CHECK(r["stdout"] ==
        "a\xEF\xBF\xBD"
        "b");
  CHECK(r["stderr"] ==
        "\xEF\xBF\xBD"
        "x");
  CHECK_NOTHROW((void)r.dump());  // a result that can be sent
}

TEST_CASE("exec adds the raw bytes in base64 only when the output is not valid UTF-8") {
  const auto reg = exec_only();
  const json bin = call(reg, "exec", json::array({"sh", "-c", "printf 'a\\377b\\000c'; printf '\\300' >&2"}));
  CHECK(bin["stdout_base64"] == "Yf9iAGM=");  // a 0xFF b NUL c
  CHECK(bin["stderr_base64"] == "wA==");
  const json text = call(reg, "exec", json::array({"sh", "-c", "printf 'caf\\303\\251 ok'"}));
  CHECK(text["stdout"] == "caf\xC3\xA9 ok");
  CHECK_FALSE(text.contains("stdout_base64"));
  CHECK_FALSE(text.contains("stderr_base64"));
}

TEST_CASE("base64 encodes every length with padding") {
  CHECK(subprocess::base64("") == "");
  CHECK(subprocess::base64("f") == "Zg==");
  CHECK(subprocess::base64("fo") == "Zm8=");
  CHECK(subprocess::base64("foo") == "Zm9v");
  CHECK(subprocess::base64("foob") == "Zm9vYg==");
  CHECK(subprocess::base64(std::string("\xFF\xFE\x00", 3)) == "//4A");
}

TEST_CASE("exec returns as soon as the command exits, without a polling delay") {
  const auto reg = exec_only();
  std::vector<double> took;
  for (int i = 0; i < 21; ++i) {
    const auto start = SteadyClock::now();
    CHECK(call(reg, "exec", json::array({"true"}))["exit_code"] == 0);
    took.push_back(seconds_since(start));
  }
  std::sort(took.begin(), took.end());
  // Polling every 50 ms for the exit made a median of about 20 ms; a process start is ~1 ms.
  CHECK(took[took.size() / 2] < 0.010);
}

TEST_CASE("exec fails with a message when the program cannot be run") {
  const auto reg = exec_only();
  const auto e = error_of([&] { call(reg, "exec", json::array({"/nonexistent/taskmaster-no-such-program"})); });
  CHECK(contains(e, "/nonexistent/taskmaster-no-such-program"));
  CHECK(contains(e, "No such file"));
  CHECK_THROWS_AS(call(reg, "exec", json::array({"taskmaster-no-such-program-in-path"})), std::runtime_error);
}

TEST_CASE("exec takes an argv array of strings only") {
  const auto reg = exec_only();
  for (const char* text : {"\"echo hi\"", "[]", "null", "{\"argv\":[\"echo\"]}", "[\"echo\",1]", "[[\"echo\"]]"}) {
    CAPTURE(text);
    CHECK_THROWS_AS(call(reg, "exec", json::parse(text)), std::invalid_argument);
  }
  CHECK_THROWS_AS(call(reg, "exec", json::array({"echo", std::string("a\0b", 3)})), std::invalid_argument);
}

TEST_CASE("exec at the deadline kills the whole process group") {
  TempDir dir;
  SubreaperScope reaper;
  const auto pid_file = std::filesystem::path(dir.path("bg.pid"));
  const auto reg = exec_only();
  const auto start = SteadyClock::now();
  const auto e = error_of([&] {
    call(reg, "exec", json::array({"sh", "-c", "sleep 30 & echo $! > '" + pid_file.string() + "'; wait"}), context(300ms));
  });
  CHECK(contains(e, "timed out"));
  CHECK(seconds_since(start) >= 0.3);
  CHECK(seconds_since(start) < 10);
  const pid_t bg = read_pid(pid_file);
  REQUIRE(bg > 1);
  CHECK(wait_until_gone(bg, 10s));
}

TEST_CASE("exec returns when the command exits, though a child of it keeps its output open") {
  TempDir dir;
  SubreaperScope reaper;
  const auto pid_file = std::filesystem::path(dir.path("bg.pid"));
  const auto reg = exec_only();
  const auto start = SteadyClock::now();
  const json r = call(reg, "exec", json::array({"sh", "-c", "echo started; sleep 30 & echo $! > '" + pid_file.string() + "'"}));
  CHECK(seconds_since(start) < 10);
  CHECK(r["exit_code"] == 0);
  CHECK(r["stdout"] == "started\n");
  // What the command left behind in its process group ends with it.
  const pid_t bg = read_pid(pid_file);
  REQUIRE(bg > 1);
  CHECK(wait_until_gone(bg, 10s));
}

TEST_CASE("exec stops the command when the worker stops") {
  const auto reg = exec_only();
  std::atomic<bool> stopping{true};
  auto ctx = context();
  ctx.stopping = &stopping;
  const auto start = SteadyClock::now();
  const auto e = error_of([&] { call(reg, "exec", json::array({"sleep", "30"}), ctx); });
  CHECK(contains(e, "stopping"));
  CHECK(seconds_since(start) < 10);
}

HandlerRegistry command(const std::vector<std::string>& argv, bool lines = false) {
  HandlerRegistry reg;
  add_command_handler(reg, "f", CommandFunction{argv, lines});
  return reg;
}

TEST_CASE("a command function gets the args on stdin and in place of {}, and its stdout is the result") {
  // {} inside a word too; a string bare, other values as JSON.
  CHECK(call(command({"echo", "x{}y", "{}"}), "f", "ab") == "xaby ab");
  CHECK(call(command({"echo", "[{}]"}), "f", json{{"k", 1}}) == json::parse(R"([{"k":1}])"));
  CHECK(call(command({"echo", "<{}>"}), "f", json{{"k", 1}}) == R"(<{"k":1}>)");
  CHECK(call(command({"echo", "{}"}), "f", 41) == 41);  // the output parses as JSON
  CHECK(call(command({"cat"}), "f", json{{"n", 2}}) == json{{"n", 2}});
  CHECK(call(command({"sh", "-c", "printf 'not json\n\n'"}), "f", nullptr) == "not json");
}

TEST_CASE("a command function fails on a non-zero exit or a signal, with the status and the tail of stderr") {
  auto e = error_of([&] { call(command({"sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"}), "f", 1); });
  CHECK(contains(e, "exit code 3"));
  CHECK(contains(e, "the reason"));
  e = error_of([&] { call(command({"sh", "-c", "kill -KILL $$"}), "f", 1); });
  CHECK(contains(e, "signal 9"));
  CHECK_THROWS_AS(call(command({"echo"}), "f", std::string("a\0b", 3)), PermanentError);
}

TEST_CASE("a lines function keeps one process, one line in and one line out per task") {
  const auto reg = command({"sh", "-c", "while read -r line; do echo \"[$line,$$]\"; done"}, true);
  const json a = call(reg, "f", 5), b = call(reg, "f", json{{"x", "y"}});
  REQUIRE(a.is_array());
  REQUIRE(b.is_array());
  CHECK(a[0] == 5);
  CHECK(b[0] == json{{"x", "y"}});
  CHECK(a[1] == b[1]);  // the same process
}

TEST_CASE("a lines function whose process exits fails the attempt, and the next task starts a new one") {
  TempDir dir;
  const auto count = dir.path("count");
  // Answers once, then exits 4 on the second line.
  const auto reg = command({"sh", "-c", "echo x >> '" + count + "'; read -r l; echo \"$$\"; read -r l; exit 4"}, true);
  const json first = call(reg, "f", 1);
  const auto e = error_of([&] { call(reg, "f", 2); });
  CHECK(contains(e, "exit code 4"));
  const json again = call(reg, "f", 3);
  CHECK(again != first);  // another process
}

TEST_CASE("a lines function that does not answer fails at the deadline") {
  const auto reg = command({"sh", "-c", "read -r l; sleep 30"}, true);
  const auto start = SteadyClock::now();
  const auto e = error_of([&] { call(reg, "f", 1, context(300ms)); });
  CHECK(contains(e, "timed out"));
  CHECK(seconds_since(start) < 10);
}

TEST_CASE("a function file maps names to commands") {
  const auto fs = parse_function_file(R"({"a": ["wc", "-l"], "b": {"command": ["python3", "f.py"], "lines": true}})");
  REQUIRE(fs.size() == 2);
  CHECK(fs.at("a").argv == std::vector<std::string>{"wc", "-l"});
  CHECK_FALSE(fs.at("a").lines);
  CHECK(fs.at("b").lines);
  for (const char* bad : {"[]", "{\"a\": []}", "{\"a\": \"wc -l\"}", "{\"a b\": [\"x\"]}", "{\"a\": {\"cmd\": [\"x\"]}}",
                          "{\"a\": {\"command\": [\"x\"], \"lines\": 1}}", "{"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_function_file(bad), std::invalid_argument);
  }
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
