#include "cli/waiting.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cli/progress.h"

namespace taskmaster::cli {

namespace proto = protocol;
using namespace std::chrono;

namespace {

// The message SIGINT writes, prepared outside the handler (which may only write and exit).
char interrupt_message[512] = "\ntaskmaster: interrupted\n";
std::atomic<std::size_t> interrupt_length{std::strlen(interrupt_message)};

extern "C" void on_interrupt(int) {
  const auto n = interrupt_length.load();
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, interrupt_message, n);
  ::_exit(130);
}

}  // namespace

void arm_interrupt_hint() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
}

void set_interrupt_job(proto::JobId job) {
  char buf[sizeof interrupt_message];
  const auto id = static_cast<unsigned long long>(job);
  const int n = std::snprintf(buf, sizeof buf,
                              "\ntaskmaster: interrupted; job %llu goes on: `taskmaster wait %llu` follows it, "
                              "`taskmaster cancel %llu` cancels it\n",
                              id, id, id);
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf) return;
  // Block SIGINT while the message changes, so the handler never writes half of one.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  std::memcpy(interrupt_message, buf, static_cast<std::size_t>(n) + 1);
  interrupt_length = static_cast<std::size_t>(n);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void announce_job(proto::JobId job, std::uint64_t tasks, bool more_to_come) {
  set_interrupt_job(job);  // first: Ctrl-C right after the line below must name the job
  std::fprintf(stderr, "taskmaster: job %llu: %llu task%s%s\n", static_cast<unsigned long long>(job),
               static_cast<unsigned long long>(tasks), tasks == 1 ? "" : "s", more_to_come ? " so far" : "");
  std::fflush(stderr);
}

bool served(const nlohmann::json& status, const std::string& function, const std::string& queue) {
  const auto workers = status.find("workers");
  if (workers == status.end() || !workers->is_array()) return false;
  const auto lists = [](const nlohmann::json& w, const char* key, const std::string& name) {
    const auto l = w.find(key);
    return l != w.end() && l->is_array() && std::find(l->begin(), l->end(), nlohmann::json(name)) != l->end();
  };
  return std::any_of(workers->begin(), workers->end(), [&](const nlohmann::json& w) {
    return w.is_object() && lists(w, "functions", function) && lists(w, "queues", queue);
  });
}

WorkerWatch::WorkerWatch(ClientOptions options, std::string function, std::string queue, milliseconds grace)
    : function_(std::move(function)), queue_(std::move(queue)), thread_(&WorkerWatch::run, this, std::move(options), 0, grace) {}

WorkerWatch::WorkerWatch(ClientOptions options, proto::JobId job, milliseconds grace)
    : thread_(&WorkerWatch::run, this, std::move(options), job, grace) {}

void WorkerWatch::say_served() {
  if (warned_.exchange(false)) say("taskmaster: a worker serving " + function_ + " on queue " + queue_ + " is connected now");
}

void WorkerWatch::outcome_seen() { say_served(); }

WorkerWatch::~WorkerWatch() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  stopped_.notify_all();
  thread_.join();
}

void WorkerWatch::run(ClientOptions options, proto::JobId job, milliseconds grace) {
  // Nothing is asked before the grace ends: a short job opens no second connection (and does not
  // wait at its exit for a second handshake).
  const auto start = Client::Clock::now();
  {
    std::unique_lock lock(mutex_);
    if (stopped_.wait_for(lock, grace, [this] { return stop_.load(); })) return;
  }
  try {
    zmq::context_t ctx;
    Client client(ctx, options);
    if (!client.connect()) return;  // the command itself reports an unreachable master
    if (job) {
      // The job's function and queue (of its first task), unless it has ended.
      const auto asked = client.start(proto::Status{0, job});
      std::optional<Reply> answer;
      while (!stop_ && !answer) {
        auto got = client.next(Client::Clock::now() + milliseconds(100));
        if (!got) return;
        if (*got && (*got)->req == asked) answer = std::move(**got);
      }
      const auto* report = answer ? std::get_if<proto::Report>(&answer->message) : nullptr;
      if (!report) return;  // stopped, unknown_job (the command says so), or a master that predates STATUS job
      const auto j = report->status.find("job");
      if (j == report->status.end() || !j->is_object() || !j->value("ended_s", nlohmann::json()).is_null()) return;
      const auto f = j->find("function"), q = j->find("queue");
      if (f == j->end() || q == j->end() || !f->is_string() || !q->is_string()) return;
      function_ = f->get<std::string>();
      queue_ = q->get<std::string>();
    }
    const std::string& function = function_;
    const std::string& queue = queue_;
    std::uint64_t req = 0;
    while (!stop_) {
      if (!req) req = client.start(proto::Status{});
      auto got = client.next(Client::Clock::now() + milliseconds(100));
      if (!got) return;
      if (!*got || (*got)->req != req) continue;
      req = 0;
      const auto* report = std::get_if<proto::Report>(&(*got)->message);
      if (!report) return;
      const bool ok = served(report->status, function, queue);
      if (!ok && !warned_ && Client::Clock::now() - start >= grace) {
        say("taskmaster: no connected worker serves " + function + " on queue " + queue + "; the tasks wait until one does");
        warned_ = true;
      } else if (ok) {
        say_served();
      }
      // The next question in a second (or sooner at the end of the grace).
      for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(milliseconds(100));
    }
  } catch (const std::exception&) {
    // The watch only adds words; whatever breaks it leaves the command as it was.
  }
}

}  // namespace taskmaster::cli
