#include "protocol/endpoint.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <sys/un.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>

namespace taskmaster::protocol {
namespace {

constexpr std::uint64_t kMaxPort = 65535;

std::string expected_form(EndpointUse use) {
  return use == EndpointUse::Bind ? "expected HOST:PORT or tcp://HOST:PORT, e.g. tcp://0.0.0.0:5555 (port 0 picks a free port)"
                                  : "expected HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:5555";
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_host_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'; }

// Each check returns why its part is wrong, or "" when it is right.

std::string check_port(std::string_view port, EndpointUse use, std::uint64_t& number) {
  const bool bind = use == EndpointUse::Bind;
  if (port.empty()) return "no port after the ':'";
  if (port == "*") {
    if (!bind) return "port * (a free port) is only for binding: give the port the master listens on";
    number = 0;
    return "";
  }
  if (!std::all_of(port.begin(), port.end(), is_digit)) return "port " + quoted(port) + " is not a number";
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (ec != std::errc() || end != port.data() + port.size() || number > kMaxPort)
    return "port " + std::string(port) + " is out of range (" + (bind ? "0" : "1") + "-" + std::to_string(kMaxPort) + ")";
  if (number == 0 && !bind) return "port 0 is only for binding (it picks a free port): give the port the master listens on";
  return "";
}

std::string check_ipv6(std::string_view inside) {
  if (inside.empty()) return "the brackets hold no address: an IPv6 address goes in them, e.g. [::1]";
  std::string_view address = inside;
  if (const auto percent = inside.find('%'); percent != std::string_view::npos) {
    address = inside.substr(0, percent);
    const auto zone = inside.substr(percent + 1);
    if (zone.empty() || !std::all_of(zone.begin(), zone.end(), is_host_char))
      return "the zone after '%' in " + quoted("[" + std::string(inside) + "]") + " must be an interface name or number";
  }
  in6_addr a{};
  if (inet_pton(AF_INET6, std::string(address).c_str(), &a) != 1)
    return quoted("[" + std::string(inside) + "]") + " is not an IPv6 address";
  return "";
}

std::string check_host(std::string_view host, EndpointUse use) {
  const bool bind = use == EndpointUse::Bind;
  if (host.empty()) return bind ? "the host is empty (* binds every interface)" : "the host is empty";
  if (host == "*") {
    if (bind) return "";
    return "host * (every interface) is only for binding: give the master's host name or address";
  }
  if (host.find(':') != std::string_view::npos)
    return "the host " + quoted(host) + " has a ':' (an IPv6 address goes in brackets, e.g. tcp://[::1]:5555)";
  if (const auto bad = std::find_if_not(host.begin(), host.end(), is_host_char); bad != host.end())
    return quoted(host) + " is not a host name: " + quoted(std::string_view(&*bad, 1)) + " cannot be part of one";
  if (std::all_of(host.begin(), host.end(), [](char c) { return is_digit(c) || c == '.'; })) {
    in_addr a{};
    if (inet_pton(AF_INET, std::string(host).c_str(), &a) != 1)
      return quoted(host) + " is not an IPv4 address (four numbers 0-255, e.g. 10.0.0.5)";
    return "";
  }
  if (host.size() > 253) return "the host name is " + std::to_string(host.size()) + " bytes; the limit is 253";
  // libzmq binds to an address, `*` or an interface, never to a name it would have to look up.
  if (bind && if_nametoindex(std::string(host).c_str()) == 0)
    return quoted(host) +
           " is neither an IP address nor a network interface of this host: to bind, give an address of this host "
           "(e.g. 127.0.0.1), * for every interface, or an interface name such as lo";
  return "";
}

// HOST:PORT or [IPV6]:PORT, the part after tcp://.
Expected<std::string> parse_tcp(std::string_view authority, EndpointUse use) {
  auto fail = [use](const std::string& why) { return make_error(ErrorCode::BadField, why + "; " + expected_form(use)); };
  if (authority.empty()) return fail("no host and no port");
  std::string host;
  std::string_view port;
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("'[' without its ']'");
    const auto inside = authority.substr(1, close - 1);
    if (auto why = check_ipv6(inside); !why.empty()) return fail(why);
    const auto rest = authority.substr(close + 1);
    if (rest.empty()) return fail("no port: add one after the ']', e.g. [::1]:5555");
    if (rest.front() != ':') return fail("expected ':PORT' after the ']', not " + quoted(rest));
    host = "[" + std::string(inside) + "]";
    port = rest.substr(1);
  } else {
    const auto colon = authority.rfind(':');
    if (colon == std::string_view::npos) return fail("no port: add one, e.g. " + std::string(authority) + ":5555");
    const auto name = authority.substr(0, colon);
    if (auto why = check_host(name, use); !why.empty()) return fail(why);
    host = std::string(name);
    port = authority.substr(colon + 1);
  }
  std::uint64_t number = 0;
  if (auto why = check_port(port, use, number); !why.empty()) return fail(why);
  return "tcp://" + host + ":" + std::to_string(number);
}

Expected<std::string> parse_ipc(std::string_view path) {
  auto fail = [](const std::string& why) {
    return make_error(ErrorCode::BadField, why + "; expected ipc://PATH, e.g. ipc:///run/taskmaster.sock");
  };
  if (path.empty()) return fail("ipc:// needs the socket's path");
  if (path == "*") return fail("ipc://* (a random path) is not supported: peers could not find it");
  constexpr std::size_t kMaxPath = sizeof(sockaddr_un::sun_path) - 1;
  if (path.size() > kMaxPath)
    return fail("the path is " + std::to_string(path.size()) + " bytes; a Unix socket's path has at most " + std::to_string(kMaxPath));
  return "ipc://" + std::string(path);
}

}  // namespace

Expected<std::string> parse_endpoint(std::string_view text, EndpointUse use) {
  auto fail = [use](const std::string& why) { return make_error(ErrorCode::BadField, why + "; " + expected_form(use)); };
  if (text.empty()) return fail("the endpoint is empty");
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ') return fail("it contains a space");
    if (std::isspace(c) || std::iscntrl(c)) return fail("it contains a control character (a tab or a line break?)");
  }
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) {
    // tcp:HOST:PORT or tcp:/HOST:PORT: a scheme that lost a slash.
    const auto colon = text.find(':');
    if (colon != std::string_view::npos) {
      const std::string head = lower(text.substr(0, colon));
      if (head == "tcp" || head == "ipc") return fail("'" + head + ":' must be followed by '//': " + head + "://...");
    }
    return parse_tcp(text, use);
  }
  const std::string scheme = lower(text.substr(0, sep));
  const auto rest = text.substr(sep + 3);
  if (scheme == "tcp") return parse_tcp(rest, use);
  if (scheme == "ipc") return parse_ipc(rest);
  if (scheme == "inproc")
    return fail("inproc:// reaches only sockets of the same process, and the master and its peers are separate processes");
  if (scheme.empty()) return fail("nothing before '://'");
  return fail("unknown scheme " + quoted(std::string(text.substr(0, sep)) + "://") +
              ": taskmaster speaks tcp:// (or ipc:// within one host)");
}

bool is_ipv6_endpoint(std::string_view endpoint) { return endpoint.rfind("tcp://[", 0) == 0; }

}  // namespace taskmaster::protocol
