// examples/custom_worker.cpp as a user runs it: against a keyed master, with the key found as every
// taskmaster command finds it, and saying why when there is no usable key.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <fstream>
#include <set>

#include "support/cluster.h"

namespace taskmaster::test {
namespace {

const std::string kExampleWorker = TASKMASTER_EXAMPLE_WORKER;

}  // namespace

TEST_SUITE("example") {

TEST_CASE("the C++ example worker loads the key as the commands do and computes its own function") {
  Cluster c;
  c.start_master();
  // No --key-file: the key comes from TASKMASTER_KEY_FILE, as for every taskmaster command.
  auto w = c.start({kExampleWorker, c.endpoint()});
  c.wait_for_workers(1);
  auto r = c.run({"submit", "word_count", "--each", "--wait", "--json"}, "\"the quick brown fox\"\n\"\"\n\"one\"\n");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::multiset<long long> counts;
  for (const auto& j : r.json_lines()) {
    CHECK(j.value("status", "") == "done");
    counts.insert(j["result"].get<long long>());
  }
  CHECK(counts == std::multiset<long long>{0, 1, 4});
  // Its handler's error fails the attempt, with the handler's message.
  auto bad = c.run({"submit", "word_count", "12", "--max-attempts", "1", "--wait", "--json"});
  CHECK(bad.code == 1);
  CHECK(bad.out.find("word_count: expected a string") != std::string::npos);
  // SIGTERM drains it: exit 0.
  w->signal(SIGTERM);
  CHECK(w->wait(20s) == std::optional<int>(0));
}

TEST_CASE("the C++ example worker says why it cannot run: wrong key, no key, a key file others can read") {
  Cluster c;
  c.start_master();
  SUBCASE("a key the master refuses") {
    TestKey other;
    auto w = c.start({kExampleWorker, "--key-file", other.path(), c.endpoint()});
    auto r = finish(*w, 30s);
    CHECK(r.code == 4);
    CHECK(r.err.find("custom_worker: ") == 0);
    CHECK(r.err.find("authentication failed") != std::string::npos);
  }
  SUBCASE("no key anywhere") {
    TempDir home;
    ::unsetenv("TASKMASTER_KEY");
    ChildProcess w(
        {kExampleWorker, c.endpoint()},
        ChildProcess::Options{std::nullopt, {"HOME=" + home.path(), "XDG_CONFIG_HOME=" + home.path() + "/config", "TASKMASTER_KEY_FILE="}});
    auto r = finish(w, 20s);
    CHECK(r.code == 4);
    CHECK(r.err.find("custom_worker: no key") == 0);
    CHECK(r.err.find("taskmaster keygen") != std::string::npos);
  }
  SUBCASE("a key file others can read, or none at that path") {
    TempDir dir;
    const std::string path = dir.path("key");
    std::ofstream(path) << std::string(64, 'a') << "\n";
    ::chmod(path.c_str(), 0644);
    auto w = c.start({kExampleWorker, "--key-file", path, c.endpoint()});
    auto r = finish(*w, 20s);
    CHECK(r.code == 4);
    CHECK(r.err.find("accessible by group or others") != std::string::npos);
    auto missing = c.start({kExampleWorker, "--key-file", dir.path("nonexistent"), c.endpoint()});
    auto mr = finish(*missing, 20s);
    CHECK(mr.code == 4);
    CHECK(mr.err.find("cannot read key file") != std::string::npos);
  }
  SUBCASE("a bad command line") {
    auto w = c.start({kExampleWorker, "--bogus"});
    auto r = finish(*w, 20s);
    CHECK(r.code == 2);
    CHECK(r.err.find("usage:") != std::string::npos);
  }
  CHECK(c.status()["workers"].empty());
}

}  // TEST_SUITE

}  // namespace taskmaster::test
