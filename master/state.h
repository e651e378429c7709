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
#include <unordered_set>
#include <vector>

#include "master/jobs.h"
#include "master/journal.h"
#include "master/task_table.h"
#include "master/value_queues.h"
#include "master/workers.h"
#include "protocol/auth.h"
#include "protocol/message.h"
#include "protocol/sockets.h"

namespace taskmaster {

struct MasterConfig {
  protocol::MasterSocketOptions socket;                          // endpoint and socket limits
  std::chrono::milliseconds heartbeat{1000};                     // how often each side sends something
  std::chrono::milliseconds worker_timeout{3000};                // a worker silent this long is presumed dead
  std::chrono::milliseconds result_ttl{std::chrono::hours(24)};  // results kept after a job ends
  std::size_t max_messages_per_turn = 4096;                      // fairness between receiving and timers
  std::optional<std::string> data_dir;                           // the journal's directory; nullopt: memory only
  // Bounds on what the master holds (PROTOCOL.md §4.6); a SUBMIT past one is refused. 0: the
  // default sized to this machine's memory (default_limits()).
  std::uint64_t max_queued = 0;         // unfinished tasks (delayed, queued, running)
  std::uint64_t max_task_bytes = 0;     // args and results of every task held, finished or not
  std::uint64_t max_journal_bytes = 0;  // the journal on disk; 0: no bound but the disk's
  SchedulePolicy schedule;              // the order of queued tasks (TaskTable::pick)
  std::string http_url;                 // the HTTP endpoint's base URL, told in STATUS; "": none
};

class Metrics;

// The idempotency key of a job's retry job (MasterState::retry_job); clients may not use such keys.
inline constexpr std::string_view kRetryKeyPrefix = "retry-of-";

// A request of the HTTP endpoint (docs/HTTP.md), already authenticated, and its answer. The HTTP
// threads hand these to the loop (Master), which asks the state: the state is only ever touched
// by the loop's thread.
struct HttpQuery {
  std::string method;  // "GET" or "POST"
  std::string path;    // "/api/jobs/12"
  std::unordered_map<std::string, std::string> params;
};
struct HttpAnswer {
  int status = 200;
  std::string body;  // JSON, or the metrics' text
  std::string content_type = "application/json";
  bool changed = false;  // it changed the state: answered only once the journal has it
};

// max_queued and max_task_bytes for this machine: a quarter of physical memory for task bytes, and
// one unfinished task per 2 KiB of physical memory (at least 100,000).
MasterConfig with_default_limits(MasterConfig c);

// Counters shown by `taskmaster status` (PROTOCOL.md §6.12).
struct MasterCounters {
  std::uint64_t submitted = 0;         // tasks accepted
  std::uint64_t finished = 0;          // tasks that reached done, dead or cancelled
  std::uint64_t bad_messages = 0;      // malformed or not allowed
  std::uint64_t stale_results = 0;     // results for attempts that were no longer current
  std::uint64_t unheld_results = 0;    // results for tasks the sender did not hold
  std::uint64_t workers_lost = 0;      // workers presumed dead
  std::uint64_t expired_jobs = 0;      // jobs whose results' time was up
  std::uint64_t refused_full = 0;      // SUBMITs refused by a bound (max_queued and the like)
  std::uint64_t journal_failures = 0;  // commits that failed (disk full, I/O error)
};

class MasterState : private TaskListener, private JobListener {
 public:
  // `instance`: the master's id, told to workers in WELCOME (new at every start). `start`: the
  // time of the first turn (uptime and rates count from it).
  MasterState(MasterConfig config, std::string instance, TimePoint start = Clock::now());
  MasterState(const MasterState&) = delete;
  MasterState& operator=(const MasterState&) = delete;

  // Replays the journal into this (new, empty) state, then records every change in it. Without a
  // call to recover() the state lives in memory only. The restart rule applies to what was running
  // (TaskTable::restore); what it changed is written by the next commit, so that a second replay
  // gives the same. Throws std::runtime_error if the journal cannot be read whole.
  struct Recovered {
    // requeued: tasks that were running; their attempt counts as failed (queued again, or dead or
    // cancelled by the rule).
    std::uint64_t jobs = 0, tasks = 0, requeued = 0;
  };
  Recovered recover(Journal& journal, TimePoint now);
  // Ids start at these (or past them); for a master without a journal (Master does this).
  void start_ids_at(JobId first_job, TaskId first_task);

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
  // What leaves now: messages that promise nothing the journal has not already made durable
  // (WELCOME, HEARTBEAT, TASKS of tasks whose creation is committed). Everything else (every
  // reply, ACK, and TASKS handing out a task created since the last commit) is held for commit().
  std::vector<Outgoing> take_outbox();
  // The end of a turn: commits the journal (group commit: one fsync for the whole turn) and returns
  // what may leave now. If the commit fails, only what it could not write fails: requests of this
  // turn that needed it are answered `unavailable` (a refused SUBMIT is undone: nothing of it is
  // kept), ACKs wait for the next commit that succeeds, sessions and leases stay, and every change
  // since the last good commit is written again by the next one. Without a journal it returns what
  // the turn held (nothing).
  std::vector<Outgoing> commit(TimePoint now);
  // The loop reports each send: sent() on success, send_failed() otherwise (a TASKS message that
  // did not leave puts its tasks back in the queue; a peer that is gone loses its session).
  void sent(const std::string& identity, TimePoint now);
  void send_failed(const std::string& identity, const protocol::Message& m, protocol::SendResult why, TimePoint now);

  const MasterCounters& counters() const { return counters_; }
  // Prometheus metrics, updated as things happen and refreshed when scraped; null: none kept.
  void set_metrics(Metrics* metrics) { metrics_ = metrics; }
  // The value queues that QUEUE_PUT and QUEUE_GET reach (their replies come from values->commit());
  // null: those are refused (unavailable). STATUS reports their depths.
  void set_value_queues(ValueQueues* values) { values_ = values; }
  // Answers one request of the HTTP API (docs/HTTP.md): GET /metrics, /api/status, /api/workers,
  // /api/jobs, /api/jobs/ID; POST /api/jobs/ID/cancel and /retry. Never throws for a bad request.
  HttpAnswer http(const HttpQuery& q, TimePoint now);
  const TaskTable& tasks() const { return tasks_; }
  const JobTable& jobs() const { return jobs_; }
  const std::string& instance() const { return instance_; }
  // Why the last commit failed ("" if none did).
  const std::string& last_journal_failure() const { return last_journal_failure_; }
  std::size_t workers() const { return workers_.size(); }
  const Names& names() const { return tasks_.names(); }

  // Checks the bookkeeping the rules rely on: the task table's (TaskTable::check_invariants, with
  // the workers' name references), every running attempt held by a worker session, and no worker
  // holding more attempts than its credit (or than it reported itself). Returns the first
  // violation, "" if none. O(tasks): for tests and the fuzzer.
  std::string check_invariants() const;

 private:
  struct PendingWait {
    std::string identity;
    protocol::Wait request;
    TimePoint deadline;
  };
  struct Rates {  // tasks per one-second bucket over the last 300 s (the rates use the last 10)
    static constexpr std::size_t kSeconds = 300;
    std::array<std::uint64_t, kSeconds> submitted{}, finished{}, failed{};
    std::int64_t second = 0;
    void advance(std::int64_t now_s);
  };
  // Tasks submitted and finished per queue in each of the last 10 seconds (status's per-queue rates).
  struct QueueRate {
    std::array<std::uint64_t, 10> submitted{}, finished{};
    std::array<std::int64_t, 10> second{};  // which second each slot counts; older: empty
    void add(std::int64_t now_s, bool finished_now);
    // Per second over the last 10 s (the current one included), over `window` seconds.
    std::pair<double, double> per_s(std::int64_t now_s, double window) const;
  };
  // A failed attempt, for the dashboard's list (the last kFailures).
  struct Failure {
    std::chrono::system_clock::time_point at;
    TaskId task = 0;
    JobId job = 0;
    std::string function, queue, worker, error;
    std::uint32_t attempt = 0;
    bool dead = false;
  };
  static constexpr std::size_t kFailures = 50;

  void on_hello(const std::string& id, protocol::Hello& m, TimePoint now);
  void on_credit(const std::string& id, const protocol::Credit& m);
  void on_results(const std::string& id, protocol::Results& m, TimePoint now);
  // Feature "reserve" (PROTOCOL.md §6.14, §8.6).
  void on_started(WorkerSession& w, const std::vector<protocol::Lease>& started);
  void on_released(const std::string& id, const protocol::Released& m);
  // Asks the worker for these reserved attempts back.
  void revoke(WorkerSession& w, std::vector<protocol::Lease> attempts);
  // Is a REVOKE to this worker unanswered (and not yet presumed lost)?
  bool revoke_pending(WorkerSession& w, TimePoint now);
  // Tasks in these ranges were queued and made new lanes: note them for overtake().
  void note_new_lanes(const std::vector<TaskRange>& ranges);
  // After leasing: reserved attempts that new lanes should overtake, and idle threads that should
  // take reserved attempts from busy workers.
  void overtake(TimePoint now);
  void steal(TimePoint now);
  void on_bye(const std::string& id, TimePoint now);
  void on_submit(const std::string& id, protocol::Submit& m, TimePoint now);
  // SUBMIT's rules, for a peer's SUBMIT and for retry_job.
  Expected<protocol::Accepted> submit(protocol::Submit& m, TimePoint now);
  // CANCEL's rules: the tasks not finished cancelled (nullopt: no such job).
  // In `running` and `reserved`, CANCELLED's counts of what is left of the job.
  std::optional<protocol::Cancelled> cancel_job(JobId job, TimePoint now);
  // The job's dead tasks, copied into a new job (their function, args and options).
  Expected<protocol::Accepted> retry_job(JobId job, TimePoint now);
  void on_wait(const std::string& id, const protocol::Wait& m, TimePoint now);
  void on_cancel(const std::string& id, const protocol::Cancel& m, TimePoint now);
  void on_status(const std::string& id, const protocol::Status& m, TimePoint now);
  // PURGE's rules: the queue's queued and delayed tasks cancelled; how many.
  std::uint64_t purge_queue(const std::string& queue);

  void on_task_change(const Task& task, std::optional<TaskState> from) override;
  void on_job_change(const Job& job, JobChange change) override;

  // The journal, and what it has not made durable yet. Every change goes through these.
  void save_task(const Task& task, std::int64_t finished_seq, bool is_new);
  void save_job(const Job& job);
  void erase_task_row(TaskId id);
  void erase_job_row(JobId id);
  // Writes again every row changed since the last successful commit (after a failed one).
  void resave();
  // attempted: the disk was really tried (else the turn fails as the last attempt did).
  std::vector<Outgoing> commit_failed(const Error& e, std::vector<Outgoing> held, TimePoint now, bool attempted);
  // Puts a message in the outbox; held for commit() unless it leaves now (take_outbox).
  void push(std::string identity, protocol::Message m);

  // Ends a worker session: the attempts it held fail with `why`.
  void drop_worker(const std::string& identity, const std::string& why, TimePoint now);
  // The same for a worker that vanished without BYE: logged and counted.
  void lose_worker(const std::string& identity, const std::string& why, TimePoint now);
  void dispatch(TimePoint now);
  void lease_queued(TimePoint now);  // queued tasks to workers with free slots
  void answer_waits(TimePoint now, bool timers);
  bool try_answer(PendingWait& w, TimePoint now, bool timed_out);
  void housekeeping(TimePoint now);
  // Jobs after jobs: checks the jobs waiting for those that ended (prerequisites_ended_), and the
  // jobs those release in turn; check_waiting releases one job (queues its tasks, or cancels them
  // with the reason under after_success) once every job it waits for has ended and it is sealed.
  void release_waiting(TimePoint now);
  void check_waiting(JobId job, TimePoint now);

  void reply(const std::string& identity, protocol::Message m);
  // Why a SUBMIT cannot be taken now (a bound of MasterConfig), if it cannot.
  std::optional<Error> over_bounds(const protocol::Submit& m) const;
  // "job N does not exist", or that an earlier instance had it.
  std::string unknown_job(JobId job) const;
  void reply_error(const std::string& identity, std::uint64_t req, ErrorCode code, std::string message);
  void log_bad(const std::string& identity, const Error& e);
  nlohmann::json status_json(TimePoint now);
  // The HTTP API's answers (state_http.cpp).
  nlohmann::json api_status(TimePoint now);
  nlohmann::json api_workers(std::size_t offset, std::size_t limit, TimePoint now);
  nlohmann::json api_jobs(std::optional<JobId> before, std::size_t limit, TimePoint now);
  nlohmann::json api_job_summary(const Job& job, TimePoint now);
  nlohmann::json api_job(const Job& job, TimePoint now);
  void refresh_metrics(TimePoint now);
  // Metrics and the failure list, told of each task's change (from on_task_change).
  void observe(const Task& task, std::optional<TaskState> from);

  MasterConfig config_;
  std::string instance_;
  Journal* journal_ = nullptr;  // not owned; null: in memory only
  TaskTable tasks_;
  JobTable jobs_;
  WorkerRegistry workers_;
  MasterCounters counters_;
  Metrics* metrics_ = nullptr;     // not owned
  ValueQueues* values_ = nullptr;  // not owned
  Rates rates_;
  std::unordered_map<std::uint32_t, QueueRate> queue_rates_;  // by queue (Names id)
  std::deque<Failure> failures_;                              // newest first
  TimePoint started_;
  TimePoint now_{};  // the `now` of the message or turn being handled

  // Outbox: what leaves now and what waits for the commit, each in order. ACKs gather per worker
  // during the turn.
  std::vector<Outgoing> out_, held_;
  std::unordered_map<std::string, std::vector<TaskId>> out_acks_;
  // What the journal has not made durable: ids of rows changed since the last successful commit
  // (with repeats; deduplicated only when they must be written again), and the SUBMIT batches of
  // this turn, to undo if its commit fails.
  struct BatchUndo {
    JobId job;
    bool created;  // the batch created the job
    bool was_sealed;
    Job::Batch batch;
  };
  std::vector<TaskId> dirty_tasks_;
  std::vector<JobId> dirty_jobs_;
  std::vector<BatchUndo> batches_;
  bool resave_needed_ = false;        // the last commit failed: write dirty_* again
  TaskId durable_tasks_ = 1;          // tasks below this id have a committed creation
  TimePoint next_commit_retry_{};     // after a failed commit, when to try again without new work
  TimePoint last_journal_error_{};    // rate limit of the log line
  std::string last_journal_failure_;  // why the last commit failed
  std::uint64_t journal_bytes_ = 0;   // the journal's size, read at housekeeping
  JobId first_job_ = 1;               // this instance's first job id (in memory: from the clock)

  std::vector<PendingWait> waits_;
  std::vector<JobId> prerequisites_ended_;  // jobs that ended with others waiting for them
  bool waits_dirty_ = false;                // a task finished or a job changed since waits were last checked
  bool dispatch_needed_ = false;            // tasks became queued or a worker got free slots
  // Lanes created by this turn's SUBMITs (at most kMaxNewLanes), for overtaking reserved attempts.
  struct NewLane {
    std::uint32_t queue = 0, function = 0;
    JobId job = 0;
    std::int32_t priority = 0;
  };
  std::vector<NewLane> new_lanes_;
  std::vector<std::string> steal_first_;    // sessions to serve first: what was released is for them
  std::unordered_set<TaskId> just_leased_;  // by this dispatch: overtake() leaves them alone
  std::size_t rr_ = 0;                      // rotates which worker dispatch serves first
  TimePoint next_housekeeping_{};
  // Bad-message log lines: at most 10 a second, then a count of those not logged.
  protocol::RateLimitedLog bad_message_log_{std::chrono::seconds(1), 10};
  protocol::RateLimitedLog dead_log_{std::chrono::seconds(1), 10};  // "task N is dead" lines, the same way
};

}  // namespace taskmaster
