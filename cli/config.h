// Where an option's value comes from when it is not on the command line: an environment variable,
// then a config file, then the built-in default (README "Configuration").
//
// Environment: TASKMASTER_<COMMAND>_<OPTION> for any option of any command (upper case, '-' as '_':
// TASKMASTER_WORKER_CONCURRENCY), then, for the options every client shares (kSharedOptions),
// TASKMASTER_<OPTION> (TASKMASTER_CONNECT), then the older names (TASKMASTER_ADDRESS, TASKMASTER_LOG,
// TASKMASTER_LOG_FORMAT; TASKMASTER_KEY_FILE and TASKMASTER_KEY as protocol::find_key reads them).
// Config file (TOML, read by CLI11's parser): `[COMMAND]` sections, and top-level keys for the
// shared options; a key in a section beats the same key at the top. The file is --config FILE (of
// taskmaster or of the command), else $TASKMASTER_CONFIG, else $XDG_CONFIG_HOME/taskmaster/config.toml
// (~/.config/taskmaster/config.toml), else /etc/taskmaster/config.toml; only the first that exists
// is read. An unknown key is an error naming it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace taskmaster::cli {

// The option names (long, without dashes) that also read TASKMASTER_<OPTION> and may be top-level
// keys of the config file.
extern const std::vector<std::string> kSharedOptions;

// Where each option of the command that runs got its value, once parsed.
struct ValueSource {
  std::string source;   // "cli", "env NAME", "file PATH" or "default"
  bool secret = false;  // the value is key material (TASKMASTER_KEY): never printed
};
struct Layering {
  std::string file;  // the config file read; empty: none
  std::map<const CLI::Option*, ValueSource> sources;
};

// The config file that applies when no --config is given: see above ("" when none exists).
// TASKMASTER_CONFIG is returned even when it does not exist (reading it then fails).
std::string default_config_path();

// Adds --config to taskmaster and to every command, reads the environment and the file for the
// command that runs, and adds `taskmaster config`. Call after every command is added.
void add_config_layers(CLI::App& app, Runners& runners);

// The sources of the last parse of `app` (nullptr before add_config_layers).
const Layering* layering_of(const CLI::App& app);

}  // namespace taskmaster::cli
