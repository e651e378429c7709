// The physical limits: raw ZeroMQ on this machine, measured the way ../shared/PEERS.md measures
// them, in the same run as taskmaster's figures (only ratios carry over between runs).
//
// The pipeline (PEERS.md row "(b)"): no broker, no queue, no acknowledgement, no persistence and
// no encryption. A ventilator PUSHes n tasks over tcp://127.0.0.1 to W worker PROCESSES (PULL,
// compute square, PUSH) and a sink PULLs every result, checking each is right and comes once.
//
// The two-hop relay: what any brokered design pays over libzmq here, with taskmaster's own
// sockets and security (CURVE on, the master's ROUTER and the peers' DEALER options) but no rules,
// no journal, no JSON: client DEALER -> ROUTER relay (its own process, one loop) -> DEALER worker
// (its own process) and back. Its sequential round trip is the latency floor of a brokered round
// trip; with a window of messages in flight, one task per message, its throughput ceiling.
#pragma once

#include <cstdint>

#include "common/expected.h"

namespace taskmaster::bench {

// Tasks per second from the first task sent to the last result verified.
Expected<double> zmq_pipeline_tasks_per_s(unsigned workers, std::uint64_t n, std::uint64_t seed);

struct RelayFigures {
  double p50_us = 0, p99_us = 0;  // sequential round trips through the relay, one worker
  double tasks_per_s = 0;         // n tasks, one per message, `window` in flight, W workers
};

// `trips` timed round trips after `warm` untimed ones, then n tasks through W workers.
Expected<RelayFigures> zmq_relay(unsigned workers, std::uint64_t warm, std::uint64_t trips, std::uint64_t n, std::uint64_t seed);

}  // namespace taskmaster::bench
