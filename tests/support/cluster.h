// A master and workers as real taskmaster processes on loopback, plus helpers to run the CLI.
// Everything started here is stopped (by PID) when the Cluster goes away.
#pragma once

#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client.h"
#include "support/process.h"

namespace taskmaster::test {

// The taskmaster binary under test.
inline const std::string kTaskmaster = TASKMASTER_BINARY;

// A finished CLI command.
struct CommandResult {
  int code = -1;
  std::string out, err;
  std::chrono::milliseconds elapsed{0};
  // stdout's lines, each parsed as JSON (for --json output). Fails the test on a bad line.
  std::vector<nlohmann::json> json_lines() const;
  std::vector<std::string> lines() const;
};

// The environment every process of a test gets: a fresh key of its own (TASKMASTER_KEY_FILE).
class TestKey {
 public:
  TestKey();
  const std::string& path() const { return path_; }
  std::vector<std::string> env() const { return {"TASKMASTER_KEY_FILE=" + path_}; }

 private:
  TempDir dir_;
  std::string path_;
};

class Cluster {
 public:
  // insecure: every process runs with --insecure instead of the test's key.
  explicit Cluster(bool insecure = false) : insecure_(insecure) {}
  ~Cluster();
  const TestKey& key() const { return key_; }
  // The master's data directory (kept across restarts within the test, removed at the end).
  std::string data_dir() const { return data_.path() + "/data"; }
  // Options for an in-process Client of this cluster (its endpoint and key).
  ClientOptions client_options() const;
  // Starts any process with the cluster's environment (its key).
  std::unique_ptr<ChildProcess> start(std::vector<std::string> argv, std::optional<std::string> stdin_data = std::nullopt);

  // Starts a master on 127.0.0.1 (port 0 unless `endpoint` is given) and reads its endpoint line.
  // Its journal goes to data_dir() unless `extra` says --in-memory or --data-dir.
  void start_master(std::vector<std::string> extra = {}, std::string bind = "tcp://127.0.0.1:0");
  ChildProcess& master() { return *master_; }
  const std::string& endpoint() const { return endpoint_; }
  // The port of the master's endpoint.
  std::string port() const;
  // Stops the master (signal `sig`) and waits for it to exit; returns its exit code.
  int stop_master(int sig = SIGTERM);

  ChildProcess& start_worker(std::vector<std::string> extra = {});
  std::vector<std::unique_ptr<ChildProcess>>& workers() { return workers_; }

  // Runs `taskmaster ARGS... --connect ENDPOINT` to completion (at most `timeout`).
  CommandResult run(std::vector<std::string> args, std::optional<std::string> stdin_data = std::nullopt,
                    std::chrono::milliseconds timeout = 60s);
  // Starts such a command without waiting for it.
  std::unique_ptr<ChildProcess> spawn(std::vector<std::string> args, std::optional<std::string> stdin_data = std::nullopt);

  // `taskmaster status --json`.
  nlohmann::json status();
  // Waits until the master reports `n` connected workers.
  void wait_for_workers(std::size_t n, std::chrono::milliseconds timeout = 20s);

 private:
  std::vector<std::string> security() const { return insecure_ ? std::vector<std::string>{"--insecure"} : std::vector<std::string>{}; }

  bool insecure_;
  TestKey key_;
  TempDir data_;
  std::unique_ptr<ChildProcess> master_;
  std::string endpoint_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
};

// The exit code and output of a finished process.
CommandResult finish(ChildProcess& p, std::chrono::milliseconds timeout);

// A loopback TCP port with nothing listening on it (bound, then closed).
int closed_loopback_port();

}  // namespace taskmaster::test
