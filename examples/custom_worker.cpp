// A worker with a function of its own. Build: cmake --build build --target custom_worker
// Run:  build/examples/custom_worker tcp://127.0.0.1:5555
//       taskmaster submit word_count '"the quick brown fox"' --wait     ->   "the quick brown fox" -> 4
#include <signal.h>
#include <sys/signalfd.h>

#include <sstream>
#include <stdexcept>
#include <thread>

#include "worker/worker.h"

int main(int argc, char** argv) {
  using nlohmann::json;
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

  // SIGINT/SIGTERM arrive on a file descriptor the worker polls; block them before any thread starts.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const int stop_fd = signalfd(-1, &set, SFD_CLOEXEC);

  taskmaster::WorkerConfig config;
  config.socket.endpoint = argc > 1 ? argv[1] : "tcp://127.0.0.1:5555";
  config.threads = std::max(1u, std::thread::hardware_concurrency());
  zmq::context_t ctx;
  taskmaster::Worker worker(ctx, config, handlers);
  return worker.run(stop_fd) == taskmaster::WorkerExit::Drained ? 0 : 1;
}
