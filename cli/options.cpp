#include "cli/options.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace taskmaster::cli {

Expected<std::optional<protocol::CurveKeys>> KeyOptions::resolve() const {
  if (insecure) return std::optional<protocol::CurveKeys>();
  auto found = protocol::find_key(key_file);
  if (!found) return found.error();
  if (!*found)
    return make_error(ErrorCode::AuthFailed,
                      "no key: make one with 'taskmaster keygen' (it goes to " + protocol::default_key_path() +
                          "), or give --key-file FILE, TASKMASTER_KEY_FILE or TASKMASTER_KEY; --insecure runs without one");
  return std::optional<protocol::CurveKeys>(protocol::derive_keys((*found)->key));
}

void add_key_options(CLI::App* cmd, KeyOptions& o) {
  auto* file = cmd->add_option("-k,--key-file", o.key_file,
                               "File holding the shared key (else TASKMASTER_KEY_FILE, the key in TASKMASTER_KEY, or " +
                                   protocol::default_key_path() + ")");
  cmd->add_flag("--insecure", o.insecure, "No key: no authentication and no encryption (both sides must agree)")->excludes(file);
}

Expected<ClientOptions> ConnectionOptions::client() const {
  auto keys = key.resolve();
  if (!keys) return keys.error();
  ClientOptions c;
  c.curve = *keys;
  c.endpoint = endpoint;
  c.connect_timeout = std::chrono::milliseconds(static_cast<long long>(connect_timeout_s * 1000));
  c.retry_timeout = std::chrono::milliseconds(static_cast<long long>(retry_timeout_s * 1000));
  return c;
}

namespace {

void add_endpoint_option(CLI::App* cmd, ConnectionOptions& o) {
  cmd->add_option("-c,--connect", o.endpoint, "The master's endpoint (env TASKMASTER_ADDRESS)")
      ->envname("TASKMASTER_ADDRESS")
      ->capture_default_str();
}

}  // namespace

void add_connection_options(CLI::App* cmd, ConnectionOptions& o) {
  add_endpoint_option(cmd, o);
  cmd->add_option("--connect-timeout", o.connect_timeout_s, "Seconds to wait for the first connection; then exit 3")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--retry-timeout", o.retry_timeout_s,
                  "Seconds to keep retrying when the master stops answering (e.g. while it restarts); then exit 3")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_key_options(cmd, o.key);
}

void add_check_connection_options(CLI::App* cmd, ConnectionOptions& o) {
  add_endpoint_option(cmd, o);
  cmd->add_option("-t,--timeout,--connect-timeout", o.connect_timeout_s,
                  "Seconds the whole check may take (connecting and the answer); then exit 3")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_key_options(cmd, o.key);
}

StopSignal::StopSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw std::runtime_error("cannot block SIGINT/SIGTERM");
  fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd_ < 0) throw std::runtime_error(std::string("signalfd: ") + std::strerror(errno));
}

StopSignal::~StopSignal() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace taskmaster::cli
