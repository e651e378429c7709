// taskmaster keygen: makes a new shared key.
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {
namespace {

struct KeygenOptions {
  std::string out;
  bool force = false;
};

int run_keygen(const KeygenOptions& o) {
  const std::string key = protocol::generate_key();
  if (o.out == "-") {
    std::printf("%s\n", key.c_str());
    return kExitOk;
  }
  const std::string path = o.out.empty() ? protocol::default_key_path() : o.out;
  if (auto s = protocol::write_key_file(path, key, o.force); !s) {
    std::fprintf(stderr, "taskmaster: %s\n", s.error().message.c_str());
    return kExitError;
  }
  std::fprintf(stderr, "taskmaster: wrote a new key to %s (mode 0600); copy it to every host that runs a master, worker or client\n",
               path.c_str());
  std::printf("%s\n", path.c_str());
  return kExitOk;
}

}  // namespace

void add_keygen_command(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<KeygenOptions>();
  auto* cmd = app.add_subcommand("keygen", "Make a new random shared key (the auth key every master, worker and client needs)");
  cmd->add_option("-o,--out", o->out, "Where to write it (default: " + protocol::default_key_path() + "; '-' prints it)")
      ->check(not_empty("the key file's name"));
  cmd->add_flag("-f,--force", o->force, "Replace an existing file");
  cmd->footer(std::string("Prints the file's path. ") + kExitCodesHelp);
  runners[cmd] = [o] { return run_keygen(*o); };
}

}  // namespace taskmaster::cli
