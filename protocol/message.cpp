// Encoding and validation of the messages in message.h. See docs/PROTOCOL.md.
#include "protocol/message.h"

#include <array>
#include <charconv>
#include <cstring>
#include <limits>
#include <type_traits>

#include "protocol/json_doc.h"

namespace taskmaster::protocol {

using nlohmann::json;

namespace {

// ---- the command table: one row per message type, in the order of the Message variant --------

constexpr std::array<std::string_view, std::variant_size_v<Message>> kCommands = {
    "HELLO",  "CREDIT",  "RESULTS", "HEARTBEAT", "BYE",       "WELCOME", "TASKS",  "ACK",   "SUBMIT",
    "ACCEPTED", "WAIT",  "OUTCOMES", "CANCEL",   "CANCELLED", "STATUS",  "REPORT", "ERROR",
};

constexpr std::array<std::string_view, kTaskStateCount> kStateNames = {
    "delayed", "queued", "running", "done", "dead", "cancelled"};

// ---- JSON text writer ------------------------------------------------------------------------
// Writes compact JSON directly, so that args and results (already compact JSON text) are copied
// into a message without being parsed again.

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  // Keys are string literals (our own ASCII constants): their length is known at compile time.
  Writer& begin_object() { comma(); out_ += '{'; first_ = true; return *this; }
  Writer& end_object() { out_ += '}'; first_ = false; return *this; }
  template <std::size_t K> Writer& begin_array(const char (&k)[K]) { key_then(k, "["); first_ = true; return *this; }
  Writer& end_array() { out_ += ']'; first_ = false; return *this; }
  template <std::size_t K> Writer& begin_object(const char (&k)[K]) { key_then(k, "{"); first_ = true; return *this; }

  template <std::size_t K>
  Writer& field(const char (&k)[K], std::string_view v) { key_then(k, ""); append_json_string(out_, v); return *this; }
  template <std::size_t K>
  Writer& field(const char (&k)[K], const char* v) { return field(k, std::string_view(v)); }
  template <std::size_t K>
  Writer& field(const char (&k)[K], bool v) { key_then(k, v ? "true" : "false"); return *this; }
  template <std::size_t K, class N, std::enable_if_t<std::is_integral_v<N> && !std::is_same_v<N, bool>, int> = 0>
  Writer& field(const char (&k)[K], N v) {
    char buf[K + 3 + kMaxDigits];
    char* p = key(buf, k);
    p = std::to_chars(p, buf + sizeof buf, v).ptr;
    out_.append(buf, p);
    return *this;
  }
  template <std::size_t K>
  Writer& raw(const char (&k)[K], std::string_view json_text) { key_then(k, ""); out_ += json_text; return *this; }

  template <class N> Writer& element(N v) {
    char buf[1 + kMaxDigits];
    char* p = buf;
    if (!first_) *p++ = ',';
    first_ = false;
    p = std::to_chars(p, buf + sizeof buf, v).ptr;
    out_.append(buf, p);
    return *this;
  }
  Writer& element_string(std::string_view v) { comma(); append_json_string(out_, v); return *this; }

 private:
  static constexpr std::size_t kMaxDigits = 20;  // of a 64-bit integer, with its sign

  void comma() {
    if (!first_) out_ += ',';
    first_ = false;
  }
  // Writes ',"k":' at p (no comma before the first member) and returns its end. Pieces are
  // composed on the stack and appended at once: std::string's append is an out-of-line call, and
  // made per piece it was most of the cost of encoding.
  template <std::size_t K>  // K counts the literal's terminating NUL
  char* key(char* p, const char (&k)[K]) {
    if (!first_) *p++ = ',';
    first_ = false;
    *p++ = '"';
    std::memcpy(p, k, K - 1);
    p += K - 1;
    *p++ = '"';
    *p++ = ':';
    return p;
  }
  template <std::size_t K, std::size_t T>
  void key_then(const char (&k)[K], const char (&tail)[T]) {
    char buf[K + 3 + T];
    char* p = key(buf, k);
    std::memcpy(p, tail, T - 1);
    out_.append(buf, p + T - 1);
  }
  template <std::size_t K>
  void key_then(const char (&k)[K], std::string_view tail) {  // "true" or "false"
    char buf[K + 3 + 5];
    char* p = key(buf, k);
    std::memcpy(p, tail.data(), tail.size());
    out_.append(buf, p + tail.size());
  }

  std::string& out_;
  bool first_ = true;
};

// ---- JSON reader with validation ---------------------------------------------------------------
// Bodies are read into a JsonDoc (json_doc.h); Fields checks an object's fields against the rules
// of PROTOCOL.md §4 and §6. Decoding throws Bad internally; decode() catches it, so nothing escapes
// the decoder.

struct Bad {
  Error error;
};

[[noreturn]] void fail(ErrorCode code, std::string message) { throw Bad{Error{code, std::move(message)}}; }

// Where a value sits in the body, for error messages: "SUBMIT.tasks[3].function". A chain of these
// lives on the stack while decoding; the text is built only when there is an error to report.
// A Where refers to its parent: keep the parent alive (name it) while the child is in use.
struct Where {
  std::string_view root;         // the command, at the top of the chain
  const Where* parent = nullptr;
  const char* key = nullptr;     // ".key" below the parent, or else
  std::size_t index = 0;         // "[index]" below the parent

  Where operator/(const char* k) const { return Where{{}, this, k, 0}; }
  Where operator[](std::size_t i) const { return Where{{}, this, nullptr, i}; }

  std::string str() const {
    if (!parent) return std::string(root);
    std::string s = parent->str();
    if (key) {
      s += '.';
      s += key;
    } else {
      s += '[';
      s += std::to_string(index);
      s += ']';
    }
    return s;
  }
};

class Fields {
 public:
  Fields(JsonValue obj, const Where& where) : obj_(checked_object(obj, where)), where_(where) {}

  bool has(const char* k) const { return static_cast<bool>(obj_.find(k)); }
  const Where& where() const { return where_; }
  Where path(const char* k) const { return where_ / k; }

  JsonValue find(const char* k) const { return obj_.find(k); }
  JsonValue need(const char* k) const {
    const JsonValue v = find(k);
    if (!v) fail(ErrorCode::BadField, where_.str() + ": field '" + k + "' is missing");
    return v;
  }

  template <class N>
  N integer(const char* k, N lo, N hi) const { return to_int<N>(need(k), path(k), lo, hi); }
  template <class N>
  N integer_or(const char* k, N dflt, N lo, N hi) const {
    const JsonValue v = find(k);
    return v ? to_int<N>(v, path(k), lo, hi) : dflt;
  }
  bool boolean_or(const char* k, bool dflt) const {
    const JsonValue v = find(k);
    if (!v) return dflt;
    if (!v.is_boolean()) fail(ErrorCode::BadField, path(k).str() + " must be true or false");
    return v.as_bool();
  }
  std::string text(const char* k, std::size_t max) const { return to_text(need(k), path(k), max); }
  std::string text_or(const char* k, std::string dflt, std::size_t max) const {
    const JsonValue v = find(k);
    return v ? to_text(v, path(k), max) : std::move(dflt);
  }
  std::string name(const char* k) const { return to_name(need(k), path(k)); }
  JsonValue array(const char* k, std::size_t max) const {
    const JsonValue v = need(k);
    if (!v.is_array()) fail(ErrorCode::BadField, path(k).str() + " must be an array");
    if (v.size() > max)
      fail(ErrorCode::TooLarge, path(k).str() + " has " + std::to_string(v.size()) + " items; the limit is " +
                                    std::to_string(max));
    return v;
  }

  template <class N>
  static N to_int(JsonValue v, const Where& where, N lo, N hi) {
    if (!v.is_integer())
      fail(ErrorCode::BadField, where.str() + " must be an integer");
    if constexpr (std::is_unsigned_v<N>) {
      if (v.is_unsigned()) {
        const std::uint64_t x = v.as_unsigned();
        if (x >= lo && x <= hi) return static_cast<N>(x);
      }
    } else {
      if (v.is_unsigned()) {
        const std::uint64_t x = v.as_unsigned();
        if (x <= static_cast<std::uint64_t>(hi) && static_cast<std::int64_t>(x) >= lo) return static_cast<N>(x);
      } else {
        const std::int64_t x = v.as_signed();
        if (x >= lo && x <= hi) return static_cast<N>(x);
      }
    }
    fail(ErrorCode::BadField, where.str() + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  static std::string to_text(JsonValue v, const Where& where, std::size_t max) {
    if (!v.is_string()) fail(ErrorCode::BadField, where.str() + " must be a string");
    const std::string_view s = v.as_string();
    if (s.size() > max)
      fail(ErrorCode::TooLarge, where.str() + " is " + std::to_string(s.size()) + " bytes; the limit is " + std::to_string(max));
    return std::string(s);
  }
  static std::string to_name(JsonValue v, const Where& where) {
    std::string s = to_text(v, where, kMaxNameBytes);
    if (!is_valid_name(s))
      fail(ErrorCode::BadField, where.str() + " must be 1 to 128 characters of A-Z a-z 0-9 _ . : -");
    return s;
  }

 private:
  static JsonValue checked_object(JsonValue v, const Where& where) {
    if (!v.is_object()) fail(ErrorCode::BadField, where.str() + " must be a JSON object");
    return v;
  }

  JsonObject obj_;
  Where where_;
};

// An args or result value as compact JSON (PROTOCOL.md §4.4: its size is measured so).
std::string compact(JsonValue v, const Where& where, std::size_t max) {
  std::string s;
  v.dump(s);
  if (s.size() > max)
    fail(ErrorCode::TooLarge, where.str() + " is " + std::to_string(s.size()) + " bytes as JSON; the limit is " + std::to_string(max));
  return s;
}

std::vector<std::string> names(const Fields& f, const char* k) {
  const JsonValue arr = f.array(k, kMaxListItems);
  const Where list = f.path(k);
  if (arr.size() == 0) fail(ErrorCode::BadField, list.str() + " must not be empty");
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (JsonValue e : arr.elements()) out.push_back(Fields::to_name(e, list[out.size()]));
  return out;
}

// ---- per-message decoding -------------------------------------------------------------------

Hello decode_hello(const Fields& f) {
  Hello m;
  m.worker = f.text("worker", kMaxTextBytes);
  if (m.worker.empty()) fail(ErrorCode::BadField, f.path("worker").str() + " must not be empty");
  m.host = f.text_or("host", "", kMaxTextBytes);
  m.pid = f.integer_or<std::int64_t>("pid", 0, 0, std::numeric_limits<std::int32_t>::max());
  m.functions = names(f, "functions");
  m.queues = names(f, "queues");
  m.slots = f.integer<std::uint32_t>("slots", 0, kMaxSlots);
  m.session = f.integer_or<std::uint64_t>("session", 0, 0, std::numeric_limits<std::int64_t>::max());
  if (f.has("running")) {
    const JsonValue arr = f.array("running", kMaxSlots);
    const Where list = f.path("running");
    for (JsonValue e : arr.elements()) {
      const Where at = list[m.running.size()];
      Fields r(e, at);
      m.running.push_back({r.integer<TaskId>("task", 1, std::numeric_limits<std::int64_t>::max()),
                           r.integer<std::uint32_t>("attempt", 1, kMaxAttempts)});
    }
  }
  return m;
}

Results decode_results(const Fields& f) {
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
    x.value = result ? compact(result, r.path("result"), kMaxResultBytes)
                     : Fields::to_text(error, r.path("error"), kMaxErrorBytes);
    m.results.push_back(std::move(x));
  }
  return m;
}

Welcome decode_welcome(const Fields& f) {
  Welcome m;
  m.master = f.text("master", kMaxTextBytes);
  m.heartbeat_ms = f.integer<std::uint32_t>("heartbeat_ms", 1, kMaxTimeoutMs);
  m.timeout_ms = f.integer<std::uint32_t>("timeout_ms", 1, kMaxTimeoutMs);
  return m;
}

Tasks decode_tasks(const Fields& f) {
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

Ack decode_ack(const Fields& f) {
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
  t.priority = f.integer_or<std::int32_t>("priority", t.priority, -1000000, 1000000);
  t.delay_ms = f.integer_or<std::uint64_t>("delay_ms", t.delay_ms, 0, kMaxDelayMs);
  t.timeout_ms = f.integer_or<std::uint32_t>("timeout_ms", t.timeout_ms, 1, kMaxTimeoutMs);
  t.max_attempts = f.integer_or<std::uint32_t>("max_attempts", t.max_attempts, 1, kMaxAttempts);
  t.backoff_ms = f.integer_or<std::uint32_t>("backoff_ms", t.backoff_ms, 0, kMaxBackoffMs);
}

Submit decode_submit(const Fields& f) {
  Submit m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.job = f.integer_or<JobId>("job", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.seq = f.integer_or<std::uint32_t>("seq", 0, 0, std::numeric_limits<std::int32_t>::max());
  m.more = f.boolean_or("more", false);
  m.idempotency_key = f.text_or("idempotency_key", "", kMaxTextBytes);
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

Accepted decode_accepted(const Fields& f) {
  Accepted m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.job = f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
  m.first_task = f.integer<TaskId>("first_task", 0, std::numeric_limits<std::int64_t>::max());
  m.count = f.integer<std::uint32_t>("count", 0, kMaxBatch);
  m.duplicate = f.boolean_or("duplicate", false);
  return m;
}

Wait decode_wait(const Fields& f) {
  Wait m;
  m.req = f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.idempotency_key = f.text_or("idempotency_key", "", kMaxTextBytes);
  if (m.idempotency_key.empty() || f.has("job")) m.job = f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max());
  m.after = f.integer_or<std::uint64_t>("after", 0, 0, std::numeric_limits<std::int64_t>::max());
  m.max = f.integer_or<std::uint32_t>("max", 10000, 1, kMaxBatch);
  m.timeout_ms = f.integer_or<std::uint32_t>("timeout_ms", 0, 0, 3600000);
  return m;
}

Outcomes decode_outcomes(const Fields& f) {
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
    x.attempts = o.integer<std::uint32_t>("attempts", 0, kMaxAttempts);
    x.worker = o.text_or("worker", "", kMaxTextBytes);
    m.outcomes.push_back(std::move(x));
  }
  return m;
}

std::uint64_t req_of(const Fields& f) {
  return f.integer_or<std::uint64_t>("req", 0, 0, std::numeric_limits<std::int64_t>::max());
}

Message decode_body(std::size_t index, JsonValue body) {
  const Where where{kCommands[index]};
  Fields f(body, where);
  switch (index) {
    case 0: return decode_hello(f);
    case 1: return Credit{f.integer<std::uint32_t>("slots", 0, kMaxSlots)};
    case 2: return decode_results(f);
    case 3: return Heartbeat{};
    case 4: return Bye{};
    case 5: return decode_welcome(f);
    case 6: return decode_tasks(f);
    case 7: return decode_ack(f);
    case 8: return decode_submit(f);
    case 9: return decode_accepted(f);
    case 10: return decode_wait(f);
    case 11: return decode_outcomes(f);
    case 12: return Cancel{req_of(f), f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max())};
    case 13: return Cancelled{req_of(f), f.integer<JobId>("job", 1, std::numeric_limits<std::int64_t>::max()),
                              f.integer<std::uint64_t>("cancelled", 0, std::numeric_limits<std::int64_t>::max())};
    case 14: return Status{req_of(f)};
    case 15: {
      const JsonValue s = f.need("status");
      if (!s.is_object()) fail(ErrorCode::BadField, f.path("status").str() + " must be a JSON object");
      // REPORT is the one message kept as a DOM (it is for people and tools, and rare).
      std::string text;
      s.dump(text);
      return Report{req_of(f), json::parse(text)};
    }
    case 16: {
      ErrorReply e;
      e.req = req_of(f);
      e.code = error_code_from_name(f.text("code", 64));
      e.message = f.text("message", kMaxErrorBytes);
      return e;
    }
  }
  fail(ErrorCode::Internal, "no decoder for command " + where.str());
}

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
    if (!m.running.empty()) {
      w.begin_array("running");
      for (auto& r : m.running) w.begin_object().field("task", r.task).field("attempt", r.attempt).end_object();
      w.end_array();
    }
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
      w.end_object();
    }
    w.end_array().end_object();
  }
  void operator()(const Heartbeat&) { out += "{}"; }
  void operator()(const Bye&) { out += "{}"; }
  void operator()(const Welcome& m) {
    Writer(out).begin_object().field("master", m.master).field("heartbeat_ms", m.heartbeat_ms)
        .field("timeout_ms", m.timeout_ms).end_object();
  }
  void operator()(const Tasks& m) {
    Writer w(out);
    w.begin_object().begin_array("tasks");
    for (auto& a : m.tasks)
      w.begin_object().field("task", a.task).field("job", a.job).field("attempt", a.attempt)
          .field("function", a.function).raw("args", a.args).field("timeout_ms", a.timeout_ms).end_object();
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
    Writer(out).begin_object().field("req", m.req).field("job", m.job).field("first_task", m.first_task)
        .field("count", m.count).field("duplicate", m.duplicate).end_object();
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
    w.begin_object().field("req", m.req).field("job", m.job).field("after", m.after)
        .field("finished", m.finished).field("total", m.total).field("sealed", m.sealed);
    w.begin_array("outcomes");
    for (auto& o : m.outcomes) {
      w.begin_object().field("task", o.task).raw("args", o.args).field("status", to_string(o.status));
      if (o.status == TaskState::Done) w.raw("result", o.value);
      if (o.status == TaskState::Dead) w.field("error", o.value);
      w.field("attempts", o.attempts).field("worker", o.worker).end_object();
    }
    w.end_array().end_object();
  }
  void operator()(const Cancel& m) { Writer(out).begin_object().field("req", m.req).field("job", m.job).end_object(); }
  void operator()(const Cancelled& m) {
    Writer(out).begin_object().field("req", m.req).field("job", m.job).field("cancelled", m.cancelled).end_object();
  }
  void operator()(const Status& m) { Writer(out).begin_object().field("req", m.req).end_object(); }
  void operator()(const Report& m) {
    Writer(out).begin_object().field("req", m.req)
        .raw("status", m.status.dump(-1, ' ', false, json::error_handler_t::replace)).end_object();
  }
  void operator()(const ErrorReply& m) {
    Writer(out).begin_object().field("req", m.req).field("code", error_code_name(m.code))
        .field("message", m.message).end_object();
  }
};

// About the size of a body (a little more, unless texts need escapes), so that a big one is written
// into one allocation rather than grown and copied a dozen times. An entry's own fields take under
// 128 bytes; its texts and JSON values add their size.
struct SizeHint {
  std::size_t operator()(const Results& m) const {
    std::size_t n = 32;
    for (auto& r : m.results) n += 64 + r.value.size();
    return n;
  }
  std::size_t operator()(const Tasks& m) const {
    std::size_t n = 32;
    for (auto& a : m.tasks) n += 128 + a.function.size() + a.args.size();
    return n;
  }
  std::size_t operator()(const Ack& m) const { return 32 + 21 * m.tasks.size(); }
  std::size_t operator()(const Submit& m) const {
    std::size_t n = 512 + m.idempotency_key.size();
    for (auto& t : m.tasks) n += 16 + t.args.size();  // the rest is usually in "defaults"
    return n;
  }
  std::size_t operator()(const Outcomes& m) const {
    std::size_t n = 256;
    for (auto& o : m.outcomes) n += 128 + o.args.size() + o.value.size() + o.worker.size();
    return n;
  }
  template <class Small>
  std::size_t operator()(const Small&) const { return 256; }
};

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

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
    return make_error(ErrorCode::TooLarge, std::string(where) + ": body is " + std::to_string(body.size()) +
                                               " bytes; the limit is " + std::to_string(kMaxMessageBytes));
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
        return make_error(ErrorCode::BadJson, std::string(where) + ": body nests deeper than " +
                                                  std::to_string(kMaxJsonDepth) + " levels");
      if (body.find('\0') != std::string_view::npos)
        return make_error(ErrorCode::BadJson, std::string(where) + ": body contains a NUL byte");
      return make_error(ErrorCode::BadJson, std::string(where) + ": body is not valid JSON");
    }
    return decode_body(index, doc.root());
  } catch (const Bad& bad) {
    return bad.error;
  } catch (const std::exception& e) {  // allocation failures
    return make_error(ErrorCode::BadField, std::string(where) + ": " + e.what());
  }
}

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest >= limit) return deepest;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      // Copy the longest run of plain ASCII at once.
      std::size_t j = i + 1;
      while (j < s.size()) {
        const auto d = static_cast<unsigned char>(s[j]);
        if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') break;
        ++j;
      }
      out.append(s.data() + i, j - i);
      i = j;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      case '\b': out += "\\b"; ++i; continue;
      case '\f': out += "\\f"; ++i; continue;
      default: break;
    }
    if (c < 0x20) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
      ++i;
      continue;
    }
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += kReplacement;
      ++i;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  out += '"';
}

std::string sanitize_text(std::string_view s, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t n = utf8_sequence(s, i);
    const std::string_view piece = n ? s.substr(i, n) : kReplacement;
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    i += n ? n : 1;
  }
  return out;
}

}  // namespace taskmaster::protocol
