// The physical limit: raw ZeroMQ on this machine, with no broker, no queue, no acknowledgement, no
// persistence and no encryption. The row "(b)" of ../shared/PEERS.md: a ventilator PUSHes n tasks
// over tcp://127.0.0.1 to W workers (PULL, compute square, PUSH) and a sink PULLs every result,
// checking each is right and comes once. Every role has its own ZeroMQ context (its own I/O
// thread), as separate processes would.
#pragma once

#include <cstdint>

#include "common/expected.h"

namespace taskmaster::bench {

// Tasks per second from the first task sent to the last result verified.
Expected<double> zmq_pipeline_tasks_per_s(unsigned workers, std::uint64_t n, std::uint64_t seed);

}  // namespace taskmaster::bench
