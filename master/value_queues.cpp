#include "master/value_queues.h"

#include <algorithm>

#include "common/log.h"
#include "protocol/message.h"

namespace taskmaster {

using namespace std::chrono;

namespace {
ValueQueues::Reply make(const ValueQueues::Peer& p, ValueQueues::Reply::Kind kind, const std::string& queue, std::string value = {},
                        std::uint64_t depth = 0, std::string error = {}, ErrorCode code = ErrorCode::Unavailable) {
  ValueQueues::Reply r;
  r.peer = p;
  r.kind = kind;
  r.queue = queue;
  r.value = std::move(value);
  r.depth = depth;
  r.error = std::move(error);
  r.code = code;
  return r;
}
}  // namespace

ValueQueues::ValueQueues(Journal* journal, Limits limits) : journal_(journal), limits_(limits) {}

void ValueQueues::load() {
  if (!journal_) return;
  std::uint64_t count = 0;
  for (auto& row : journal_->load_values()) {
    const auto id = static_cast<std::int64_t>(row.id);
    next_id_ = std::max(next_id_, id + 1);
    front_id_ = std::min(front_id_, id);
    bytes_ += row.value.size();
    queues_[row.queue].items.push_back({id, std::move(row.value)});
    ++count;
  }
  if (count) log_info("journal: ", count, " values in ", queues_.size(), " value queues replayed");
}

void ValueQueues::hand_out(Queue& q, const std::string& name, const Peer& to) {
  Item item = std::move(q.items.front());
  q.items.pop_front();
  bytes_ -= item.json.size();
  Reply r = make(to, Reply::Kind::Value, name, item.json);
  ops_.push_back({false, name, std::move(item)});
  reply(std::move(r));
}

// The queue's parked gets, oldest first, each given a value while there are values.
void ValueQueues::serve_waiters(Queue& q, const std::string& name) {
  while (!q.waiting.empty() && !q.items.empty()) {
    Waiter w = std::move(q.waiting.front());
    q.waiting.pop_front();
    --waiting_;
    hand_out(q, name, w.peer);
  }
}

void ValueQueues::put(const Peer& p, const std::string& queue, std::string json, TimePoint) {
  const auto bad = [&](std::string why) { reply(make(p, Reply::Kind::Failed, queue, {}, 0, std::move(why), ErrorCode::BadField)); };
  if (!protocol::is_valid_name(queue)) return bad("bad queue name");
  if (json.size() > limits_.max_value_bytes)
    return bad("the value is " + std::to_string(json.size()) + " bytes as JSON, over the bound of " +
               std::to_string(limits_.max_value_bytes));
  if (check_)
    if (auto why = check_(json)) return bad(std::move(*why));
  if (bytes_ + json.size() > limits_.max_bytes)
    return reply(make(p, Reply::Kind::Full, queue, {}, depth(queue), "the value queues are full"));
  Queue& q = queues_[queue];
  Item item{next_id_++, std::move(json)};
  bytes_ += item.json.size();
  q.items.push_back(item);
  ops_.push_back({true, queue, std::move(item)});
  serve_waiters(q, queue);
  reply(make(p, Reply::Kind::Put, queue, {}, q.items.size(), {}));
}

void ValueQueues::get(const Peer& p, const std::string& queue, std::optional<milliseconds> wait, TimePoint now) {
  if (!protocol::is_valid_name(queue)) return reply(make(p, Reply::Kind::Failed, queue, {}, 0, "bad queue name", ErrorCode::BadField));
  Queue& q = queues_[queue];
  if (!q.items.empty()) return hand_out(q, queue, p);
  if (wait && *wait <= milliseconds(0)) return reply(make(p, Reply::Kind::Empty, queue));
  if (waiting_ >= limits_.max_waiting)
    return reply(make(p, Reply::Kind::Failed, queue, {}, 0, "too many gets are waiting (" + std::to_string(waiting_) + ")"));
  q.waiting.push_back({p, wait ? std::optional<TimePoint>(now + *wait) : std::nullopt});
  ++waiting_;
}

void ValueQueues::turn(TimePoint now) {
  for (auto& [name, q] : queues_) {
    for (auto it = q.waiting.begin(); it != q.waiting.end();) {
      if (it->deadline && *it->deadline <= now) {
        reply(make(it->peer, Reply::Kind::Empty, name));
        it = q.waiting.erase(it);
        --waiting_;
      } else {
        ++it;
      }
    }
  }
}

std::optional<TimePoint> ValueQueues::next_deadline() const {
  std::optional<TimePoint> d;
  for (const auto& [name, q] : queues_)
    for (const auto& w : q.waiting)
      if (w.deadline && (!d || *w.deadline < *d)) d = w.deadline;
  return d;
}

void ValueQueues::forget_python(std::uint64_t conn) {
  for (auto& [name, q] : queues_) {
    const auto n = q.waiting.size();
    std::erase_if(q.waiting, [conn](const Waiter& w) { return w.peer.python && w.peer.conn == conn; });
    waiting_ -= n - q.waiting.size();
  }
}

void ValueQueues::give_back(const std::string& queue, std::string json) {
  Queue& q = queues_[queue];
  Item item{--front_id_, std::move(json)};
  bytes_ += item.json.size();
  q.items.push_front(item);
  ops_.push_back({true, queue, std::move(item)});
  // The replies of this put-back are none: it was already answered. Another waiter may take it.
  serve_waiters(q, queue);
}

std::vector<ValueQueues::Reply> ValueQueues::commit() {
  std::vector<Reply> out;
  out.swap(replies_);
  std::vector<Op> ops;
  ops.swap(ops_);
  if (!journal_ || ops.empty()) return out;
  for (const auto& op : ops) {
    if (op.put) journal_->value_saved(static_cast<std::uint64_t>(op.item.id), op.queue, op.item.json);
    else journal_->value_erased(static_cast<std::uint64_t>(op.item.id));
  }
  const auto s = journal_->commit();
  if (s) return out;
  log_error(s.error().message, "; the value queues' puts and gets of this turn are refused");
  // Undone in reverse order: a value taken is put back at its place, a value put is removed.
  for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
    Queue& q = queues_[it->queue];
    if (!it->put) {
      bytes_ += it->item.json.size();
      const auto at = std::find_if(q.items.begin(), q.items.end(), [&](const Item& i) { return i.id > it->item.id; });
      q.items.insert(at, it->item);
    } else if (auto at = std::find_if(q.items.begin(), q.items.end(), [&](const Item& i) { return i.id == it->item.id; });
               at != q.items.end()) {
      bytes_ -= at->json.size();
      q.items.erase(at);
    }
  }
  for (auto& r : out) {
    if (r.kind == Reply::Kind::Put || r.kind == Reply::Kind::Value) {
      r.kind = Reply::Kind::Failed;
      r.value.clear();
      r.error = "the journal could not be written (see the master's log); nothing was changed";
    }
  }
  return out;
}

std::uint64_t ValueQueues::depth(const std::string& queue) const {
  const auto it = queues_.find(queue);
  return it == queues_.end() ? 0 : it->second.items.size();
}

nlohmann::json ValueQueues::status() const {
  auto j = nlohmann::json::object();
  for (const auto& [name, q] : queues_)
    if (!q.items.empty() || !q.waiting.empty()) j[name] = {{"depth", q.items.size()}, {"waiting", q.waiting.size()}};
  return j;
}

}  // namespace taskmaster
