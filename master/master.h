// The master: one event loop over one ROUTER socket. It owns the task table, the jobs, the worker
// registry, and the outbox of messages that leave at the end of each loop turn.
// The loop is drawn in docs/ARCHITECTURE.md; the dialogs it serves are in docs/PROTOCOL.md.
// Not thread-safe: run() and everything it calls happen on one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "master/jobs.h"
#include "master/task_table.h"
#include "master/workers.h"
#include "protocol/message.h"
#include "protocol/sockets.h"

namespace taskmaster {

struct MasterConfig {
  protocol::MasterSocketOptions socket;                  // endpoint and socket limits
  std::chrono::milliseconds heartbeat{1000};             // how often each side sends something
  std::chrono::milliseconds worker_timeout{3000};        // a worker silent this long is presumed dead
  std::chrono::milliseconds result_ttl{std::chrono::hours(24)};  // results kept after a job ends
  std::size_t max_messages_per_turn = 4096;              // fairness between receiving and timers
};

// Counters shown by `taskmaster status` (PROTOCOL.md §6.12).
struct MasterCounters {
  std::uint64_t submitted = 0;       // tasks accepted
  std::uint64_t finished = 0;        // tasks that reached done, dead or cancelled
  std::uint64_t bad_messages = 0;    // malformed or not allowed
  std::uint64_t stale_results = 0;   // results for attempts that were no longer current
  std::uint64_t unheld_results = 0;  // results for tasks the sender did not hold
  std::uint64_t workers_lost = 0;    // workers presumed dead
  std::uint64_t expired_jobs = 0;    // jobs whose results' time was up
};

class Master : private TaskListener {
 public:
  // Binds the socket. Throws std::runtime_error (naming the endpoint) if it cannot.
  Master(zmq::context_t& ctx, MasterConfig config);
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

  // The endpoint really bound, e.g. "tcp://127.0.0.1:41234".
  std::string endpoint();

  // Serves until `stop_fd` (e.g. a signalfd) becomes readable; -1 serves until the context closes.
  void run(int stop_fd);

  const MasterCounters& counters() const { return counters_; }

 private:
  struct PendingWait {
    std::string identity;
    protocol::Wait request;
    TimePoint deadline;
  };
  struct Rates {  // tasks per second over the last 10 s, in one-second buckets
    std::array<std::uint64_t, 10> submitted{}, finished{};
    std::int64_t second = 0;
    void advance(std::int64_t now_s);
  };

  // One turn of the loop: everything after poll().
  void turn(TimePoint now);
  void handle(const protocol::Inbound& in, TimePoint now);
  void on_hello(const std::string& id, protocol::Hello& m, TimePoint now);
  void on_credit(const std::string& id, const protocol::Credit& m);
  void on_results(const std::string& id, protocol::Results& m, TimePoint now);
  void on_bye(const std::string& id, TimePoint now);
  void on_submit(const std::string& id, protocol::Submit& m, TimePoint now);
  void on_wait(const std::string& id, const protocol::Wait& m, TimePoint now);
  void on_cancel(const std::string& id, const protocol::Cancel& m, TimePoint now);
  void on_status(const std::string& id, const protocol::Status& m, TimePoint now);

  void on_task_change(const Task& task, std::optional<TaskState> from) override;

  // Ends a worker session: the attempts it held fail with `why`.
  void drop_worker(const std::string& identity, const std::string& why, TimePoint now);
  // The same for a worker that vanished without BYE: logged and counted.
  void lose_worker(const std::string& identity, const std::string& why, TimePoint now);
  void dispatch(TimePoint now);
  void answer_waits(TimePoint now, bool timers);
  bool try_answer(PendingWait& w, TimePoint now, bool timed_out);
  void housekeeping(TimePoint now);
  void flush();

  void reply(const std::string& identity, protocol::Message m);
  void reply_error(const std::string& identity, std::uint64_t req, ErrorCode code, std::string message);
  void log_bad(const std::string& identity, const Error& e);
  nlohmann::json status_json(TimePoint now);

  MasterConfig config_;
  zmq::socket_t socket_;
  std::string instance_;  // random id, new at every start
  TaskTable tasks_;
  JobTable jobs_;
  WorkerRegistry workers_;
  MasterCounters counters_;
  Rates rates_;
  TimePoint started_;

  // Outbox: everything that leaves this turn, sent by flush().
  std::unordered_map<std::string, std::vector<protocol::Assignment>> out_tasks_;
  std::unordered_map<std::string, std::vector<TaskId>> out_acks_;
  std::vector<std::pair<std::string, protocol::Message>> out_replies_;

  std::vector<PendingWait> waits_;
  bool waits_dirty_ = false;      // a task finished or a job changed since waits were last checked
  bool dispatch_needed_ = false;  // tasks became queued or a worker got free slots
  std::size_t rr_ = 0;            // rotates which worker dispatch serves first
  TimePoint next_housekeeping_{};
  TimePoint log_window_{};        // rate limit of bad-message log lines
  int log_budget_ = 0;
};

}  // namespace taskmaster
