#include "cli/config.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/options.h"
#include "cli/output.h"

namespace taskmaster::cli {

const std::vector<std::string> kSharedOptions = {"connect",  "connect-timeout", "retry-timeout", "key-file",
                                                 "insecure", "log-level",       "log-format"};

namespace {

std::string upper_name(const std::string& name) {
  std::string s;
  for (char c : name) s += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

const char* env_value(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v && *v ? v : nullptr;  // an empty variable counts as unset (as CLI11 has it)
}

bool is_shared(const CLI::Option& opt) {
  for (const auto& l : opt.get_lnames())
    if (std::find(kSharedOptions.begin(), kSharedOptions.end(), l) != kSharedOptions.end()) return true;
  return false;
}

// The options an environment variable or a config file may set: named ones, not --help/--config.
std::vector<CLI::Option*> settable_options(CLI::App& sub) {
  std::vector<CLI::Option*> out;
  for (auto* opt : sub.get_options([&](const CLI::Option* o) {
         return o->nonpositional() && o != sub.get_help_ptr() && o != sub.get_help_all_ptr() && o->get_configurable() &&
                !o->get_lnames().empty() && !o->check_lname("config");
       }))
    out.push_back(opt);
  return out;
}

CLI::App* subcommand_named(CLI::App& app, const std::string& name) {
  auto subs = app.get_subcommands([&](const CLI::App* s) { return s->get_name() == name; });
  return subs.empty() ? nullptr : subs.front();
}

CLI::Option* settable_option(CLI::App& sub, const std::string& name) {
  for (auto* opt : settable_options(sub))
    if (opt->check_lname(name)) return opt;
  return nullptr;
}

std::string last_result(const CLI::Option* opt) { return opt && !opt->results().empty() ? opt->results().back() : std::string(); }

// Reads the environment and the config file for the command being parsed, between CLI11's reading
// of the command line and its checks. CLI11 asks this formatter for the items of its config file
// (a hidden option whose file is /dev/null): this one sets the options itself, so that env beats the
// file and a bad value is named by where it came from, and gives CLI11 nothing.
class Layers : public CLI::ConfigTOML {
 public:
  Layers(CLI::App& root, std::shared_ptr<Layering> state, std::map<const CLI::Option*, std::string> legacy)
      : root_(root), state_(std::move(state)), legacy_(std::move(legacy)) {}

  std::vector<CLI::ConfigItem> from_config(std::istream&) const override {
    apply();
    return {};
  }
  const Layering& state() const { return *state_; }

 private:
  void apply() const {
    state_->file.clear();
    state_->sources.clear();
    const auto selected = root_.get_subcommands();
    if (selected.empty()) return;
    CLI::App& sub = *selected.front();
    // --help shows the help whatever the environment and the file hold.
    if (root_.get_help_ptr()->count() > 0 || (sub.get_help_ptr() && sub.get_help_ptr()->count() > 0)) return;

    std::string path = last_result(sub.get_option_no_throw("--config"));
    if (path.empty()) path = last_result(root_.get_option_no_throw("--config"));
    const bool explicit_path = !path.empty() || env_value("TASKMASTER_CONFIG");
    if (path.empty()) path = default_config_path();
    std::vector<CLI::ConfigItem> file_items;
    if (!path.empty() && (explicit_path || std::filesystem::exists(path))) file_items = read_file(path);
    state_->file = path.empty() || !(explicit_path || std::filesystem::exists(path)) ? "" : path;

    // The file's values for this command: its section's keys, then the shared top-level keys.
    std::map<const CLI::Option*, std::pair<std::string, std::vector<std::string>>> from_file;
    for (const auto& item : file_items) {
      if (item.parents.size() != 1 || item.parents.front() != sub.get_name()) continue;
      if (auto* opt = settable_option(sub, item.name)) from_file[opt] = {item.fullname(), flag_or_inputs(*opt, item)};
    }
    for (const auto& item : file_items)
      if (item.parents.empty())
        if (auto* opt = settable_option(sub, item.name); opt && !from_file.count(opt))
          from_file[opt] = {item.fullname(), flag_or_inputs(*opt, item)};

    for (auto* opt : settable_options(sub)) {
      ValueSource& source = state_->sources[opt];
      source.source = "default";
      if (opt->count() > 0) {
        source.source = "cli";
        continue;
      }
      if (excluded_by_given(sub, *opt)) {
        opt->envname("");  // nor CLI11's own reading of the older variable
        continue;
      }
      bool done = false;
      for (const auto& name : env_names(sub, *opt)) {
        const char* v = env_value(name);
        if (!v) continue;
        set(*opt, {v}, name);
        source.source = "env " + name;
        done = true;
        break;
      }
      // The key's own variables, which protocol::find_key reads when --key-file is not given.
      if (!done && opt->check_lname("key-file"))
        for (const char* name : {"TASKMASTER_KEY_FILE", "TASKMASTER_KEY"})
          if (env_value(name)) {
            source.source = std::string("env ") + name;
            source.secret = std::strcmp(name, "TASKMASTER_KEY") == 0;
            done = true;
            break;
          }
      if (done) continue;
      if (auto it = from_file.find(opt); it != from_file.end()) {
        set(*opt, it->second.second, "config file '" + path + "': " + it->second.first);
        source.source = "file " + path;
      }
    }
  }

  // Every item of the file names a command and one of its options, or a shared option at the top.
  std::vector<CLI::ConfigItem> read_file(const std::string& path) const {
    const auto fail = [&](const std::string& why) { return UsageError("config file '" + path + "': " + why); };
    if (std::filesystem::is_directory(path)) throw fail("is a directory");
    std::ifstream in(path);
    if (!in) throw fail(std::strerror(errno));
    auto read = CLI::ConfigTOML().from_config(in);
    if (in.bad()) throw fail(std::strerror(errno));
    for (const auto& item : read) {
      const bool section_mark = item.name == "++" || item.name == "--";
      if (item.parents.size() > 1) throw fail("unknown key '" + item.fullname() + "' (sections are command names: [worker])");
      if (item.parents.empty()) {
        if (std::find(kSharedOptions.begin(), kSharedOptions.end(), item.name) == kSharedOptions.end())
          throw fail("unknown key '" + item.name + "' (the keys outside a [command] section are the shared options: " + shared_list() +
                     ")");
        continue;
      }
      CLI::App* sub = subcommand_named(root_, item.parents.front());
      if (!sub || sub->get_group().empty() || sub->get_name() == "config" || sub->get_name() == "help")
        throw fail("unknown section [" + item.parents.front() + "] (sections are command names: [worker])");
      if (!section_mark && !settable_option(*sub, item.name))
        throw fail("unknown key '" + item.fullname() + "' (" + sub->get_name() + " has no option --" + item.name + ")");
    }
    return read;
  }

  std::vector<std::string> flag_or_inputs(const CLI::Option& opt, const CLI::ConfigItem& item) const {
    if (opt.get_expected_min() == 0) return {to_flag(item)};
    return item.inputs;
  }

  // Most specific first: TASKMASTER_WORKER_CONNECT, TASKMASTER_CONNECT, TASKMASTER_ADDRESS.
  std::vector<std::string> env_names(const CLI::App& sub, const CLI::Option& opt) const {
    std::vector<std::string> names{"TASKMASTER_" + upper_name(sub.get_name()) + "_" + upper_name(opt.get_lnames().front())};
    if (is_shared(opt) && !opt.check_lname("key-file"))
      for (const auto& l : opt.get_lnames())
        if (std::find(kSharedOptions.begin(), kSharedOptions.end(), l) != kSharedOptions.end())
          names.push_back("TASKMASTER_" + upper_name(l));
    if (auto it = legacy_.find(&opt); it != legacy_.end()) names.push_back(it->second);
    return names;
  }

  // An option that excludes one given on the command line (or that one excludes) takes nothing
  // from the environment or the file: `--insecure` on the command line beats key-file in the file.
  static bool excluded_by_given(CLI::App& sub, CLI::Option& opt) {
    for (const auto* other : opt.get_excludes())
      if (other->count() > 0) return true;
    for (const auto* other : sub.get_options())
      if (other->count() > 0 && other->get_excludes().count(&opt) > 0) return true;
    return false;
  }

  // Sets the option as if given, with its checks; a bad value is named by where it came from:
  // "TASKMASTER_ADDRESS 'x': ..." or "config file 'F': worker.connect 'x': ...".
  static void set(CLI::Option& opt, const std::vector<std::string>& values, const std::string& label) {
    try {
      if (opt.get_expected_min() == 0) opt.add_result(opt.get_flag_value(opt.get_lnames().front(), values.empty() ? "" : values.front()));
      else opt.add_result(values);
      opt.run_callback();
    } catch (const CLI::Error& e) {
      std::string what = e.what();
      const std::string name = opt.get_name();
      if (what.rfind(name, 0) == 0) what = label + what.substr(name.size());
      else what = label + ": " + what;
      throw UsageError(what);
    }
  }

  static std::string shared_list() {
    std::string s;
    for (const auto& n : kSharedOptions) s += (s.empty() ? "" : ", ") + n;
    return s;
  }

  CLI::App& root_;
  std::shared_ptr<Layering> state_;
  std::map<const CLI::Option*, std::string> legacy_;
};

// The value of an option as parsed, or its default; nullopt: none.
std::optional<std::vector<std::string>> shown_value(const CLI::Option& opt, const ValueSource& source) {
  if (source.secret) return std::vector<std::string>{"****"};
  if (source.source != "default" && !opt.results().empty()) return opt.results();
  if (!opt.get_default_str().empty()) return std::vector<std::string>{opt.get_default_str()};
  if (opt.get_expected_min() == 0) return std::vector<std::string>{"false"};
  return std::nullopt;
}

// One command's options as parsed by a fresh application from `args` (COMMAND first): the rows of
// `taskmaster config`. A command line that does not parse is a usage error.
struct Row {
  std::string key, source;
  std::optional<std::vector<std::string>> value;
};
int effective_rows(const std::string& command, const std::vector<std::string>& root_args, const std::vector<std::string>& command_args,
                   std::string& file, std::vector<Row>& rows) {
  CLI::App inner;
  Runners runners;
  add_commands(inner, runners);
  CLI::App* sub = subcommand_named(inner, command);
  sub->require_subcommand(0);  // `queue` alone: its own options, without put or get
  for (auto* opt : sub->get_options()) {
    opt->required(false);
    opt->capture_default_str();
  }
  std::vector<std::string> args = root_args;
  args.push_back(command);
  args.insert(args.end(), command_args.begin(), command_args.end());
  std::reverse(args.begin(), args.end());
  try {
    inner.parse(args);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "taskmaster: config: %s\n", e.what());
    return kExitUsage;
  }
  const Layering* layering = layering_of(inner);
  file = layering->file;
  for (auto* opt : settable_options(*sub)) {
    auto it = layering->sources.find(opt);
    const ValueSource source = it == layering->sources.end() ? ValueSource{"default"} : it->second;
    rows.push_back({command + "." + opt->get_lnames().front(), source.source, shown_value(*opt, source)});
  }
  return kExitOk;
}

void add_config_command(CLI::App& app, Runners& runners) {
  struct Options {
    std::string command;
    std::vector<std::string> args;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("config", "Print the effective configuration: each option's value and where it came from");
  cmd->add_option("COMMAND", o->command, "Only this command's options (else every command's)");
  cmd->add_option("ARGS", o->args, "The command's options, as on its command line (after --), to see what they change");
  cmd->add_flag("--json", o->json, "One JSON object: file, and options [{key, value, source}]");
  cmd->footer(
      "Sources: cli, env NAME, file PATH, default; the key itself (TASKMASTER_KEY) shows as ****.\n"
      "Example: taskmaster config worker -- --concurrency 8");
  runners[cmd] = [&app, cmd, o]() -> int {
    std::vector<std::string> commands;
    if (!o->command.empty()) {
      const CLI::App* sub = subcommand_named(app, o->command);
      if (!sub || sub->get_group().empty() || o->command == "help" || o->command == "config") {
        std::fprintf(stderr, "taskmaster: config: unknown command '%s'\n", o->command.c_str());
        return kExitUsage;
      }
      commands.push_back(o->command);
    } else {
      if (!o->args.empty()) {
        std::fprintf(stderr, "taskmaster: config: options need the COMMAND they belong to\n");
        return kExitUsage;
      }
      for (const auto* sub : app.get_subcommands([](const CLI::App* s) { return !s->get_group().empty(); }))
        if (sub->get_name() != "help" && sub->get_name() != "config") commands.push_back(sub->get_name());
    }
    std::vector<std::string> root_args;
    if (auto p = last_result(app.get_option_no_throw("--config")); !p.empty()) root_args = {"--config", p};
    if (auto p = last_result(cmd->get_option_no_throw("--config")); !p.empty()) root_args = {"--config", p};
    std::string file;
    std::vector<Row> rows;
    for (const auto& c : commands)
      if (const int code = effective_rows(c, root_args, c == o->command ? o->args : std::vector<std::string>{}, file, rows);
          code != kExitOk)
        return code;
    if (o->json) {
      nlohmann::json j{{"file", file.empty() ? nlohmann::json() : nlohmann::json(file)}, {"options", nlohmann::json::array()}};
      for (const auto& r : rows) {
        nlohmann::json value;
        if (r.value) value = r.value->size() == 1 ? nlohmann::json(r.value->front()) : nlohmann::json(*r.value);
        j["options"].push_back({{"key", r.key}, {"value", value}, {"source", r.source}});
      }
      std::printf("%s\n", j.dump().c_str());
      return kExitOk;
    }
    std::size_t key_width = 0, value_width = 0;
    std::vector<std::string> values;
    for (const auto& r : rows) {
      std::string v;
      if (r.value)
        for (const auto& part : *r.value) v += (v.empty() ? "" : ",") + part;
      else v = "-";
      key_width = std::max(key_width, r.key.size());
      value_width = std::max(value_width, v.size());
      values.push_back(v);
    }
    std::printf("config file: %s\n", file.empty() ? "none" : file.c_str());
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::printf("%-*s  %-*s  %s\n", static_cast<int>(key_width), rows[i].key.c_str(), static_cast<int>(value_width), values[i].c_str(),
                  rows[i].source.c_str());
    return kExitOk;
  };
}

}  // namespace

std::string default_config_path() {
  if (const char* explicit_path = env_value("TASKMASTER_CONFIG")) return explicit_path;
  std::string user;
  if (const char* xdg = env_value("XDG_CONFIG_HOME")) user = std::string(xdg) + "/taskmaster/config.toml";
  else if (const char* home = env_value("HOME")) user = std::string(home) + "/.config/taskmaster/config.toml";
  std::error_code ec;
  if (!user.empty() && std::filesystem::exists(user, ec)) return user;
  if (std::filesystem::exists("/etc/taskmaster/config.toml", ec)) return "/etc/taskmaster/config.toml";
  return "";
}

void add_config_layers(CLI::App& app, Runners& runners) {
  add_config_command(app, runners);
  const std::string help =
      "Config file (TOML: [COMMAND] sections, shared options at the top); else $TASKMASTER_CONFIG, "
      "~/.config/taskmaster/config.toml or /etc/taskmaster/config.toml";
  app.add_option("--config", help)->type_name("FILE")->configurable(false)->check(not_empty("the config file's name"));
  std::map<const CLI::Option*, std::string> legacy;
  for (auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == "help") continue;
    sub->add_option("--config", help)->type_name("FILE")->configurable(false)->check(not_empty("the config file's name"));
    for (const auto* opt : sub->get_options())
      if (!opt->get_envname().empty()) legacy[opt] = opt->get_envname();
  }
  auto state = std::make_shared<Layering>();
  app.config_formatter(std::make_shared<Layers>(app, state, std::move(legacy)));
  // CLI11 reads its config file after the command line and before the environment: this one is
  // always there (/dev/null) so that Layers runs; hidden, and nothing to give on a command line.
  app.set_config("--config-layers", "/dev/null", "", false)->group("");
}

const Layering* layering_of(const CLI::App& app) {
  const auto layers = std::dynamic_pointer_cast<Layers>(app.get_config_formatter());
  return layers ? &layers->state() : nullptr;
}

}  // namespace taskmaster::cli
