#include "master/workers.h"

namespace taskmaster {

WorkerSession& WorkerRegistry::add(std::string identity, std::uint32_t name, TimePoint now) {
  WorkerSession s;
  s.identity = identity;
  s.name = name;
  s.connected = s.last_heard = s.last_sent = now;
  auto& slot = sessions_[identity];
  slot = std::move(s);
  return slot;
}

WorkerSession* WorkerRegistry::find(std::string_view identity) {
  auto it = sessions_.find(std::string(identity));
  return it == sessions_.end() ? nullptr : &it->second;
}

WorkerSession* WorkerRegistry::find_by_name(std::uint32_t name) {
  for (auto& [id, s] : sessions_)
    if (s.name == name) return &s;
  return nullptr;
}

WorkerSession* WorkerRegistry::find_process(std::string_view identity, std::uint32_t name, std::uint64_t session, const std::string& host,
                                            std::int64_t pid) {
  for (auto& [id, s] : sessions_) {
    if (id == identity || s.name != name) continue;
    if (session ? s.session == session : s.session == 0 && s.host == host && s.pid == pid) return &s;
  }
  return nullptr;
}

void WorkerRegistry::remove(std::string_view identity) { sessions_.erase(std::string(identity)); }

std::vector<std::string> WorkerRegistry::silent(TimePoint now, std::chrono::milliseconds timeout) const {
  std::vector<std::string> out;
  for (const auto& [id, s] : sessions_)
    if (now - s.last_heard > timeout) out.push_back(id);
  return out;
}

}  // namespace taskmaster
