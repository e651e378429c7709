// taskmaster health: is the master up and answering? For container healthchecks, systemd and load
// balancers: one STATUS request, an exit code, no output unless --verbose.
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {
namespace {

struct HealthOptions {
  ConnectionOptions connection;
  bool verbose = false;
  HealthOptions() { connection.connect_timeout_s = 2; }  // a probe must answer quickly
};

int run_health(const HealthOptions& o) {
  auto options = o.connection.client();
  if (!options) return report(options.error());
  // One deadline for all of it: a master that takes the connection but never answers (stopped,
  // wedged) is as unhealthy as one that is not there.
  const auto deadline = Client::Clock::now() + options->connect_timeout;
  options->retry_timeout = options->connect_timeout;
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  client.start(protocol::Status{});
  auto r = client.next(deadline);
  if (!r) return report(r.error());
  if (!*r) {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", o.connection.connect_timeout_s);
    return report(make_error(ErrorCode::Unreachable, "the master at " + options->endpoint + " did not answer within " + seconds + " s"));
  }
  if (auto s = as_status((*r)->message); !s) return report(s.error());
  if (o.verbose) {
    const std::string line = format_health(std::get<protocol::Report>((*r)->message).status);
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  return kExitOk;
}

}  // namespace

void add_health_command(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<HealthOptions>();
  auto* cmd = app.add_subcommand("health", "Check that the master answers (for healthchecks: an exit code, no output)");
  cmd->add_flag("-v,--verbose", o->verbose, "On success print one line: master=ID uptime_s=S workers=N tasks=N");
  add_check_connection_options(cmd, o->connection);
  cmd->footer(
      "Sends one STATUS request. Exit codes: 0 the master answered; 3 no connection or no answer within --timeout;\n"
      "4 authentication failed (wrong key, no usable key); 2 usage error; 5 the master refused the request.\n"
      "For compose healthchecks, systemd units and timers, and load balancers; see docs/DEPLOY.md.");
  runners[cmd] = [o] { return run_health(*o); };
}

}  // namespace taskmaster::cli
