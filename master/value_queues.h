// Value queues: named FIFO queues of JSON values, beside the task queues. They are what the Python
// BaseManager listener's queues are (pyman/listener.h, docs/PYTHON.md) and what `taskmaster queue
// put/get` reads and writes (QUEUE_PUT, QUEUE_GET: docs/PROTOCOL.md §6.17). Every value is in the
// journal (table queue_values) before its put is answered; a get removes it in the same way.
// Requests are taken during a turn; their replies come out of commit(), which the loop calls after
// MasterState's commit: a second COMMIT, only in turns that changed a value queue.
// Not thread-safe: owned by the master's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "master/journal.h"

namespace taskmaster {

class ValueQueues {
 public:
  // Who asked: a TASKMASTER/1 peer (its ROUTER identity and the request's req), or a connection
  // of the Python listener (its id).
  struct Peer {
    bool python = false;
    std::string identity;
    std::uint64_t req = 0;
    std::uint64_t conn = 0;
  };
  struct Reply {
    enum class Kind { Put, Value, Empty, Full, Failed };
    Peer peer;
    Kind kind = Kind::Failed;
    std::string queue;
    std::string value;                        // Value: the value, as JSON text
    std::uint64_t depth = 0;                  // Put: the queue's depth after it
    std::string error;                        // Failed: why (a bad name, the journal refused, too many waiting)
    ErrorCode code = ErrorCode::Unavailable;  // Failed: BadField for a bad name or value, else Unavailable
  };
  struct Limits {
    std::uint64_t max_bytes = 256u << 20;      // every value held, as JSON; a put past it is Full
    std::uint64_t max_value_bytes = 1u << 20;  // one value, as JSON
    std::size_t max_waiting = 10000;           // gets parked at once
  };

  // journal: null for a master in memory only.
  ValueQueues(Journal* journal, Limits limits);
  ValueQueues(Journal* journal) : ValueQueues(journal, Limits{}) {}
  // Reads the journal's values (at start).
  void load();
  // A check of each value put: the reason it is refused (BadField), or nullopt. The master checks
  // that a value has a Python form (pickle::from_json), so that every value can be got from Python.
  void set_check(std::function<std::optional<std::string>(const std::string& json)> check) { check_ = std::move(check); }
  // Replies or changes wait for commit(): the loop should not sleep.
  bool pending() const { return !replies_.empty() || !ops_.empty(); }

  void put(const Peer& p, const std::string& queue, std::string json, TimePoint now);
  // wait: nullopt waits until a value comes; zero answers Empty at once if there is none.
  void get(const Peer& p, const std::string& queue, std::optional<std::chrono::milliseconds> wait, TimePoint now);
  // Answers the parked gets whose time is up (Empty).
  void turn(TimePoint now);
  std::optional<TimePoint> next_deadline() const;
  // A Python connection closed: its parked get, if any, is forgotten.
  void forget_python(std::uint64_t conn);
  // A value handed out that could not be delivered (its peer is gone): back at the queue's front.
  void give_back(const std::string& queue, std::string json);

  // Makes the turn's changes durable and returns every reply of the turn. If the journal refuses,
  // the turn's puts and gets are undone (nothing of them happened) and answered Failed.
  std::vector<Reply> commit();

  std::uint64_t depth(const std::string& queue) const;
  // {"NAME": {"depth": N, "waiting": W}, ...} for every queue that holds values or waiting gets.
  nlohmann::json status() const;
  std::uint64_t bytes() const { return bytes_; }
  // The Python listener's address, told in STATUS ("": none).
  void set_listener(std::string address) { listener_ = std::move(address); }
  const std::string& listener() const { return listener_; }

 private:
  struct Item {
    std::int64_t id;
    std::string json;
  };
  struct Waiter {
    Peer peer;
    std::optional<TimePoint> deadline;
  };
  struct Queue {
    std::deque<Item> items;
    std::deque<Waiter> waiting;
  };
  struct Op {
    bool put;  // else taken
    std::string queue;
    Item item;
  };
  void serve_waiters(Queue& q, const std::string& name);
  void hand_out(Queue& q, const std::string& name, const Peer& to);
  void reply(Reply r) { replies_.push_back(std::move(r)); }

  Journal* journal_;
  Limits limits_;
  std::function<std::optional<std::string>(const std::string&)> check_;
  std::map<std::string, Queue> queues_;
  std::vector<Op> ops_;
  std::vector<Reply> replies_;
  std::int64_t next_id_ = 1, front_id_ = 0;  // front_id_: ids for values given back go down from it
  std::uint64_t bytes_ = 0;
  std::size_t waiting_ = 0;
  std::string listener_;
};

}  // namespace taskmaster
