// The worker's thread pool, in process: attempts go in on one thread, run on several, and every
// outcome comes back once through take(). scripts/test.sh also runs these under ThreadSanitizer.
#include "worker/pool.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace taskmaster {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

protocol::Assignment attempt(protocol::TaskId task, std::string function, std::string args) {
  return {task, 1, 1, std::move(function), std::move(args), 60'000};
}

// Takes outcomes until `n` have come (or 30 s pass), waiting on the pool's wake-up socket as the worker does.
std::vector<protocol::Result> take_all(Pool& pool, std::size_t n) {
  std::vector<protocol::Result> out;
  const auto give_up = SteadyClock::now() + 30s;
  while (out.size() < n && SteadyClock::now() < give_up) {
    zmq::pollitem_t item{pool.wakeup().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 100ms);
    for (auto& r : pool.take()) out.push_back(std::move(r));
  }
  return out;
}

TEST_CASE("the pool runs attempts on its threads and returns each outcome once") {
  zmq::context_t ctx;
  HandlerRegistry reg;
  add_builtin_handlers(reg);
  std::atomic<int> calls{0};
  reg.add("count", [&](const json& args, const TaskContext&) {
    ++calls;
    return args;
  });
  Pool pool(ctx, reg, 4);
  CHECK(pool.threads() == 4);
  constexpr int kTasks = 400;
  for (int i = 0; i < kTasks; i += 10) {  // batches of 10, as the worker submits them
    std::vector<protocol::Assignment> batch;
    for (int j = i; j < i + 10; ++j) batch.push_back(attempt(j + 1, j % 2 ? "count" : "square", std::to_string(j)));
    pool.submit(std::move(batch));
  }
  const auto results = take_all(pool, kTasks);
  REQUIRE(results.size() == kTasks);
  std::map<protocol::TaskId, std::string> by_task;
  for (const auto& r : results) {
    CHECK(r.ok);
    by_task[r.task] = r.value;
  }
  REQUIRE(by_task.size() == kTasks);
  for (int j = 0; j < kTasks; ++j) CHECK(by_task[j + 1] == std::to_string(j % 2 ? j : j * j));
  CHECK(calls == kTasks / 2);
  CHECK(pool.usage().runs == kTasks);
  CHECK(pool.take().empty());
}

TEST_CASE("the pool reports unknown functions and failing handlers as failed attempts") {
  zmq::context_t ctx;
  HandlerRegistry reg;
  add_builtin_handlers(reg);
  Pool pool(ctx, reg, 2);
  pool.submit({attempt(1, "nope", "1"), attempt(2, "fail", "\"boom\""), attempt(3, "square", "\"x\"")});
  const auto results = take_all(pool, 3);
  REQUIRE(results.size() == 3);
  for (const auto& r : results) CHECK_FALSE(r.ok);
}

TEST_CASE("stop_now makes running handlers give up, and the pool is destroyed with attempts still queued") {
  zmq::context_t ctx;
  HandlerRegistry reg;
  add_builtin_handlers(reg);
  const auto start = SteadyClock::now();
  {
    Pool pool(ctx, reg, 2);
    std::vector<protocol::Assignment> batch;
    for (int i = 0; i < 20; ++i) batch.push_back(attempt(i + 1, "sleep", "30"));
    pool.submit(std::move(batch));
    std::this_thread::sleep_for(50ms);  // two of them running
    pool.stop_now();
    const auto results = take_all(pool, 2);
    CHECK(results.size() >= 2);
    for (const auto& r : results) CHECK_FALSE(r.ok);
  }  // the others are dropped, the threads joined
  CHECK(SteadyClock::now() - start < 20s);
}

}  // namespace
}  // namespace taskmaster
