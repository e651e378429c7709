// taskmaster status / cancel / retry / dashboard.
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {

namespace proto = protocol;

namespace {
std::string tasks_text(std::uint64_t n) { return std::to_string(n) + (n == 1 ? " task" : " tasks"); }
}  // namespace

std::string cancel_words(const proto::Cancelled& c) {
  std::string s = "taskmaster: job " + std::to_string(c.job) + ": ";
  if (!c.cancelled && !c.running && !c.reserved) return s + "nothing left to cancel (every task had finished or was cancelled)\n";
  s += tasks_text(c.cancelled) + " cancelled (waiting, delayed or queued)";
  if (c.reserved) s += "; " + std::to_string(c.reserved) + " reserved by workers, not begun: cancelled when they give them back";
  if (c.running) s += "; " + std::to_string(c.running) + " running: they finish";
  return s + "\n";
}

namespace {

struct StatusOptions {
  ConnectionOptions connection;
  bool json = false;
  double watch_s = 0;    // --watch: refresh every so many seconds; 0: print once
  proto::JobId job = 0;  // status JOB: that job's progress (as `taskmaster job JOB`)
};

struct PurgeOptions {
  ConnectionOptions connection;
  std::string queue;
  bool yes = false;
};

struct JobsOptions {
  ConnectionOptions connection;
  bool json = false;
  std::uint32_t limit = 20;
};

struct CancelOptions {
  ConnectionOptions connection;
  proto::JobId job = 0;
};

// Connects, sends one request and hands its answer to `answered` (a reply of another type is
// reported as unexpected). Returns the exit code.
template <class T, class F> int ask(const ConnectionOptions& connection, proto::Message request, const char* command, F&& answered) {
  auto options = connection.client();
  if (!options) return report(options.error());
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  auto r = client.call(std::move(request));
  if (!r) return report(r.error());
  const auto* reply = std::get_if<T>(&*r);
  if (!reply) return unexpected_reply(command, *r);
  return answered(*reply);
}

void print_status(const StatusOptions& o, const proto::Report& r) {
  const std::string text = o.json ? r.status.dump() + "\n" : format_status(r.status);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

// --watch: the report again every watch_s seconds until SIGINT or SIGTERM (then exit 0). On a
// terminal each report replaces the last (the screen is cleared); otherwise they follow each other.
int watch_status(const StatusOptions& o) {
  StopSignal stop;  // before the ZeroMQ context's threads
  auto options = o.connection.client();
  if (!options) return report(options.error());
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  const bool terminal = isatty(STDOUT_FILENO) == 1;
  for (;;) {
    auto r = client.call(proto::Status{});
    if (!r) return report(r.error());
    const auto* reply = std::get_if<proto::Report>(&*r);
    if (!reply) return unexpected_reply("STATUS", *r);
    if (terminal) std::fputs("\033[H\033[2J", stdout);
    print_status(o, *reply);
    if (!terminal && !o.json) std::fputs("\n", stdout);
    pollfd p{stop.fd(), POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(o.watch_s * 1000));
    if (n > 0) return kExitOk;
  }
}

// One job's progress: STATUS `job` (PROTOCOL.md §6.12.1).
int run_job(const StatusOptions& o) {
  return ask<proto::Report>(o.connection, proto::Status{0, o.job}, "job", [&](const proto::Report& r) -> int {
    const auto job = r.status.find("job");
    if (job == r.status.end() || !job->is_object())
      return report(Error{ErrorCode::NotAllowed, "job: the master is too old to report on one job (it answered its state)"});
    const std::string text = o.json ? job->dump() + "\n" : format_job(*job);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kExitOk;
  });
}

// The most recent jobs: STATUS `jobs`.
int run_jobs(const JobsOptions& o) {
  return ask<proto::Report>(o.connection, proto::Status{0, 0, o.limit}, "jobs", [&](const proto::Report& r) -> int {
    const auto jobs = r.status.find("jobs");
    if (jobs == r.status.end() || !jobs->is_array())
      return report(Error{ErrorCode::NotAllowed, "jobs: the master is too old to list jobs (it answered its state)"});
    std::string text;
    if (o.json)
      for (const auto& j : *jobs) text += j.dump() + "\n";
    else text = format_jobs(r.status);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kExitOk;
  });
}

// PURGE, after a y/N question on a terminal; without one, only with --yes.
int run_purge(const PurgeOptions& o) {
  if (!o.yes) {
    if (isatty(STDIN_FILENO) != 1) {
      std::fprintf(stderr, "taskmaster: purge: standard input is not a terminal, so nothing can confirm: pass --yes to purge queue %s\n",
                   o.queue.c_str());
      return kExitUsage;
    }
    std::fprintf(stderr, "Cancel every queued and delayed task of queue %s, of every job? [y/N] ", o.queue.c_str());
    std::fflush(stderr);
    char line[64] = {};
    const bool read = std::fgets(line, sizeof line, stdin) != nullptr;
    const std::string answer = read ? std::string(line, std::strcspn(line, "\r\n")) : "";
    if (answer != "y" && answer != "Y" && answer != "yes" && answer != "YES") {
      std::fprintf(stderr, "taskmaster: purge: not confirmed; nothing purged\n");
      return kExitError;
    }
  }
  return ask<proto::Purged>(o.connection, proto::Purge{0, o.queue}, "purge", [&](const proto::Purged& p) {
    std::printf("%llu\n", static_cast<unsigned long long>(p.purged));
    std::fflush(stdout);
    std::fprintf(stderr, "taskmaster: queue %s: %s cancelled (queued or delayed); running ones finish\n", p.queue.c_str(),
                 tasks_text(p.purged).c_str());
    return kExitOk;
  });
}

int run_status(const StatusOptions& o) {
  if (o.job) return run_job(o);
  if (o.watch_s > 0) return watch_status(o);
  return ask<proto::Report>(o.connection, proto::Status{}, "STATUS", [&](const proto::Report& r) {
    print_status(o, r);
    return kExitOk;
  });
}

int run_cancel(const CancelOptions& o) {
  return ask<proto::Cancelled>(o.connection, proto::Cancel{0, o.job}, "CANCEL", [](const proto::Cancelled& c) {
    std::printf("%llu\n", static_cast<unsigned long long>(c.cancelled));
    std::fflush(stdout);
    std::fprintf(stderr, "%s", cancel_words(c).c_str());
    return kExitOk;
  });
}

int run_retry(const CancelOptions& o) {
  return ask<proto::Accepted>(o.connection, proto::Retry{0, o.job}, "RETRY", [&](const proto::Accepted& a) {
    std::printf("%llu\n", static_cast<unsigned long long>(a.job));
    std::fflush(stdout);
    if (a.duplicate)
      std::fprintf(stderr, "taskmaster: job %llu was retried before, as job %llu (%u tasks); retry that job to go again\n",
                   static_cast<unsigned long long>(o.job), static_cast<unsigned long long>(a.job), a.count);
    else
      std::fprintf(stderr, "taskmaster: job %llu: %u dead tasks of job %llu queued again\n", static_cast<unsigned long long>(a.job),
                   a.count, static_cast<unsigned long long>(o.job));
    return kExitOk;
  });
}

// The login link from the master's STATUS (its `http`) and the token derived from our key.
int print_login(const StatusOptions& o, const nlohmann::json& status, const std::optional<proto::HttpSecrets>& secrets) {
  const auto http = status.find("http");
  if (http == status.end() || !http->is_string())
    return report(Error{ErrorCode::NotAllowed,
                        "dashboard: the master at " + o.connection.endpoint + " serves no HTTP endpoint (start it with --http HOST:PORT)"});
  std::string url = http->get<std::string>();
  // A master listening on every interface: the host this command reached it by.
  for (const char* any : {"http://0.0.0.0:", "http://[::]:"})
    if (url.rfind(any, 0) == 0) {
      std::string host = o.connection.endpoint;
      if (auto p = host.find("://"); p != std::string::npos) host = host.substr(p + 3);
      host = host.substr(0, host.rfind(':'));
      if (host.empty() || host == "*" || host == "0.0.0.0") host = "127.0.0.1";
      url = "http://" + host + url.substr(url.rfind(':'));
    }
  url += secrets ? "/login?token=" + secrets->token : "/";
  std::printf("%s\n", url.c_str());
  return kExitOk;
}

int run_dashboard(const StatusOptions& o) {
  auto secrets = o.connection.key.http_secrets();
  if (!secrets) return report(secrets.error());
  return ask<proto::Report>(o.connection, proto::Status{}, "STATUS",
                            [&](const proto::Report& r) { return print_login(o, r.status, *secrets); });
}

}  // namespace

void add_status_command(CLI::App& app, Runners& runners) {
  auto s = std::make_shared<StatusOptions>();
  auto* status = app.add_subcommand("status", "Show queues (tasks per state), waiting jobs, workers and rates");
  status->add_flag("--json", s->json, "The master's report as one JSON object");
  add_seconds_option(status, "-w,--watch", s->watch_s, 0.1, kMaxWaitSeconds,
                     "Print the report again every SECONDS (default 2) until Ctrl-C; on a terminal it replaces the last")
      ->expected(0, 1)
      ->default_str("2");
  status->add_option("JOB", s->job, "Show this job's progress instead (as `taskmaster job JOB`)")
      ->check(CLI::Range(proto::JobId{1}, static_cast<proto::JobId>(std::numeric_limits<std::int64_t>::max())));
  add_connection_options(status, s->connection);
  status->footer(std::string("Per queue: queued, running (begun by a worker), reserved (held by a worker, not begun), delayed,\n"
                             "waiting (for other jobs), finished counts and rates (tasks/s in and out over 10 s). NO WORKER marks a\n"
                             "queue whose queued tasks need a function no connected worker serves there. Per worker: threads,\n"
                             "slots (credit), running, reserved, done, last heartbeat.\n"
                             "Example: taskmaster status --watch 5\n") +
                 kExitCodesHelp);
  runners[status] = [s] { return run_status(*s); };

  auto j = std::make_shared<StatusOptions>();
  auto* job = app.add_subcommand("job", "Show one job's progress: its state, tasks per state, rate, time left and last failures");
  add_job_argument(job, j->job, "The job id");
  job->add_flag("--json", j->json, "The job as one JSON object (PROTOCOL.md §6.12.1)");
  add_connection_options(job, j->connection);
  job->footer(std::string("Example: taskmaster job 12\n") + kExitCodesHelp);
  runners[job] = [j] { return run_job(*j); };

  auto l = std::make_shared<JobsOptions>();
  auto* jobs = app.add_subcommand("jobs", "List the most recent jobs: id, state, task counts, age, first function and queue");
  jobs->add_option("-n,--limit", l->limit, "How many jobs, newest first")
      ->check(CLI::Range(1u, proto::kMaxStatusJobs))
      ->capture_default_str();
  jobs->add_flag("--json", l->json, "One JSON object per job, newest first");
  add_connection_options(jobs, l->connection);
  jobs->footer(std::string("Jobs are kept until their results expire (master --result-ttl). Example: taskmaster jobs -n 5\n") +
               kExitCodesHelp);
  runners[jobs] = [l] { return run_jobs(*l); };

  auto p = std::make_shared<PurgeOptions>();
  auto* purge = app.add_subcommand("purge", "Remove a queue's waiting work: its queued and delayed tasks, of every job, become cancelled");
  purge->add_option("QUEUE", p->queue, "The queue")->required()->check(not_empty("QUEUE"));
  purge->add_flag("-y,--yes", p->yes, "Do not ask first (required when standard input is not a terminal)");
  add_connection_options(purge, p->connection);
  purge->footer(
      std::string("Asks y/N first on a terminal. Running tasks finish; tasks of jobs that wait for others (--after) stay.\n"
                  "Prints how many tasks were cancelled. Example: taskmaster purge default --yes\n"
                  "Exit codes: 0 purged (or nothing to purge); 2 usage error, or no terminal and no --yes; 3 master\n"
                  "unreachable; 4 authentication failed; 5 not confirmed, or another error."));
  runners[purge] = [p] { return run_purge(*p); };

  auto c = std::make_shared<CancelOptions>();
  auto* cancel = app.add_subcommand(
      "cancel",
      "Cancel a job: its waiting, queued and delayed tasks become cancelled, and those workers hold but have not begun "
      "(reserved) once they give them back; running ones finish");
  add_job_argument(cancel, c->job, "The job id");
  add_connection_options(cancel, c->connection);
  cancel->footer(std::string("Prints how many tasks were cancelled on stdout, and what it did in words on stderr, e.g.\n"
                             "\"job 12: 40 tasks cancelled (waiting, delayed or queued); 3 running: they finish\". ") +
                 kExitCodesHelp);
  runners[cancel] = [c] { return run_cancel(*c); };

  auto r = std::make_shared<CancelOptions>();
  auto* retry = app.add_subcommand("retry",
                                   "Queue a job's dead tasks again, as a new job: each with its function, args, queue, "
                                   "priority, timeout, attempts and backoff");
  add_job_argument(retry, r->job, "The job whose dead tasks to run again");
  add_connection_options(retry, r->connection);
  retry->footer(std::string("Prints the new job's id (wait for it with `taskmaster wait ID`). A job is retried once: asking again\n"
                            "answers the same new job; retry that one to go again. Example: taskmaster retry 12\n") +
                kExitCodesHelp);
  runners[retry] = [r] { return run_retry(*r); };

  auto d = std::make_shared<StatusOptions>();
  auto* dashboard = app.add_subcommand("dashboard", "Print the dashboard's login link of a running master (started with --http)");
  add_connection_options(dashboard, d->connection);
  dashboard->footer(std::string("The link carries the HTTP token derived from the key: treat it as a secret.\n") + kExitCodesHelp);
  runners[dashboard] = [d] { return run_dashboard(*d); };
}

}  // namespace taskmaster::cli
