// The taskmaster command line: one subcommand per file (cli/*_command.cpp), each with an options
// struct, a setup function that declares its options, and a run function.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace taskmaster::cli {

// Runs a parsed subcommand and returns the process's exit code.
using Runner = std::function<int()>;
using Runners = std::map<const CLI::App*, Runner>;

void add_master_command(CLI::App& app, Runners& runners);
void add_worker_command(CLI::App& app, Runners& runners);
void add_job_commands(CLI::App& app, Runners& runners);    // submit, wait, results
void add_status_command(CLI::App& app, Runners& runners);  // status, cancel
void add_keygen_command(CLI::App& app, Runners& runners);
void add_health_command(CLI::App& app, Runners& runners);  // for healthchecks: exit code only
void add_bench_command(CLI::App& app, Runners& runners);   // bench/ does the work
void add_run_command(CLI::App& app, Runners& runners);     // run: commands on exec workers
void add_queue_command(CLI::App& app, Runners& runners);   // queue put/get: the value queues

// Builds the whole application.
void add_commands(CLI::App& app, Runners& runners);

// Parses argv and runs the chosen subcommand. Returns the exit code (see cli/output.h).
int run(int argc, char** argv);
// The same over an argument vector (without the program name), for tests.
int run(std::vector<std::string> args);

}  // namespace taskmaster::cli
