// The worker registry: credit accounting, sessions by identity and name, silent workers.
#include "master/workers.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace taskmaster {
namespace {

using namespace std::chrono_literals;

const TimePoint t0{};

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST_SUITE("workers") {

TEST_CASE("free slots are the slots minus the attempts held, never below zero") {
  WorkerSession w;
  w.slots = 4;
  CHECK(w.free_slots() == 4);
  w.held[1] = 1;
  w.held[2] = 3;
  w.held[3] = 1;
  CHECK(w.free_slots() == 1);
  w.held[4] = 2;
  CHECK(w.free_slots() == 0);
  w.held[4] = 3;  // the same task again: still one slot
  CHECK(w.free_slots() == 0);

  SUBCASE("CREDIT 0 while draining: the worker holds more than its slots") {
    w.slots = 0;
    CHECK(w.free_slots() == 0);
    w.held.erase(1);
    CHECK(w.free_slots() == 0);
  }
  SUBCASE("fewer slots than held attempts") {
    w.slots = 2;
    CHECK(w.free_slots() == 0);
    w.held.erase(1);
    w.held.erase(2);
    CHECK(w.free_slots() == 0);  // 2 held, 2 slots
    w.held.erase(3);
    CHECK(w.free_slots() == 1);
  }
  SUBCASE("results free their slots") {
    w.held.clear();
    CHECK(w.free_slots() == 4);
  }
}

TEST_CASE("add registers a session, and replaces the one with the same identity") {
  WorkerRegistry reg;
  WorkerSession& a = reg.add("id-a", 1, t0 + 1s);
  CHECK(a.identity == "id-a");
  CHECK(a.name == 1);
  CHECK(a.connected == t0 + 1s);
  CHECK(a.last_heard == t0 + 1s);
  CHECK(a.last_sent == t0 + 1s);
  CHECK(a.held.empty());
  a.slots = 8;
  a.held[7] = 1;
  a.done = 3;
  a.filter.functions.push_back(5);
  reg.add("id-b", 2, t0 + 1s);
  CHECK(reg.size() == 2);

  WorkerSession& again = reg.add("id-a", 3, t0 + 2s);
  CHECK(reg.size() == 2);
  CHECK(reg.find("id-a") == &again);
  CHECK(again.name == 3);
  CHECK(again.slots == 0);
  CHECK(again.held.empty());
  CHECK(again.done == 0);
  CHECK(again.filter.functions.empty());
  CHECK(again.connected == t0 + 2s);
  CHECK(reg.find("id-b")->name == 2);
}

TEST_CASE("find and find_by_name return the session or nothing - remove forgets it") {
  WorkerRegistry reg;
  reg.add("id-a", 1, t0);
  reg.add("id-b", 2, t0);
  REQUIRE(reg.find("id-b") != nullptr);
  CHECK(reg.find("id-b")->identity == "id-b");
  CHECK(reg.find("id-c") == nullptr);
  REQUIRE(reg.find_by_name(2) != nullptr);
  CHECK(reg.find_by_name(2)->identity == "id-b");
  CHECK(reg.find_by_name(1)->identity == "id-a");
  CHECK(reg.find_by_name(9) == nullptr);

  reg.remove("id-b");
  CHECK(reg.size() == 1);
  CHECK(reg.find("id-b") == nullptr);
  CHECK(reg.find_by_name(2) == nullptr);
  reg.remove("id-zzz");  // unknown: nothing happens
  CHECK(reg.size() == 1);
}

TEST_CASE("silent lists exactly the workers not heard from for longer than the timeout") {
  WorkerRegistry reg;
  reg.add("a", 1, t0);
  reg.add("b", 2, t0);
  reg.add("c", 3, t0);
  reg.find("b")->last_heard = t0 + 1s;
  reg.find("c")->last_heard = t0 + 2s;

  CHECK(reg.silent(t0 + 3s, 3s).empty());  // exactly the timeout is not longer
  CHECK(reg.silent(t0 + 3001ms, 3s) == std::vector<std::string>{"a"});
  CHECK(sorted(reg.silent(t0 + 4s, 3s)) == std::vector<std::string>{"a"});
  CHECK(sorted(reg.silent(t0 + 4001ms, 3s)) == std::vector<std::string>{"a", "b"});
  CHECK(sorted(reg.silent(t0 + 5001ms, 3s)) == std::vector<std::string>{"a", "b", "c"});
  // Hearing from a worker makes it live again.
  reg.find("a")->last_heard = t0 + 5s;
  CHECK(sorted(reg.silent(t0 + 5001ms, 3s)) == std::vector<std::string>{"b", "c"});
  // Listing does not remove.
  CHECK(reg.size() == 3);
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
