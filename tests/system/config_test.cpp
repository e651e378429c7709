// Configuration through the real binary (README "Configuration"): a worker configured only by its
// config file, and the precedence of the command line, the environment and the file for a client.
#include <fstream>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// `taskmaster ARGS...` with the cluster's key, `env` and no default config file of the machine's.
CommandResult run_configured(const Cluster& c, const TempDir& home, std::vector<std::string> args, std::vector<std::string> env = {}) {
  std::vector<std::string> argv{kTaskmaster};
  argv.insert(argv.end(), args.begin(), args.end());
  auto all_env = c.key().env();
  all_env.push_back("XDG_CONFIG_HOME=" + home.path());
  all_env.insert(all_env.end(), env.begin(), env.end());
  ChildProcess p(argv, {std::nullopt, all_env});
  return finish(p, 30s);
}

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir.path(name)) << text;
  return dir.path(name);
}

}  // namespace

TEST_SUITE("system") {

TEST_CASE("config: a worker from its config file, and a client's command line beats the environment, which beats the file") {
  Cluster c;
  c.start_master({"--in-memory"});
  TempDir home;
  const std::string closed = "127.0.0.1:" + std::to_string(closed_loopback_port());
  // The worker: everything from TASKMASTER_CONFIG's file, the endpoint at the top, its threads in [worker].
  const std::string worker_file = write(home, "worker.toml",
                                        "connect = \"" + c.endpoint() + "\"\n[worker]\nthreads = 3\nname = \"from-file\"\n");
  auto worker = c.start({"/usr/bin/env", "XDG_CONFIG_HOME=" + home.path(), "TASKMASTER_CONFIG=" + worker_file, kTaskmaster, "worker"});
  c.wait_for_workers(1);
  const auto status = c.status();
  REQUIRE(status.at("workers").size() == 1);
  CHECK(status.at("workers").at(0).at("threads") == 3);
  CHECK(status.at("workers").at(0).dump().find("from-file") != std::string::npos);

  // A client whose file points at a closed port.
  const std::string file = write(home, "client.toml", "connect = \"" + closed + "\"\nconnect-timeout = \"0.5s\"\n");
  auto r = run_configured(c, home, {"status", "--config", file});
  CHECK(r.code == 3);
  CHECK(r.err.find("tcp://" + closed) != std::string::npos);
  // The environment beats the file...
  r = run_configured(c, home, {"status", "--json", "--config", file}, {"TASKMASTER_CONNECT=" + c.endpoint()});
  CHECK_MESSAGE(r.code == 0, r.err);
  r = run_configured(c, home, {"status", "--json", "--config", file}, {"TASKMASTER_STATUS_CONNECT=" + c.endpoint()});
  CHECK_MESSAGE(r.code == 0, r.err);
  // ...and the command line beats the environment (and the file).
  r = run_configured(c, home, {"status", "--json", "--config", file, "--connect", c.endpoint()}, {"TASKMASTER_CONNECT=" + closed});
  CHECK_MESSAGE(r.code == 0, r.err);
  r = run_configured(c, home, {"status", "--config", file}, {"TASKMASTER_ADDRESS=" + closed, "TASKMASTER_CONNECT_TIMEOUT=0.3"});
  CHECK(r.code == 3);
  // taskmaster config says where each came from.
  r = run_configured(c, home, {"config", "status", "--config", file}, {"TASKMASTER_CONNECT_TIMEOUT=0.3"});
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.out.find("status.connect-timeout") != std::string::npos);
  CHECK(r.out.find("env TASKMASTER_CONNECT_TIMEOUT") != std::string::npos);
  CHECK(r.out.find("file " + file) != std::string::npos);
}

TEST_CASE("errors: the master's refusal names the command typed, not the request") {
  Cluster c;
  c.start_master({"--in-memory"});
  TempDir home;
  for (const std::string command : {"results", "wait", "cancel"}) {
    CAPTURE(command);
    const auto r = run_configured(c, home, {command, "999", "--connect", c.endpoint()});
    CHECK(r.code == 5);
    CHECK_MESSAGE(r.err.rfind("taskmaster: " + command + ": job 999 ", 0) == 0, r.err);
    CHECK(r.err.find("WAIT") == std::string::npos);
  }
}

}  // TEST_SUITE

}  // namespace taskmaster::test
