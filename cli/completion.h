// Bash completion and the man page, generated from the application's own commands and options
// (so they cannot drift from --help). Hidden commands: `taskmaster completion bash [-o FILE]` and
// `taskmaster man [-o FILE]`; the build runs them and `cmake --install` installs what they write.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace taskmaster::cli {

// A bash script defining _taskmaster and `complete -F _taskmaster taskmaster`.
std::string bash_completion(const CLI::App& app);
// taskmaster(1) in man(7) roff.
std::string man_page(const CLI::App& app);

// Adds the hidden `completion` and `man` commands. Call after every other command is added.
void add_completion_commands(CLI::App& app, Runners& runners);

}  // namespace taskmaster::cli
