// A worker with a function of its own. Build: cmake --build build --target custom_worker
// Run:  build/examples/custom_worker [--key-file FILE | --insecure] [ENDPOINT]     (ENDPOINT: tcp://127.0.0.1:5555)
//       taskmaster submit word_count '"the quick brown fox"' --wait     ->   "the quick brown fox" -> 4
// The key is found as every taskmaster command finds it: --key-file, else TASKMASTER_KEY_FILE, else
// TASKMASTER_KEY, else the default file that `taskmaster keygen` writes. Exit codes as taskmaster's:
// 0 drained, 2 bad command line, 4 no usable key or the master refused it, 5 stopped or other.
#include <signal.h>
#include <sys/signalfd.h>

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "protocol/auth.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  using nlohmann::json;
  std::string endpoint = "tcp://127.0.0.1:5555", key_file;
  bool insecure = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--key-file" && i + 1 < argc) key_file = argv[++i];
    else if (a == "--insecure") insecure = true;
    else if (!a.starts_with("-")) endpoint = a;
    else {
      std::fprintf(stderr, "usage: %s [--key-file FILE | --insecure] [ENDPOINT]\n", argv[0]);
      return 2;
    }
  }

  taskmaster::HandlerRegistry handlers;
  taskmaster::add_builtin_handlers(handlers);  // optional: square, echo, sleep, fail
  // A handler takes the task's args (any JSON) and returns its result; throwing fails the attempt.
  handlers.add("word_count", [](const json& args, const taskmaster::TaskContext&) -> json {
    if (!args.is_string()) throw std::invalid_argument("word_count: expected a string");
    std::istringstream in(args.get<std::string>());
    std::size_t n = 0;
    for (std::string w; in >> w;) ++n;
    return n;
  });

  taskmaster::WorkerConfig config;
  config.socket.endpoint = endpoint;
  if (!insecure) {
    // The shared key, loaded as the taskmaster commands load it; the CURVE keys come from it.
    auto key = taskmaster::protocol::load_key(key_file);
    if (!key) {
      std::fprintf(stderr, "custom_worker: %s\n", key.error().message.c_str());
      return 4;
    }
    config.socket.curve = taskmaster::protocol::derive_keys(*key);
  }
  config.threads = std::max(1u, std::thread::hardware_concurrency());

  // SIGINT/SIGTERM arrive on a file descriptor the worker polls; block them before any thread starts.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const int stop_fd = signalfd(-1, &set, SFD_CLOEXEC);

  zmq::context_t ctx;
  taskmaster::Worker worker(ctx, config, handlers);
  switch (worker.run(stop_fd)) {
    case taskmaster::WorkerExit::Drained: return 0;
    case taskmaster::WorkerExit::AuthFailed: std::fprintf(stderr, "custom_worker: %s\n", worker.auth_error().c_str()); return 4;
    case taskmaster::WorkerExit::Stopped: break;
  }
  std::fprintf(stderr, "custom_worker: stopped with attempts still running\n");
  return 5;
}
