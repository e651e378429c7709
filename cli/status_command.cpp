// taskmaster status / cancel.
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

int run_status(const StatusOptions& o) {
  auto options = o.connection.client();
  if (!options) return report(options.error());
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  auto r = client.call(proto::Status{});
  if (!r) return report(r.error());
  const auto* report_message = std::get_if<proto::Report>(&*r);
  if (!report_message) return unexpected_reply("STATUS", *r);
  const auto& status = report_message->status;
  const std::string text = o.json ? status.dump() + "\n" : format_status(status);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return kExitOk;
}

int run_cancel(const CancelOptions& o) {
  auto options = o.connection.client();
  if (!options) return report(options.error());
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  auto r = client.call(proto::Cancel{0, o.job});
  if (!r) return report(r.error());
  const auto* cancelled = std::get_if<proto::Cancelled>(&*r);
  if (!cancelled) return unexpected_reply("CANCEL", *r);
  std::printf("%llu\n", static_cast<unsigned long long>(cancelled->cancelled));
  return kExitOk;
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
}

}  // namespace taskmaster::cli
