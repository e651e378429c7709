// libFuzzer target: the master's message handling (MasterState) on an in-memory state, with no
// sockets and no clock. The input is a program of operations: structured ones (a worker says
// HELLO, a client submits, a worker returns a result for a task it was given, time passes, a send
// fails, ...) and raw ones (bytes decoded as a message from some peer). After every step it checks
// MasterState::check_invariants() and aborts on a violation. See scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "master/metrics.h"
#include "master/state.h"

namespace tm_ = taskmaster;
namespace proto = taskmaster::protocol;

namespace {

class Input {
 public:
  Input(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  bool empty() const { return i_ >= n_; }
  std::uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
  std::string bytes(std::size_t max) {
    const std::size_t len = std::min<std::size_t>(u16(), max);
    const std::size_t take = std::min(len, n_ - std::min(i_, n_));
    std::string s(reinterpret_cast<const char*>(d_ + i_), take);
    i_ += take;
    return s;
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_, i_ = 0;
};

const char* const kFunctions[] = {"square", "echo", "fail", "sleep"};
const char* const kQueues[] = {"default", "fast"};
const char* const kCommands[] = {"HELLO", "CREDIT", "RESULTS", "HEARTBEAT", "BYE", "SUBMIT", "WAIT", "CANCEL", "STATUS", "TASKS", "RETRY"};
const char* const kPaths[] = {"/metrics",   "/api/status", "/api/workers",       "/api/jobs",
                              "/api/jobs/", "/api/jobs/J", "/api/jobs/J/cancel", "/api/jobs/J/retry"};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tm_::set_log_level(tm_::LogLevel::Error);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  tm_::MasterConfig config;
  config.result_ttl = std::chrono::milliseconds(5000);
  tm_::TimePoint now{std::chrono::hours(1)};
  tm_::MasterState state(config, "fuzz", now);
  tm_::Metrics metrics;
  state.set_metrics(&metrics);
  std::map<std::string, std::vector<proto::Assignment>> given;  // what each peer was sent
  std::map<std::string, std::vector<proto::Lease>> revoked;     // the last REVOKE each peer was sent
  std::vector<proto::JobId> jobs;
  auto peer = [&] { return std::string(1, static_cast<char>('A' + in.byte() % 6)); };
  auto drain = [&](bool fail_some) {
    state.turn(now);
    for (auto& o : state.take_outbox()) {
      if (fail_some && in.byte() % 4 == 0) {
        state.send_failed(o.identity, o.message, in.byte() % 2 ? proto::SendResult::WouldBlock : proto::SendResult::PeerGone, now);
        continue;
      }
      state.sent(o.identity, now);
      if (auto* t = std::get_if<proto::Tasks>(&o.message))
        for (auto& a : t->tasks) given[o.identity].push_back(a);
      if (auto* a = std::get_if<proto::Accepted>(&o.message)) jobs.push_back(a->job);
      if (auto* r = std::get_if<proto::Revoke>(&o.message)) revoked[o.identity] = r->tasks;
    }
    // After every step the state's bookkeeping holds (counts, buckets, leases, name references,
    // workers' credit): a violation is a bug even if nothing crashed.
    if (const auto broken = state.check_invariants(); !broken.empty()) {
      std::fprintf(stderr, "invariant broken: %s\n", broken.c_str());
      std::abort();
    }
  };
  for (int steps = 0; !in.empty() && steps < 400; ++steps) {
    const std::string id = peer();
    switch (in.byte() % 15) {
      case 0: {  // HELLO
        proto::Hello h;
        h.worker = "w" + id + std::to_string(in.byte() % 2);
        h.functions = {kFunctions[in.byte() % 4]};
        if (in.byte() % 2) h.functions.push_back(kFunctions[in.byte() % 4]);
        h.queues = {kQueues[in.byte() % 2]};
        h.slots = in.byte() % 5;
        if (in.byte() % 2) {  // the feature "reserve"
          h.features = {"reserve"};
          h.threads = 1 + in.byte() % 3;
        }
        for (auto& a : given[id])
          if (in.byte() % 2) h.running.push_back({a.task, a.attempt});
        state.receive(id, proto::Message(h), now);
        break;
      }
      case 1: {  // SUBMIT, a new job or more for a known one
        proto::Submit s;
        s.req = in.byte();
        if (!jobs.empty() && in.byte() % 3 == 0) {
          s.job = jobs[in.byte() % jobs.size()];
          s.seq = in.byte() % 4;
        }
        s.more = in.byte() % 3 == 0;
        if (in.byte() % 2) s.idempotency_key = "k" + std::to_string(in.byte() % 4);
        const int n = in.byte() % 6;
        for (int i = 0; i < n; ++i) {
          proto::TaskSpec t;
          t.function = kFunctions[in.byte() % 4];
          t.queue = kQueues[in.byte() % 2];
          t.args = std::to_string(in.byte());
          t.priority = static_cast<std::int8_t>(in.byte());
          t.delay_ms = in.byte() % 4 == 0 ? in.byte() * 10u : 0;
          t.timeout_ms = 1 + in.byte() * 20u;
          t.max_attempts = 1 + in.byte() % 3;
          t.backoff_ms = in.byte() * 5u;
          s.tasks.push_back(std::move(t));
        }
        if (s.tasks.empty() && s.job == 0) break;
        if (s.job == 0 && !jobs.empty() && in.byte() % 3 == 0) {  // jobs after jobs: one or two known jobs, or an unknown one
          s.after = {in.byte() % 8 == 0 ? proto::JobId{999999} : jobs[in.byte() % jobs.size()]};
          if (in.byte() % 2) s.after.push_back(jobs[in.byte() % jobs.size()]);
          s.after_success = in.byte() % 2;
        }
        state.receive(id, proto::Message(s), now);
        break;
      }
      case 2: {  // RESULTS for something this peer (or another) was given
        auto& list = given[in.byte() % 2 ? id : peer()];
        if (list.empty()) break;
        const auto& a = list[in.byte() % list.size()];
        proto::Result r{a.task, a.attempt, in.byte() % 3 != 0, {}};
        r.value = r.ok ? std::to_string(in.byte()) : "err";
        if (in.byte() % 5 == 0) r.attempt += 1;
        state.receive(id, proto::Message(proto::Results{{r}}), now);
        break;
      }
      case 3: state.receive(id, proto::Message(proto::Credit{in.byte() % 4u}), now); break;
      case 4: state.receive(id, proto::Message(proto::Heartbeat{}), now); break;
      case 5: state.receive(id, proto::Message(proto::Bye{}), now); break;
      case 6:
        if (!jobs.empty())
          state.receive(id,
                        proto::Message(
                            proto::Wait{in.byte(), jobs[in.byte() % jobs.size()], in.byte() % 8u, 1u + in.byte() % 8, in.byte() * 10u, {}}),
                        now);
        break;
      case 7:
        if (!jobs.empty()) state.receive(id, proto::Message(proto::Cancel{in.byte(), jobs[in.byte() % jobs.size()]}), now);
        break;
      case 8: state.receive(id, proto::Message(proto::Status{in.byte()}), now); break;
      case 9: {  // raw bytes, as any peer could send them
        const std::string command = kCommands[in.byte() % 11];
        const std::string body = in.bytes(4096);
        state.receive(id, proto::decode(proto::kSignature, command, body), now);
        break;
      }
      case 10: now += std::chrono::milliseconds(in.u16()); break;
      case 13:
        if (!jobs.empty()) state.receive(id, proto::Message(proto::Retry{in.byte(), jobs[in.byte() % jobs.size()]}), now);
        else state.receive(id, proto::Message(proto::Purge{in.byte(), in.byte() % 2 ? "default" : "other"}), now);
        break;
      case 14: {  // an HTTP request as the loop gets it (access already checked): a known path or raw bytes
        tm_::HttpQuery q;
        q.method = in.byte() % 2 ? "GET" : "POST";
        q.path = kPaths[in.byte() % 8];
        if (auto j = q.path.find('J'); j != std::string::npos)
          q.path.replace(j, 1, jobs.empty() || in.byte() % 4 == 0 ? in.bytes(24) : std::to_string(jobs[in.byte() % jobs.size()]));
        if (q.path == "/api/jobs/") q.path += in.bytes(64);
        for (int i = 0, n = in.byte() % 3; i < n; ++i) q.params[i % 2 ? "limit" : (in.byte() % 2 ? "offset" : "before")] = in.bytes(24);
        (void)state.http(q, now);
        break;
      }
      case 11:    // STARTED, or RELEASED (asked for or not), for attempts this peer (or another) was given
      case 12: {  // (the fuzzer answers no REVOKE on its own: it sends these at random)
        auto& asked = revoked[id];
        if (!asked.empty() && in.byte() % 2) {  // an answer to the last REVOKE: some of what it asked
          std::vector<proto::Lease> back;
          for (const auto& a : asked)
            if (in.byte() % 4) back.push_back(a);
          asked.clear();
          state.receive(id, proto::Message(proto::Released{back}), now);
          break;
        }
        auto& list = given[in.byte() % 2 ? id : peer()];
        if (list.empty()) break;
        std::vector<proto::Lease> some;
        for (int i = 0, n = 1 + in.byte() % 4; i < n; ++i) {
          const auto& a = list[in.byte() % list.size()];
          some.push_back({a.task, a.attempt + (in.byte() % 5 == 0 ? 1u : 0u)});
        }
        if (in.byte() % 2) state.receive(id, proto::Message(proto::Started{some}), now);
        else state.receive(id, proto::Message(proto::Released{some}), now);
        break;
      }
    }
    drain(in.byte() % 8 == 0);
  }
  // Let every timer fire.
  for (int i = 0; i < 5; ++i) {
    now += std::chrono::seconds(30);
    drain(false);
  }
  return 0;
}
