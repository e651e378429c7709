// taskmaster run: a command line run on a worker that allows exec, its output and exit code relayed
// as if it had run here; with --each, one command per line of standard input (a distributed
// GNU parallel: {} replaced by the line, -k for input order, --joblog, failures counted in the
// exit code).
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>

#include "cli/commands.h"
#include "cli/line_reader.h"
#include "cli/options.h"
#include "cli/output.h"
#include "cli/progress.h"
#include "cli/run_command.h"
#include "cli/waiting.h"

namespace taskmaster::cli {

namespace proto = protocol;
using nlohmann::json;

namespace {

constexpr int kMaxFailedExit = 100;  // GNU parallel caps its count of failures at 100 too

struct RunOptions {
  ConnectionOptions connection;
  std::vector<std::string> command;
  bool each = false;
  bool keep_order = false;
  bool quiet = false;
  std::string joblog;
  std::string queue = std::string(proto::kDefaultQueue);
  double timeout_s = proto::kDefaultTimeoutMs / 1000.0;
  unsigned max_attempts = 1;
};

}  // namespace

std::optional<std::string> base64_decode(const std::string& text) {
  static const auto table = [] {
    std::array<int, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = i;
    return t;
  }();
  std::string out;
  out.reserve(text.size() / 4 * 3);
  unsigned buffer = 0;
  int bits = 0;
  std::size_t i = 0;
  for (; i < text.size() && text[i] != '='; ++i) {
    const int v = table[static_cast<unsigned char>(text[i])];
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  for (; i < text.size(); ++i)
    if (text[i] != '=') return std::nullopt;
  return out;
}

std::vector<std::string> substitute(const std::vector<std::string>& command, const std::string& item) {
  std::vector<std::string> out;
  bool found = false;
  for (const auto& arg : command) {
    std::string a;
    for (std::size_t i = 0; i < arg.size();) {
      if (arg.compare(i, 2, "{}") == 0) {
        a += item;
        i += 2;
        found = true;
      } else {
        a += arg[i++];
      }
    }
    out.push_back(std::move(a));
  }
  if (!found) out.push_back(item);
  return out;
}

namespace {

// The raw bytes of an exec result's output: the base64 field when the worker sent one, else the text.
std::string output_bytes(const json& result, const char* field) {
  const std::string b64 = std::string(field) + "_base64";
  if (const auto it = result.find(b64); it != result.end() && it->is_string())
    if (auto raw = base64_decode(it->get<std::string>())) return *raw;
  if (const auto it = result.find(field); it != result.end() && it->is_string()) return it->get<std::string>();
  return {};
}

}  // namespace

Ran read_outcome(const proto::Outcome& o) {
  Ran r;
  if (o.status != proto::TaskState::Done) {
    r.code = 1;
    r.error = o.status == proto::TaskState::Dead ? o.value : "cancelled" + (o.value.empty() ? "" : " (" + o.value + ")");
    if (r.error.empty()) r.error = "failed";
    return r;
  }
  const json result = json::parse(o.value, nullptr, false);
  if (!result.is_object() || !result.contains("exit_code")) {
    r.code = 1;
    r.error = "the worker's exec gave no exit code: " + o.value.substr(0, 200);
    return r;
  }
  r.ran = true;
  r.out = output_bytes(result, "stdout");
  r.err = output_bytes(result, "stderr");
  const int sig = result.value("signal", 0);
  r.code = sig > 0 ? 128 + sig : result.value("exit_code", 0);
  if (r.code < 0) r.code = 1;
  return r;
}

namespace {

void write_all(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) return;  // a closed pipe: nothing more to say
    done += static_cast<std::size_t>(n);
  }
}

// One tab-separated field of the joblog: tabs and line breaks shown as \t, \n.
std::string log_field(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '\\') out += "\\\\";
    else out += c;
  }
  return out;
}

struct Item {
  std::string text;  // the input line (or the command line, without --each)
  std::chrono::system_clock::time_point submitted;
};

int run_run(const RunOptions& o) {
  if (o.command.empty()) {
    std::fprintf(stderr, "taskmaster: run: no command: give it after --, e.g. taskmaster run -- uname -a\n");
    return kExitUsage;
  }
  std::unique_ptr<std::ofstream> joblog;
  if (!o.joblog.empty()) {
    joblog = std::make_unique<std::ofstream>(o.joblog, std::ios::trunc);
    if (!*joblog) {
      std::fprintf(stderr, "taskmaster: run: cannot write the joblog %s: %s\n", o.joblog.c_str(), std::strerror(errno));
      return kExitUsage;
    }
    *joblog << "item\tworker\tstart\tduration_s\texit_code\n" << std::flush;
  }
  proto::TaskSpec base;
  base.function = "exec";
  base.queue = o.queue;
  base.timeout_ms = std::max<std::uint32_t>(1, static_cast<std::uint32_t>(o.timeout_s * 1000));
  base.max_attempts = o.max_attempts;

  // Every task's item, by its index in the input; and the indexes of the tasks not finished yet by
  // their args (tasks with the same args are the same command: any of them will do).
  std::vector<Item> items;
  std::map<std::string, std::deque<std::size_t>> unfinished;
  std::unique_ptr<LineReader> lines;
  if (o.each) lines = std::make_unique<LineReader>();
  bool given = false;
  StreamingTaskSource source = [&](Client::Clock::time_point deadline) -> TaskPull {
    std::string item;
    if (!o.each) {
      if (given) return {};
      given = true;
      for (const auto& a : o.command) item += (item.empty() ? "" : " ") + a;
    } else {
      LineReader::Line line;
      switch (lines->next(line, deadline)) {
        case LineReader::Got::End: return {};
        case LineReader::Got::NotYet: return {TaskPull::Kind::NotYet, {}};
        case LineReader::Got::Line: break;
      }
      item = std::move(line.text);
    }
    proto::TaskSpec t = base;
    t.args = json(o.each ? substitute(o.command, item) : o.command).dump(-1, ' ', false, json::error_handler_t::replace);
    unfinished[t.args].push_back(items.size());
    items.push_back(Item{std::move(item), std::chrono::system_clock::now()});
    return {TaskPull::Kind::Task, std::move(t)};
  };
  auto first = source(Client::Clock::time_point::max());
  if (first.kind != TaskPull::Kind::Task) {
    std::fprintf(stderr, "taskmaster: run: no tasks: standard input had no non-empty line\n");
    return kExitUsage;
  }
  StreamingTaskSource with_first = prepend(std::move(first), source);

  auto options = o.connection.client();
  if (!options) return report(options.error());
  arm_interrupt_hint();
  zmq::context_t ctx;
  Client client(ctx, *options);
  if (auto s = client.connect(); !s) return report(s.error());
  WorkerWatch watch(*options, "exec", o.queue);
  Progress progress(o.each && !o.quiet);  // on a terminal: done, failed, total, rate, ETA

  std::uint64_t failed = 0;
  int last_code = 0;
  std::map<std::size_t, Ran> held;  // -k: finished, waiting for the tasks before them
  std::size_t next_out = 0;
  const auto show = [&](const Ran& r) {
    write_all(STDOUT_FILENO, r.out);
    write_all(STDERR_FILENO, r.err);
    if (!r.ran) std::fprintf(stderr, "taskmaster: run: %s\n", r.error.c_str());
  };
  const auto take_batch = [&](const std::vector<proto::Outcome>& batch) {
    const auto now = std::chrono::system_clock::now();
    for (const auto& x : batch) {
      Ran r = read_outcome(x);
      std::size_t index = items.size();
      const json args = json::parse(x.args, nullptr, false);
      if (auto it = unfinished.find(args.is_discarded() ? x.args : args.dump(-1, ' ', false, json::error_handler_t::replace));
          it != unfinished.end() && !it->second.empty()) {
        index = it->second.front();
        it->second.pop_front();
      }
      if (r.code != 0) ++failed;
      last_code = r.code;
      if (joblog && index < items.size()) {
        const auto& item = items[index];
        char times[64];
        std::snprintf(times, sizeof times, "%.3f\t%.3f", std::chrono::duration<double>(item.submitted.time_since_epoch()).count(),
                      std::chrono::duration<double>(now - item.submitted).count());
        *joblog << log_field(item.text) << '\t' << log_field(x.worker.empty() ? "-" : x.worker) << '\t' << times << '\t' << r.code << '\n'
                << std::flush;
      }
      if (!o.keep_order || index >= items.size()) {
        show(r);
        continue;
      }
      held.emplace(index, std::move(r));
      for (auto it = held.find(next_out); it != held.end(); it = held.find(next_out)) {
        show(it->second);
        held.erase(it);
        ++next_out;
      }
    }
  };
  OutcomeSink sink = [&](proto::JobId, const std::vector<proto::Outcome>& batch) {
    watch.outcome_seen();
    progress.around([&] { take_batch(batch); }, /*on_stderr=*/true);  // the commands' stderr comes here too
  };
  // For the progress line, a command that exits non-zero (or is not run) has failed.
  const auto by_exit_code = [&](JobSummary s) {
    const auto finished = s.done + s.dead + s.cancelled;
    s.dead = std::min(failed, finished);
    s.done = finished - s.dead;
    s.cancelled = 0;
    return s;
  };
  JobOptions jo;
  jo.on_progress = [&](const JobSummary& s) {
    progress.at_least(items.size());
    progress.update(by_exit_code(s));
  };
  const auto accepted = [&](proto::JobId job) {
    if (!o.quiet) announce_job(job, items.size(), o.each);
    else set_interrupt_job(job);
    progress.at_least(items.size());
    progress.start(job);
  };
  auto summary = run_job(client, with_first, jo, accepted, &sink);
  for (auto& [index, r] : held) show(r);  // (only if the master lost track of some task)
  if (summary && summary->ended) {
    const auto counted = by_exit_code(*summary);
    progress.finish(&counted);
  }
  progress.finish(nullptr);
  if (!summary) return report(summary.error());
  if (!o.each) return last_code;
  return static_cast<int>(std::min<std::uint64_t>(failed, kMaxFailedExit));
}

}  // namespace

void add_run_command(CLI::App& app, Runners& runners) {
  auto o = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand(
      "run", "Run a command line on a worker (one with --allow-exec), as if it ran here; --each: one per line of stdin");
  cmd->add_option("COMMAND", o->command, "The command and its arguments, after --")->required();
  cmd->add_flag("--each", o->each, "One command per line of standard input: {} in the arguments is the line (else the line is appended)");
  cmd->add_flag("-k,--keep-order", o->keep_order, "With --each: print each command's output in input order (else as they finish)");
  cmd->add_option("--joblog", o->joblog, "Write one line per command to FILE: item, worker, start, duration_s, exit_code (tab-separated)")
      ->check(not_empty("--joblog"));
  cmd->add_flag("--quiet", o->quiet, "Do not print the job id, nor (with --each) the progress line and summary, on stderr");
  cmd->add_option("-q,--queue", o->queue, "Queue to put the tasks on")
      ->check([](const std::string& s) { return proto::is_valid_name(s) ? std::string() : "invalid queue name '" + s + "'"; })
      ->capture_default_str();
  add_seconds_option(cmd, "--timeout", o->timeout_s, 0.001, proto::kMaxTimeoutMs / 1000.0,
                     "Seconds a command may run; then its process group is killed")
      ->capture_default_str();
  cmd->add_option("--max-attempts", o->max_attempts,
                  "Attempts when the worker fails to run it (lost, timed out); a command that exits non-zero is not retried")
      ->check(CLI::Range(1u, proto::kMaxAttempts))
      ->capture_default_str();
  add_connection_options(cmd, o->connection, /*key_short=*/false);
  cmd->footer(
      "Example: taskmaster run -- uname -a; ls *.log | taskmaster run --each -k -- gzip -9 {}\n"
      "Each command's stdout and stderr (raw bytes) are written here when it ends, grouped per command. The job id goes to stderr "
      "(`taskmaster: job 12: 3 tasks`); on Ctrl-C the job goes on and the message says how to follow or cancel it (exit 130). "
      "With --each on a terminal, stderr shows a live progress line (done, failed, total, tasks/s, ETA) that ends as one summary line; "
      "never when stderr is not a terminal or TERM=dumb.\n"
      "Exit code: without --each, the command's own (128+N if killed by signal N); with --each, 0 when every command exits 0, "
      "else the number of commands that failed (non-zero exit, signal, or not run), at most 100, as GNU parallel does. "
      "Failures that cannot run: 2 usage error; 3 master unreachable; 4 authentication failed; 5 other error.");
  runners[cmd] = [o] { return run_run(*o); };
}

}  // namespace taskmaster::cli
