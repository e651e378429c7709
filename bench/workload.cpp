#include "bench/workload.h"

#include <charconv>

#include <nlohmann/json.hpp>

namespace taskmaster::bench {

namespace proto = protocol;
using namespace std::chrono;

namespace {

// A compact JSON integer (what square takes and returns), or nullopt.
std::optional<std::int64_t> parse_int(std::string_view s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

proto::TaskSpec square_task(std::int64_t n, const std::string& queue) {
  proto::TaskSpec t;
  t.function = "square";
  t.args = std::to_string(n);
  t.queue = queue;
  return t;
}

double seconds_since(steady_clock::time_point t0) { return duration<double>(steady_clock::now() - t0).count(); }

}  // namespace

void Ledger::expect(std::int64_t n) {
  ++wanted_[static_cast<std::size_t>(n)];
  ++submitted_;
}

void Ledger::fail(std::string why) {
  if (wrong_++ == 0) first_error_ = std::move(why);
}

void Ledger::take(const proto::Outcome& o) { take(o.task, std::string(proto::to_string(o.status)), o.args, o.value); }

void Ledger::take(std::uint64_t task, const std::string& status, const std::string& args, const std::string& result) {
  ++received_;
  const std::string which = "task " + std::to_string(task) + " (args " + args + ")";
  if (!seen_.insert(task).second) return fail(which + " came back twice");
  if (status != "done") return fail(which + " ended " + status + (result.empty() ? "" : ": " + result));
  const auto n = parse_int(args);
  if (!n || *n < 0 || *n > kMaxN) return fail(which + ": args are not an n in 0.." + std::to_string(kMaxN));
  const auto r = parse_int(result);
  if (!r || *r != *n * *n) return fail(which + ": result " + result + " is not " + std::to_string(*n * *n));
  if (--wanted_[static_cast<std::size_t>(*n)] < 0) return fail(which + ": more results for n = " + args + " than tasks submitted");
}

Status Ledger::verify() const {
  if (wrong_ > 0)
    return make_error(ErrorCode::Internal,
                      "verification failed: " + std::to_string(wrong_) + " wrong outcomes; the first: " + first_error_);
  if (received_ != submitted_)
    return make_error(ErrorCode::Internal, "verification failed: " + std::to_string(submitted_) + " tasks submitted, " +
                                               std::to_string(received_) + " outcomes received");
  return Ok{};
}

Expected<Collected> submit_and_collect(Client& client, std::uint64_t n, const RunOptions& o) {
  Ledger ledger;
  Collected c;
  Numbers numbers(o.seed);
  std::uint64_t made = 0;
  TaskSource source = [&]() -> std::optional<proto::TaskSpec> {
    if (made == n) return std::nullopt;
    ++made;
    const auto v = numbers.next();
    ledger.expect(v);
    return square_task(v, o.queue);
  };
  OutcomeSink sink = [&](proto::JobId, const std::vector<proto::Outcome>& batch) {
    ++c.replies;
    for (const auto& x : batch) ledger.take(x);
  };
  const auto t0 = steady_clock::now();
  auto summary = run_job(client, source, JobOptions{}, nullptr, &sink);
  c.seconds = seconds_since(t0);
  if (!summary) return summary.error();
  if (auto v = ledger.verify(); !v) return v.error();
  return c;
}

Expected<double> submit_only(Client& client, std::uint64_t n, const RunOptions& o, proto::JobId* job) {
  Numbers numbers(o.seed);
  std::uint64_t made = 0;
  TaskSource source = [&]() -> std::optional<proto::TaskSpec> {
    if (made == n) return std::nullopt;
    ++made;
    return square_task(numbers.next(), o.queue);
  };
  const auto t0 = steady_clock::now();
  auto summary = run_job(client, source, JobOptions{}, nullptr, nullptr);
  const double elapsed = seconds_since(t0);
  if (!summary) return summary.error();
  if (summary->total != n)
    return make_error(ErrorCode::Internal, "verification failed: " + std::to_string(n) + " tasks submitted, the master accepted " +
                                               std::to_string(summary->total));
  if (job) *job = summary->job;
  return elapsed;
}

Expected<std::vector<double>> round_trips(Client& client, std::uint64_t count, const RunOptions& o) {
  std::vector<double> us;
  us.reserve(count);
  Numbers numbers(o.seed);
  for (std::uint64_t i = 0; i < count; ++i) {
    Ledger ledger;
    bool given = false;
    const auto v = numbers.next();
    TaskSource source = [&]() -> std::optional<proto::TaskSpec> {
      if (given) return std::nullopt;
      given = true;
      ledger.expect(v);
      return square_task(v, o.queue);
    };
    OutcomeSink sink = [&](proto::JobId, const std::vector<proto::Outcome>& batch) {
      for (const auto& x : batch) ledger.take(x);
    };
    const auto t0 = steady_clock::now();
    auto summary = run_job(client, source, JobOptions{}, nullptr, &sink);
    if (!summary) return summary.error();
    if (auto ok = ledger.verify(); !ok) return ok.error();
    us.push_back(duration<double, std::micro>(steady_clock::now() - t0).count());
  }
  return us;
}

Expected<std::vector<double>> acks(Client& client, std::uint64_t count, const RunOptions& o) {
  std::vector<double> us;
  us.reserve(count);
  Numbers numbers(o.seed);
  for (std::uint64_t i = 0; i < count; ++i) {
    proto::Submit m;
    m.idempotency_key = "ack-" + std::to_string(o.seed) + "-" + std::to_string(i);
    m.tasks = {square_task(numbers.next(), o.queue)};
    const auto t0 = steady_clock::now();
    auto r = client.call(m);
    if (!r) return r.error();
    const auto* a = std::get_if<proto::Accepted>(&*r);
    if (!a) return unexpected_reply("SUBMIT", *r);
    if (a->count != 1) return make_error(ErrorCode::Internal, "verification failed: ACCEPTED without the task");
    us.push_back(duration<double, std::micro>(steady_clock::now() - t0).count());
  }
  return us;
}

std::string cli_input(std::uint64_t n, std::uint64_t seed, Ledger& ledger) {
  Numbers numbers(seed);
  std::string in;
  in.reserve(n * 6);
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto v = numbers.next();
    ledger.expect(v);
    in += std::to_string(v);
    in += '\n';
  }
  return in;
}

Status check_cli_output(const std::string& out, Ledger& ledger) {
  std::size_t start = 0, line_no = 0;
  while (start < out.size()) {
    auto end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    const std::string_view line(out.data() + start, end - start);
    start = end + 1;
    ++line_no;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("task") || !j["task"].is_number_unsigned() || !j.contains("status") ||
        !j.contains("args"))
      return make_error(ErrorCode::Internal, "verification failed: output line " + std::to_string(line_no) +
                                                 " is not a task outcome: " + std::string(line.substr(0, 200)));
    ledger.take(j["task"].get<std::uint64_t>(), j["status"].is_string() ? j["status"].get<std::string>() : "?", j["args"].dump(),
                j.contains("result") ? j["result"].dump() : (j.contains("error") ? j["error"].dump() : std::string()));
  }
  return ledger.verify();
}

}  // namespace taskmaster::bench
