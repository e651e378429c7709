#include "cli/output.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

namespace taskmaster::cli {

namespace proto = protocol;

namespace {
std::string& command_name() {
  static std::string name;
  return name;
}
}  // namespace

void set_command_name(std::string name) { command_name() = std::move(name); }

int report(const Error& e) {
  std::string message = e.message;
  const auto colon = message.find(": ");
  if (!command_name().empty() && colon != std::string::npos && colon >= 3 &&
      std::all_of(message.begin(), message.begin() + colon, [](char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }))
    message = command_name() + message.substr(colon);
  std::fprintf(stderr, "taskmaster: %s\n", message.c_str());
  switch (e.code) {
    case ErrorCode::Unreachable: return kExitUnreachable;
    case ErrorCode::AuthFailed: return kExitAuth;
    default: return kExitError;
  }
}

int unexpected_reply(const char* request, const proto::Message& reply) {
  std::fprintf(stderr, "taskmaster: the master answered %s with %s\n", request, std::string(proto::command_name(reply)).c_str());
  return kExitError;
}

void append_outcome(std::string& out, proto::JobId job, const proto::Outcome& o, bool json, const OutcomeOrigin* origin) {
  if (!json) {
    out += o.args;
    out += " -> ";
    if (o.status == proto::TaskState::Done) {
      out += o.value;
    } else if (o.status == proto::TaskState::Dead) {
      out += "error: ";
      // One line per task: line breaks in the message are shown as \n.
      for (char ch : o.value) {
        if (ch == '\n') out += "\\n";
        else if (ch != '\r') out += ch;
      }
    } else {
      out += "cancelled";
      if (!o.value.empty()) out += " (" + o.value + ")";  // why, when the master knows
    }
    out += '\n';
    return;
  }
  out += "{\"job\":";
  out += std::to_string(job);
  out += ",\"task\":";
  out += std::to_string(o.task);
  // The master's word (OUTCOMES function, queue) first; else what the caller knows; else nothing.
  const std::string* function = !o.function.empty() ? &o.function : origin ? &origin->function : nullptr;
  const std::string* queue = !o.queue.empty() ? &o.queue : origin ? &origin->queue : nullptr;
  if (function && !function->empty()) {
    out += ",\"function\":";
    proto::append_json_string(out, *function);
  }
  if (queue && !queue->empty()) {
    out += ",\"queue\":";
    proto::append_json_string(out, *queue);
  }
  out += ",\"args\":";
  out += o.args;
  out += ",\"status\":\"";
  out += proto::to_string(o.status);
  out += '"';
  if (o.status == proto::TaskState::Done) {
    out += ",\"result\":";
    out += o.value;
  } else if (o.status == proto::TaskState::Dead || !o.value.empty()) {
    out += ",\"error\":";
    proto::append_json_string(out, o.value);
  }
  out += ",\"attempts\":";
  out += std::to_string(o.attempts);
  out += ",\"worker\":";
  proto::append_json_string(out, o.worker);
  out += "}\n";
}

void print_outcomes(proto::JobId job, const std::vector<proto::Outcome>& outcomes, bool json, const std::optional<OutcomeOrigin>& origin) {
  std::string out;
  out.reserve(outcomes.size() * 64);
  for (const auto& o : outcomes) append_outcome(out, job, o, json, origin ? &*origin : nullptr);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

namespace {

std::string cell(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(1) << v.get<double>();
    return s.str();
  }
  return v.dump();
}

// A count: 64 bits (value(key, 0) would read it as an int and cut counts past 2^31).
std::string count_cell(const nlohmann::json& object, const char* key) { return cell(object.value(key, std::uint64_t{0})); }

// Left-aligns the first column, right-aligns the others.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  std::ostringstream s;
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (i) s << "  ";
      if (i == 0) s << std::left << std::setw(static_cast<int>(width[i])) << r[i];
      else s << std::right << std::setw(static_cast<int>(width[i])) << r[i];
    }
    s << '\n';
  }
  // No trailing blanks (an empty last column).
  std::string text = s.str();
  for (auto p = text.find(" \n"); p != std::string::npos; p = text.find(" \n")) {
    auto b = text.find_last_not_of(' ', p);
    text.erase(b + 1, p - b);
  }
  return text;
}

}  // namespace

// The value queues (`taskmaster queue`, the Python listener): one line each, after the rest.
static void append_value_queues(std::ostringstream& s, const nlohmann::json& st) {
  if (const auto py = st.find("python_manager"); py != st.end() && py->is_string())
    s << "python manager listener on " << py->get<std::string>() << '\n';
  const auto vq = st.find("value_queues");
  if (vq == st.end() || !vq->is_object() || vq->empty()) return;
  s << "value queues:";
  for (const auto& [name, q] : vq->items()) {
    s << ' ' << name << ' ' << count_cell(q, "depth");
    if (q.value("waiting", 0) > 0) s << " (" << count_cell(q, "waiting") << " gets waiting)";
    s << ';';
  }
  s.seekp(-1, std::ios_base::end);
  s << '\n';
}

std::string format_status(const nlohmann::json& st) {
  std::ostringstream s;
  s << "master " << cell(st.value("master", "")) << ", up " << cell(st.value("uptime_s", 0.0)) << " s; " << count_cell(st, "jobs")
    << " jobs, " << count_cell(st, "tasks") << " tasks kept\n";
  if (const auto http = st.find("http"); http != st.end() && http->is_string())
    s << "dashboard and metrics at " << http->get<std::string>() << " (`taskmaster dashboard` prints the login link)\n";
  s << '\n';
  // Per queue: depth, leased tasks split into begun (running) and held by a worker, not begun
  // (reserved), finished, rates, and a mark when queued tasks wait for a function no connected
  // worker serves there. A master older than these fields shows 0 reserved and no rates.
  std::vector<std::vector<std::string>> q{
      {"queue", "queued", "running", "reserved", "delayed", "waiting", "done", "dead", "cancelled", "in/s", "out/s", ""}};
  std::vector<std::string> unserved;
  const auto queues = st.value("queues", nlohmann::json::object());
  for (const auto& [name, counts] : queues.items()) {
    const auto leased = counts.value("running", std::uint64_t{0}), reserved = counts.value("reserved", std::uint64_t{0});
    std::vector<std::string> row{name, count_cell(counts, "queued"), cell(leased - std::min(leased, reserved)), cell(reserved)};
    for (const char* k : {"delayed", "waiting", "done", "dead", "cancelled"}) row.push_back(count_cell(counts, k));
    row.push_back(cell(counts.value("submitted_per_s", 0.0)));
    row.push_back(cell(counts.value("finished_per_s", 0.0)));
    std::string functions;
    const auto none = counts.find("unserved");
    if (none != counts.end() && none->is_object())
      for (const auto& [function, n] : none->items()) functions += (functions.empty() ? "" : ", ") + function + " (" + cell(n) + " queued)";
    row.push_back(functions.empty() ? "" : "NO WORKER");
    if (!functions.empty()) unserved.push_back("queue " + name + ": no connected worker serves " + functions);
    q.push_back(row);
  }
  s << table(q);
  for (const auto& line : unserved) s << line << '\n';
  s << '\n';
  // Jobs after jobs: each waiting job and the jobs it still waits for.
  if (const auto waiting = st.value("waiting", nlohmann::json::array()); !waiting.empty()) {
    std::vector<std::vector<std::string>> j{{"job", "state", "tasks", "waits_for", "after"}};
    const auto ids = [](const nlohmann::json& list) {
      std::string out;
      for (const auto& id : list) out += (out.empty() ? "" : ",") + cell(id);
      return out.empty() ? "-" : out;
    };
    for (const auto& x : waiting)
      j.push_back({count_cell(x, "job"), "waiting", count_cell(x, "tasks"), ids(x.value("pending", nlohmann::json::array())),
                   ids(x.value("after", nlohmann::json::array())) + (x.value("after_success", false) ? " (success)" : "")});
    s << table(j);
    if (const auto n = st.value("waiting_jobs", std::uint64_t{0}); n > waiting.size())
      s << "(and " << n - waiting.size() << " more waiting)\n";
    s << '\n';
  }
  // A task "running" in its queue is leased: begun by a worker's thread (running), or held in its
  // prefetch, not begun (reserved). A master older than the split reports only in_flight.
  std::vector<std::vector<std::string>> w{{"worker", "host", "threads", "slots", "running", "reserved", "done", "heartbeat"}};
  const auto workers = st.value("workers", nlohmann::json::array());
  for (const auto& x : workers) {
    const auto threads = x.find("threads");
    w.push_back({cell(x.value("id", "")), cell(x.value("host", "")), threads != x.end() && threads->is_number() ? cell(*threads) : "-",
                 count_cell(x, "slots"), count_cell(x, x.contains("running") ? "running" : "in_flight"), count_cell(x, "reserved"),
                 count_cell(x, "done"), cell(x.value("last_heartbeat_s", 0.0)) + " s ago"});
  }
  if (workers.empty()) s << "no worker connected\n\n";
  else s << table(w) << '\n';
  if (st.contains("running"))
    s << "leased: " << count_cell(st, "running") << " running, " << count_cell(st, "reserved")
      << " reserved (held by workers, not begun)\n";
  const auto rates = st.value("rates", nlohmann::json::object());
  s << "rates: " << cell(rates.value("submitted_per_s", 0.0)) << " tasks/s submitted, " << cell(rates.value("finished_per_s", 0.0))
    << " tasks/s finished\n";
  append_value_queues(s, st);
  return s.str();
}

namespace {

// "3.2 s", "4.5 min", "2.0 h", "3.1 d" (an age or an ETA); "-" for null.
std::string age_cell(const nlohmann::json& v) {
  if (!v.is_number()) return "-";
  const double s = v.get<double>();
  std::ostringstream o;
  o << std::fixed << std::setprecision(1);
  if (s < 120) o << s << " s";
  else if (s < 7200) o << s / 60 << " min";
  else if (s < 172800) o << s / 3600 << " h";
  else o << s / 86400 << " d";
  return o.str();
}

std::string name_cell(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : "-"; }

}  // namespace

std::string format_job(const nlohmann::json& j) {
  std::ostringstream s;
  const auto total = j.value("total", std::uint64_t{0}), unfinished = j.value("unfinished", std::uint64_t{0});
  s << "job " << count_cell(j, "id") << ": " << cell(j.value("state", "")) << ", " << total - std::min(total, unfinished) << "/" << total
    << " finished (" << count_cell(j, "done") << " done, " << count_cell(j, "failed") << " failed or cancelled), " << unfinished
    << " unfinished\n";
  s << "function " << name_cell(j.value("function", nlohmann::json())) << " on queue " << name_cell(j.value("queue", nlohmann::json()))
    << ", submitted " << age_cell(j.value("age_s", nlohmann::json())) << " ago";
  if (const auto e = j.value("ended_s", nlohmann::json()); e.is_number()) s << ", ended " << age_cell(e) << " ago";
  s << '\n';
  std::vector<std::vector<std::string>> rows{{"state"}, {"tasks"}};
  for (const char* k : {"waiting", "delayed", "queued", "running", "done", "dead", "cancelled"}) {
    rows[0].push_back(k);
    rows[1].push_back(count_cell(j.value("counts", nlohmann::json::object()), k));
  }
  s << table(rows);
  const auto rate = j.value("finished_per_s", nlohmann::json());
  s << "rate: " << (rate.is_number() ? cell(rate) + " tasks/s" : std::string("-"));
  if (const auto eta = j.value("eta_s", nlohmann::json()); eta.is_number()) s << ", about " << age_cell(eta) << " left";
  s << '\n';
  const auto failures = j.value("failures", nlohmann::json::array());
  if (!failures.empty()) s << "last failures:\n";
  for (const auto& f : failures) {
    std::string error = f.value("error", "");
    std::replace(error.begin(), error.end(), '\n', ' ');
    s << "  task " << count_cell(f, "task") << " attempt " << count_cell(f, "attempt") << " on " << cell(f.value("worker", "")) << ": "
      << error << '\n';
  }
  return s.str();
}

std::string format_jobs(const nlohmann::json& list) {
  std::vector<std::vector<std::string>> rows{{"job", "state", "total", "done", "failed", "unfinished", "age", "function", "queue"}};
  for (const auto& j : list.value("jobs", nlohmann::json::array()))
    rows.push_back({count_cell(j, "id"), cell(j.value("state", "")), count_cell(j, "total"), count_cell(j, "done"), count_cell(j, "failed"),
                    count_cell(j, "unfinished"), age_cell(j.value("age_s", nlohmann::json())),
                    name_cell(j.value("function", nlohmann::json())), name_cell(j.value("queue", nlohmann::json()))});
  if (rows.size() == 1) return "no jobs\n";
  std::string out = table(rows);
  const auto total = list.value("total", std::uint64_t{0});
  if (total > rows.size() - 1) out += "(" + std::to_string(rows.size() - 1) + " most recent of " + std::to_string(total) + " jobs)\n";
  return out;
}

std::string format_health(const nlohmann::json& st) {
  return "master=" + cell(st.value("master", "")) + " uptime_s=" + cell(st.value("uptime_s", 0.0)) +
         " workers=" + std::to_string(st.value("workers", nlohmann::json::array()).size()) + " tasks=" + count_cell(st, "tasks") + "\n";
}

}  // namespace taskmaster::cli
