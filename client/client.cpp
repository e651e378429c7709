#include "client/client.h"

#include <cstring>
#include <random>
#include <vector>

#include "common/log.h"

namespace taskmaster {

using namespace std::chrono;
namespace proto = protocol;

namespace {

constexpr milliseconds kResendMargin{2000};  // added to a request's own patience
constexpr milliseconds kWaitPoll{1000};      // how long a WAIT is held by the master

std::uint64_t* req_field(proto::Message& m) {
  return std::visit(
      [](auto& x) -> std::uint64_t* {
        if constexpr (requires { x.req; }) return &x.req;
        else return nullptr;
      },
      m);
}

std::string random_key() {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

std::string seconds_of(milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

Status as_status(const proto::Message& m) {
  if (auto* e = std::get_if<proto::ErrorReply>(&m)) return Error{e->code, e->message};
  return Ok{};
}

Error unexpected_reply(std::string_view request, const proto::Message& got) {
  return Error{ErrorCode::Internal, "the master answered " + std::string(request) + " with " + std::string(proto::command_name(got)) +
                                        "; expected another reply"};
}

Client::Client(zmq::context_t& ctx, ClientOptions options)
    : ctx_(ctx), options_(std::move(options)), monitor_(ctx), judge_(options_.endpoint, options_.curve) {
  proto::PeerSocketOptions so;
  so.endpoint = options_.endpoint;
  so.curve = options_.curve;
  // Watch the connection from its very first event: the handshake's outcome tells "unreachable"
  // from "authentication failed".
  so.before_connect = [&](zmq::socket_t& s) { monitor_.attach(s); };
  socket_ = proto::make_peer_socket(ctx_, so);
  last_progress_ = Clock::now();
}

Status Client::read_monitor(Clock::time_point now) {
  while (auto e = monitor_.next()) {
    switch (e->kind) {
      case proto::ConnectionEvent::Kind::Connected:
        if (!connected_ && ever_connected_) log_debug("connection to ", options_.endpoint, " is back");
        connected_ = ever_connected_ = true;
        last_progress_ = now;
        // Whatever was in flight may be lost with the old connection: send it again now.
        for (auto& [req, p] : pending_) p.resend_at = now;
        break;
      case proto::ConnectionEvent::Kind::Disconnected: connected_ = false; break;
      case proto::ConnectionEvent::Kind::HandshakeFailed:
        connected_ = false;
        // Final only when definite (a key or mechanism mismatch, or a master that answers and
        // refuses our key); a handshake cut short is a master restarting or a proxy without one.
        if (auto why = judge_.failed(*e, now)) return make_error(ErrorCode::AuthFailed, *why);
        break;
      default: break;
    }
  }
  return Ok{};
}

Status Client::connect() {
  const auto deadline = Clock::now() + options_.connect_timeout;
  zmq::pollitem_t items[] = {{monitor_.socket().handle(), 0, ZMQ_POLLIN, 0}};
  for (;;) {
    const auto now = Clock::now();
    if (auto s = read_monitor(now); !s) return s;
    if (connected_) return Ok{};
    if (now >= deadline)
      return make_error(ErrorCode::Unreachable, "cannot reach the master at " + options_.endpoint + ": no connection within " +
                                                    seconds_of(options_.connect_timeout) + " s");
    zmq::poll(items, 1, std::max(milliseconds(1), duration_cast<milliseconds>(deadline - now)));
  }
}

void Client::send_pending(Pending& p, Clock::time_point now) {
  const auto sent = proto::send(socket_, p.command, p.body);
  p.resend_at = sent == proto::SendResult::Sent ? now + p.patience + kResendMargin : now + milliseconds(100);
}

std::uint64_t Client::start(proto::Message request, milliseconds patience) {
  const std::uint64_t req = next_req_++;
  if (auto* r = req_field(request)) *r = req;
  const auto now = Clock::now();
  std::string body = proto::encode_body(request);
  if (body.size() > proto::kMaxMessageBytes) {
    too_large_ = Error{ErrorCode::TooLarge, std::string(proto::command_name(request)) + " would be " + std::to_string(body.size()) +
                                                " bytes; the master takes at most " + std::to_string(proto::kMaxMessageBytes)};
    return req;
  }
  if (pending_.empty()) last_progress_ = now;  // the silence clock runs only while we wait
  auto& p = pending_[req] = Pending{proto::command_name(request), std::move(body), patience, now, {}, {}};
  send_pending(p, now);
  return req;
}

Expected<std::optional<Reply>> Client::next(Clock::time_point deadline) {
  zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}, {monitor_.socket().handle(), 0, ZMQ_POLLIN, 0}};
  for (;;) {
    auto now = Clock::now();
    if (too_large_) return *too_large_;
    if (auto s = read_monitor(now); !s) return s.error();
    // A reply may already be waiting.
    while (auto in = proto::receive(socket_, false)) {
      auto decoded = in->decode();
      if (!decoded) {
        log_warn("bad message from master: ", decoded.error().message);
        continue;
      }
      auto* req = req_field(*decoded);
      if (!req) continue;  // heartbeats and the like: not a reply
      // The master could not read our request's number (it could not decode it at all): the error
      // is about one of ours, and resending would only get the same answer.
      if (*req == 0 && std::holds_alternative<proto::ErrorReply>(*decoded) && !pending_.empty()) {
        pending_.clear();
        const auto& e = std::get<proto::ErrorReply>(*decoded);
        return make_error(e.code, "the master refused a request: " + e.message);
      }
      auto it = pending_.find(*req);
      if (it == pending_.end()) continue;  // the answer to a resent request we already have
      if (auto* e = std::get_if<proto::ErrorReply>(&*decoded); e && e->code == ErrorCode::Unavailable) {
        // Not now: ask again later (every request is safe to repeat).
        Pending& p = it->second;
        p.backoff = std::clamp(p.backoff * 2, milliseconds(250), milliseconds(2000));
        p.resend_at = now + p.backoff;
        if (!p.refused_since) p.refused_since = now;
        if (unavailable_.empty()) log_info("the master cannot take a request now (", e->message, "); retrying");
        unavailable_ = e->message;
        continue;
      }
      pending_.erase(it);
      last_progress_ = now;
      if (pending_.empty()) unavailable_.clear();
      return std::optional<Reply>(Reply{*req, std::move(*decoded)});
    }
    // A request refused for retry_timeout fails, whatever other requests get meanwhile.
    for (const auto& [req, p] : pending_)
      if (p.refused_since && now - *p.refused_since > options_.retry_timeout)
        return make_error(ErrorCode::Unavailable, "the master at " + options_.endpoint + " still refuses after " +
                                                      seconds_of(options_.retry_timeout) + " s of retrying: " + unavailable_);
    if (!pending_.empty() && now - last_progress_ > options_.retry_timeout) {
      if (!unavailable_.empty())
        return make_error(ErrorCode::Unavailable, "the master at " + options_.endpoint + " still refuses after " +
                                                      seconds_of(options_.retry_timeout) + " s of retrying: " + unavailable_);
      return make_error(ErrorCode::Unreachable,
                        "no answer from the master at " + options_.endpoint + " for " + seconds_of(options_.retry_timeout) + " s");
    }
    Clock::time_point wake = deadline;
    for (auto& [req, p] : pending_) {
      if (connected_ && now >= p.resend_at) send_pending(p, now);
      if (connected_) wake = std::min(wake, p.resend_at);
    }
    if (!pending_.empty()) wake = std::min(wake, last_progress_ + options_.retry_timeout + milliseconds(1));
    if (now >= deadline) return std::optional<Reply>();
    const auto timeout = std::clamp(duration_cast<milliseconds>(wake - now), milliseconds(1), milliseconds(250));
    zmq::poll(items, 2, timeout);
  }
}

Expected<proto::Message> Client::call(proto::Message request, milliseconds patience) {
  const auto req = start(std::move(request), patience);
  for (;;) {
    auto r = next(Clock::time_point::max());
    if (!r) return r.error();
    if (!*r || (*r)->req != req) continue;  // (a reply to another request would be dropped here)
    if (auto s = as_status((*r)->message); !s) return s.error();
    return std::move((*r)->message);
  }
}

// ---- jobs -------------------------------------------------------------------------------------

namespace {

struct Batch {
  std::vector<proto::TaskSpec> tasks;
  bool last = false;
};

// Takes tasks until the batch is full, the source ends, or it has nothing more: the first task
// waits until `first_deadline`, each next one at most `quiet` after the one before.
Batch read_batch(const StreamingTaskSource& source, const JobOptions& o, Client::Clock::time_point first_deadline) {
  Batch b;
  std::size_t bytes = 0;
  auto deadline = first_deadline;
  while (b.tasks.size() < o.batch_tasks && bytes < o.batch_bytes) {
    auto t = source(deadline);
    if (t.kind == TaskPull::Kind::End) {
      b.last = true;
      break;
    }
    if (t.kind == TaskPull::Kind::NotYet) break;
    bytes += t.task.args.size() + 16;
    b.tasks.push_back(std::move(t.task));
    deadline = Client::Clock::now() + o.quiet;
  }
  return b;
}

// Counts outcomes and forwards them. Returns the new cursor.
std::uint64_t take_outcomes(proto::Outcomes& o, JobSummary& s, const OutcomeSink& sink,
                            const std::function<void(const JobSummary&)>& progress) {
  for (auto& x : o.outcomes) {
    if (x.status == proto::TaskState::Done) ++s.done;
    else if (x.status == proto::TaskState::Dead) ++s.dead;
    else ++s.cancelled;
  }
  if (!o.outcomes.empty()) sink(o.job, o.outcomes);
  s.total = o.total;
  s.sealed = o.sealed;
  const std::uint64_t after = o.after + o.outcomes.size();
  s.ended = o.sealed && o.finished == o.total && after == o.total;
  if (progress) progress(s);
  return after;
}

}  // namespace

Expected<JobSummary> run_job(Client& client, const TaskSource& source, const JobOptions& options,
                             const std::function<void(proto::JobId)>& on_accepted, const OutcomeSink* on_outcome) {
  // A blocking source never says "nothing yet": batches close only when full.
  StreamingTaskSource streaming = [&source](Client::Clock::time_point) {
    auto t = source();
    return t ? TaskPull{TaskPull::Kind::Task, std::move(*t)} : TaskPull{};
  };
  return run_job(client, streaming, options, on_accepted, on_outcome);
}

Expected<JobSummary> run_job(Client& client, const StreamingTaskSource& source, const JobOptions& options,
                             const std::function<void(proto::JobId)>& on_accepted, const OutcomeSink* on_outcome) {
  JobSummary s;
  Batch first = read_batch(source, options, Client::Clock::time_point::max());
  if (first.tasks.empty()) return make_error(ErrorCode::BadField, "a job needs at least one task");
  proto::Submit m;
  m.more = !first.last;
  m.idempotency_key = options.idempotency_key.empty() ? random_key() : options.idempotency_key;
  m.tasks = std::move(first.tasks);
  m.after = options.after;
  m.after_success = options.after_success && !options.after.empty();
  std::uint64_t after = 0;
  std::uint64_t wait_req = 0;  // the WAIT in flight; 0: none (request ids start at 1)
  const auto submit_req = client.start(m);
  // A job in one batch: ask for its outcomes right behind the submission, by its key, saving a
  // round trip (the master handles the two in order).
  if (on_outcome && first.last)
    wait_req = client.start(proto::Wait{0, 0, 0, proto::kDefaultWaitMax, static_cast<std::uint32_t>(kWaitPoll.count()), m.idempotency_key},
                            kWaitPoll);
  std::optional<proto::Accepted> first_reply;
  while (!first_reply) {
    auto got = client.next(Client::Clock::time_point::max());
    if (!got) return got.error();
    if (!*got) continue;
    auto& reply = **got;
    if (reply.req == submit_req) {
      if (auto st = as_status(reply.message); !st) return st.error();
      const auto* a = std::get_if<proto::Accepted>(&reply.message);
      if (!a) return unexpected_reply("SUBMIT", reply.message);
      first_reply = *a;
    } else if (wait_req && reply.req == wait_req) {
      wait_req = 0;
      if (auto* o = std::get_if<proto::Outcomes>(&reply.message)) {
        s.job = o->job;
        after = take_outcomes(*o, s, *on_outcome, options.on_progress);
      }  // an error (the SUBMIT was lost and is being resent): ask again by id below
    }
  }
  const auto accepted = *first_reply;
  s.job = accepted.job;
  std::uint64_t submitted = accepted.count;
  if (on_accepted) on_accepted(s.job);

  bool all_read = first.last, all_accepted = first.last;
  std::uint32_t seq = 1;
  std::map<std::uint64_t, std::uint32_t> in_flight;  // req -> seq
  for (;;) {
    while (!all_read && in_flight.size() < options.window) {
      // With nothing else to wait for, wait for input; else only take what is there.
      const auto now = Client::Clock::now();
      Batch b = read_batch(source, options, client.pending() == 0 && !on_outcome ? now + milliseconds(200) : now);
      if (b.tasks.empty() && !b.last) break;  // nothing yet
      proto::Submit more;
      more.job = s.job;
      more.seq = seq++;
      more.more = !b.last;
      more.tasks = std::move(b.tasks);
      const auto batch_seq = more.seq;
      in_flight[client.start(std::move(more))] = batch_seq;
      all_read = b.last;
    }
    if (all_read && in_flight.empty()) all_accepted = true;
    if (all_accepted && (!on_outcome || s.ended)) break;
    if (on_outcome && !wait_req && !s.ended)
      wait_req = client.start(proto::Wait{0, s.job, after, proto::kDefaultWaitMax, static_cast<std::uint32_t>(kWaitPoll.count()), {}},
                              kWaitPoll);
    // While input may still come, come back to it soon.
    auto got = client.next(all_read || in_flight.size() >= options.window ? Client::Clock::time_point::max()
                                                                          : Client::Clock::now() + options.quiet);
    if (!got) return got.error();
    if (!*got) continue;
    auto& reply = **got;
    if (auto st = as_status(reply.message); !st) return st.error();
    if (auto it = in_flight.find(reply.req); it != in_flight.end()) {
      const auto* a = std::get_if<proto::Accepted>(&reply.message);
      if (!a) return unexpected_reply("SUBMIT", reply.message);
      submitted += a->count;
      in_flight.erase(it);
    } else if (wait_req && reply.req == wait_req) {
      wait_req = 0;
      auto* o = std::get_if<proto::Outcomes>(&reply.message);
      if (!o) return unexpected_reply("WAIT", reply.message);
      after = take_outcomes(*o, s, *on_outcome, options.on_progress);
    }
  }
  if (!on_outcome) s.total = submitted;
  return s;
}

Expected<JobSummary> follow_job(Client& client, proto::JobId job, bool until_end, const OutcomeSink& on_outcome,
                                const std::function<void(const JobSummary&)>& on_first_reply,
                                const std::function<void(const JobSummary&)>& on_progress) {
  bool first = true;
  JobSummary s;
  s.job = job;
  std::uint64_t after = 0;
  for (;;) {
    const auto timeout = until_end ? static_cast<std::uint32_t>(kWaitPoll.count()) : 0u;
    auto r = client.call(proto::Wait{0, job, after, proto::kDefaultWaitMax, timeout, {}}, milliseconds(timeout));
    if (!r) return r.error();
    auto* o = std::get_if<proto::Outcomes>(&*r);
    if (!o) return unexpected_reply("WAIT", *r);
    after = take_outcomes(*o, s, on_outcome, on_progress);
    if (first && on_first_reply) on_first_reply(s);
    first = false;
    if (s.ended) return s;
    if (!until_end && after >= o->finished) return s;
  }
}

}  // namespace taskmaster
