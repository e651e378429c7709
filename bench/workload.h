// The standard workload of ../shared/PEERS.md: square(n), n random in 0..10000 (a seeded
// xorshift; the seed is the repetition number), every result checked against its own n and every
// task id seen exactly once.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "client/client.h"

namespace taskmaster::bench {

inline constexpr std::int64_t kMaxN = 10000;

// xorshift64: the workload's n, reproducible from the seed.
class Numbers {
 public:
  explicit Numbers(std::uint64_t seed) : x_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::int64_t next() {
    x_ ^= x_ << 13;
    x_ ^= x_ >> 7;
    x_ ^= x_ << 17;
    return static_cast<std::int64_t>(x_ % (kMaxN + 1));
  }

 private:
  std::uint64_t x_;
};

// What was submitted and what came back. Verifies as outcomes arrive; verify() says whether the
// run as a whole was right.
class Ledger {
 public:
  Ledger() : wanted_(kMaxN + 1, 0) {}
  void expect(std::int64_t n);
  // One outcome as the client library delivers it: status done, args n, result n*n, a task id
  // not seen before, an n that was submitted (as many times as it was).
  void take(const protocol::Outcome& o);
  // The same from the pieces of a `submit --json` line.
  void take(std::uint64_t task, const std::string& status, const std::string& args, const std::string& result);
  // Every submitted task came back exactly once and right; else an Error that says what was wrong.
  Status verify() const;
  std::uint64_t received() const { return received_; }
  std::uint64_t submitted() const { return submitted_; }

 private:
  void fail(std::string why);
  std::vector<std::int64_t> wanted_;  // per n: submitted minus received
  std::unordered_set<std::uint64_t> seen_;
  std::uint64_t submitted_ = 0, received_ = 0, wrong_ = 0;
  std::string first_error_;
};

struct RunOptions {
  std::string queue = "default";
  std::uint64_t seed = 1;
};

// Submits `n` square tasks as one job through the client library, as fast as it takes them, and
// collects every outcome (run_job with a TaskSource and an OutcomeSink). Fails if the run is wrong.
struct Collected {
  double seconds = 0;         // from just before the first submit to the last outcome verified
  std::uint64_t replies = 0;  // OUTCOMES replies the outcomes came in
};
Expected<Collected> submit_and_collect(Client& client, std::uint64_t n, const RunOptions& o);

// Submits `n` tasks as one job and returns once every batch is accepted (nothing waits for them
// to run). Returns the seconds it took.
Expected<double> submit_only(Client& client, std::uint64_t n, const RunOptions& o, protocol::JobId* job = nullptr);

// `count` sequential round trips: submit one task, wait for its outcome, verify it. Returns each
// round trip's time in microseconds.
Expected<std::vector<double>> round_trips(Client& client, std::uint64_t count, const RunOptions& o);

// `count` sequential one-task submissions, each timed from its SUBMIT to its ACCEPTED (with a
// durable master: to the acknowledgement that it is on disk). Returns microseconds.
Expected<std::vector<double>> acks(Client& client, std::uint64_t count, const RunOptions& o);

// The standard input of `taskmaster submit square --each` (one n per line), recorded in `ledger`.
std::string cli_input(std::uint64_t n, std::uint64_t seed, Ledger& ledger);
// Checks the stdout of `taskmaster submit square --each --wait --json` against the ledger.
Status check_cli_output(const std::string& out, Ledger& ledger);

}  // namespace taskmaster::bench
