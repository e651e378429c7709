// protocol::parse_endpoint: what people type for --bind, --connect and TASKMASTER_ADDRESS.
#include "protocol/endpoint.h"

#include "master/http.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace taskmaster {
namespace {

namespace proto = protocol;
using proto::EndpointUse;

struct Accepted {
  std::string text, normalised;
};

struct Refused {
  std::string text, why;  // `why`: a part of the message
};

void check_accepted(const std::vector<Accepted>& cases, EndpointUse use) {
  for (const auto& c : cases) {
    CAPTURE(c.text);
    CAPTURE(use == EndpointUse::Bind);
    auto r = proto::parse_endpoint(c.text, use);
    REQUIRE_MESSAGE(r.has_value(), r.error().message);
    CHECK(*r == c.normalised);
  }
}

std::string refusal(const std::string& text, EndpointUse use) {
  auto r = proto::parse_endpoint(text, use);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::BadField);
  return r.error().message;
}

TEST_SUITE("endpoint") {

TEST_CASE("endpoints both sides take, normalised to what libzmq takes") {
  const std::vector<Accepted> cases{
      {"127.0.0.1:5555", "tcp://127.0.0.1:5555"},
      {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"},
      {"TCP://10.0.0.5:5555", "tcp://10.0.0.5:5555"},
      {"127.0.0.1:05555", "tcp://127.0.0.1:5555"},
      {"10.0.0.5:1", "tcp://10.0.0.5:1"},
      {"10.0.0.5:65535", "tcp://10.0.0.5:65535"},
      {"tcp://[::1]:5555", "tcp://[::1]:5555"},
      {"[::1]:5555", "tcp://[::1]:5555"},
      {"tcp://[fe80::1%eth0]:5555", "tcp://[fe80::1%eth0]:5555"},
      {"tcp://[::ffff:10.0.0.5]:5555", "tcp://[::ffff:10.0.0.5]:5555"},
      {"ipc:///run/taskmaster.sock", "ipc:///run/taskmaster.sock"},
      {"ipc://relative.sock", "ipc://relative.sock"},
      {"ipc://@taskmaster", "ipc://@taskmaster"},
  };
  check_accepted(cases, EndpointUse::Connect);
  check_accepted(cases, EndpointUse::Bind);
}

TEST_CASE("connecting takes host names") {
  const std::vector<Accepted> cases{
      {"master:5555", "tcp://master:5555"},
      {"tcp://master-1.example.com:1", "tcp://master-1.example.com:1"},
      {"tcp://my_host:65535", "tcp://my_host:65535"},
      {"tcp://localhost:5555", "tcp://localhost:5555"},
      {"tcp://example.com.:5555", "tcp://example.com.:5555"},
  };
  check_accepted(cases, EndpointUse::Connect);
}

TEST_CASE("binding also takes * (every interface), port 0 or * (a free port) and interface names") {
  const std::vector<Accepted> cases{
      {"*:5555", "tcp://*:5555"},           {"tcp://*:0", "tcp://*:0"},
      {"tcp://*:*", "tcp://*:0"},           {"tcp://0.0.0.0:0", "tcp://0.0.0.0:0"},
      {"127.0.0.1:*", "tcp://127.0.0.1:0"}, {"tcp://[::]:0", "tcp://[::]:0"},
      {"tcp://lo:5555", "tcp://lo:5555"},
  };
  check_accepted(cases, EndpointUse::Bind);
}

TEST_CASE("connecting refuses what only binding means: *, port 0, port *") {
  CHECK(refusal("tcp://*:5555", EndpointUse::Connect).find("host * (every interface) is only for binding") == 0);
  CHECK(refusal("127.0.0.1:0", EndpointUse::Connect).find("port 0 is only for binding (it picks a free port)") == 0);
  CHECK(refusal("127.0.0.1:*", EndpointUse::Connect).find("port * (a free port) is only for binding") == 0);
}

TEST_CASE("binding refuses a host name: libzmq binds to addresses and interfaces only") {
  const auto m = refusal("tcp://localhost:5555", EndpointUse::Bind);
  CHECK(m.find("'localhost' is neither an IP address nor a network interface of this host") == 0);
  CHECK(m.find("127.0.0.1") != std::string::npos);
  CHECK(proto::parse_endpoint("tcp://localhost:5555", EndpointUse::Connect).has_value());
}

TEST_CASE("the refusal says what is wrong, then the form expected") {
  const std::string form = "; expected HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:5555";
  const std::vector<Refused> cases{
      {"", "the endpoint is empty"},
      {"tcp://127.0.0.1:99999", "port 99999 is out of range (1-65535)"},
      {"127.0.0.1:65536", "port 65536 is out of range (1-65535)"},
      {"127.0.0.1:99999999999999999999999", "port 99999999999999999999999 is out of range (1-65535)"},
      {"127.0.0.1:abc", "port 'abc' is not a number"},
      {"127.0.0.1:-1", "port '-1' is not a number"},
      {"127.0.0.1:+80", "port '+80' is not a number"},
      {"127.0.0.1:0x10", "port '0x10' is not a number"},
      {"tcp://127.0.0.1:5555/", "port '5555/' is not a number"},
      {"127.0.0.1:", "no port after the ':'"},
      {"127.0.0.1", "no port: add one, e.g. 127.0.0.1:5555"},
      {"tcp://master", "no port: add one, e.g. master:5555"},
      {"tcp://", "no host and no port"},
      {":5555", "the host is empty"},
      {"tcp://:5555", "the host is empty"},
      {"http://127.0.0.1:5555", "unknown scheme 'http://': taskmaster speaks tcp://"},
      {"udp://127.0.0.1:5555", "unknown scheme 'udp://'"},
      {"://127.0.0.1:5555", "nothing before '://'"},
      {"inproc://master", "inproc:// reaches only sockets of the same process"},
      {"tcp:127.0.0.1:5555", "'tcp:' must be followed by '//'"},
      {"tcp:/127.0.0.1:5555", "'tcp:' must be followed by '//'"},
      {"tcp://127.0.0.1 :5555", "it contains a space"},
      {" 127.0.0.1:5555", "it contains a space"},
      {"127.0.0.1:5555 ", "it contains a space"},
      {"127.0.0.1:5555\n", "it contains a control character"},
      {"127.0.0.1:\t5555", "it contains a control character"},
      {"::1:5555", "the host '::1' has a ':' (an IPv6 address goes in brackets, e.g. tcp://[::1]:5555)"},
      {"tcp://host:1:2", "the host 'host:1' has a ':'"},
      {"tcp://[::1:5555", "'[' without its ']'"},
      {"tcp://[::1]", "no port: add one after the ']'"},
      {"tcp://[::1]5555", "expected ':PORT' after the ']', not '5555'"},
      {"tcp://[]:5555", "the brackets hold no address"},
      {"tcp://[10.0.0.5]:5555", "'[10.0.0.5]' is not an IPv6 address"},
      {"tcp://[::1%]:5555", "the zone after '%'"},
      {"tcp://999.0.0.1:5555", "'999.0.0.1' is not an IPv4 address"},
      {"tcp://10.0.5:5555", "'10.0.5' is not an IPv4 address"},
      {"tcp://10.0.0.1;127.0.0.1:5555", "'10.0.0.1;127.0.0.1' is not a host name: ';' cannot be part of one"},
      {"tcp://user@host:5555", "'user@host' is not a host name: '@' cannot be part of one"},
      {"tcp://" + std::string(254, 'a') + ":5555", "the host name is 254 bytes; the limit is 253"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const auto m = refusal(c.text, EndpointUse::Connect);
    CHECK_MESSAGE(m.find(c.why) == 0, m);
    CHECK(m.find('\n') == std::string::npos);
    if (c.text.rfind("ipc", 0) != 0) CHECK_MESSAGE(m.size() > form.size(), m);
    if (c.text.rfind("ipc", 0) != 0) CHECK(m.substr(m.size() - form.size()) == form);
  }
}

TEST_CASE("binding's refusals show a bind example and allow port 0") {
  const auto m = refusal("tcp://127.0.0.1:99999", EndpointUse::Bind);
  CHECK(m ==
        "port 99999 is out of range (0-65535); expected HOST:PORT or tcp://HOST:PORT, e.g. tcp://0.0.0.0:5555 "
        "(port 0 picks a free port)");
  CHECK(refusal("tcp://:5555", EndpointUse::Bind).find("the host is empty (* binds every interface)") == 0);
}

TEST_CASE("ipc:// needs a path that fits a Unix socket address") {
  for (const auto use : {EndpointUse::Connect, EndpointUse::Bind}) {
    CHECK(refusal("ipc://", use).find("ipc:// needs the socket's path; expected ipc://PATH") == 0);
    CHECK(refusal("ipc://*", use).find("ipc://* (a random path) is not supported") == 0);
    CHECK(refusal("ipc:///" + std::string(107, 'x'), use).find("the path is 108 bytes; a Unix socket's path has at most 107") == 0);
    CHECK(proto::parse_endpoint("ipc:///" + std::string(106, 'x'), use).has_value());
  }
}

TEST_CASE("is_ipv6_endpoint: an IPv6 address in brackets") {
  CHECK(proto::is_ipv6_endpoint("tcp://[::1]:5555"));
  CHECK(proto::is_ipv6_endpoint("tcp://[::]:0"));
  CHECK_FALSE(proto::is_ipv6_endpoint("tcp://127.0.0.1:5555"));
  CHECK_FALSE(proto::is_ipv6_endpoint("tcp://*:5555"));
  CHECK_FALSE(proto::is_ipv6_endpoint("ipc:///tmp/[x]"));
}

}  // TEST_SUITE

TEST_SUITE("http endpoint") {

TEST_CASE("--http takes HOST:PORT, an IPv6 address in brackets, :PORT or PORT, and says what is wrong with anything else") {
  const auto ok = [](const char* text, const char* host, int port) {
    auto e = parse_http_endpoint(text);
    REQUIRE_MESSAGE(e.has_value(), text);
    CHECK(e->host == host);
    CHECK(e->port == port);
  };
  ok("127.0.0.1:8080", "127.0.0.1", 8080);
  ok("8080", "127.0.0.1", 8080);
  ok(":0", "127.0.0.1", 0);
  ok("0.0.0.0:9", "0.0.0.0", 9);
  ok("*:9", "0.0.0.0", 9);
  ok("[::1]:8080", "::1", 8080);
  ok("localhost:80", "localhost", 80);
  for (const char* bad : {"", "host:", "host:65536", "host:-1", "host:80x", "::1:80", "[::1]80", "[::1", "a b:80", "http://x:80"}) {
    auto e = parse_http_endpoint(bad);
    CHECK_MESSAGE(!e.has_value(), bad);
    if (!e) CHECK(e.error().message.find("--http") == 0);
  }
  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("::1"));
  CHECK_FALSE(is_loopback_host("0.0.0.0"));
  CHECK_FALSE(is_loopback_host("10.200.0.1"));
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
