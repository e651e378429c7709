// taskmaster status / cancel / retry / dashboard.
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {

namespace proto = protocol;

namespace {

struct StatusOptions {
  ConnectionOptions connection;
  bool json = false;
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

int run_status(const StatusOptions& o) {
  return ask<proto::Report>(o.connection, proto::Status{}, "STATUS", [&](const proto::Report& r) {
    const std::string text = o.json ? r.status.dump() + "\n" : format_status(r.status);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kExitOk;
  });
}

int run_cancel(const CancelOptions& o) {
  return ask<proto::Cancelled>(o.connection, proto::Cancel{0, o.job}, "CANCEL", [](const proto::Cancelled& c) {
    std::printf("%llu\n", static_cast<unsigned long long>(c.cancelled));
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
  add_connection_options(status, s->connection);
  status->footer(kExitCodesHelp);
  runners[status] = [s] { return run_status(*s); };

  auto c = std::make_shared<CancelOptions>();
  auto* cancel = app.add_subcommand(
      "cancel",
      "Cancel a job: its waiting, queued and delayed tasks become cancelled, and those workers hold but have not begun "
      "(reserved) once they give them back; running ones finish");
  add_job_argument(cancel, c->job, "The job id");
  add_connection_options(cancel, c->connection);
  cancel->footer(std::string("Prints how many tasks were cancelled. ") + kExitCodesHelp);
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
