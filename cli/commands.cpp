#include "cli/commands.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/completion.h"
#include "cli/config.h"
#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {

namespace {

// `taskmaster help [COMMAND]`: the usage of taskmaster, or of one command, on stdout, exit 0.
void add_help_command(CLI::App& app, Runners& runners) {
  auto* cmd = app.add_subcommand("help", "Print the usage of taskmaster, or of one command");
  auto command = std::make_shared<std::string>();
  cmd->add_option("COMMAND", *command, "The command whose usage to print");
  cmd->footer("Example: taskmaster help submit");
  runners[cmd] = [&app, command]() {
    const CLI::App* which = &app;
    if (!command->empty()) {
      const auto subs = app.get_subcommands([&](const CLI::App* sub) { return sub->check_name(*command) && !sub->get_group().empty(); });
      which = subs.empty() ? nullptr : subs.front();
      if (which == nullptr) {
        std::fprintf(stderr, "taskmaster: help: unknown command '%s'\n", command->c_str());
        return kExitUsage;
      }
    }
    // (App::help() of a parsed app gives its parsed subcommand's help: this one's, not taskmaster's.)
    const std::string usage_name = which == &app ? app.get_name() : app.get_name() + " " + which->get_name();
    std::fputs(which->get_formatter()->make_help(which, usage_name, CLI::AppFormatMode::Normal).c_str(), stdout);
    return kExitOk;
  };
}

// One example line per command, at the end of its --help (commands added by others keep theirs).
void add_examples(CLI::App& app) {
  static const std::map<std::string, std::string> examples = {
      {"master", "taskmaster master --bind tcp://0.0.0.0:5555 --data-dir /var/lib/taskmaster"},
      {"worker", "taskmaster worker --connect master.example:5555 -j 4"},
      {"submit", "seq 1 100 | taskmaster submit square --each --wait"},
      {"wait", "taskmaster wait 12"},
      {"results", "taskmaster results 12"},
      {"status", "taskmaster status --json"},
      {"cancel", "taskmaster cancel 12"},
      {"retry", "taskmaster retry 12"},
      {"dashboard", "taskmaster dashboard --connect master.example:5555"},
      {"keygen", "taskmaster keygen -o /etc/taskmaster/key"},
      {"bench", "taskmaster bench --quick"},
      {"health", "taskmaster health -v --connect master.example:5555"},
  };
  for (auto* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (auto it = examples.find(sub->get_name()); it != examples.end() && sub->get_footer().find("Example:") == std::string::npos) {
      const std::string footer = sub->get_footer();
      sub->footer(footer.empty() ? "Example: " + it->second : footer + "\nExample: " + it->second);
    }
}

}  // namespace

void add_commands(CLI::App& app, Runners& runners) {
  // Every usage error is one line, "taskmaster: MESSAGE" (subcommands copy this when added).
  // CLI11's own messages ("The following argument was not expected", "... requires ...") also name
  // the command they come from: "taskmaster: results: ..." (ours already name their option).
  app.failure_message([](const CLI::App* root, const CLI::Error& e) {
    std::string where;
    if (dynamic_cast<const UsageError*>(&e) == nullptr)
      for (const CLI::App* sub = root; !sub->get_subcommands().empty();) {
        sub = sub->get_subcommands().front();
        where = sub->get_name() + ": ";
      }
    return "taskmaster: " + where + std::string(e.what()) + "\n";
  });
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
  add_queue_command(app, runners);
  // Hidden (group ""): parse the whole command line, with every check of every option, then exit 0
  // without running anything. It must come before the subcommand (`taskmaster --check-args master
  // --bind ...`). For checking command lines written in files (compose, units) without starting
  // anything (tests/deploy_check.py); --help would not do: it stops parsing where it stands.
  app.add_flag("--check-args")->description("Parse the command line, then exit 0 without running it")->group("");
  add_help_command(app, runners);
  add_config_layers(app, runners);  // after every command: --config, the environment, `config`
  add_examples(app);
  app.footer(kExitCodesHelp);
  add_completion_commands(app, runners);  // last: from all of the above
}

namespace {

int dispatch(CLI::App& app, Runners& runners) {
  if (app.count("--check-args") > 0) return kExitOk;
  for (const auto* sub : app.get_subcommands())
    if (auto it = runners.find(sub); it != runners.end()) {
      set_command_name(sub->get_name());
      return it->second();
    }
  return kExitUsage;
}

// `what` on one line: line breaks become spaces.
std::string one_line(std::string what) {
  for (char& c : what)
    if (c == '\n' || c == '\r') c = ' ';
  return what;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The command line's command when it is not one of app's (the first word not starting with '-'
// that is not an option's value), with a one-line error naming the closest command.
std::optional<std::string> unknown_command(CLI::App& app, const std::vector<std::string>& args) {
  // (--config FILE is the one option of taskmaster's own that takes a value.)
  auto word = args.begin();
  while (word != args.end() && !word->empty() && (*word)[0] == '-') word += *word == "--config" && word + 1 != args.end() ? 2 : 1;
  if (word == args.end()) return std::nullopt;
  std::string closest;
  std::size_t best = std::string::npos;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->check_name(*word)) return std::nullopt;
    if (sub->get_group().empty()) continue;  // hidden
    if (const std::size_t d = edit_distance(*word, sub->get_name()); d < best) {
      best = d;
      closest = sub->get_name();
    }
  }
  std::string message = "taskmaster: unknown command '" + *word + "'";
  if (best <= std::max<std::size_t>(2, word->size() / 3)) message += "; did you mean '" + closest + "'?";
  else message += "; see 'taskmaster help'";
  return message;
}

// Builds the application, parses with `parse` and runs the subcommand. Whatever escapes a
// subcommand ends here as one line and exit 5, never in std::terminate.
int parse_and_run(std::vector<std::string> args) {
  try {
    CLI::App app{"taskmaster: a distributed task queue (master, workers, and jobs from the command line)", "taskmaster"};
    Runners runners;
    add_commands(app, runners);
    if (args.empty()) {  // bare `taskmaster`: the usage, on stderr (it is not what was asked for)
      std::fputs(app.help().c_str(), stderr);
      return kExitUsage;
    }
    if (auto message = unknown_command(app, args)) {
      std::fprintf(stderr, "%s\n", message->c_str());
      return kExitUsage;
    }
    try {
      std::reverse(args.begin(), args.end());  // CLI11 takes the vector in reverse order
      app.parse(args);
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

int run(int argc, char** argv) { return parse_and_run(std::vector<std::string>(argv + std::min(argc, 1), argv + argc)); }

int run(std::vector<std::string> args) { return parse_and_run(std::move(args)); }

}  // namespace taskmaster::cli
