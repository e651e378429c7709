// What the CLI does on a real terminal: commands run inside tmux (a server of the test's own, by
// its -L socket name), their screen read with capture-pane and every byte they wrote with
// pipe-pane. The live progress line of a job waited on (and its absence off a terminal, with
// --quiet or TERM=dumb), purge's y/N prompt, status --watch redrawing the screen.
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// A tmux server of its own running one shell script in a 200x50 pane. The script starts only once
// everything the pane prints is being recorded (go() is called by the constructor); when it ends,
// "EXIT=CODE" is printed and the pane stays. The server is killed when the object goes away.
class Tmux {
 public:
  Tmux(const Cluster& c, const std::string& script) : socket_(next_socket()) {
    std::ofstream(dir_.path("script.sh")) << "cd " << quoted(dir_.path()) << "\n"
                                          << "while [ ! -e " << quoted(dir_.path("go")) << " ]; do sleep 0.01; done\n"
                                          << "trap : INT\n"  // Ctrl-C ends the command, not the script
                                          << "export TASKMASTER_KEY_FILE=" << quoted(c.key().path()) << "\n"
                                          << script << "\n"
                                          << "echo \"EXIT=$?\"\nexec cat\n";
    tmux({"new-session", "-d", "-s", "t", "-x", "200", "-y", "50", "/bin/sh " + quoted(dir_.path("script.sh"))});
    tmux({"pipe-pane", "-o", "-t", "t", "cat >> " + quoted(raw_path())});
    std::ofstream(dir_.path("go")) << "go\n";
  }
  ~Tmux() {
    ChildProcess kill({"/usr/bin/tmux", "-L", socket_, "kill-server"});
    kill.wait(10s);
  }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  // The pane as it looks now.
  std::string screen() { return tmux({"capture-pane", "-p", "-t", "t"}).out; }
  // Every byte written to the pane so far.
  std::string raw() const { return read_file(raw_path()); }
  void keys(const std::vector<std::string>& keys) {
    std::vector<std::string> args{"send-keys", "-t", "t"};
    args.insert(args.end(), keys.begin(), keys.end());
    tmux(args);
  }
  // Waits until the screen satisfies `pred`; fails the test with `what` (and the screen) if not.
  std::string wait_screen(const std::function<bool(const std::string&)>& pred, const std::string& what,
                          std::chrono::milliseconds timeout = 30s) {
    const auto deadline = Clock::now() + timeout;
    std::string last = screen();
    while (!pred(last) && Clock::now() < deadline) {
      ::usleep(20000);  // the next look at the screen
      last = screen();
    }
    CAPTURE(last);
    REQUIRE_MESSAGE(pred(last), what);
    return last;
  }
  // Waits until the script has ended and returns its exit code.
  int wait_exit() {
    const auto s = wait_screen([](const std::string& text) { return text.find("EXIT=") != std::string::npos; }, "the script ends");
    const auto at = s.find("EXIT=");
    return std::stoi(s.substr(at + 5));
  }
  std::string file(const std::string& name) const { return dir_.path(name); }

 private:
  static std::string next_socket() {
    static std::atomic<int> n{0};
    return "taskmaster-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
  }
  std::string raw_path() const { return dir_.path("raw"); }
  CommandResult tmux(std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/tmux", "-L", socket_, "-f", "/dev/null"};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess p(argv);
    auto r = finish(p, 10s);
    REQUIRE_MESSAGE(r.code == 0, "tmux " << args.at(0) << ": " << r.err);
    return r;
  }

  TempDir dir_;
  std::string socket_;
};

// `taskmaster ARGS --connect ENDPOINT` as a shell word list.
std::string cli(const Cluster& c, const std::string& args) { return quoted(kTaskmaster) + " " + args + " --connect " + c.endpoint(); }

// N lines of `0.1` (a sleep of 0.1 s each).
std::string sleeps(int n, const std::string& seconds) { return "seq 1 " + std::to_string(n) + " | sed 's/.*/" + seconds + "/' | "; }

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST_SUITE("system") {

TEST_CASE("submit --each --wait on a terminal shows a live progress line, then a summary in its place") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2"});
  c.wait_for_workers(1);
  Tmux t(c, sleeps(30, "0.15") + cli(c, "submit sleep --each --wait"));
  t.wait_screen([](const std::string& screen) { return has(screen, " done, ") && has(screen, " of 30") && has(screen, "/s, ETA "); },
                "the progress line with counts, rate and ETA");
  const auto end = t.wait_screen([](const std::string& screen) { return has(screen, ": 30 done, 0 failed in ") && has(screen, "EXIT="); },
                                 "the summary line");
  CHECK(has(end, "EXIT=0"));
  CHECK_FALSE(has(end, " failed of 30"));         // the progress line is gone
  CHECK(count_of(end, "0.15 -> 0.15\n") == 30);   // every outcome on a line of its own
  CHECK(count_of(end, "taskmaster: job ") == 2);  // the job line and the summary
  const auto raw = t.raw();
  CHECK(has(raw, "\r\033[K"));
  // Never redrawn more than ~10 times a second: 30 tasks take over 2 s, far fewer than 30 redraws per second.
  CHECK(count_of(raw, "\r\033[Kjob ") < 100);
}

TEST_CASE("no progress line when stderr is not a terminal, with --quiet, or with TERM=dumb") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2"});
  c.wait_for_workers(1);
  // (The terminal itself turns each \n into \r\n: a \r alone is what a redraw would write.)
  const auto no_progress = [](const std::string& text) {
    CHECK_FALSE(has(text, "\r\033[K"));
    CHECK_FALSE(has(text, "\033[K"));
    CHECK_FALSE(has(text, " of 8"));
    CHECK_FALSE(has(text, "ETA"));
    CHECK_FALSE(has(text, " failed in "));  // no summary either
  };
  SUBCASE("stderr to a file, stdout on the terminal") {
    Tmux t(c, sleeps(8, "0.1") + cli(c, "submit sleep --each --wait") + " 2>err.txt");
    CHECK(t.wait_exit() == 0);
    const auto err = read_file(t.file("err.txt"));
    CHECK(has(err, "taskmaster: job "));  // what stderr always says
    CHECK_FALSE(has(err, "\r"));
    no_progress(err);
    no_progress(t.raw());
    CHECK(count_of(t.screen(), "0.1 -> 0.1\n") == 8);
  }
  SUBCASE("--quiet") {
    Tmux t(c, sleeps(8, "0.1") + cli(c, "submit sleep --each --wait --quiet"));
    CHECK(t.wait_exit() == 0);
    const auto raw = t.raw();
    no_progress(raw);
    CHECK_FALSE(has(raw, "taskmaster: job "));
    CHECK(count_of(t.screen(), "0.1 -> 0.1\n") == 8);
  }
  SUBCASE("TERM=dumb") {
    Tmux t(c, sleeps(8, "0.1") + "TERM=dumb " + cli(c, "submit sleep --each --wait"));
    CHECK(t.wait_exit() == 0);
    const auto raw = t.raw();
    no_progress(raw);
    CHECK(has(raw, "taskmaster: job "));
  }
  SUBCASE("TERM unset") {
    Tmux t(c, sleeps(8, "0.1") + "env -u TERM " + cli(c, "submit sleep --each --wait"));
    CHECK(t.wait_exit() == 0);
    no_progress(t.raw());
  }
  SUBCASE("wait --quiet") {
    auto s = c.run({"submit", "sleep", "--each"}, std::string("0.1\n0.1\n0.1\n0.1\n0.1\n0.1\n0.1\n0.1\n"));
    REQUIRE_MESSAGE(s.code == 0, s.err);
    Tmux t(c, cli(c, "wait --quiet " + s.lines().at(0)));
    CHECK(t.wait_exit() == 0);
    no_progress(t.raw());
    CHECK_FALSE(has(t.raw(), "taskmaster: job "));
  }
}

TEST_CASE("wait JOB on a terminal shows the job's progress and ends with a summary") {
  Cluster c;
  c.start_master();
  std::string lines;
  for (int i = 0; i < 20; ++i) lines += "0.15\n";
  auto s = c.run({"submit", "sleep", "--each"}, lines);
  REQUIRE_MESSAGE(s.code == 0, s.err);
  const std::string job = s.lines().at(0);
  Tmux t(c, cli(c, "wait " + job));
  // No worker yet: the line shows nothing done of 20.
  t.wait_screen([&](const std::string& screen) { return has(screen, "job " + job + ": 0 done, 0 failed of 20"); }, "the progress line");
  c.start_worker({"-j", "2"});
  const auto end = t.wait_screen(
      [&](const std::string& screen) { return has(screen, "taskmaster: job " + job + ": 20 done, 0 failed in ") && has(screen, "EXIT="); },
      "the summary line");
  CHECK(has(end, "EXIT=0"));
  CHECK_FALSE(has(end, " failed of 20"));  // the progress line is gone
  CHECK(count_of(end, "0.15 -> 0.15\n") == 20);
}

TEST_CASE("run --each on a terminal counts commands that exit non-zero as failed in its progress and summary") {
  Cluster c;
  c.start_master();
  c.start_worker({"-j", "2", "--allow-exec"});
  c.wait_for_workers(1);
  Tmux t(c, "seq 1 9 | " + cli(c, "run --each") + " -- sh -c 'sleep 0.2; test $(( $0 % 3 )) -ne 0' {}");
  t.wait_screen([](const std::string& screen) { return has(screen, " done, ") && has(screen, " of 9"); }, "the progress line");
  const auto end = t.wait_screen([](const std::string& screen) { return has(screen, ": 6 done, 3 failed in ") && has(screen, "EXIT="); },
                                 "the summary line");
  CHECK(has(end, "EXIT=3"));
  CHECK_FALSE(has(end, " failed of 9"));  // the progress line is gone
}

TEST_CASE("purge QUEUE on a terminal asks first: n purges nothing, y purges") {
  Cluster c;
  c.start_master();
  auto s = c.run({"submit", "square", "--each", "-q", "pq"}, std::string("1\n2\n3\n"));
  REQUIRE_MESSAGE(s.code == 0, s.err);
  const auto queued = [&] { return c.status()["queues"]["pq"].value("queued", 0); };
  REQUIRE(queued() == 3);
  {
    Tmux t(c, cli(c, "purge pq"));
    t.wait_screen(
        [](const std::string& screen) { return has(screen, "Cancel every queued and delayed task of queue pq, of every job? [y/N]"); },
        "the question");
    t.keys({"n", "Enter"});
    CHECK(t.wait_exit() == 5);
    CHECK(has(t.screen(), "not confirmed; nothing purged"));
    CHECK(queued() == 3);
  }
  {
    Tmux t(c, cli(c, "purge pq"));
    t.wait_screen([](const std::string& screen) { return has(screen, "[y/N]"); }, "the question");
    t.keys({"y", "Enter"});
    CHECK(t.wait_exit() == 0);
    CHECK(has(t.screen(), "queue pq: 3 tasks cancelled"));
    CHECK(queued() == 0);
  }
}

TEST_CASE("status --watch on a terminal clears the screen and draws each new figure in place") {
  Cluster c;
  c.start_master();
  Tmux t(c, cli(c, "status --watch 0.2"));
  t.wait_screen([](const std::string& screen) { return has(screen, "queue") && has(screen, "queued"); }, "the first figure");
  CHECK_FALSE(has(t.screen(), "wq"));
  auto s = c.run({"submit", "square", "2", "-q", "wq"});
  REQUIRE_MESSAGE(s.code == 0, s.err);
  const auto now = t.wait_screen([](const std::string& screen) { return has(screen, "wq"); }, "a new figure with the new queue");
  CHECK(count_of(now, "out/s") == 1);  // one figure on the screen, not one after the other
  CHECK(count_of(t.raw(), "\033[H\033[2J") >= 2);
  t.keys({"C-c"});
  CHECK(t.wait_exit() == 0);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
