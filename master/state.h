// The master's state and rules, without sockets: the task table, the jobs, the worker registry, the
// clients waiting for outcomes, and the outbox of messages the loop sends at the end of each turn.
// Master (master.h) feeds it decoded messages and time; tests and the fuzzer do the same directly.
// The dialogs it serves are in docs/PROTOCOL.md.
// Not thread-safe: owned by one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "master/jobs.h"
#include "master/journal.h"
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
  std::optional<std::string> data_dir;                   // the journal's directory; nullopt: memory only
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

class MasterState : private TaskListener {
 public:
  // `instance`: the master's id, told to workers in WELCOME (new at every start). `start`: the
  // time of the first turn (uptime and rates count from it).
  MasterState(MasterConfig config, std::string instance, TimePoint start = Clock::now());
  MasterState(const MasterState&) = delete;
  MasterState& operator=(const MasterState&) = delete;

  // Replays the journal into this (new, empty) state, then records every change in it. Without a
  // call to recover() the state lives in memory only.
  Journal::Loaded recover(Journal& journal, TimePoint now);
  // Task ids start at `first` (or past it); for a master without a journal (Master does this).
  void start_task_ids_at(TaskId first) { tasks_.set_next_id(first); }

  // Handles one message from the peer `identity` (its ROUTER routing id); a decoding error is
  // counted, logged and answered. Never throws for anything a peer can send.
  void receive(const std::string& identity, Expected<protocol::Message> message, TimePoint now);
  // The rest of a loop turn, after the messages: timers, dispatch, answers to waiting clients.
  void turn(TimePoint now);
  // When turn() next has something to do.
  std::optional<TimePoint> next_deadline() const;

  // A message for one peer, in the order they must be sent.
  struct Outgoing {
    std::string identity;
    protocol::Message message;
  };
  // Everything to send since the last call.
  std::vector<Outgoing> take_outbox();
  // The loop reports each send: sent() on success, send_failed() otherwise (a TASKS message that
  // did not leave puts its tasks back in the queue; a peer that is gone loses its session).
  void sent(const std::string& identity, TimePoint now);
  void send_failed(const std::string& identity, const protocol::Message& m, protocol::SendResult why, TimePoint now);

  const MasterCounters& counters() const { return counters_; }
  const TaskTable& tasks() const { return tasks_; }
  const std::string& instance() const { return instance_; }
  std::size_t workers() const { return workers_.size(); }

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

  void reply(const std::string& identity, protocol::Message m);
  void reply_error(const std::string& identity, std::uint64_t req, ErrorCode code, std::string message);
  void log_bad(const std::string& identity, const Error& e);
  nlohmann::json status_json(TimePoint now);

  MasterConfig config_;
  std::string instance_;
  Journal* journal_ = nullptr;  // not owned; null: in memory only
  TaskTable tasks_;
  JobTable jobs_;
  WorkerRegistry workers_;
  MasterCounters counters_;
  Rates rates_;
  TimePoint started_;
  TimePoint now_{};               // the `now` of the message or turn being handled

  // Outbox: everything that leaves this turn, in order. ACKs gather per worker during the turn.
  std::vector<Outgoing> out_;
  std::unordered_map<std::string, std::vector<TaskId>> out_acks_;

  std::vector<PendingWait> waits_;
  bool waits_dirty_ = false;      // a task finished or a job changed since waits were last checked
  bool dispatch_needed_ = false;  // tasks became queued or a worker got free slots
  std::size_t rr_ = 0;            // rotates which worker dispatch serves first
  TimePoint next_housekeeping_{};
  TimePoint log_window_{};        // rate limit of bad-message log lines
  int log_budget_ = 0;
};

}  // namespace taskmaster
