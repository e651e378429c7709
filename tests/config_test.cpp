// Configuration in-process (cli/config.h): options from the command line, the environment
// (TASKMASTER_...), a config file, in that order; `taskmaster config`; usage errors that name
// the command they come from.
#include "cli/config.h"

#include <unistd.h>

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/completion.h"
#include "cli/output.h"
#include "support/env_guard.h"
#include "support/temp_dir.h"

namespace taskmaster {
namespace {

using nlohmann::json;

// The environment of one test: none of the machine's TASKMASTER_ variables, XDG_CONFIG_HOME in a
// scratch directory (so no default config file of the machine's), all put back at the end.
class Env {
 public:
  Env() {
    std::vector<std::string> ours;
    for (char** e = environ; *e; ++e)
      if (std::string v = *e; v.rfind("TASKMASTER_", 0) == 0) ours.push_back(v.substr(0, v.find('=')));
    for (const auto& name : ours) guard_.unset(name);
    guard_.set("XDG_CONFIG_HOME", dir());
  }
  void set(const std::string& name, const std::string& value) { guard_.set(name, value); }
  void unset(const std::string& name) { guard_.unset(name); }
  std::string dir() const { return dir_.path(); }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_.path(name);
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path) << text;
    return path;
  }

 private:
  test::TempDir dir_;
  test::EnvGuard guard_;
};

struct Ran {
  int code = -1;
  std::string out, err;
};

std::string drain(FILE* f) {
  std::string s;
  std::rewind(f);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  std::fclose(f);
  return s;
}

Ran run(std::vector<std::string> args) {
  std::fflush(stdout);
  std::fflush(stderr);
  FILE* out = std::tmpfile();
  FILE* err = std::tmpfile();
  REQUIRE((out && err));
  const int saved_out = ::dup(1), saved_err = ::dup(2);
  ::dup2(::fileno(out), 1);
  ::dup2(::fileno(err), 2);
  Ran r;
  r.code = cli::run(std::move(args));
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(saved_out, 1);
  ::dup2(saved_err, 2);
  ::close(saved_out);
  ::close(saved_err);
  r.out = drain(out);
  r.err = drain(err);
  return r;
}

// `taskmaster config COMMAND --json [-- ARGS]`: key -> {value, source}.
std::map<std::string, json> effective(const std::string& command, std::vector<std::string> args = {},
                                      std::vector<std::string> before = {}) {
  std::vector<std::string> line = before;
  line.insert(line.end(), {"config", "--json", command});
  if (!args.empty()) line.push_back("--");
  line.insert(line.end(), args.begin(), args.end());
  const Ran r = run(line);
  CAPTURE(r.err);
  REQUIRE(r.code == cli::kExitOk);
  std::map<std::string, json> by_key;
  const json parsed = json::parse(r.out);
  for (const auto& o : parsed.at("options")) by_key[o.at("key").get<std::string>()] = o;
  return by_key;
}

// A usage error: exit 2 and one line on stderr.
std::string usage_error(const std::vector<std::string>& args) {
  const Ran r = run(args);
  CHECK(r.code == cli::kExitUsage);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  return r.err;
}

TEST_SUITE("config") {

TEST_CASE("precedence: command line, then environment, then config file, then default") {
  Env env;
  const std::string file = env.write("taskmaster/config.toml", "[worker]\nthreads = 3\nprefetch = 7\nconnect = \"10.0.0.1:5555\"\n");
  // Default file only.
  auto e = effective("worker");
  CHECK(e["worker.threads"]["value"] == "3");
  CHECK(e["worker.threads"]["source"] == "file " + file);
  CHECK(e["worker.connect"]["value"] == "tcp://10.0.0.1:5555");  // normalised, as from the command line
  CHECK(e["worker.name"]["source"] == "default");
  // The environment beats the file (CLI11 alone would have it the other way round).
  env.set("TASKMASTER_WORKER_THREADS", "5");
  e = effective("worker");
  CHECK(e["worker.threads"]["value"] == "5");
  CHECK(e["worker.threads"]["source"] == "env TASKMASTER_WORKER_THREADS");
  CHECK(e["worker.prefetch"]["source"] == "file " + file);
  // The command line beats both.
  e = effective("worker", {"-j", "9"});
  CHECK(e["worker.threads"]["value"] == "9");
  CHECK(e["worker.threads"]["source"] == "cli");
}

TEST_CASE("shared options: TASKMASTER_CONNECT and top-level keys, the older TASKMASTER_ADDRESS still works") {
  Env env;
  const std::string file = env.write("c.toml", "connect = \"10.0.0.1:1\"\n[status]\nconnect = \"10.0.0.2:2\"\n");
  auto e = effective("submit", {}, {"--config", file});
  CHECK(e["submit.connect"]["value"] == "tcp://10.0.0.1:1");  // top level
  e = effective("status", {}, {"--config", file});
  CHECK(e["status.connect"]["value"] == "tcp://10.0.0.2:2");  // the section beats the top level
  env.set("TASKMASTER_ADDRESS", "10.0.0.3:3");
  e = effective("status", {}, {"--config", file});
  CHECK(e["status.connect"]["source"] == "env TASKMASTER_ADDRESS");
  env.set("TASKMASTER_CONNECT", "10.0.0.4:4");
  e = effective("status", {}, {"--config", file});
  CHECK(e["status.connect"]["value"] == "tcp://10.0.0.4:4");
  env.set("TASKMASTER_STATUS_CONNECT", "10.0.0.5:5");
  e = effective("status", {}, {"--config", file});
  CHECK(e["status.connect"]["value"] == "tcp://10.0.0.5:5");
  CHECK(e["status.connect"]["source"] == "env TASKMASTER_STATUS_CONNECT");
  // Other commands do not see a command's own variable.
  CHECK(effective("results")["results.connect"]["value"] == "tcp://10.0.0.4:4");
}

TEST_CASE("the key is never printed: TASKMASTER_KEY shows as ****, a key file's path is shown") {
  Env env;
  env.set("TASKMASTER_KEY", "super-secret-key-material-0123456789");
  for (const auto& line : {std::vector<std::string>{"config"}, std::vector<std::string>{"config", "--json"}}) {
    const Ran r = run(line);
    CHECK(r.code == cli::kExitOk);
    CHECK(r.out.find("super-secret") == std::string::npos);
    CHECK(r.out.find("****") != std::string::npos);
    CHECK(r.out.find("env TASKMASTER_KEY") != std::string::npos);
  }
  const std::string file = env.write("c.toml", "key-file = \"/etc/k\"\n");
  // TASKMASTER_KEY (an environment variable) beats the file's key-file.
  CHECK(effective("worker", {}, {"--config", file})["worker.key-file"]["source"] == "env TASKMASTER_KEY");
  env.unset("TASKMASTER_KEY");
  auto e = effective("worker", {}, {"--config", file});
  CHECK(e["worker.key-file"]["value"] == "/etc/k");
  // --insecure on the command line beats key-file in the file (they exclude each other).
  e = effective("worker", {"--insecure"}, {"--config", file});
  CHECK(e["worker.insecure"]["source"] == "cli");
  CHECK(e["worker.key-file"]["source"] == "default");
}

TEST_CASE("config files: --config on taskmaster or on the command, TASKMASTER_CONFIG, and their errors") {
  Env env;
  const std::string a = env.write("a.toml", "[worker]\nthreads = 2\n");
  const std::string b = env.write("b.toml", "[worker]\nthreads = 4\n");
  CHECK(effective("worker", {"--config", b})["worker.threads"]["value"] == "4");
  CHECK(effective("worker", {}, {"--config", a})["worker.threads"]["value"] == "2");
  env.set("TASKMASTER_CONFIG", a);
  CHECK(effective("worker")["worker.threads"]["source"] == "file " + a);
  // A file that was asked for must be there; a missing default file is no error.
  env.set("TASKMASTER_CONFIG", env.dir() + "/none.toml");
  CHECK(usage_error({"config", "worker"}) == "taskmaster: config file '" + env.dir() + "/none.toml': No such file or directory\n");
  env.unset("TASKMASTER_CONFIG");
  CHECK(run({"config"}).code == cli::kExitOk);
  CHECK(usage_error({"--config", env.dir() + "/none.toml", "worker"}) ==
        "taskmaster: config file '" + env.dir() + "/none.toml': No such file or directory\n");
  CHECK(usage_error({"worker", "--config", env.dir()}) == "taskmaster: config file '" + env.dir() + "': is a directory\n");
  CHECK(usage_error({"worker", "--config", ""}) == "taskmaster: worker: --config: the config file's name must not be empty\n");
  // Unknown keys and sections are errors that name them (a misspelling would be ignored otherwise).
  const std::string typo = env.write("typo.toml", "[worker]\nthreds = 2\n");
  CHECK(usage_error({"--check-args", "status", "--config", typo}) ==
        "taskmaster: config file '" + typo + "': unknown key 'worker.threds' (worker has no option --threds)\n");
  const std::string section = env.write("section.toml", "[wrker]\nthreads = 2\n");
  CHECK(usage_error({"--check-args", "status", "--config", section}) ==
        "taskmaster: config file '" + section + "': unknown section [wrker] (sections are command names: [worker])\n");
  const std::string top = env.write("top.toml", "threads = 2\n");
  CHECK(usage_error({"--check-args", "status", "--config", top}).find("unknown key 'threads' (the keys outside") != std::string::npos);
  const std::string garbage = env.write("garbage.toml", "[worker\n");
  CHECK(usage_error({"--check-args", "status", "--config", garbage}).find("unknown key '[worker'") != std::string::npos);
  // A file the user cannot read.
  if (::geteuid() != 0) {
    const std::string locked = env.write("locked.toml", "[worker]\nthreads = 2\n");
    std::filesystem::permissions(locked, std::filesystem::perms::none);
    CHECK(usage_error({"worker", "--config", locked}) == "taskmaster: config file '" + locked + "': Permission denied\n");
  }
}

TEST_CASE("bad values from the environment or a file are named by where they came from") {
  Env env;
  env.set("TASKMASTER_WORKER_THREADS", "0");
  CHECK(usage_error({"--check-args", "worker"}).rfind("taskmaster: TASKMASTER_WORKER_THREADS: ", 0) == 0);
  // ...and do not matter to another command.
  CHECK(run({"--check-args", "status"}).code == cli::kExitOk);
  env.unset("TASKMASTER_WORKER_THREADS");
  env.set("TASKMASTER_CONNECT", "tcp://127.0.0.1:99999");
  CHECK(usage_error({"--check-args", "status"}).rfind("taskmaster: TASKMASTER_CONNECT 'tcp://127.0.0.1:99999': port 99999", 0) == 0);
  env.unset("TASKMASTER_CONNECT");
  const std::string file = env.write("c.toml", "[worker]\nthreads = many\nconnect = \"x:99999\"\n");
  const std::string err = usage_error({"--check-args", "worker", "--config", file, "-c", "127.0.0.1:1"});
  CHECK(err.rfind("taskmaster: config file '" + file + "': worker.threads: ", 0) == 0);
  // The command line's value is the one checked: the file's bad connect is not even looked at.
  CHECK(err.find("connect") == std::string::npos);
  // A flag takes true/false (and the like) from both.
  env.set("TASKMASTER_WORKER_ALLOW_EXEC", "maybe");
  CHECK(usage_error({"--check-args", "worker"}).rfind("taskmaster: TASKMASTER_WORKER_ALLOW_EXEC", 0) == 0);
  env.set("TASKMASTER_WORKER_ALLOW_EXEC", "true");
  CHECK(effective("worker")["worker.allow-exec"]["source"] == "env TASKMASTER_WORKER_ALLOW_EXEC");
}

TEST_CASE("taskmaster config prints every command's options as a table, and refuses what it does not know") {
  Env env;
  const Ran r = run({"config"});
  REQUIRE(r.code == cli::kExitOk);
  CHECK(r.out.rfind("config file: none\n", 0) == 0);
  for (const char* key : {"master.bind", "worker.threads", "submit.queue", "status.connect", "run.keep-order"}) {
    CAPTURE(key);
    CHECK(r.out.find(std::string("\n") + key + " ") != std::string::npos);
  }
  CHECK(r.out.find("config.") == std::string::npos);
  CHECK(usage_error({"config", "wrker"}) == "taskmaster: config: unknown command 'wrker'\n");
  CHECK(usage_error({"config", "worker", "--", "--threads", "0"}).rfind("taskmaster: config: --threads: ", 0) == 0);
}

TEST_CASE("the man page and the bash completion cover every visible command and none of the hidden ones") {
  CLI::App app;
  cli::Runners runners;
  cli::add_commands(app, runners);
  const std::string man = cli::man_page(app), bash = cli::bash_completion(app);
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    CAPTURE(sub->get_name());
    const bool visible = !sub->get_group().empty();
    CHECK((man.find(".SS \"taskmaster " + sub->get_name() + "\"\n") != std::string::npos) == visible);
    CHECK((bash.find("\n    " + sub->get_name() + ") words=") != std::string::npos) == visible);
  }
  // Every option of worker, with its value type, and no roff control character at a line's start.
  CHECK(man.find("\\fB\\-j\\fR, \\fB\\-\\-threads\\fR \\fIUINT") != std::string::npos);
  CHECK(man.find("\n.SH EXIT STATUS\n") != std::string::npos);
  const Ran r = run({"completion", "zsh"});
  CHECK(r.code == cli::kExitUsage);
}

TEST_CASE("taskmaster help prints taskmaster's usage, taskmaster help COMMAND that command's") {
  Env env;
  Ran r = run({"help"});
  CHECK(r.code == cli::kExitOk);
  CHECK(r.out.find("Usage: taskmaster [OPTIONS] SUBCOMMAND") != std::string::npos);
  CHECK(r.out.find("Subcommands:") != std::string::npos);
  r = run({"help", "worker"});
  CHECK(r.code == cli::kExitOk);
  CHECK(r.out.find("Usage: taskmaster worker") != std::string::npos);
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
