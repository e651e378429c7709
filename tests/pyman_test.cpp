// pyman/wire.h (Python's connection framing and HMAC handshake) and master/value_queues.h, in process.
#include <doctest/doctest.h>

#include <string>

#include "master/value_queues.h"
#include "pyman/wire.h"
#include "support/temp_dir.h"

namespace taskmaster {

using namespace std::chrono;
using pyman::FrameReader;
using pyman::ServerHandshake;

namespace {

std::string unhex(std::string_view h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  return out;
}

// A frame's payload, or "" when none is complete; fails the test on an error.
std::string next_ok(FrameReader& r) {
  auto f = r.next();
  REQUIRE(f.has_value());
  return *f ? **f : std::string();
}

}  // namespace

TEST_SUITE("pyman wire") {

TEST_CASE("frames: 4-byte big-endian length, read across any cut, two in one read") {
  CHECK(pyman::frame("abc") == std::string("\0\0\0\3abc", 7));
  const std::string two = pyman::frame("hello") + pyman::frame("");
  FrameReader r(100);
  for (char c : two.substr(0, 8)) {
    CHECK(next_ok(r).empty());
    r.feed(std::string_view(&c, 1));
  }
  r.feed(two.substr(8));
  CHECK(next_ok(r) == "hello");
  auto empty = r.next();
  REQUIRE(empty.has_value());
  REQUIRE(empty->has_value());
  CHECK((*empty)->empty());
  CHECK(r.buffered() == 0);
}

TEST_CASE("frames: the -1 + 8-byte length form is read, too big or negative lengths are errors") {
  FrameReader r(100);
  r.feed(std::string("\xff\xff\xff\xff\0\0\0\0\0\0\0\2ok", 14));
  CHECK(next_ok(r) == "ok");
  FrameReader big(10);
  big.feed(std::string("\0\0\0\x0b", 4));
  auto e = big.next();
  REQUIRE(!e.has_value());
  CHECK(e.error().code == ErrorCode::TooLarge);
  FrameReader huge(10);
  huge.feed(std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 12));
  CHECK(!huge.next().has_value());
  FrameReader negative(10);
  negative.feed("\xff\xff\xff\xfe");
  auto n = negative.next();
  REQUIRE(!n.has_value());
  CHECK(n.error().code == ErrorCode::BadFrame);
}

TEST_CASE("HMAC: RFC 2104 and RFC 4231 vectors, an unknown digest is none") {
  const std::string key(16, '\x0b');
  CHECK(pyman::hmac("md5", key, "Hi There") == unhex("9294727a3638bb1c13f48ef8158bfc9d"));
  CHECK(pyman::hmac("sha256", std::string(20, '\x0b'), "Hi There") ==
        unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
  CHECK(!pyman::hmac("sha1", key, "x"));
}

TEST_CASE("handshake with a Python 3.11 client: bare HMAC-MD5 both ways") {
  ServerHandshake h("abc");
  const std::string ch = h.challenge();
  REQUIRE(ch.starts_with("#CHALLENGE#{sha256}"));
  CHECK(ch.size() == 11 + 8 + 40);
  auto s = h.on_frame(*pyman::hmac("md5", "abc", ch.substr(11)));  // 3.11 answers the whole text
  CHECK(s.state == ServerHandshake::State::More);
  CHECK(s.send == std::vector<std::string>{"#WELCOME#"});
  const std::string mine(20, 'r');
  s = h.on_frame("#CHALLENGE#" + mine);
  REQUIRE(s.send.size() == 1);
  CHECK(s.send[0] == *pyman::hmac("md5", "abc", mine));
  CHECK(h.on_frame("#WELCOME#").state == ServerHandshake::State::Done);
}

TEST_CASE("handshake with a Python 3.12+ client: {sha256} both ways, a wrong key gets #FAILURE#") {
  ServerHandshake h("abc");
  const std::string ch = h.challenge().substr(11);
  CHECK(h.on_frame("{sha256}" + *pyman::hmac("sha256", "abc", ch)).send == std::vector<std::string>{"#WELCOME#"});
  const std::string mine = "{sha256}" + std::string(40, 'q');
  auto s = h.on_frame("#CHALLENGE#" + mine);
  REQUIRE(s.send.size() == 1);
  CHECK(s.send[0] == "{sha256}" + *pyman::hmac("sha256", "abc", mine));
  CHECK(h.on_frame("#FAILURE#").state == ServerHandshake::State::Failed);

  ServerHandshake wrong("abc");
  const std::string c2 = wrong.challenge().substr(11);
  auto f = wrong.on_frame("{sha256}" + *pyman::hmac("sha256", "not abc", c2));
  CHECK(f.state == ServerHandshake::State::Failed);
  CHECK(f.send == std::vector<std::string>{"#FAILURE#"});
  ServerHandshake downgrade("abc");  // a digest the server does not know, or garbage
  (void)downgrade.challenge();
  CHECK(downgrade.on_frame("{sha1}0123456789012345678901").state == ServerHandshake::State::Failed);
}

}  // TEST_SUITE

TEST_SUITE("value queues") {

using Kind = ValueQueues::Reply::Kind;
const ValueQueues::Peer kA{false, "a", 1, 0}, kB{false, "b", 2, 0}, kPy{true, {}, 0, 7};

TEST_CASE("FIFO, an empty get with no wait is Empty, a parked get is answered by the next put or its timeout") {
  ValueQueues q(nullptr);
  const auto t0 = Clock::now();
  q.get(kA, "q", milliseconds(0), t0);
  auto r = q.commit();
  REQUIRE(r.size() == 1);
  CHECK(r[0].kind == Kind::Empty);
  q.put(kA, "q", "1", t0);
  q.put(kA, "q", "2", t0);
  CHECK(q.depth("q") == 2);
  q.get(kB, "q", std::nullopt, t0);
  r = q.commit();
  REQUIRE(r.size() == 3);
  CHECK(r[2].kind == Kind::Value);
  CHECK(r[2].value == "1");
  q.get(kB, "q", milliseconds(0), t0);
  q.get(kPy, "q", milliseconds(500), t0);  // parked
  CHECK(q.commit().size() == 1);
  CHECK(q.next_deadline() == t0 + milliseconds(500));
  q.turn(t0 + milliseconds(400));
  CHECK(q.commit().empty());
  q.turn(t0 + milliseconds(500));
  r = q.commit();
  REQUIRE(r.size() == 1);
  CHECK(r[0].kind == Kind::Empty);
  CHECK(r[0].peer.conn == 7);
  q.get(kPy, "q", std::nullopt, t0);
  q.put(kA, "q", "\"late\"", t0);
  r = q.commit();
  REQUIRE(r.size() == 2);
  CHECK(r[0].kind == Kind::Value);  // the waiting get first, then the put's answer
  CHECK(r[0].value == "\"late\"");
  CHECK(r[1].kind == Kind::Put);
  CHECK(q.depth("q") == 0);
}

TEST_CASE("a closed connection's parked get is forgotten, a value given back is first again") {
  ValueQueues q(nullptr);
  const auto t0 = Clock::now();
  q.get(kPy, "q", std::nullopt, t0);
  q.forget_python(7);
  q.put(kA, "q", "1", t0);
  q.put(kA, "q", "2", t0);
  (void)q.commit();
  CHECK(q.depth("q") == 2);
  q.get(kA, "q", milliseconds(0), t0);
  auto r = q.commit();
  q.give_back("q", r[0].value);
  q.get(kA, "q", milliseconds(0), t0);
  r = q.commit();
  REQUIRE(r.size() == 1);
  CHECK(r[0].value == "1");
}

TEST_CASE("bounds and checks: bad name, too big, full, refused by the check") {
  ValueQueues q(nullptr, ValueQueues::Limits{10, 5, 1});
  q.set_check([](const std::string& j) -> std::optional<std::string> {
    if (j == "0") return "no zero";
    return std::nullopt;
  });
  const auto t0 = Clock::now();
  q.put(kA, "bad name", "1", t0);
  q.put(kA, "q", "123456", t0);
  q.put(kA, "q", "0", t0);
  q.put(kA, "q", "12345", t0);
  q.put(kA, "q", "12345", t0);
  q.put(kA, "q", "1", t0);
  q.get(kB, "w", std::nullopt, t0);
  q.get(kB, "w", std::nullopt, t0);
  const auto r = q.commit();
  REQUIRE(r.size() == 7);
  CHECK(r[0].kind == Kind::Failed);
  CHECK(r[0].code == ErrorCode::BadField);
  CHECK(r[1].kind == Kind::Failed);
  CHECK(r[2].error == "no zero");
  CHECK(r[3].kind == Kind::Put);
  CHECK(r[4].kind == Kind::Put);
  CHECK(r[5].kind == Kind::Full);
  CHECK(r[6].kind == Kind::Failed);  // a second waiting get is over max_waiting
  CHECK(q.status()["q"]["depth"] == 2);
  CHECK(q.status()["w"]["waiting"] == 1);
}

TEST_CASE("values are in the journal once committed, gets remove them, and a new master replays them in order") {
  test::TempDir dir;
  const auto t0 = Clock::now();
  {
    Journal j(dir.path());
    ValueQueues q(&j);
    for (const char* v : {"1", "\"two\"", "[3]"}) q.put(kA, "q", v, t0);
    q.put(kA, "other", "null", t0);
    CHECK(q.commit().size() == 4);
    q.get(kA, "q", milliseconds(0), t0);
    CHECK(q.commit()[0].value == "1");
  }
  Journal j(dir.path());
  ValueQueues q(&j);
  q.load();
  CHECK(q.depth("q") == 2);
  CHECK(q.depth("other") == 1);
  q.get(kA, "q", milliseconds(0), t0);
  q.get(kA, "q", milliseconds(0), t0);
  const auto r = q.commit();
  REQUIRE(r.size() == 2);
  CHECK(r[0].value == "\"two\"");
  CHECK(r[1].value == "[3]");
}

}  // TEST_SUITE

}  // namespace taskmaster
