// What the commands that wait on a job (submit --wait, run, wait) say on stderr so that nothing
// waits in silence: the job's id when it starts, how to resume or cancel it on Ctrl-C, and that no
// connected worker serves its function on its queue (and once more when one does).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "client/client.h"

namespace taskmaster::cli {

// From now on SIGINT prints "taskmaster: interrupted; job N goes on: `taskmaster wait N` follows it,
// `taskmaster cancel N` cancels it" (once the job is known) and exits 130.
void arm_interrupt_hint();
void set_interrupt_job(protocol::JobId job);

// "taskmaster: job 12: 3 tasks" (with " so far" while more may come) on stderr; also tells the
// interrupt hint the job's id.
void announce_job(protocol::JobId job, std::uint64_t tasks, bool more_to_come);

// A thread of its own (with its own connection) that asks the master's STATUS every second and
// says on stderr when no connected worker has served `function` on `queue` for `grace`, and once
// more when one does. Stops when destroyed. It connects only once `grace` has passed: a job that
// ends sooner costs no second connection (context, CURVE handshake) and no wait for one at exit.
class WorkerWatch {
 public:
  WorkerWatch(ClientOptions options, std::string function, std::string queue,
              std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  // For an existing job (wait JOB): its function and queue are those of its first task, asked of
  // the master (STATUS job); a job that has ended, or a master too old to say, is not watched.
  WorkerWatch(ClientOptions options, protocol::JobId job, std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  ~WorkerWatch();
  // An outcome came: some worker serves the job after all (says so if the watch had warned).
  void outcome_seen();
  WorkerWatch(const WorkerWatch&) = delete;
  WorkerWatch& operator=(const WorkerWatch&) = delete;

 private:
  void run(ClientOptions options, protocol::JobId job, std::chrono::milliseconds grace);
  void say_served();
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // with stopped_: wakes the thread's first wait at once
  std::condition_variable stopped_;
  std::atomic<bool> warned_{false};
  std::string function_, queue_;  // set by the thread before it first warns (for a job)
  std::thread thread_;
};

// Whether a STATUS report lists a connected worker that serves `function` on `queue`.
bool served(const nlohmann::json& status, const std::string& function, const std::string& queue);

}  // namespace taskmaster::cli
