// protocol/message.h: the taskmaster wire protocol, version 1.
// docs/PROTOCOL.md is the specification; this file and message.cpp are its only implementation.
// Code outside protocol/ sees these structs, never frames or JSON text of the wire.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/expected.h"

namespace taskmaster::protocol {

// Frame 0 of every message (PROTOCOL.md §3). A message whose frame 0 differs is dropped.
inline constexpr std::string_view kSignature = "TASKMASTER/1";

// Limits (PROTOCOL.md §4). A message over a limit is refused with a TooLarge error naming the field.
inline constexpr std::size_t kMaxMessageBytes = 16u << 20;  // whole body; also ZMQ_MAXMSGSIZE
inline constexpr std::size_t kMaxBatch = 100000;            // tasks, results or outcomes per message
inline constexpr std::size_t kMaxArgsBytes = 1u << 20;      // one task's args, as compact JSON
inline constexpr std::size_t kMaxResultBytes = 1u << 20;    // one task's result, as compact JSON
inline constexpr std::size_t kMaxErrorBytes = 64u << 10;    // one error message
inline constexpr std::size_t kMaxNameBytes = 128;           // function and queue names
inline constexpr std::size_t kMaxTextBytes = 256;           // worker name, host, idempotency key
inline constexpr std::size_t kMaxListItems = 1024;          // functions or queues in HELLO
inline constexpr int kMaxJsonDepth = 64;                    // nesting of any body
// Nesting of one task's args or result on its own: they sit at most 4 levels down in a body, so
// a value within this limit never makes its message too deep.
inline constexpr int kMaxValueDepth = kMaxJsonDepth - 4;
inline constexpr std::size_t kMaxWaitsPerPeer = 64;  // WAITs one peer may have held at once
inline constexpr std::uint32_t kMaxSlots = 100000;
inline constexpr std::uint32_t kMaxAttempts = 1000;
inline constexpr std::uint64_t kMaxDelayMs = 366ull * 24 * 3600 * 1000;  // a year
inline constexpr std::uint32_t kMaxTimeoutMs = 7u * 24 * 3600 * 1000;    // a week
inline constexpr std::uint32_t kMaxBackoffMs = 24u * 3600 * 1000;        // a day
inline constexpr std::uint32_t kMaxQueueWeight = 1000;                   // HELLO's weights are from 1 to this
inline constexpr std::int32_t kMaxPriority = 1000000;                    // a task's priority is from -kMaxPriority to kMaxPriority
inline constexpr std::uint32_t kMaxWaitMs = 3600000;                     // how long a WAIT may be held: an hour
inline constexpr std::size_t kMaxAfterJobs = 1000;                       // jobs one SUBMIT's `after` may name

// Defaults of a task's optional fields (PROTOCOL.md §6.9).
inline constexpr std::string_view kDefaultQueue = "default";
inline constexpr std::uint32_t kDefaultTimeoutMs = 300000;  // 5 minutes
inline constexpr std::uint32_t kDefaultMaxAttempts = 3;
inline constexpr std::uint32_t kDefaultBackoffMs = 1000;  // doubled after each failed attempt
// Default of WAIT's max (PROTOCOL.md §6.10).
inline constexpr std::uint32_t kDefaultWaitMax = 10000;

using TaskId = std::uint64_t;
using JobId = std::uint64_t;

// The life of a task (PROTOCOL.md §8). A task is in exactly one state. Waiting: its job waits for
// other jobs to end (SUBMIT `after`); last so that the others keep their numbers.
enum class TaskState : std::uint8_t { Delayed, Queued, Running, Done, Dead, Cancelled, Waiting };
inline constexpr std::size_t kTaskStateCount = 7;
std::string_view to_string(TaskState s);
std::optional<TaskState> task_state_from_string(std::string_view s);
inline bool is_final(TaskState s) { return s == TaskState::Done || s == TaskState::Dead || s == TaskState::Cancelled; }

// ---- worker → master -------------------------------------------------------------------------

// A task attempt the worker is still running, reported in HELLO after a reconnect.
struct Lease {
  TaskId task = 0;
  std::uint32_t attempt = 0;
};

// First message of a worker session (§6.1). Answered by WELCOME.
struct Hello {
  std::string worker;  // stable name of the worker process, e.g. "host-1234"
  std::string host;    // host name, for status
  std::int64_t pid = 0;
  std::vector<std::string> functions;  // functions it can run; never empty
  std::vector<std::string> queues;     // queues it serves; never empty
  std::uint32_t slots = 0;             // tasks it can hold at once (its credit)
  std::vector<Lease> running;          // attempts still running from an earlier session
  // Drawn by the worker process at start (0: not given, as by peers older than this field). With
  // `worker` it names the process: a HELLO with the same name and another session is another
  // worker that happens to share the name.
  std::uint64_t session = 0;
  // Parallel to queues: each queue's weight, 1 … kMaxQueueWeight (empty: all 1). The master hands
  // the worker tasks from its queues in proportion to their weights (§8.3). Old masters ignore it.
  std::vector<std::uint32_t> weights{};
  // Optional features the worker speaks (§10.1); a feature is used only if WELCOME lists it too.
  std::vector<std::string> features{};
  // Attempts it runs at once (0: not said). Of its slots, the rest are reserved attempts waiting
  // for a thread (§8.6).
  std::uint32_t threads = 0;
};

// The names of optional features (§10.1).
inline constexpr std::string_view kFeatureReserve = "reserve";  // STARTED, REVOKE, RELEASED (§6.14)
inline constexpr std::size_t kMaxFeatures = 64;
inline constexpr std::uint32_t kMaxThreads = 4096;

// The worker's capacity changed (§6.4); slots = 0 asks for no more tasks (draining).
struct Credit {
  std::uint32_t slots = 0;
};

// The outcome of one attempt, as the worker saw it.
struct Result {
  TaskId task = 0;
  std::uint32_t attempt = 0;
  bool ok = false;
  std::string value;       // ok: the result as compact JSON; !ok: the error message
  bool permanent = false;  // !ok: retrying cannot fix it; the task is dead at once (§6.5.1)
};

// Outcomes of attempts (§6.5); each frees a slot. Answered by ACK once recorded.
struct Results {
  std::vector<Result> results;
  // Feature "reserve": attempts begun since the last report and still running (as STARTED).
  std::vector<Lease> started{};
};

// Feature "reserve" (§6.14). STARTED: attempts the worker's threads have begun. REVOKE: the master
// asks for these reserved attempts back. RELEASED: those of them the worker had not begun; it will
// never run them.
struct Started {
  std::vector<Lease> tasks;
};
struct Revoke {
  std::vector<Lease> tasks;
};
struct Released {
  std::vector<Lease> tasks;
};

// Liveness, either direction (§6.6). Any message counts as a heartbeat too.
struct Heartbeat {};

// The worker leaves (§6.7); it holds no tasks any more.
struct Bye {};

// ---- master → worker -------------------------------------------------------------------------

// Answer to HELLO (§6.2): the worker is registered, and the timing it must keep.
struct Welcome {
  std::string master;                   // the master's instance id; changes when the master restarts
  std::uint32_t heartbeat_ms = 0;       // send something at least this often
  std::uint32_t timeout_ms = 0;         // silence after which each side presumes the other dead
  std::vector<std::string> features{};  // the optional features of HELLO this master uses too
};

// One task attempt leased to a worker.
struct Assignment {
  TaskId task = 0;
  JobId job = 0;
  std::uint32_t attempt = 0;  // 1 for the first attempt
  std::string function;
  std::string args;  // compact JSON
  std::uint32_t timeout_ms = 0;
};

// Tasks for a worker (§6.3), never more than its free slots.
struct Tasks {
  std::vector<Assignment> tasks;
};

// These results are recorded (§6.5); the worker may forget them.
struct Ack {
  std::vector<TaskId> tasks;
};

// ---- client → master and replies --------------------------------------------------------------

// What a client asks for one task. Optional fields take the batch's defaults, then the
// protocol's defaults.
struct TaskSpec {
  std::string function;
  std::string args = "null";  // compact JSON
  std::string queue = std::string(kDefaultQueue);
  std::int32_t priority = 0;  // higher runs first
  std::uint64_t delay_ms = 0;
  std::uint32_t timeout_ms = kDefaultTimeoutMs;
  std::uint32_t max_attempts = kDefaultMaxAttempts;
  std::uint32_t backoff_ms = kDefaultBackoffMs;
};

// Submit a batch of tasks (§6.9): a new job (job = 0) or more tasks for an open job.
struct Submit {
  std::uint64_t req = 0;        // echoed in the reply
  JobId job = 0;                // 0: create a job; else: append to this open job
  std::uint32_t seq = 0;        // batch number within the job, from 0; makes resends harmless
  bool more = false;            // true: more batches follow; false: the job is complete
  std::string idempotency_key;  // with job = 0: the same key returns the same job
  std::vector<TaskSpec> tasks;  // may be empty only when appending (to close a job)
  // With job = 0 only: the job's tasks wait until every job named here has ended; with
  // after_success, they are cancelled instead unless every task of those jobs ended done.
  std::vector<JobId> after{};
  bool after_success = false;
};

// The batch is accepted (§6.9): its tasks got ids first_task .. first_task + count - 1.
struct Accepted {
  std::uint64_t req = 0;
  JobId job = 0;
  TaskId first_task = 0;
  std::uint32_t count = 0;
  bool duplicate = false;  // this batch had been accepted before; nothing new was created
};

// Ask for a job's finished tasks after the first `after` ones (§6.10); with timeout_ms > 0 the
// master holds the request until there is something new, the job ends, or the time is up.
struct Wait {
  std::uint64_t req = 0;
  JobId job = 0;  // the job; 0 when idempotency_key names it instead
  std::uint64_t after = 0;
  std::uint32_t max = 10000;
  std::uint32_t timeout_ms = 0;
  std::string idempotency_key;  // the key the job was submitted with (lets a client send SUBMIT
                                // and WAIT back to back, before it knows the job's id)
};

// A finished task, as reported to clients.
struct Outcome {
  TaskId task = 0;
  std::string args;                    // compact JSON
  TaskState status = TaskState::Done;  // Done, Dead or Cancelled
  std::string value;                   // Done: result as compact JSON; Dead: the last error; Cancelled: why, or empty
  std::uint32_t attempts = 0;
  std::string worker;  // the worker of the last attempt; empty if none ran
  // The task's function and queue; empty from a master that predates them (§6.10.2).
  std::string function{}, queue{};
};

// Answer to WAIT (§6.10).
struct Outcomes {
  std::uint64_t req = 0;
  JobId job = 0;
  std::uint64_t after = 0;  // outcomes[0] is finished task number after + 1
  std::vector<Outcome> outcomes;
  std::uint64_t finished = 0;  // tasks of the job finished so far
  std::uint64_t total = 0;     // tasks of the job so far
  bool sealed = false;         // no more tasks can join the job
};

// Cancel a job's tasks that have not started (§6.11).
struct Cancel {
  std::uint64_t req = 0;
  JobId job = 0;
};

struct Cancelled {
  std::uint64_t req = 0;
  JobId job = 0;
  std::uint64_t cancelled = 0;  // tasks moved to cancelled by this request
  // Of the job's tasks left: attempts begun, which finish (running), and attempts held by a worker
  // not begun, asked back and cancelled once given back (reserved). 0 from an older master.
  std::uint64_t running = 0, reserved = 0;
};

// Queue a job's dead tasks again, as a new job (§6.15). Answered by ACCEPTED.
struct Retry {
  std::uint64_t req = 0;
  JobId job = 0;
};

// Removes the queued and delayed tasks of one queue (§6.16): they become cancelled. Answered by
// PURGED with how many.
struct Purge {
  std::uint64_t req = 0;
  std::string queue;
};
struct Purged {
  std::uint64_t req = 0;
  std::string queue;
  std::uint64_t purged = 0;
};

// Value queues (§6.17): named FIFO queues of JSON values beside the task queues (the Python
// BaseManager listener's queues, docs/PYTHON.md). QUEUE_PUT puts one value at the end;
// QUEUE_GET takes the first, waiting up to timeout_ms for one (0: not at all). Both are answered
// by QUEUE_VALUE, once the journal has the change; an older master answers ERROR unknown_command.
struct QueuePut {
  std::uint64_t req = 0;
  std::string queue;
  std::string value;  // compact JSON, at most kMaxArgsBytes
};
struct QueueGet {
  std::uint64_t req = 0;
  std::string queue;
  std::uint32_t timeout_ms = 0;  // at most kMaxWaitMs
};
struct QueueValue {
  std::uint64_t req = 0;
  std::string queue;
  std::uint64_t depth = 0;           // values left in the queue
  std::optional<std::string> value;  // QUEUE_GET: the value taken (JSON); none: the queue was empty
};

// Ask for the master's state (§6.12); or, with `job`, one job's progress; or, with `jobs`, the
// most recent jobs. A master that predates `job` and `jobs` ignores them (its REPORT is the state).
inline constexpr std::uint32_t kMaxStatusJobs = 1000;
struct Status {
  std::uint64_t req = 0;
  JobId job = 0;           // 0: none
  std::uint32_t jobs = 0;  // 0: none; at most kMaxStatusJobs
};

// Answer to STATUS: a JSON object whose fields PROTOCOL.md §6.12 lists.
struct Report {
  std::uint64_t req = 0;
  nlohmann::json status;
};

// A request failed (§7). req is 0 when the failing message had none.
struct ErrorReply {
  std::uint64_t req = 0;
  ErrorCode code = ErrorCode::Internal;
  std::string message;
};

using Message = std::variant<Hello, Credit, Results, Heartbeat, Bye,               // worker
                             Welcome, Tasks, Ack,                                  // to worker
                             Submit, Accepted, Wait, Outcomes, Cancel, Cancelled,  // client
                             Status, Report, ErrorReply,                           //
                             Started, Revoke, Released,                            // feature "reserve"
                             Retry, Purge, Purged,                                 // client
                             QueuePut, QueueGet, QueueValue>;                      // value queues

// Frames of one message, without the ROUTER identity frame: {signature, command, body}.
using Frames = std::vector<std::string>;

// "HELLO", "SUBMIT", ... (one table, used by both encode and decode).
std::string_view command_name(const Message& m);

// Never fails for a message built within the limits.
Frames encode(const Message& m);
// The body alone (frame 2), for callers that send frames themselves.
std::string encode_body(const Message& m);

// Decodes one message. Never throws: a malformed message gives an Error that says what and where.
// Checks, in order: frame count, signature, command, body size, JSON syntax and depth, fields.
Expected<Message> decode(const std::vector<std::string_view>& frames);
Expected<Message> decode(std::string_view signature, std::string_view command, std::string_view body);

// Is this the name of a function or queue that the protocol accepts? ([A-Za-z0-9_.:-]{1,128})
bool is_valid_name(std::string_view name);

// The deepest nesting of arrays and objects in a JSON text; stops counting past `limit`.
int json_depth(std::string_view text, int limit = kMaxJsonDepth + 1);

// Appends `s` to `out` as a JSON string literal; invalid UTF-8 becomes U+FFFD.
void append_json_string(std::string& out, std::string_view s);
// Returns `s` with invalid UTF-8 sequences replaced by U+FFFD and cut to at most `max_bytes`
// (at a character boundary).
std::string sanitize_text(std::string_view s, std::size_t max_bytes);

}  // namespace taskmaster::protocol
