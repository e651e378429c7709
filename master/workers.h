// The workers connected to the master: what each serves, its credit, the attempts it holds, and
// when it was last heard from. A worker never holds more attempts than its slots.
// Not thread-safe: owned by the master's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "master/task_table.h"

namespace taskmaster {

struct WorkerSession {
  std::string identity;    // ROUTER routing id of its connection
  std::uint32_t name = 0;  // Names id of its announced name
  std::string host;
  std::int64_t pid = 0;
  std::uint64_t session = 0;  // the process's id from HELLO (0: an older peer that sends none)
  WorkerFilter filter;        // queues and functions it serves
  std::uint32_t slots = 0;    // tasks it can hold at once
  // The most attempts it may hold: its slots, or more if it reported holding more itself (in HELLO,
  // or when it lowered its credit). The master never leases past its slots.
  std::size_t ceiling = 0;
  std::unordered_map<TaskId, std::uint32_t> held;  // task -> attempt it holds (running or unacked)
  // Feature "reserve" (PROTOCOL.md §6.14, §8.6): which held attempts have begun; the others are
  // reserved, and the master may take them back (REVOKE).
  bool reserve = false;
  std::uint32_t threads = 0;           // from HELLO; 0: not said
  std::unordered_set<TaskId> started;  // keys of `held` whose attempt has begun
  std::unordered_set<TaskId> revoked;  // keys of `held` asked back (REVOKE): only these may be RELEASED
  std::uint32_t revokes = 0;           // REVOKEs not yet answered
  TimePoint revoke_sent{};             // the last; one unanswered for a worker timeout counts as lost
  std::string steal_for;               // the idle worker the last REVOKE took attempts for, if any
  TimePoint stealing_until{};          // as a thief: attempts are being taken back for it until then
  std::uint64_t done = 0;              // attempts it finished (any outcome)
  std::uint64_t failed = 0;            // of those, the ones that failed
  TimePoint connected{};
  TimePoint last_heard{};
  TimePoint last_sent{};

  std::uint32_t free_slots() const { return held.size() >= slots ? 0 : slots - static_cast<std::uint32_t>(held.size()); }
  // Attempts begun, and held but not begun. Without the feature every held attempt counts as running.
  std::size_t running() const { return reserve ? started.size() : held.size(); }
  std::size_t reserved() const { return held.size() - running(); }
  // Threads with nothing to run (and nothing reserved for them). Without `threads`: one if it holds
  // nothing.
  std::size_t idle_threads() const {
    if (!threads) return held.empty() ? 1 : 0;
    return held.size() >= threads ? 0 : threads - held.size();
  }
  // The attempt is no longer held.
  void forget(TaskId task) {
    held.erase(task);
    started.erase(task);
    revoked.erase(task);
  }
};

class WorkerRegistry {
 public:
  // Registers a session for `identity`, replacing one with the same identity (whose name references
  // are then the caller's to release: MasterState drops a session before it adds another). Returns it.
  WorkerSession& add(std::string identity, std::uint32_t name, TimePoint now);
  WorkerSession* find(std::string_view identity);
  // The session of the worker with this announced name, if any.
  WorkerSession* find_by_name(std::uint32_t name);
  // The session of the same worker process on another connection: same name and session id (or,
  // for peers that send no session id, same name, host and pid). Two processes that share a name
  // are two workers.
  WorkerSession* find_process(std::string_view identity, std::uint32_t name, std::uint64_t session, const std::string& host,
                              std::int64_t pid);
  void remove(std::string_view identity);

  std::size_t size() const { return sessions_.size(); }
  std::unordered_map<std::string, WorkerSession>& sessions() { return sessions_; }
  const std::unordered_map<std::string, WorkerSession>& sessions() const { return sessions_; }

  // Identities of workers silent for longer than `timeout`.
  std::vector<std::string> silent(TimePoint now, std::chrono::milliseconds timeout) const;

 private:
  std::unordered_map<std::string, WorkerSession> sessions_;
};

}  // namespace taskmaster
