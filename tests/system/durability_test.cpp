// Durability with real processes: kill -9 of the master and of workers while a job runs, an
// idempotent resubmission, and a full disk.
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// A job of `n` sleep tasks whose args (and so whose results) are all different: "0.0010001" ...
std::string sleep_input(int n, std::map<std::string, int>& wanted) {
  std::string input;
  for (int i = 1; i <= n; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0.001%06d", i);
    input += std::string(buf) + "\n";
    wanted[nlohmann::json::parse(buf).dump()] = 0;
  }
  return input;
}

// How many tasks of `job` have finished, as the master reports now (0 if it cannot say).
std::size_t finished(Cluster& c, const std::string& job) {
  auto r = c.run({"results", job, "--json", "--connect-timeout", "2"}, std::nullopt, 30s);
  return r.code <= 1 ? r.lines().size() : 0;
}

// Every outcome once, each with its own args as result, none unexpected.
void check_exactly_once(const std::vector<nlohmann::json>& lines, std::map<std::string, int> wanted, const std::string& what) {
  INFO(what);
  std::set<long long> tasks;
  int unexpected = 0, wrong = 0;
  for (const auto& j : lines) {
    tasks.insert(j["task"].get<long long>());
    auto it = wanted.find(j["args"].dump());
    if (it == wanted.end()) {
      ++unexpected;
      continue;
    }
    ++it->second;
    if (j["status"] != "done" || j["result"] != j["args"]) ++wrong;
  }
  int lost = 0, duplicated = 0;
  for (const auto& [args, n] : wanted) {
    if (n == 0) ++lost;
    if (n > 1) ++duplicated;
  }
  CHECK(lost == 0);
  CHECK(duplicated == 0);
  CHECK(unexpected == 0);
  CHECK(wrong == 0);
  CHECK(tasks.size() == wanted.size());
  CHECK(lines.size() == wanted.size());
  MESSAGE(what << ": " << lines.size() << " outcomes, lost " << lost << ", duplicated " << duplicated << ", unexpected " << unexpected
               << ", wrong " << wrong);
}

}  // namespace

TEST_SUITE("durability") {

TEST_CASE("kill -9 of the master three times during a job loses no acknowledged task and records none twice") {
  Cluster c;
  c.start_master();
  const std::string bind = c.endpoint();
  for (int i = 0; i < 3; ++i) c.start_worker({"-j", "2"});
  c.wait_for_workers(3);
  std::map<std::string, int> wanted;
  const int n = 3000;
  // The submitter waits through every restart: it reconnects and carries on.
  auto submit = c.spawn({"submit", "sleep", "--each", "--wait", "--json", "--idempotency-key", "durable-1"}, sleep_input(n, wanted));
  const std::string job = "1";
  std::mt19937 rng(std::random_device{}());
  for (int kill = 1; kill <= 3; ++kill) {
    const std::size_t target = static_cast<std::size_t>(n) * static_cast<std::size_t>(kill) / 4 +
                               std::uniform_int_distribution<std::size_t>(0, n / 10)(rng);
    wait_until([&] { return finished(c, job) >= target; }, 120s, "the job " + std::to_string(target) + " tasks in");
    c.stop_master(SIGKILL);
    c.start_master({}, bind);
  }
  auto r = finish(*submit, 180s);
  CHECK(r.code == 0);
  check_exactly_once(r.json_lines(), wanted, "submit --wait across 3 master kills");
  // The master's own record, read afresh: the same.
  auto all = c.run({"results", job, "--json"});
  CHECK(all.code == 0);
  check_exactly_once(all.json_lines(), wanted, "results after the last restart");
  // The workers were never restarted.
  for (auto& w : c.workers()) CHECK(w->running());
}

TEST_CASE("kill -9 of workers during a job: every task still has exactly one result") {
  Cluster c;
  c.start_master();
  for (int i = 0; i < 3; ++i) c.start_worker({"-j", "2"});
  c.wait_for_workers(3);
  std::map<std::string, int> wanted;
  const int n = 2000;
  auto submit = c.spawn({"submit", "sleep", "--each", "--wait", "--json"}, sleep_input(n, wanted));
  for (int kill = 0; kill < 3; ++kill) {
    wait_until([&] { return finished(c, "1") >= static_cast<std::size_t>(n) * (kill + 1) / 4; }, 120s, "progress");
    c.workers()[static_cast<std::size_t>(kill)]->signal(SIGKILL);
    c.start_worker({"-j", "2"});
  }
  auto r = finish(*submit, 180s);
  CHECK(r.code == 0);
  check_exactly_once(r.json_lines(), wanted, "3 workers killed");
}

TEST_CASE("a resubmission with the same idempotency key returns the same job, also after a restart") {
  Cluster c;
  c.start_master();
  auto a = c.run({"submit", "square", "--each", "--idempotency-key", "order-42"}, "1\n2\n3\n");
  auto b = c.run({"submit", "square", "--each", "--idempotency-key", "order-42"}, "1\n2\n3\n");
  REQUIRE(a.code == 0);
  REQUIRE(b.code == 0);
  CHECK(a.out == b.out);
  const std::string bind = c.endpoint();
  c.stop_master(SIGKILL);
  c.start_master({}, bind);
  auto again = c.run({"submit", "square", "--each", "--idempotency-key", "order-42"}, "1\n2\n3\n");
  CHECK(again.out == a.out);
  auto other = c.run({"submit", "square", "--each", "--idempotency-key", "order-43"}, "1\n2\n3\n");
  CHECK(other.out != a.out);
  auto st = c.status();
  CHECK(st["jobs"] == 2);
  CHECK(st["tasks"] == 6);
}

TEST_CASE("an idempotency key reused with another function or other args is refused, also after kill -9 and a restart") {
  Cluster c;
  c.start_master();
  auto a = c.run({"submit", "square", "--each", "--idempotency-key", "order-7"}, "1\n2\n3\n");
  REQUIRE_MESSAGE(a.code == 0, a.err);
  const std::string job = a.out.substr(0, a.out.find('\n'));
  const auto check_refused = [&](const std::string& when) {
    CAPTURE(when);
    for (const auto& attempt : std::vector<std::pair<std::vector<std::string>, std::string>>{
             {{"submit", "square", "--each", "--idempotency-key", "order-7"}, "1\n2\n4\n"},
             {{"submit", "echo", "--each", "--idempotency-key", "order-7"}, "1\n2\n3\n"},
             {{"submit", "square", "--each", "--priority", "5", "--idempotency-key", "order-7"}, "1\n2\n3\n"},
             {{"submit", "square", "9", "--wait", "--idempotency-key", "order-7"}, ""}}) {
      const auto& args = attempt.first;  // (no structured binding: CAPTURE's lambda cannot take one in clang 14)
      CAPTURE(args[1]);
      auto r = c.run(args, attempt.second);
      CHECK(r.code == 5);
      CHECK(r.out.empty());
      CHECK(r.err == "taskmaster: submit: idempotency key 'order-7' was used for a different job (" + job +
                         "): another function, queue, args or options\n");
    }
    auto same = c.run({"submit", "square", "--each", "--idempotency-key", "order-7"}, "1\n2\n3\n");
    CHECK(same.code == 0);
    CHECK(same.out == a.out);
    auto st = c.status();
    CHECK(st["jobs"] == 1);
    CHECK(st["tasks"] == 3);
  };
  check_refused("before a restart");
  const std::string bind = c.endpoint();
  c.stop_master(SIGKILL);
  c.start_master({}, bind);
  check_refused("after kill -9 and a restart");
}

TEST_CASE("a second master on the same data directory refuses to start") {
  Cluster c;
  c.start_master();
  auto second = c.start({kTaskmaster, "master", "--bind", "tcp://127.0.0.1:0", "--data-dir", c.data_dir()});
  auto r = finish(*second, 20s);
  CHECK(r.code == 5);
  CHECK(r.err.find("in use by another master (pid " + std::to_string(c.master().pid()) + ")") != std::string::npos);
  // The lock dies with its holder.
  c.stop_master(SIGKILL);
  c.start_master({}, "tcp://127.0.0.1:0");
}

TEST_CASE("a full disk while tasks run: only the refused submission fails, running attempts complete once") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to mount a small tmpfs");
    return;
  }
  TempDir mnt;
  if (::mount("tmpfs", mnt.path().c_str(), "tmpfs", 0, "size=4m") != 0) {
    MESSAGE("skipped: cannot mount a tmpfs here");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt.path()};
  Cluster c;
  c.start_master({"--data-dir", mnt.path() + "/data"});
  c.start_worker({"-j", "2", "--name", "w"});
  CHECK(c.run({"submit", "square", "4", "--wait"}).out == "4 -> 16\n");
  auto slow = c.spawn({"submit", "sleep", "--each", "--wait", "--json"}, "5\n5\n");
  wait_until([&] { return c.status()["workers"][0]["in_flight"] == 2; }, 20s, "both sleep tasks running");
  // 1. The disk fills up while they run (a file takes all but 50 KB of it): a submission's commit
  // fails. Each of its lines (500 KB) is more than the disk has left, so whichever batch submit
  // --each sends first (it sends one after 10 ms without a new line) is refused, and nothing is kept.
  const std::string filler = mnt.path() + "/filler";
  {
    struct statvfs fs {};
    REQUIRE(::statvfs(mnt.path().c_str(), &fs) == 0);
    const auto free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    REQUIRE(free_bytes > 100 * 1024);
    std::ofstream(filler, std::ios::binary) << std::string(free_bytes - 50 * 1024, 'x');
  }
  std::string big;
  for (int i = 0; i < 8; ++i) big += "\"" + std::string(500000, static_cast<char>('a' + i % 26)) + "\"\n";
  auto r = c.run({"submit", "echo", "--each", "--wait", "--retry-timeout", "2"}, big, 60s);
  CHECK(r.code == 5);
  CHECK(r.err.find("could not write its journal") != std::string::npos);
  CHECK(r.out.empty());
  CHECK(c.status()["counters"]["journal_failures"] >= 1);
  CHECK(c.status()["workers"][0]["in_flight"] == 2);  // the running attempts were kept
  std::filesystem::remove(filler);                    // the disk has room again
  // 2. The attempts finish: their results are recorded, each task once, never re-run.
  auto done = finish(*slow, 60s);
  REQUIRE_MESSAGE(done.code == 0, done.err);
  const auto rows = done.json_lines();
  REQUIRE(rows.size() == 2);
  for (const auto& row : rows) {
    CHECK(row["status"] == "done");
    CHECK(row["attempts"] == 1);
  }
  auto st = c.status();
  CHECK(st["counters"]["workers_lost"] == 0);
  CHECK(st["workers"].size() == 1);
  CHECK(st["journal"]["writable"] == true);
  // Nothing of the refused submissions was kept, and the master runs new jobs.
  CHECK(st["jobs"] == 2);
  CHECK(c.master().running());
  CHECK(c.run({"submit", "square", "5", "--wait"}).out == "5 -> 25\n");
}

}  // TEST_SUITE

}  // namespace taskmaster::test

namespace taskmaster::test {

TEST_SUITE("durability") {

TEST_CASE("the acknowledgement of a submission leaves only after the fsync that covers it") {
  if (::access("/usr/bin/strace", X_OK) != 0) {
    MESSAGE("skipped: needs strace");
    return;
  }
  Cluster c;
  TempDir dir;
  const std::string trace = dir.path() + "/trace";
  // The master under strace: every fsync/fdatasync and every socket send and receive, with times.
  auto master = c.start({"/usr/bin/strace", "-f", "-tt", "-e", "trace=fsync,fdatasync,sendto,sendmsg,recvfrom,recvmsg", "-o", trace,
                         kTaskmaster, "master", "--bind", "tcp://127.0.0.1:0", "--data-dir", c.data_dir()});
  auto endpoint = master->read_line(30s);
  REQUIRE(endpoint.has_value());
  auto r = c.start({kTaskmaster, "submit", "square", "4", "--connect", *endpoint});
  auto done = finish(*r, 30s);
  REQUIRE(done.code == 0);
  // Stop the master itself (strace's child), cleanly; strace ends with it.
  std::ifstream children("/proc/" + std::to_string(master->pid()) + "/task/" + std::to_string(master->pid()) + "/children");
  pid_t traced = 0;
  children >> traced;
  REQUIRE(traced > 0);
  ::kill(traced, SIGTERM);
  REQUIRE(master->wait(30s).has_value());
  // After the CURVE handshake (HELLO, WELCOME, INITIATE, READY), the client's SUBMIT arrives in a
  // MESSAGE command and the ACCEPTED leaves in one. Between them there must be a completed sync.
  std::ifstream in(trace);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  auto find = [&](std::size_t from, auto pred) {
    for (std::size_t i = from; i < lines.size(); ++i)
      if (pred(lines[i])) return i;
    return lines.size();
  };
  const auto has = [](const std::string& l, const char* a, const char* b) {
    return l.find(a) != std::string::npos && l.find(b) != std::string::npos;
  };
  const auto submit_in = find(0, [&](const std::string& l) { return has(l, "recvfrom(", "MESSAGE") && l.find("= ") != std::string::npos; });
  REQUIRE_MESSAGE(submit_in < lines.size(), "no incoming MESSAGE in the trace");
  const auto ack_out = find(submit_in, [&](const std::string& l) { return has(l, "sendto(", "MESSAGE"); });
  REQUIRE_MESSAGE(ack_out < lines.size(), "no outgoing MESSAGE after the submission");
  std::size_t syncs = 0;
  for (std::size_t i = submit_in; i < ack_out; ++i)
    if ((lines[i].find("fdatasync(") != std::string::npos || lines[i].find("fsync(") != std::string::npos) &&
        lines[i].find("= 0") != std::string::npos)
      ++syncs;
  CAPTURE(lines[submit_in]);
  CAPTURE(lines[ack_out]);
  CHECK(syncs >= 1);
}

}  // TEST_SUITE

}  // namespace taskmaster::test
