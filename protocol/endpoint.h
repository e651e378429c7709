// Endpoints as people type them (--bind, --connect, TASKMASTER_ADDRESS), checked and normalised
// before libzmq sees them: libzmq takes `tcp://HOST:99999` as some other port, refuses `HOST:PORT`
// without a scheme, and reports most other mistakes only as "Invalid argument" or not at all.
#pragma once

#include <string>
#include <string_view>

#include "common/expected.h"

namespace taskmaster::protocol {

enum class EndpointUse {
  Bind,     // the master's socket: `*` (every interface) and port 0 (a free port) are allowed
  Connect,  // a worker's or client's socket
};

// Accepts
//   HOST:PORT             the same as tcp://HOST:PORT
//   tcp://HOST:PORT       HOST: a name, an IPv4 address, or an IPv6 address in brackets
//                         ([::1], [fe80::1%eth0]); to bind, also `*` or a network interface name
//                         (e.g. lo). PORT: 1-65535; to bind, also 0 or `*` (a free port).
//   ipc://PATH            a Unix socket (one host only); `@NAME` is Linux's abstract namespace
// and returns the endpoint in the form libzmq takes: `tcp://HOST:PORT` (the port as a plain
// number, `*` as 0) or `ipc://PATH`; the scheme may be given in any case. Anything else fails with
// BadField and one line that says what is wrong and the form expected, e.g. "port 99999 is out of
// range (1-65535); expected HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:5555".
// inproc:// is refused: it reaches only sockets of the same process, and every taskmaster peer is a
// process of its own.
Expected<std::string> parse_endpoint(std::string_view text, EndpointUse use);

// True for a tcp:// endpoint whose host is an IPv6 address in brackets: its socket needs ZMQ_IPV6
// (without it, libzmq resolves IPv4 only and never reaches the address).
bool is_ipv6_endpoint(std::string_view endpoint);

}  // namespace taskmaster::protocol
