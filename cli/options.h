// Options and helpers that several subcommands share.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "client/client.h"

namespace taskmaster::cli {

inline constexpr const char* kDefaultConnect = "tcp://127.0.0.1:5555";

// --key-file and --insecure: where the shared key comes from, or that there is none.
struct KeyOptions {
  std::string key_file;
  bool insecure = false;
  // The CURVE keys derived from the shared key; nullopt with --insecure. Fails (AuthFailed) when
  // no usable key is found: none anywhere, an unreadable file, a file others can read, too short.
  Expected<std::optional<protocol::CurveKeys>> resolve() const;
};
void add_key_options(CLI::App* cmd, KeyOptions& o);

// --connect (default from TASKMASTER_ADDRESS), --connect-timeout, --retry-timeout, and the key.
struct ConnectionOptions {
  std::string endpoint = kDefaultConnect;
  double connect_timeout_s = 5;
  double retry_timeout_s = 60;
  KeyOptions key;
  Expected<ClientOptions> client() const;
};
void add_connection_options(CLI::App* cmd, ConnectionOptions& o);
// The same for a one-shot check (health): no retries, so no --retry-timeout, and one timeout named
// --timeout (also --connect-timeout) that bounds the whole exchange. Its default is o's value.
void add_check_connection_options(CLI::App* cmd, ConnectionOptions& o);

// Blocks SIGINT and SIGTERM in this thread and in every thread started after it, and delivers them
// on a file descriptor instead, which the master's and worker's loops poll. Create it before any
// other thread (the ZeroMQ context's included).
class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace taskmaster::cli
