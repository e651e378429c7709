// The per-message codecs of message.h: the command of each message, its decoder and its encoder.
// See docs/PROTOCOL.md. The JSON writer is json_writer.{h,cpp}; the field validator fields.{h,cpp}.
#include "protocol/message.h"

#include <array>
#include <limits>
#include <utility>

#include "protocol/fields.h"
#include "protocol/json_doc.h"
#include "protocol/json_writer.h"

namespace taskmaster::protocol {

using detail::Bad;
using detail::compact;
using detail::fail;
using detail::Fields;
using detail::names;
using detail::Where;
using detail::Writer;
using nlohmann::json;

namespace {

// ---- the command of each message (frame 1) ----------------------------------------------------
// Adding a message: add it to the Message variant (message.h), then give it a Command here, a
// decode_as and an encoder (BodyWriter); the tables are made from the variant.

template <class T> struct Command;
template <> struct Command<Hello> { static constexpr std::string_view name = "HELLO"; };
template <> struct Command<Credit> { static constexpr std::string_view name = "CREDIT"; };
template <> struct Command<Results> { static constexpr std::string_view name = "RESULTS"; };
template <> struct Command<Heartbeat> { static constexpr std::string_view name = "HEARTBEAT"; };
template <> struct Command<Bye> { static constexpr std::string_view name = "BYE"; };
template <> struct Command<Welcome> { static constexpr std::string_view name = "WELCOME"; };
template <> struct Command<Tasks> { static constexpr std::string_view name = "TASKS"; };
template <> struct Command<Ack> { static constexpr std::string_view name = "ACK"; };
template <> struct Command<Submit> { static constexpr std::string_view name = "SUBMIT"; };
template <> struct Command<Accepted> { static constexpr std::string_view name = "ACCEPTED"; };
template <> struct Command<Wait> { static constexpr std::string_view name = "WAIT"; };
template <> struct Command<Outcomes> { static constexpr std::string_view name = "OUTCOMES"; };
template <> struct Command<Cancel> { static constexpr std::string_view name = "CANCEL"; };
template <> struct Command<Cancelled> { static constexpr std::string_view name = "CANCELLED"; };
template <> struct Command<Status> { static constexpr std::string_view name = "STATUS"; };
template <> struct Command<Report> { static constexpr std::string_view name = "REPORT"; };
template <> struct Command<ErrorReply> { static constexpr std::string_view name = "ERROR"; };
template <> struct Command<Started> { static constexpr std::string_view name = "STARTED"; };
template <> struct Command<Revoke> { static constexpr std::string_view name = "REVOKE"; };
template <> struct Command<Released> { static constexpr std::string_view name = "RELEASED"; };
template <> struct Command<Retry> { static constexpr std::string_view name = "RETRY"; };
template <> struct Command<Purge> { static constexpr std::string_view name = "PURGE"; };
template <> struct Command<Purged> { static constexpr std::string_view name = "PURGED"; };
template <> struct Command<QueuePut> { static constexpr std::string_view name = "QUEUE_PUT"; };
template <> struct Command<QueueGet> { static constexpr std::string_view name = "QUEUE_GET"; };
template <> struct Command<QueueValue> { static constexpr std::string_view name = "QUEUE_VALUE"; };

constexpr std::array<std::string_view, kTaskStateCount> kStateNames = {"delayed", "queued",    "running", "done",
                                                                       "dead",    "cancelled", "waiting"};

// ---- per-message decoding -------------------------------------------------------------------
// decode_as<T> reads the body of message T; the decoder table below has one per alternative of
// Message (a missing one does not link).

template <class T> T decode_as(const Fields& f);

// A list of attempts, [{"task":id,"attempt":n},...], as HELLO's `running`.
std::vector<Lease> leases(const Fields& f, const char* key, std::size_t max) {
  std::vector<Lease> out;
  const JsonValue arr = f.array(key, max);
  const Where list = f.path(key);
  out.reserve(arr.size());
  for (JsonValue e : arr.elements()) {
    Fields r(e, list[out.size()]);
    out.push_back(
        {r.integer<TaskId>("task", 1, std::numeric_limits<std::int64_t>::max()), r.integer<std::uint32_t>("attempt", 1, kMaxAttempts)});
  }
  return out;
}

// HELLO's and WELCOME's `features`: names, possibly none; unknown ones are kept (and ignored).
std::vector<std::string> feature_list(const Fields& f) {
  const JsonValue arr = f.array("features", kMaxFeatures);
  const Where list = f.path("features");
  std::vector<std::string> out;
  for (JsonValue e : arr.elements()) out.push_back(Fields::to_name(e, list[out.size()]));
  return out;
}

std::uint64_t req_of(const Fields& f) { return f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max()); }

template <> Hello decode_as<Hello>(const Fields& f) {
  Hello m;
  m.worker = f.text("worker", kMaxTextBytes);
  if (m.worker.empty()) fail(ErrorCode::BadField, f.path("worker").str() + " must not be empty");
  m.host = f.text_or("host", "", kMaxTextBytes);
  m.pid = f.integer_or<std::int64_t>("pid", 0, 0, std::numeric_limits<std::int32_t>::max());
  m.functions = names(f, "functions");
  m.queues = names(f, "queues");
  m.slots = f.integer<std::uint32_t>("slots", 0, kMaxSlots);
  m.session = f.integer_or<std::uint64_t>("session", 0, 0, std::numeric_limits<std::int64_t>::max());
  if (f.has("weights")) {
    const JsonValue arr = f.array("weights", kMaxListItems);
    const Where list = f.path("weights");
    if (arr.size() != m.queues.size())
      fail(ErrorCode::BadField,
           list.str() + " has " + std::to_string(arr.size()) + " items for " + std::to_string(m.queues.size()) + " queues");
    for (JsonValue e : arr.elements()) m.weights.push_back(Fields::to_int<std::uint32_t>(e, list[m.weights.size()], 1, kMaxQueueWeight));
  }
  if (f.has("running")) m.running = leases(f, "running", kMaxSlots);
  if (f.has("features")) m.features = feature_list(f);
  m.threads = f.integer_or<std::uint32_t>("threads", 0, 1, kMaxThreads);
  return m;
}

template <> Results decode_as<Results>(const Fields& f) {
  Results m;
  const JsonValue arr = f.array("results", kMaxBatch);
  const Where list = f.path("results");
  m.results.reserve(arr.size());
  for (JsonValue e : arr.elements()) {
    const Where at = list[m.results.size()];
    Fields r(e, at);
    Result x;
    x.task = r.integer<TaskId>("task", 1, std::numeric_limits<std::int64_t>::max());
    x.attempt = r.integer<std::uint32_t>("attempt", 1, kMaxAttempts);
    const JsonValue result = r.find("result"), error = r.find("error");
    if (static_cast<bool>(result) == static_cast<bool>(error))
      fail(ErrorCode::BadField, at.str() + " must have exactly one of 'result' and 'error'");
    x.ok = static_cast<bool>(result);
    x.value = result ? compact(result, r.path("result"), kMaxResultBytes) : Fields::to_text(error, r.path("error"), kMaxErrorBytes);
    x.permanent = !x.ok && r.boolean_or("permanent", false);
    m.results.push_back(std::move(x));
  }
  if (f.has("started")) m.started = leases(f, "started", kMaxSlots);
  return m;
}

template <> Welcome decode_as<Welcome>(const Fields& f) {
  Welcome m;
  m.master = f.text("master", kMaxTextBytes);
  m.heartbeat_ms = f.integer<std::uint32_t>("heartbeat_ms", 1, kMaxTimeoutMs);
  m.timeout_ms = f.integer<std::uint32_t>("timeout_ms", 1, kMaxTimeoutMs);
  if (f.has("features")) m.features = feature_list(f);
  return m;
}

template <> Tasks decode_as<Tasks>(const Fields& f) {
  Tasks m;
  const JsonValue arr = f.array("tasks", kMaxBatch);
  const Where list = f.path("tasks");
  m.tasks.reserve(arr.size());
  for (JsonValue e : arr.elements()) {
    const Where at = list[m.tasks.size()];
    Fields t(e, at);
    Assignment a;
    a.task = t.integer<TaskId>("task", 1, std::numeric_limits<std::int64_t>::max());
    a.job = t.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
    a.attempt = t.integer<std::uint32_t>("attempt", 1, kMaxAttempts);
    a.function = t.name("function");
    a.args = compact(t.need("args"), t.path("args"), kMaxArgsBytes);
    a.timeout_ms = t.integer<std::uint32_t>("timeout_ms", 1, kMaxTimeoutMs);
    m.tasks.push_back(std::move(a));
  }
  return m;
}

template <> Ack decode_as<Ack>(const Fields& f) {
  Ack m;
  const JsonValue arr = f.array("tasks", kMaxBatch);
  const Where list = f.path("tasks");
  m.tasks.reserve(arr.size());
  for (JsonValue e : arr.elements())
    m.tasks.push_back(Fields::to_int<TaskId>(e, list[m.tasks.size()], 1, std::numeric_limits<std::int64_t>::max()));
  return m;
}

// Reads the optional task fields of `f` over `t` (the batch defaults, or the protocol's).
void read_task_fields(const Fields& f, TaskSpec& t) {
  if (const JsonValue v = f.find("function")) t.function = Fields::to_name(v, f.path("function"));
  if (const JsonValue v = f.find("args")) t.args = compact(v, f.path("args"), kMaxArgsBytes);
  if (const JsonValue v = f.find("queue")) t.queue = Fields::to_name(v, f.path("queue"));
  t.priority = f.integer_or<std::int32_t>("priority", t.priority, -kMaxPriority, kMaxPriority);
  t.delay_ms = f.integer_or<std::uint64_t>("delay_ms", t.delay_ms, 0, kMaxDelayMs);
  t.timeout_ms = f.integer_or<std::uint32_t>("timeout_ms", t.timeout_ms, 1, kMaxTimeoutMs);
  t.max_attempts = f.integer_or<std::uint32_t>("max_attempts", t.max_attempts, 1, kMaxAttempts);
  t.backoff_ms = f.integer_or<std::uint32_t>("backoff_ms", t.backoff_ms, 0, kMaxBackoffMs);
}

template <> Submit decode_as<Submit>(const Fields& f) {
  Submit m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.job = f.integer_or<JobId>("job", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.seq = f.integer_or<std::uint32_t>("seq", 0, 0, std::numeric_limits<std::int32_t>::max());
  m.more = f.boolean_or("more", false);
  m.idempotency_key = f.text_or("idempotency_key", "", kMaxTextBytes);
  if (f.has("after")) {
    const JsonValue after = f.array("after", kMaxAfterJobs);
    const Where at = f.path("after");
    for (JsonValue e : after.elements())
      m.after.push_back(Fields::to_int<JobId>(e, at[m.after.size()], 1, std::numeric_limits<std::int64_t>::max()));
  }
  m.after_success = f.boolean_or("after_success", false);
  if (m.after_success && m.after.empty()) fail(ErrorCode::BadField, f.path("after_success").str() + " needs a non-empty 'after'");
  if (!m.after.empty() && m.job != 0) fail(ErrorCode::BadField, f.path("after").str() + " belongs to a job's first batch (job 0)");
  TaskSpec defaults;
  defaults.args = "null";
  if (const JsonValue d = f.find("defaults")) {
    const Where at = f.path("defaults");
    read_task_fields(Fields(d, at), defaults);
  }
  const JsonValue arr = f.array("tasks", kMaxBatch);
  const Where list = f.path("tasks");
  if (arr.size() == 0 && m.job == 0) fail(ErrorCode::BadField, list.str() + " must not be empty for a new job");
  m.tasks.reserve(arr.size());
  for (JsonValue e : arr.elements()) {
    const Where at = list[m.tasks.size()];
    Fields t(e, at);
    TaskSpec spec = defaults;
    read_task_fields(t, spec);
    if (spec.function.empty()) fail(ErrorCode::BadField, at.str() + ": field 'function' is missing (and has no default)");
    m.tasks.push_back(std::move(spec));
  }
  return m;
}

template <> Accepted decode_as<Accepted>(const Fields& f) {
  Accepted m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.job = f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
  m.first_task = f.integer<TaskId>("first_task", 0, std::numeric_limits<std::int64_t>::max());
  m.count = f.integer<std::uint32_t>("count", 0, kMaxBatch);
  m.duplicate = f.boolean_or("duplicate", false);
  return m;
}

template <> Wait decode_as<Wait>(const Fields& f) {
  Wait m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.idempotency_key = f.text_or("idempotency_key", "", kMaxTextBytes);
  if (m.idempotency_key.empty() || f.has("job")) m.job = f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
  m.after = f.integer_or<std::uint64_t>("after", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.max = f.integer_or<std::uint32_t>("max", kDefaultWaitMax, 1, kMaxBatch);
  m.timeout_ms = f.integer_or<std::uint32_t>("timeout_ms", 0, 0, kMaxWaitMs);
  return m;
}

template <> Outcomes decode_as<Outcomes>(const Fields& f) {
  Outcomes m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.job = f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
  m.after = f.integer<std::uint64_t>("after", 0, std::numeric_limits<std::int64_t>::max());
  m.finished = f.integer<std::uint64_t>("finished", 0, std::numeric_limits<std::int64_t>::max());
  m.total = f.integer<std::uint64_t>("total", 0, std::numeric_limits<std::int64_t>::max());
  m.sealed = f.boolean_or("sealed", false);
  const JsonValue arr = f.array("outcomes", kMaxBatch);
  const Where list = f.path("outcomes");
  m.outcomes.reserve(arr.size());
  for (JsonValue e : arr.elements()) {
    const Where at = list[m.outcomes.size()];
    Fields o(e, at);
    Outcome x;
    x.task = o.integer<TaskId>("task", 1, std::numeric_limits<std::int64_t>::max());
    x.args = compact(o.need("args"), o.path("args"), kMaxArgsBytes);
    auto st = task_state_from_string(o.text("status", 16));
    if (!st || !is_final(*st)) fail(ErrorCode::BadField, o.path("status").str() + " must be done, dead or cancelled");
    x.status = *st;
    if (x.status == TaskState::Done) x.value = compact(o.need("result"), o.path("result"), kMaxResultBytes);
    if (x.status == TaskState::Dead) x.value = o.text("error", kMaxErrorBytes);
    if (x.status == TaskState::Cancelled) x.value = o.text_or("error", "", kMaxErrorBytes);
    x.attempts = o.integer<std::uint32_t>("attempts", 0, kMaxAttempts);
    x.worker = o.text_or("worker", "", kMaxTextBytes);
    if (const JsonValue v = o.find("function")) x.function = Fields::to_name(v, o.path("function"));
    if (const JsonValue v = o.find("queue")) x.queue = Fields::to_name(v, o.path("queue"));
    m.outcomes.push_back(std::move(x));
  }
  return m;
}

template <> Credit decode_as<Credit>(const Fields& f) { return Credit{f.integer<std::uint32_t>("slots", 0, kMaxSlots)}; }
template <> Heartbeat decode_as<Heartbeat>(const Fields&) { return Heartbeat{}; }
template <> Bye decode_as<Bye>(const Fields&) { return Bye{}; }

template <> Cancel decode_as<Cancel>(const Fields& f) {
  return Cancel{req_of(f), f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max())};
}

template <> Retry decode_as<Retry>(const Fields& f) {
  return Retry{req_of(f), f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max())};
}

template <> Purge decode_as<Purge>(const Fields& f) { return Purge{req_of(f), Fields::to_name(f.need("queue"), f.path("queue"))}; }

template <> Purged decode_as<Purged>(const Fields& f) {
  return Purged{req_of(f), Fields::to_name(f.need("queue"), f.path("queue")),
                f.integer<std::uint64_t>("purged", 0, std::numeric_limits<std::int64_t>::max())};
}

template <> QueuePut decode_as<QueuePut>(const Fields& f) {
  return QueuePut{req_of(f), Fields::to_name(f.need("queue"), f.path("queue")), compact(f.need("value"), f.path("value"), kMaxArgsBytes)};
}

template <> QueueGet decode_as<QueueGet>(const Fields& f) {
  return QueueGet{req_of(f), Fields::to_name(f.need("queue"), f.path("queue")),
                  f.integer_or<std::uint32_t>("timeout_ms", 0, 0, kMaxWaitMs)};
}

template <> QueueValue decode_as<QueueValue>(const Fields& f) {
  QueueValue m{req_of(f), Fields::to_name(f.need("queue"), f.path("queue")),
               f.integer_or<std::uint64_t>("depth", 0, 0, std::numeric_limits<std::int64_t>::max()), std::nullopt};
  if (const JsonValue v = f.find("value")) m.value = compact(v, f.path("value"), kMaxArgsBytes);
  return m;
}

template <> Cancelled decode_as<Cancelled>(const Fields& f) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return Cancelled{req_of(f), f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max()),
                   f.integer<std::uint64_t>("cancelled", 0, kMax), f.integer_or<std::uint64_t>("running", 0, 0, kMax),
                   f.integer_or<std::uint64_t>("reserved", 0, 0, kMax)};
}

template <> Status decode_as<Status>(const Fields& f) {
  Status s{req_of(f)};
  if (f.has("job")) s.job = f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
  s.jobs = f.integer_or<std::uint32_t>("jobs", 0, 0, kMaxStatusJobs);
  if (s.job && s.jobs) fail(ErrorCode::BadField, "STATUS takes `job` or `jobs`, not both");
  return s;
}
template <> Started decode_as<Started>(const Fields& f) { return Started{leases(f, "tasks", kMaxSlots)}; }
template <> Revoke decode_as<Revoke>(const Fields& f) { return Revoke{leases(f, "tasks", kMaxSlots)}; }
template <> Released decode_as<Released>(const Fields& f) { return Released{leases(f, "tasks", kMaxSlots)}; }

template <> Report decode_as<Report>(const Fields& f) {
  const JsonValue s = f.need("status");
  if (!s.is_object()) fail(ErrorCode::BadField, f.path("status").str() + " must be a JSON object");
  // REPORT is the one message kept as a DOM (it is for people and tools, and rare).
  std::string text;
  s.dump(text);
  return Report{req_of(f), json::parse(text)};
}

template <> ErrorReply decode_as<ErrorReply>(const Fields& f) {
  ErrorReply e;
  e.req = req_of(f);
  e.code = error_code_from_name(f.text("code", 64));
  e.message = f.text("message", kMaxErrorBytes);
  return e;
}

// ---- the tables: one entry per alternative of Message, in its order, made from the type list ----

using Decoder = Message (*)(const Fields&);

template <std::size_t... I> constexpr std::array<Decoder, sizeof...(I)> make_decoders(std::index_sequence<I...>) {
  return {[](const Fields& f) { return Message(std::in_place_index<I>, decode_as<std::variant_alternative_t<I, Message>>(f)); }...};
}
template <std::size_t... I> constexpr std::array<std::string_view, sizeof...(I)> make_commands(std::index_sequence<I...>) {
  return {Command<std::variant_alternative_t<I, Message>>::name...};
}

constexpr auto kIndexes = std::make_index_sequence<std::variant_size_v<Message>>{};
constexpr std::array<Decoder, std::variant_size_v<Message>> kDecoders = make_decoders(kIndexes);
constexpr std::array<std::string_view, std::variant_size_v<Message>> kCommands = make_commands(kIndexes);

// ---- per-message encoding -------------------------------------------------------------------

void encode_task_fields(Writer& w, const TaskSpec& t, const TaskSpec* base) {
  if (!base || t.function != base->function) w.field("function", t.function);
  if (!base || t.queue != base->queue) w.field("queue", t.queue);
  if (!base || t.priority != base->priority) w.field("priority", t.priority);
  if (!base || t.delay_ms != base->delay_ms) w.field("delay_ms", t.delay_ms);
  if (!base || t.timeout_ms != base->timeout_ms) w.field("timeout_ms", t.timeout_ms);
  if (!base || t.max_attempts != base->max_attempts) w.field("max_attempts", t.max_attempts);
  if (!base || t.backoff_ms != base->backoff_ms) w.field("backoff_ms", t.backoff_ms);
}

struct BodyWriter {
  std::string& out;

  void operator()(const Hello& m) {
    Writer w(out);
    w.begin_object().field("worker", m.worker).field("host", m.host).field("pid", m.pid);
    w.begin_array("functions");
    for (auto& s : m.functions) w.element_string(s);
    w.end_array().begin_array("queues");
    for (auto& s : m.queues) w.element_string(s);
    w.end_array().field("slots", m.slots);
    if (m.session) w.field("session", m.session);
    if (!m.weights.empty()) {
      w.begin_array("weights");
      for (auto x : m.weights) w.element(x);
      w.end_array();
    }
    if (!m.running.empty()) write_leases(w, "running", m.running);
    if (!m.features.empty()) {
      w.begin_array("features");
      for (auto& s : m.features) w.element_string(s);
      w.end_array();
    }
    if (m.threads) w.field("threads", m.threads);
    w.end_object();
  }
  void operator()(const Credit& m) { Writer(out).begin_object().field("slots", m.slots).end_object(); }
  void operator()(const Results& m) {
    Writer w(out);
    w.begin_object().begin_array("results");
    for (auto& r : m.results) {
      w.begin_object().field("task", r.task).field("attempt", r.attempt);
      if (r.ok) w.raw("result", r.value);
      else w.field("error", r.value);
      if (!r.ok && r.permanent) w.field("permanent", true);
      w.end_object();
    }
    w.end_array();
    if (!m.started.empty()) write_leases(w, "started", m.started);
    w.end_object();
  }
  void operator()(const Heartbeat&) { out += "{}"; }
  void operator()(const Bye&) { out += "{}"; }
  void operator()(const Welcome& m) {
    Writer w(out);
    w.begin_object().field("master", m.master).field("heartbeat_ms", m.heartbeat_ms).field("timeout_ms", m.timeout_ms);
    if (!m.features.empty()) {
      w.begin_array("features");
      for (auto& s : m.features) w.element_string(s);
      w.end_array();
    }
    w.end_object();
  }
  void operator()(const Started& m) { leases_body(m.tasks); }
  void operator()(const Revoke& m) { leases_body(m.tasks); }
  void operator()(const Released& m) { leases_body(m.tasks); }
  void leases_body(const std::vector<Lease>& tasks) {
    Writer w(out);
    w.begin_object();
    write_leases(w, "tasks", tasks);
    w.end_object();
  }
  template <std::size_t K> static void write_leases(Writer& w, const char (&key)[K], const std::vector<Lease>& list) {
    w.begin_array(key);
    for (auto& r : list) w.begin_object().field("task", r.task).field("attempt", r.attempt).end_object();
    w.end_array();
  }
  void operator()(const Tasks& m) {
    Writer w(out);
    w.begin_object().begin_array("tasks");
    for (auto& a : m.tasks)
      w.begin_object()
          .field("task", a.task)
          .field("job", a.job)
          .field("attempt", a.attempt)
          .field("function", a.function)
          .raw("args", a.args)
          .field("timeout_ms", a.timeout_ms)
          .end_object();
    w.end_array().end_object();
  }
  void operator()(const Ack& m) {
    Writer w(out);
    w.begin_object().begin_array("tasks");
    for (auto t : m.tasks) w.element(t);
    w.end_array().end_object();
  }
  void operator()(const Submit& m) {
    Writer w(out);
    w.begin_object().field("req", m.req);
    if (m.job) w.field("job", m.job);
    if (m.seq) w.field("seq", m.seq);
    w.field("more", m.more);
    if (!m.idempotency_key.empty()) w.field("idempotency_key", m.idempotency_key);
    if (!m.after.empty()) {
      w.begin_array("after");
      for (JobId j : m.after) w.element(j);
      w.end_array();
      if (m.after_success) w.field("after_success", true);
    }
    // The first task's fields become the batch defaults; each task then carries only its args
    // and whatever differs, which keeps a big batch of similar tasks small.
    const TaskSpec* base = m.tasks.empty() ? nullptr : &m.tasks.front();
    if (base) {
      w.begin_object("defaults");
      encode_task_fields(w, *base, nullptr);
      w.end_object();
    }
    w.begin_array("tasks");
    for (auto& t : m.tasks) {
      w.begin_object().raw("args", t.args);
      encode_task_fields(w, t, base);
      w.end_object();
    }
    w.end_array().end_object();
  }
  void operator()(const Accepted& m) {
    Writer(out)
        .begin_object()
        .field("req", m.req)
        .field("job", m.job)
        .field("first_task", m.first_task)
        .field("count", m.count)
        .field("duplicate", m.duplicate)
        .end_object();
  }
  void operator()(const Wait& m) {
    Writer w(out);
    w.begin_object().field("req", m.req);
    if (m.job || m.idempotency_key.empty()) w.field("job", m.job);
    if (!m.idempotency_key.empty()) w.field("idempotency_key", m.idempotency_key);
    w.field("after", m.after).field("max", m.max).field("timeout_ms", m.timeout_ms).end_object();
  }
  void operator()(const Outcomes& m) {
    Writer w(out);
    w.begin_object()
        .field("req", m.req)
        .field("job", m.job)
        .field("after", m.after)
        .field("finished", m.finished)
        .field("total", m.total)
        .field("sealed", m.sealed);
    w.begin_array("outcomes");
    for (auto& o : m.outcomes) {
      w.begin_object().field("task", o.task);
      if (!o.function.empty()) w.field("function", o.function);
      if (!o.queue.empty()) w.field("queue", o.queue);
      w.raw("args", o.args).field("status", to_string(o.status));
      if (o.status == TaskState::Done) w.raw("result", o.value);
      if (o.status == TaskState::Dead || (o.status == TaskState::Cancelled && !o.value.empty())) w.field("error", o.value);
      w.field("attempts", o.attempts).field("worker", o.worker).end_object();
    }
    w.end_array().end_object();
  }
  void operator()(const Cancel& m) { Writer(out).begin_object().field("req", m.req).field("job", m.job).end_object(); }
  void operator()(const Retry& m) { Writer(out).begin_object().field("req", m.req).field("job", m.job).end_object(); }
  void operator()(const Purge& m) { Writer(out).begin_object().field("req", m.req).field("queue", m.queue).end_object(); }
  void operator()(const Purged& m) {
    Writer(out).begin_object().field("req", m.req).field("queue", m.queue).field("purged", m.purged).end_object();
  }
  void operator()(const QueuePut& m) {
    Writer(out).begin_object().field("req", m.req).field("queue", m.queue).raw("value", m.value).end_object();
  }
  void operator()(const QueueGet& m) {
    Writer(out).begin_object().field("req", m.req).field("queue", m.queue).field("timeout_ms", m.timeout_ms).end_object();
  }
  void operator()(const QueueValue& m) {
    Writer w(out);
    w.begin_object().field("req", m.req).field("queue", m.queue).field("depth", m.depth);
    if (m.value) w.raw("value", *m.value);
    w.end_object();
  }
  void operator()(const Cancelled& m) {
    Writer w(out);
    w.begin_object().field("req", m.req).field("job", m.job).field("cancelled", m.cancelled);
    if (m.running) w.field("running", m.running);
    if (m.reserved) w.field("reserved", m.reserved);
    w.end_object();
  }
  void operator()(const Status& m) {
    Writer w(out);
    w.begin_object().field("req", m.req);
    if (m.job) w.field("job", m.job);
    if (m.jobs) w.field("jobs", m.jobs);
    w.end_object();
  }
  void operator()(const Report& m) {
    Writer(out)
        .begin_object()
        .field("req", m.req)
        .raw("status", m.status.dump(-1, ' ', false, json::error_handler_t::replace))
        .end_object();
  }
  void operator()(const ErrorReply& m) {
    Writer(out).begin_object().field("req", m.req).field("code", error_code_name(m.code)).field("message", m.message).end_object();
  }
};

// About the size of a body (a little more, unless texts need escapes), so that a big one is written
// into one allocation rather than grown and copied a dozen times. An entry's own fields take under
// 128 bytes; its texts and JSON values add their size.
struct SizeHint {
  std::size_t operator()(const Results& m) const {
    std::size_t n = 32;
    for (auto& r : m.results) n += 64 + r.value.size();
    return n + 48 * m.started.size();
  }
  std::size_t operator()(const Tasks& m) const {
    std::size_t n = 32;
    for (auto& a : m.tasks) n += 128 + a.function.size() + a.args.size();
    return n;
  }
  std::size_t operator()(const Ack& m) const { return 32 + 21 * m.tasks.size(); }
  std::size_t operator()(const Started& m) const { return 32 + 48 * m.tasks.size(); }
  std::size_t operator()(const Revoke& m) const { return 32 + 48 * m.tasks.size(); }
  std::size_t operator()(const Released& m) const { return 32 + 48 * m.tasks.size(); }
  std::size_t operator()(const Submit& m) const {
    std::size_t n = 512 + m.idempotency_key.size() + 21 * m.after.size();
    for (auto& t : m.tasks) n += 16 + t.args.size();  // the rest is usually in "defaults"
    return n;
  }
  std::size_t operator()(const Outcomes& m) const {
    std::size_t n = 256;
    for (auto& o : m.outcomes) n += 160 + o.args.size() + o.value.size() + o.worker.size() + o.function.size() + o.queue.size();
    return n;
  }
  std::size_t operator()(const QueuePut& m) const { return 128 + m.value.size(); }
  std::size_t operator()(const QueueValue& m) const { return 128 + (m.value ? m.value->size() : 0); }
  template <class Small> std::size_t operator()(const Small&) const { return 256; }
};

}  // namespace

std::string_view to_string(TaskState s) { return kStateNames[static_cast<std::size_t>(s)]; }

std::optional<TaskState> task_state_from_string(std::string_view s) {
  for (std::size_t i = 0; i < kStateNames.size(); ++i)
    if (kStateNames[i] == s) return static_cast<TaskState>(i);
  return std::nullopt;
}

std::string_view command_name(const Message& m) { return kCommands[m.index()]; }

std::string encode_body(const Message& m) {
  std::string out;
  out.reserve(std::visit(SizeHint{}, m));
  std::visit(BodyWriter{out}, m);
  return out;
}

Frames encode(const Message& m) { return {std::string(kSignature), std::string(command_name(m)), encode_body(m)}; }

Expected<Message> decode(const std::vector<std::string_view>& frames) {
  if (frames.size() != 3)
    return make_error(ErrorCode::BadFrame, "expected 3 frames (signature, command, body), got " + std::to_string(frames.size()));
  return decode(frames[0], frames[1], frames[2]);
}

Expected<Message> decode(std::string_view signature, std::string_view command, std::string_view body) {
  if (signature != kSignature) return make_error(ErrorCode::BadSignature, "frame 0 is not \"TASKMASTER/1\"");
  std::size_t index = kCommands.size();
  for (std::size_t i = 0; i < kCommands.size(); ++i)
    if (kCommands[i] == command) index = i;
  if (index == kCommands.size()) {
    std::string shown = sanitize_text(command, 32);
    return make_error(ErrorCode::UnknownCommand, "unknown command \"" + shown + "\"");
  }
  const std::string_view where = kCommands[index];
  if (body.size() > kMaxMessageBytes)
    return make_error(ErrorCode::TooLarge, std::string(where) + ": body is " + std::to_string(body.size()) + " bytes; the limit is " +
                                               std::to_string(kMaxMessageBytes));
  // One document per thread, reused, so that its node array is allocated once, not per message.
  thread_local JsonDoc doc;
  struct Trim {
    JsonDoc& doc;
    ~Trim() { doc.trim(); }
  } trim{doc};
  try {  // allocation failures included: nothing escapes the decoder
    if (!doc.parse(body, kMaxJsonDepth)) {
      // Checks 5 and 6 of PROTOCOL.md §3.1 say why, in their order.
      if (json_depth(body) > kMaxJsonDepth)
        return make_error(ErrorCode::BadJson, std::string(where) + ": body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      if (body.find('\0') != std::string_view::npos)
        return make_error(ErrorCode::BadJson, std::string(where) + ": body contains a NUL byte");
      return make_error(ErrorCode::BadJson, std::string(where) + ": body is not valid JSON");
    }
    const Where at{where};
    return kDecoders[index](Fields(doc.root(), at));
  } catch (const Bad& bad) {
    return bad.error;
  } catch (const std::exception& e) {  // allocation failures
    return make_error(ErrorCode::BadField, std::string(where) + ": " + e.what());
  }
}

}  // namespace taskmaster::protocol
