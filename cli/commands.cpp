#include "cli/commands.h"

#include "cli/output.h"

namespace taskmaster::cli {

void add_commands(CLI::App& app, Runners& runners) {
  // Every usage error is one line, "taskmaster: MESSAGE" (subcommands copy this when added).
  app.failure_message([](const CLI::App*, const CLI::Error& e) { return "taskmaster: " + std::string(e.what()) + "\n"; });
  app.require_subcommand(1);
  app.set_version_flag("--version", "taskmaster 0.1.0");
  add_master_command(app, runners);
  add_worker_command(app, runners);
  add_job_commands(app, runners);
  add_status_command(app, runners);
  add_keygen_command(app, runners);
  add_bench_command(app, runners);
  app.footer(kExitCodesHelp);
}

namespace {

int dispatch(CLI::App& app, Runners& runners) {
  for (const auto* sub : app.get_subcommands())
    if (auto it = runners.find(sub); it != runners.end()) return it->second();
  return kExitUsage;
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"taskmaster: a distributed task queue (master, workers, and jobs from the command line)", "taskmaster"};
  Runners runners;
  add_commands(app, runners);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, the version, or the error
    return code == 0 ? kExitOk : kExitUsage;
  }
  return dispatch(app, runners);
}

int run(std::vector<std::string> args) {
  CLI::App app{"taskmaster", "taskmaster"};
  Runners runners;
  add_commands(app, runners);
  try {
    std::reverse(args.begin(), args.end());  // CLI11 takes the vector in reverse order
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  return dispatch(app, runners);
}

}  // namespace taskmaster::cli
