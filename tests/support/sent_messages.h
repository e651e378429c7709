// What a MasterState under test sent, and helpers to take messages of one type to one peer.
// Shared by the in-process harnesses of state_test.cpp and journal_test.cpp.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "master/state.h"

namespace taskmaster::test {

struct SentMessages {
  std::vector<MasterState::Outgoing> sent;  // everything taken from the outbox, in order

  // Messages of type T sent to `to` since the last take (they are removed).
  template <class T> std::vector<T> take(const std::string& to) {
    std::vector<T> out;
    std::vector<MasterState::Outgoing> rest;
    for (auto& o : sent) {
      if (o.identity == to && std::holds_alternative<T>(o.message)) out.push_back(std::get<T>(o.message));
      else rest.push_back(std::move(o));
    }
    sent = std::move(rest);
    return out;
  }
  // What the state's outbox holds now (take_outbox), into `sent`, each reported sent at `now` as
  // the master's loop reports it.
  void collect(MasterState& state, TimePoint now) {
    for (auto& o : state.take_outbox()) {
      state.sent(o.identity, now);
      sent.push_back(std::move(o));
    }
  }
  // Every task assigned to worker `w` since the last take, across TASKS messages.
  std::vector<protocol::Assignment> tasks_for(const std::string& w) {
    std::vector<protocol::Assignment> all;
    for (auto& t : take<protocol::Tasks>(w)) all.insert(all.end(), t.tasks.begin(), t.tasks.end());
    return all;
  }
};

}  // namespace taskmaster::test
