#include "cli/output.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

namespace taskmaster::cli {

namespace proto = protocol;

int report(const Error& e) {
  std::fprintf(stderr, "taskmaster: %s\n", e.message.c_str());
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
  if (origin) {
    out += ",\"function\":";
    proto::append_json_string(out, origin->function);
    out += ",\"queue\":";
    proto::append_json_string(out, origin->queue);
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
  return s.str();
}

}  // namespace

std::string format_status(const nlohmann::json& st) {
  std::ostringstream s;
  s << "master " << cell(st.value("master", "")) << ", up " << cell(st.value("uptime_s", 0.0)) << " s; " << count_cell(st, "jobs")
    << " jobs, " << count_cell(st, "tasks") << " tasks kept\n";
  if (const auto http = st.find("http"); http != st.end() && http->is_string())
    s << "dashboard and metrics at " << http->get<std::string>() << " (`taskmaster dashboard` prints the login link)\n";
  s << '\n';
  std::vector<std::vector<std::string>> q{{"queue", "waiting", "delayed", "queued", "running", "done", "dead", "cancelled"}};
  const auto queues = st.value("queues", nlohmann::json::object());
  for (const auto& [name, counts] : queues.items()) {
    std::vector<std::string> row{name};
    for (const char* k : {"waiting", "delayed", "queued", "running", "done", "dead", "cancelled"}) row.push_back(count_cell(counts, k));
    q.push_back(row);
  }
  s << table(q) << '\n';
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
  std::vector<std::vector<std::string>> w{{"worker", "host", "slots", "running", "reserved", "done", "last_heartbeat_s"}};
  for (const auto& x : st.value("workers", nlohmann::json::array()))
    w.push_back({cell(x.value("id", "")), cell(x.value("host", "")), count_cell(x, "slots"),
                 count_cell(x, x.contains("running") ? "running" : "in_flight"), count_cell(x, "reserved"), count_cell(x, "done"),
                 cell(x.value("last_heartbeat_s", 0.0))});
  s << table(w) << '\n';
  if (st.contains("running"))
    s << "leased: " << count_cell(st, "running") << " running, " << count_cell(st, "reserved")
      << " reserved (held by workers, not begun)\n";
  const auto rates = st.value("rates", nlohmann::json::object());
  s << "rates: " << cell(rates.value("submitted_per_s", 0.0)) << " tasks/s submitted, " << cell(rates.value("finished_per_s", 0.0))
    << " tasks/s finished\n";
  return s.str();
}

std::string format_health(const nlohmann::json& st) {
  return "master=" + cell(st.value("master", "")) + " uptime_s=" + cell(st.value("uptime_s", 0.0)) +
         " workers=" + std::to_string(st.value("workers", nlohmann::json::array()).size()) + " tasks=" + count_cell(st, "tasks") + "\n";
}

}  // namespace taskmaster::cli
