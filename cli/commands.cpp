#include "cli/commands.h"

#include <algorithm>
#include <cstdio>
#include <exception>

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
  add_health_command(app, runners);
  add_run_command(app, runners);
  // Hidden (group ""): parse the whole command line, with every check of every option, then exit 0
  // without running anything. It must come before the subcommand (`taskmaster --check-args master
  // --bind ...`). For checking command lines written in files (compose, units) without starting
  // anything (tests/deploy_check.py); --help would not do: it stops parsing where it stands.
  app.add_flag("--check-args")->description("Parse the command line, then exit 0 without running it")->group("");
  app.footer(kExitCodesHelp);
}

namespace {

int dispatch(CLI::App& app, Runners& runners) {
  if (app.count("--check-args") > 0) return kExitOk;
  for (const auto* sub : app.get_subcommands())
    if (auto it = runners.find(sub); it != runners.end()) return it->second();
  return kExitUsage;
}

// `what` on one line: line breaks become spaces.
std::string one_line(std::string what) {
  for (char& c : what)
    if (c == '\n' || c == '\r') c = ' ';
  return what;
}

// Builds the application, parses with `parse` and runs the subcommand. Whatever escapes a
// subcommand ends here as one line and exit 5, never in std::terminate.
int parse_and_run(const std::function<void(CLI::App&)>& parse) {
  try {
    CLI::App app{"taskmaster: a distributed task queue (master, workers, and jobs from the command line)", "taskmaster"};
    Runners runners;
    add_commands(app, runners);
    try {
      parse(app);
    } catch (const CLI::ParseError& e) {
      const int code = app.exit(e);  // prints help, the version, or the error
      return code == 0 ? kExitOk : kExitUsage;
    }
    return dispatch(app, runners);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmaster: %s\n", one_line(e.what()).c_str());
  } catch (...) {
    std::fprintf(stderr, "taskmaster: an unknown error (an exception that is not a std::exception)\n");
  }
  return kExitError;
}

}  // namespace

int run(int argc, char** argv) {
  return parse_and_run([argc, argv](CLI::App& app) { app.parse(argc, argv); });
}

int run(std::vector<std::string> args) {
  return parse_and_run([&args](CLI::App& app) {
    std::reverse(args.begin(), args.end());  // CLI11 takes the vector in reverse order
    app.parse(args);
  });
}

}  // namespace taskmaster::cli
