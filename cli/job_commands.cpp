// taskmaster submit / wait / results: put a job on the queues, follow its outcomes.
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "cli/line_reader.h"
#include "cli/options.h"
#include "cli/output.h"
#include "cli/progress.h"
#include "cli/waiting.h"

namespace taskmaster::cli {

namespace proto = protocol;
using nlohmann::json;

namespace {

struct SubmitOptions {
  ConnectionOptions connection;
  std::string function;
  std::string args;
  bool has_args = false;
  bool each = false;
  std::string queue = std::string(proto::kDefaultQueue);
  int priority = 0;
  double delay_s = 0;
  double timeout_s = proto::kDefaultTimeoutMs / 1000.0;
  unsigned max_attempts = proto::kDefaultMaxAttempts;
  double backoff_s = proto::kDefaultBackoffMs / 1000.0;
  bool wait = false;
  bool json = false;
  bool quiet = false;  // --quiet: no job id, progress line or summary on stderr
  std::string idempotency_key;
  std::vector<proto::JobId> after{};          // --after
  std::vector<proto::JobId> after_success{};  // --after-success
};

struct FollowOptions {
  ConnectionOptions connection;
  proto::JobId job = 0;
  bool json = false;
  bool quiet = false;
};

// ARGS as given on the command line or on a line of stdin: JSON if it parses, else a string.
Expected<std::string> parse_args(const std::string& text) {
  std::string compact;
  if (proto::json_depth(text) > proto::kMaxValueDepth)
    return make_error(ErrorCode::BadField, "args nest deeper than " + std::to_string(proto::kMaxValueDepth) + " levels");
  json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) {
    compact.clear();
    proto::append_json_string(compact, text);
  } else {
    compact = v.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  if (compact.size() > proto::kMaxArgsBytes)
    return make_error(ErrorCode::TooLarge, "args are " + std::to_string(compact.size()) + " bytes as JSON; the limit is " +
                                               std::to_string(proto::kMaxArgsBytes));
  return compact;
}

int exit_for(const JobSummary& s) { return s.all_done() ? kExitOk : kExitTaskFailed; }

int run_submit(const SubmitOptions& o) {
  if (!proto::is_valid_name(o.function)) {
    std::fprintf(stderr, "taskmaster: invalid function name '%s': use 1 to %zu of A-Z a-z 0-9 _ . : -\n", o.function.c_str(),
                 proto::kMaxNameBytes);
    return kExitUsage;
  }
  proto::TaskSpec base;
  base.function = o.function;
  base.queue = o.queue;
  base.priority = o.priority;
  // In range: add_seconds_option checked them against the protocol's limits.
  base.delay_ms = static_cast<std::uint64_t>(o.delay_s * 1000);
  base.timeout_ms = static_cast<std::uint32_t>(o.timeout_s * 1000);
  base.max_attempts = o.max_attempts;
  base.backoff_ms = static_cast<std::uint32_t>(o.backoff_s * 1000);
  if (base.timeout_ms == 0) base.timeout_ms = 1;

  // The tasks: one from ARGS, or one per line of stdin with --each (read as the lines arrive).
  std::optional<Error> input_error;
  bool given = false;
  std::uint64_t pulled = 1;  // tasks read so far (the one without --each, or the lines)
  std::unique_ptr<LineReader> lines;
  if (o.each) lines = std::make_unique<LineReader>();
  StreamingTaskSource source = [&](Client::Clock::time_point deadline) -> TaskPull {
    if (input_error) return {};
    if (!o.each) {
      if (given) return {};
      given = true;
      proto::TaskSpec t = base;
      if (o.has_args) {
        auto a = parse_args(o.args);
        if (!a) {
          input_error = a.error();
          return {};
        }
        t.args = std::move(*a);
      }
      return {TaskPull::Kind::Task, std::move(t)};
    }
    LineReader::Line line;
    switch (lines->next(line, deadline)) {
      case LineReader::Got::End: return {};
      case LineReader::Got::NotYet: return {TaskPull::Kind::NotYet, {}};
      case LineReader::Got::Line: break;
    }
    auto a = parse_args(line.text);
    if (!a) {
      input_error = Error{a.error().code, "standard input line " + std::to_string(line.number) + ": " + a.error().message};
      return {};
    }
    proto::TaskSpec t = base;
    t.args = std::move(*a);
    ++pulled;
    return {TaskPull::Kind::Task, std::move(t)};
  };
  // Read the first task before connecting, so that bad input fails fast and no empty job is made.
  auto first = source(Client::Clock::time_point::max());
  if (input_error) {
    std::fprintf(stderr, "taskmaster: %s\n", input_error->message.c_str());
    return kExitUsage;
  }
  if (first.kind != TaskPull::Kind::Task) {
    std::fprintf(stderr, "taskmaster: no tasks: standard input had no non-empty line\n");
    return kExitUsage;
  }
  StreamingTaskSource with_first = prepend(std::move(first), source);

  auto options = o.connection.client();
  if (!options) return report(options.error());
  if (o.wait) arm_interrupt_hint();
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  // While it waits: the job id on stderr, and a word when no worker serves the function.
  std::optional<WorkerWatch> watch;
  if (o.wait) watch.emplace(*options, o.function, o.queue);
  // A live progress line for a job of many tasks (--each) waited on in a terminal.
  Progress progress(o.wait && o.each && !o.quiet);
  const auto accepted = [&](proto::JobId job) {
    if (!o.wait) return;
    if (o.quiet) set_interrupt_job(job);
    else announce_job(job, o.each ? pulled - 1 : 1, o.each);
    progress.at_least(o.each ? pulled - 1 : 1);
    progress.start(job);
  };
  JobOptions jo;
  jo.on_progress = [&](const JobSummary& s) {
    progress.at_least(o.each ? pulled - 1 : 1);
    progress.update(s);
  };
  jo.idempotency_key = o.idempotency_key;
  jo.after = o.after_success.empty() ? o.after : o.after_success;
  jo.after_success = !o.after_success.empty();
  OutcomeSink sink = [&](proto::JobId job, const std::vector<proto::Outcome>& batch) {
    watch->outcome_seen();
    progress.around([&] { print_outcomes(job, batch, o.json, OutcomeOrigin{o.function, o.queue}); });
  };
  auto summary = run_job(client, with_first, jo, accepted, o.wait ? &sink : nullptr);
  progress.finish(summary && summary->ended ? &*summary : nullptr);
  if (input_error) {
    // The tasks before the bad line were submitted; say which job they are in.
    std::fprintf(stderr, "taskmaster: %s (tasks before it are in job %llu)\n", input_error->message.c_str(),
                 static_cast<unsigned long long>(summary ? summary->job : 0));
    return kExitUsage;
  }
  if (!summary) {
    auto e = summary.error();
    // "taskmaster: submit: idempotency key 'K' was used for a different job (N): ...", exit 5.
    if (e.code == ErrorCode::KeyReused && e.message.rfind("SUBMIT: ", 0) == 0) e.message.replace(0, 6, "submit");
    return report(e);
  }
  if (!o.wait) {
    std::printf("%llu\n", static_cast<unsigned long long>(summary->job));
    return kExitOk;
  }
  return exit_for(*summary);
}

int run_follow(const FollowOptions& o, bool until_end) {
  auto options = o.connection.client();
  if (!options) return report(options.error());
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  std::optional<WorkerWatch> watch;
  if (until_end) {
    arm_interrupt_hint();
    set_interrupt_job(o.job);
    // While it waits: a word when no connected worker serves the job's function on its queue.
    watch.emplace(*options, o.job);
  }
  Progress progress(until_end && !o.quiet);
  OutcomeSink sink = [&](proto::JobId job, const std::vector<proto::Outcome>& batch) {
    if (watch) watch->outcome_seen();
    progress.around([&] { print_outcomes(job, batch, o.json); });
  };
  // Once the master has answered: "taskmaster: job 12: 3 of 10 tasks finished" (the job exists).
  const auto first_reply = [&](const JobSummary& s) {
    if (!until_end || s.ended) return;
    if (!o.quiet)
      std::fprintf(stderr, "taskmaster: job %llu: %llu of %llu tasks finished\n", static_cast<unsigned long long>(o.job),
                   static_cast<unsigned long long>(s.done + s.dead + s.cancelled), static_cast<unsigned long long>(s.total));
    progress.start(o.job);
  };
  const auto on_progress = [&](const JobSummary& s) { progress.update(s); };
  auto summary = follow_job(client, o.job, until_end, sink, first_reply, on_progress);
  progress.finish(summary && summary->ended ? &*summary : nullptr);
  if (!summary) return report(summary.error());
  if (!until_end) return summary->dead + summary->cancelled == 0 ? kExitOk : kExitTaskFailed;
  return exit_for(*summary);
}

void add_follow_options(CLI::App* cmd, FollowOptions& o) {
  add_job_argument(cmd, o.job, "The job id that submit printed");
  cmd->add_flag("--json", o.json, "One JSON object per line: job, task, function, queue, args, status, result|error, attempts, worker");
  add_connection_options(cmd, o.connection);
}

constexpr const char* kProgressHelp =
    "On a terminal, stderr shows a live progress line (done, failed, total, tasks/s, ETA) that ends as one summary line "
    "(`taskmaster: job 12: 50000 done, 3 failed in 4.2 s (11900/s)`); never when stderr is not a terminal or TERM=dumb. ";

}  // namespace

void add_job_commands(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<SubmitOptions>();
  auto* submit = app.add_subcommand("submit", "Submit a job: one task, or one task per line of stdin with --each");
  submit->add_option("FUNCTION", o->function, "The function to run, e.g. square")->required();
  auto* args = submit->add_option("ARGS", o->args, "The task's args: JSON, or else taken as a string");
  auto* each = submit->add_flag("--each", o->each,
                                "One task per line of standard input (each line JSON, or a bare string), submitted as the lines arrive");
  each->excludes(args);
  submit->add_option("-q,--queue", o->queue, "Queue to put the tasks on")
      ->check([](const std::string& s) { return proto::is_valid_name(s) ? std::string() : "invalid queue name '" + s + "'"; })
      ->capture_default_str();
  submit->add_option("-p,--priority", o->priority, "Higher runs first")
      ->check(CLI::Range(-proto::kMaxPriority, proto::kMaxPriority))
      ->capture_default_str();
  add_seconds_option(submit, "--delay", o->delay_s, 0, proto::kMaxDelayMs / 1000.0, "Seconds before the tasks may start")
      ->capture_default_str();
  add_seconds_option(submit, "--timeout", o->timeout_s, 0.001, proto::kMaxTimeoutMs / 1000.0, "Seconds an attempt may run before it fails")
      ->capture_default_str();
  submit->add_option("--max-attempts", o->max_attempts, "Attempts before a task is dead")
      ->check(CLI::Range(1u, proto::kMaxAttempts))
      ->capture_default_str();
  add_seconds_option(submit, "--backoff", o->backoff_s, 0, proto::kMaxBackoffMs / 1000.0,
                     "Seconds before the first retry; doubled after each further failure")
      ->capture_default_str();
  auto* wait = submit->add_flag("-w,--wait", o->wait, "Wait, printing each task's outcome as it finishes: ARGS -> RESULT");
  submit
      ->add_flag("--json", o->json,
                 "With --wait: one JSON object per line (job, task, function, queue, args, status, result|error, attempts, worker)")
      ->needs(wait);
  submit->add_flag("--quiet", o->quiet, "With --wait: no job id, progress line or summary on stderr (warnings still)")->needs(wait);
  submit
      ->add_option("--idempotency-key", o->idempotency_key,
                   "Submitting the same key again returns the same job instead of a new one; the key reused for other tasks "
                   "(function, args or options) is refused (exit 5)")
      ->check([](const std::string& s) {
        return !s.empty() && s.size() <= proto::kMaxTextBytes ? std::string()
                                                              : "the key must be 1 to " + std::to_string(proto::kMaxTextBytes) + " bytes";
      });
  auto* after = add_job_list_option(submit, "--after", o->after,
                                    "Hold the tasks until these jobs have ended (every task finished or cancelled), however they ended");
  add_job_list_option(submit, "--after-success", o->after_success,
                      "Hold the tasks until these jobs have ended; cancel them unless every task of those jobs is done")
      ->excludes(after);
  add_connection_options(submit, o->connection);
  submit->footer(std::string("Without --wait, prints the job id. With --after or --after-success the job is 'waiting' (see status) "
                             "until those jobs have ended; a job id that does not exist is refused (exit 5). With --wait --each: ") +
                 kProgressHelp + kExitCodesHelp);
  submit->callback([o, args] { o->has_args = args->count() > 0; });
  runners[submit] = [o] { return run_submit(*o); };

  auto w = std::make_shared<FollowOptions>();
  auto* wait_cmd = app.add_subcommand("wait", "Wait for a job to end, printing each task's outcome (finished ones first)");
  add_follow_options(wait_cmd, *w);
  wait_cmd->add_flag("--quiet", w->quiet, "No job line, progress line or summary on stderr (warnings still)");
  wait_cmd->footer(std::string("Warns on stderr when no connected worker serves the job's function on its queue (after a few seconds, "
                               "and again when one comes). ") +
                   kProgressHelp + kExitCodesHelp);
  runners[wait_cmd] = [w] { return run_follow(*w, true); };

  auto r = std::make_shared<FollowOptions>();
  auto* results = app.add_subcommand("results", "Print the outcomes a job has so far, without waiting");
  add_follow_options(results, *r);
  results->footer(std::string("Exit code 1 if any task so far is dead or cancelled. ") + kExitCodesHelp);
  runners[results] = [r] { return run_follow(*r, false); };
}

}  // namespace taskmaster::cli
