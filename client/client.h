// The client library: how applications (and the taskmaster CLI) talk to a master.
// Every call has a deadline; nothing here waits forever. A request that gets no answer is sent
// again once the connection is back (every request is safe to repeat: submissions carry an
// idempotency key and a batch number), until `retry_timeout` passes without any answer.
// Not thread-safe: use one Client per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "common/expected.h"
#include "protocol/message.h"
#include "protocol/probe.h"
#include "protocol/sockets.h"

namespace taskmaster {

struct ClientOptions {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::optional<protocol::CurveKeys> curve;         // keys derived from the shared key; nullopt: --insecure
  std::chrono::milliseconds connect_timeout{5000};  // first connection: give up after this
  std::chrono::milliseconds retry_timeout{60000};   // later: keep trying this long without an answer
};

// A reply to one request.
struct Reply {
  std::uint64_t req = 0;
  protocol::Message message;
};

class Client {
 public:
  using Clock = std::chrono::steady_clock;

  Client(zmq::context_t& ctx, ClientOptions options);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Waits until the connection to the master is up (its handshake done). Fails with Unreachable
  // ("cannot reach the master at ...") after connect_timeout, or AuthFailed.
  Status connect();

  // Sends a request (its req field is set here) and returns its req. The request is resent if no
  // reply comes within `patience` (plus a margin), or at once when a lost connection comes back.
  // An `unavailable` answer (the master cannot take it now: it is full, or cannot write its
  // journal) is not a reply: the request is sent again after a backoff (250 ms doubling to 2 s)
  // until it is taken or retry_timeout passes, and then next() fails with the master's reason.
  // A request over the message size limit is never sent (the master would drop the connection
  // without a word); next() then fails with TooLarge.
  std::uint64_t start(protocol::Message request, std::chrono::milliseconds patience = std::chrono::milliseconds(0));
  // The next reply to a started request, waiting at most until `deadline` (nullopt then).
  // Fails with Unreachable after retry_timeout with no reply at all while requests are pending.
  Expected<std::optional<Reply>> next(Clock::time_point deadline);
  // start() then wait for that request's reply; an ERROR reply becomes an Error.
  Expected<protocol::Message> call(protocol::Message request, std::chrono::milliseconds patience = std::chrono::milliseconds(0));

  std::size_t pending() const { return pending_.size(); }
  const std::string& endpoint() const { return options_.endpoint; }

 private:
  struct Pending {
    std::string_view command;
    std::string body;  // encoded once
    std::chrono::milliseconds patience;
    Clock::time_point resend_at;
    std::chrono::milliseconds backoff{0};            // after an `unavailable` answer
    std::optional<Clock::time_point> refused_since;  // the first `unavailable` answer of a run of them
  };
  void send_pending(Pending& p, Clock::time_point now);
  // Reads monitor events; returns an error if the handshake failed.
  Status read_monitor(Clock::time_point now);
  std::optional<Error> too_large_;  // a request that can never be sent

  zmq::context_t& ctx_;
  ClientOptions options_;
  protocol::ConnectionMonitor monitor_;
  zmq::socket_t socket_;
  bool connected_ = false;  // handshake done and not disconnected since
  bool ever_connected_ = false;
  protocol::HandshakeJudge judge_;  // tells a refused key from a master that is away
  std::string unavailable_;         // the master's last `unavailable` reason, while requests wait
  std::uint64_t next_req_ = 1;
  std::map<std::uint64_t, Pending> pending_;
  Clock::time_point last_progress_{};
};

// Reads an ERROR reply as an Error; any other message is Ok.
Status as_status(const protocol::Message& m);
// The error for a reply of the wrong type (a master speaking another dialect, or a bug).
Error unexpected_reply(std::string_view request, const protocol::Message& got);

// Counts of a job's outcomes seen by run_job / follow_job.
struct JobSummary {
  protocol::JobId job = 0;
  std::uint64_t total = 0;
  std::uint64_t done = 0, dead = 0, cancelled = 0;
  bool sealed = false;  // no more tasks can join the job (as of the last reply)
  bool ended = false;   // sealed, and every task finished
  bool all_done() const { return ended && dead == 0 && cancelled == 0; }
};

using TaskSource = std::function<std::optional<protocol::TaskSpec>()>;  // nullopt: no more tasks
// A source whose tasks may arrive slowly (lines of a pipe): each call returns a task, "nothing yet"
// after waiting at most until `deadline`, or the end.
struct TaskPull {
  enum class Kind { Task, NotYet, End } kind = Kind::End;
  protocol::TaskSpec task{};
};
using StreamingTaskSource = std::function<TaskPull(std::chrono::steady_clock::time_point deadline)>;
// Receives the outcomes of one reply at a time (a batch), in the order the tasks finished.
using OutcomeSink = std::function<void(protocol::JobId, const std::vector<protocol::Outcome>&)>;

struct JobOptions {
  std::string idempotency_key;          // "" = a random one, so resends never duplicate the job
  std::size_t batch_tasks = 10000;      // tasks per SUBMIT at most
  std::size_t batch_bytes = 4 << 20;    // args bytes per SUBMIT at most
  std::size_t window = 4;               // SUBMIT batches in flight at once
  std::chrono::milliseconds quiet{10};  // a streaming source silent this long closes the batch
  // The jobs this one waits for (SUBMIT after), and whether it runs only if they ended with every
  // task done (after_success).
  std::vector<protocol::JobId> after{};
  bool after_success = false;
  // With on_outcome: called after each answer to a WAIT, with the counts so far (a progress line).
  std::function<void(const JobSummary&)> on_progress{};
};

// Submits a job: all tasks from `source`, in pipelined batches. `on_accepted` is called once, when
// the first batch is accepted. With `on_outcome`, also streams each finished task's outcome as it
// arrives, until the job ends. Without, returns once every batch is accepted.
Expected<JobSummary> run_job(Client& client, const TaskSource& source, const JobOptions& options,
                             const std::function<void(protocol::JobId)>& on_accepted, const OutcomeSink* on_outcome);
// The same from a streaming source: a batch is sent when it is full or its source has been quiet
// for `JobOptions::quiet` (the first batch waits for at least one task), so tasks are submitted as
// they arrive and outcomes flow while the source is still being read.
Expected<JobSummary> run_job(Client& client, const StreamingTaskSource& source, const JobOptions& options,
                             const std::function<void(protocol::JobId)>& on_accepted, const OutcomeSink* on_outcome);

// Streams the outcomes of an existing job. until_end: wait until the job ends; otherwise stop once
// every outcome finished so far has been read.
// `on_first_reply`, if given, is called once, after the master's first answer (the job's total known);
// `on_progress` after every answer, with the counts so far.
Expected<JobSummary> follow_job(Client& client, protocol::JobId job, bool until_end, const OutcomeSink& on_outcome,
                                const std::function<void(const JobSummary&)>& on_first_reply = nullptr,
                                const std::function<void(const JobSummary&)>& on_progress = nullptr);

}  // namespace taskmaster
