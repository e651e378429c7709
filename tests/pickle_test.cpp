// Tests of the safe pickle subset (pyman/pickle.h) against the real CPython (/usr/bin/python3 and
// tests/pickle_vectors.py): every vector CPython pickles with protocols 0 to 5 decodes to what CPython
// says it is, and what encode() writes CPython loads back to the same; against hostile input (globals
// off the allow-list, truncation, huge lengths, deep nesting, memo bombs: each a one-line error); and
// the JSON mapping both ways.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pyman/pickle.h"
#include "support/temp_dir.h"

namespace taskmaster::pickle {
namespace {

using nlohmann::json;
using namespace std::literals;

const std::string kScript = std::string(TASKMASTER_SOURCE_DIR) + "/tests/pickle_vectors.py";

// /usr/bin/python3 tests/pickle_vectors.py MODE < input: its stdout.
std::string python(const std::string& mode, const std::string& input = "") {
  test::TempDir dir;
  { std::ofstream(dir.path("in")) << input; }
  const std::string cmd = "/usr/bin/python3 " + kScript + " " + mode + " < " + dir.path("in");
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  REQUIRE(::pclose(p) == 0);
  return out;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string hex(std::string_view s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const char c : s) {
    out += kDigits[static_cast<unsigned char>(c) >> 4];
    out += kDigits[static_cast<unsigned char>(c) & 15];
  }
  return out;
}

std::string unhex(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) out += static_cast<char>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16));
  return out;
}

struct Vector {
  std::string pickle;
  json expected;
};

std::vector<Vector> cpython_vectors() {
  std::vector<Vector> out;
  for (const auto& line : lines(python("dump"))) {
    const auto space = line.find(' ');
    out.push_back({unhex(line.substr(0, space)), json::parse(line.substr(space + 1))});
  }
  return out;
}

Value decoded(std::string_view data, const Limits& limits = {}) {
  auto v = decode(data, limits);
  INFO(hex(data));
  REQUIRE_MESSAGE(v.has_value(), v.error().message);
  return std::move(v).value();
}

// The error decode() gives, which must be one line starting "pickle: ".
std::string refusal(std::string_view data, const Limits& limits = {}) {
  auto v = decode(data, limits);
  INFO(hex(data));
  REQUIRE_FALSE(v.has_value());
  const auto& message = v.error().message;
  CHECK(message.starts_with("pickle: "));
  CHECK(message.find('\n') == std::string::npos);
  return message;
}

struct Refusal {
  std::string_view pickle;
  std::string_view message;  // a part of the error message, or (whole) all of it
  bool whole = false;
};
void check_refusals(const std::vector<Refusal>& cases) {
  for (const auto& c : cases) {
    const auto message = refusal(c.pickle);
    INFO(message);
    if (c.whole) {
      CHECK(message == c.message);
    } else {
      CHECK(message.find(c.message) != std::string::npos);
    }
  }
}

TEST_SUITE("pickle") {

TEST_CASE("every CPython vector, protocols 0 to 5, decodes to its value, and encode() writes what CPython loads back to it") {
  const auto vectors = cpython_vectors();
  REQUIRE(vectors.size() > 500);
  std::string encoded;
  for (const auto& v : vectors) {
    const Value value = decoded(v.pickle);
    INFO(hex(v.pickle));
    CHECK(to_json(value).dump() == v.expected.dump());
    // to_json/from_json and decode/encode are each lossless on it.
    auto back = from_json(to_json(value));
    REQUIRE_MESSAGE(back.has_value(), back.error().message);
    CHECK(*back == value);
    const auto again = encode(value);
    CHECK(decoded(again) == value);
    encoded += hex(again) + "\n";
  }
  const auto loaded = lines(python("load", encoded));
  REQUIRE(loaded.size() == vectors.size());
  for (std::size_t i = 0; i < vectors.size(); ++i) {
    INFO(hex(vectors[i].pickle));
    INFO(loaded[i]);
    REQUIRE_FALSE(loaded[i].starts_with("ERROR"));
    CHECK(json::parse(loaded[i]).dump() == vectors[i].expected.dump());
  }
}

TEST_CASE("the managers replies built with the constructors load in CPython as the expected objects") {
  const std::vector<std::pair<Value, std::string>> cases = {
      {tuple({str("#ERROR"), exception("queue", "Empty", {})}),
       R"({"$tuple":["#ERROR",{"$object":{"args":[],"class":["_queue","Empty"]}}]})"},
      {tuple({str("#ERROR"), exception("queue", "Full", {})}), R"({"$tuple":["#ERROR",{"$object":{"args":[],"class":["queue","Full"]}}]})"},
      {tuple({str("#ERROR"), exception("builtins", "KeyError", {str("x")})}),
       R"({"$tuple":["#ERROR",{"$object":{"args":["x"],"class":["builtins","KeyError"]}}]})"},
      {tuple({str("#RETURN"), tuple({str("7f3a"), tuple({str("put"), str("get")})})}),
       R"({"$tuple":["#RETURN",{"$tuple":["7f3a",{"$tuple":["put","get"]}]}]})"},
      {tuple({str("#RETURN"), none()}), R"({"$tuple":["#RETURN",null]})"},
      {tuple({str("#TRACEBACK"), str("Traceback: boom\n")}), R"({"$tuple":["#TRACEBACK","Traceback: boom\n"]})"},
      {tuple({str("#PROXY"), tuple({list({str("put")}), token("Queue", tuple({str("127.0.0.1"), integer(5000)}), "7f3a")})}),
       R"({"$tuple":["#PROXY",{"$tuple":[["put"],{"$object":{"args":[],"class":["multiprocessing.managers","Token"],"newobj":true,"state":{"$tuple":["Queue",{"$tuple":["127.0.0.1",5000]},"7f3a"]}}}]}]})"},
      {tuple({big_integer("-123456789012345678901234567890"), big_integer("9223372036854775808"),
              integer(std::numeric_limits<std::int64_t>::min())}),
       R"({"$tuple":[{"$int":"-123456789012345678901234567890"},{"$int":"9223372036854775808"},-9223372036854775808]})"},
  };
  std::string input;
  for (const auto& [value, expected] : cases) input += hex(encode(value)) + "\n";
  const auto loaded = lines(python("load", input));
  REQUIRE(loaded.size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO(repr(cases[i].first));
    CHECK(json::parse(loaded[i]) == json::parse(cases[i].second));
  }
}

TEST_CASE("globals off the allow-list are refused by name, whatever the opcode") {
  check_refusals({
      // GLOBAL (protocol 0-3), as pickle.dumps(os.system, 0) writes it.
      {"cos\nsystem\n(S'echo hi'\ntR."sv, "pickle: global 'os.system' is not allowed", true},
      {"\x80\x02"
       "cposix\nsystem\nq\x00."sv,
       "pickle: global 'posix.system' is not allowed", true},
      // STACK_GLOBAL (protocol 4-5).
      {"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94."sv, "pickle: global 'os.system' is not allowed", true},
      {"\x80\x04\x8c\x08"
       "builtins\x8c\x04"
       "eval\x93."sv,
       "pickle: global 'builtins.eval' is not allowed", true},
      {"c__builtin__\neval\n."sv, "pickle: global 'builtins.eval' is not allowed", true},
      // Names from the input are escaped: the message stays one line (found by the fuzzer).
      {"\x80\x04\x8c\x02os\x8c\x08sys\ntem\n\x93."sv, "pickle: global 'os.sys\\x0atem\\x0a' is not allowed", true},
      {"csubprocess\nPopen\n."sv, "pickle: global 'subprocess.Popen' is not allowed", true},
      {"cbuiltins\ngetattr\n."sv, "pickle: global 'builtins.getattr' is not allowed", true},
      {"cmultiprocessing.managers\nRebuildProxy\n."sv, "pickle: global 'multiprocessing.managers.RebuildProxy' is not allowed", true},
      // The evaluated constructors only with the arguments pickle itself writes.
      {"c_codecs\nencode\n(Vab\nVrot13\ntR."sv, "_codecs.encode is allowed only as (str, 'latin1')"},
      {"c_codecs\nencode\n."sv, "pickle: global '_codecs.encode' is allowed only as a constructor", true},
      {"ccopyreg\n_reconstructor\n(cbuiltins\nobject\ncbuiltins\nobject\nNtR."sv, "copyreg._reconstructor is allowed only"},
      {"cbuiltins\nobject\n)R."sv, "REDUCE on builtins.object"},
      // REDUCE on something that is not a global; NEWOBJ on a constructor; NEWOBJ_EX with keywords.
      {"\x80\x02K\x01)R."sv, "REDUCE on a int"},
      {"\x80\x02"
       "c_codecs\nencode\n)\x81."sv,
       "NEWOBJ on something not an allowed class"},
      {"\x80\x04\x8c\x05queue\x8c\x05"
       "Empty\x93)}K\x01K\x02s\x92."sv,
       "keyword arguments"},
      // Opcodes outside the subset.
      {"\x80\x04\x8f."sv, "sets are not supported"},
      {"(K\x01\x91."sv, "sets are not supported"},
      {"Pid\n."sv, "PERSID"},
      {"(ios\nsystem\n."sv, "INST"},
      {"\x80\x02\x82\x01."sv, "EXT1"},
      {"S'abc'\n."sv, "STRING"},
      {"\x80\x05\x97."sv, "NEXT_BUFFER"},
      {"\xff"sv, "0xff"},
      {"\x80\x06N."sv, "pickle: unsupported protocol 6", true},
  });
}

TEST_CASE("an error message is valid UTF-8 however the name in it was cut") {
  // A global whose module name puts a 2-byte character across the message's 80-byte cut: the message
  // must still make a Python str (the listener sends it in a #TRACEBACK; this stopped the master).
  const std::string input =
      "\x80\x04"
      "c" +
      std::string(79, 'a') + "\xc3\xa9\nx\n.";
  const auto r = decode(input);
  REQUIRE(!r);
  CHECK(r.error().message.find("is not allowed") != std::string::npos);
  CHECK_NOTHROW(str(r.error().message));
  CHECK(r.error().message.find("\\xc3") != std::string::npos);  // escaped, not cut
  CHECK_NOTHROW(str("Traceback: " + r.error().message));
}

TEST_CASE("truncated and malformed input is refused at every length, never crashes") {
  // Every prefix of every CPython vector is an error (or, for a prefix that is itself a pickle, a value).
  for (const auto& v : cpython_vectors()) {
    const std::size_t step = v.pickle.size() > 1000 ? 97 : 1;  // the few long ones: a sample of their prefixes
    for (std::size_t n = 0; n < v.pickle.size(); n += step) {
      const auto r = decode(std::string_view(v.pickle).substr(0, n));
      if (!r) CHECK(r.error().message.starts_with("pickle: "));
    }
  }
  check_refusals({
      {""sv, "pickle: truncated: no STOP", true},
      {"N"sv, "pickle: truncated: no STOP", true},
      {"."sv, "pickle: stack underflow at byte 1", true},
      {"NN.x"sv, "pickle: bytes after STOP at byte 2", true},
      {"\x80\x02X\x05\x00\x00\x00"
       "ab."sv,
       "truncated in BINUNICODE"},
      {"\x80\x02X\x02\x00\x00\x00\xc3(."sv, "not valid UTF-8"},
      {"\x80\x02X\x03\x00\x00\x00\xed\xa0\x80."sv, "not valid UTF-8"},  // a lone surrogate
      {"V\\ud800\n."sv, "lone surrogates"},
      {"U\x01\xff."sv, "not ASCII"},
      {"Iabc\n."sv, "bad INT operand"},
      {"I007\n."sv, "bad INT operand"},
      {"F1.5x\n."sv, "bad FLOAT operand"},
      {"h\x05."sv, "memo entry 5 not found"},
      {"j\xff\xff\xff\x7f."sv, "memo entry 2147483647 not found"},
      {"q\x00."sv, "stack underflow"},
      {"e."sv, "no MARK"},
      {"K\x01K\x02"
       "a."sv,
       "APPEND to a int"},
      {"]K\x01K\x02s."sv, "SETITEM on a list"},
      {"}]K\x01s."sv, "unhashable dict key of type list"},
      {"}(]tK\x01s."sv, "unhashable dict key of type list"},
      {"(K\x01"
       "d."sv,
       "odd number"},
      {"K\x01K\x02"
       "b."sv,
       "BUILD on a int"},
      {"]q\x00h\x00"
       "a."sv,
       "pickle: recursive structures are not supported", true},
  });
}

TEST_CASE("huge lengths, deep nesting and memo bombs stop at the limits with TooLarge") {
  auto too_large = [](std::string_view data, const Limits& limits = {}) {
    const auto r = decode(data, limits);
    INFO(hex(data));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == ErrorCode::TooLarge);
    CHECK(r.error().message.starts_with("pickle: "));
    return r.error().message;
  };
  // Lengths far beyond the input: no allocation of what they claim.
  CHECK(too_large("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f."sv).find("BINUNICODE8 of 9223372036854775807 bytes") != std::string::npos);
  CHECK(too_large("\x80\x04\x8e\x00\x00\x00\x80\x00\x00\x00\x00."sv).find("BINBYTES8") != std::string::npos);
  CHECK(too_large("\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00N."sv).find("FRAME") != std::string::npos);
  CHECK(too_large("\x80\x02X\xff\xff\xff\xff."sv).find("BINUNICODE of 4294967295 bytes") != std::string::npos);
  CHECK(refusal("\x80\x02X\x00\x01\x00\x00."sv).find("truncated in BINUNICODE") != std::string::npos);  // 64 KiB: under the limit
  CHECK(too_large("\x80\x02\x8b\x00\x00\x00\x7f."sv).find("int of 2130706432 bytes") != std::string::npos);
  CHECK(refusal("\x80\x02\x8b\xff\xff\xff\xff."sv) == "pickle: negative LONG4 length at byte 7");
  CHECK(too_large("L" + std::string(5000, '9') + "L\n.").find("LONG line longer than") != std::string::npos);
  // Deep nesting: by MARKs, by TUPLE1 and by appending lists into each other through the memo.
  CHECK(too_large(std::string(1000, '(') + ".").find("MARKs nested deeper than 100") != std::string::npos);
  std::string tuples = "N" + std::string(100000, '\x85') + ".";
  CHECK(too_large(tuples).find("nesting deeper than 100") != std::string::npos);
  std::string chain;  // lists L0..L199, then L[i].append(L[i+1]): depth 200 without any deep stack
  for (int i = 0; i < 200; ++i) chain += "]r" + std::string(reinterpret_cast<const char*>(&i), 4) + "0";
  for (int i = 0; i < 199; ++i) {
    const int j = i + 1;
    chain += "j" + std::string(reinterpret_cast<const char*>(&i), 4) + "j" + std::string(reinterpret_cast<const char*>(&j), 4) + "a0";
  }
  const int zero = 0;
  chain += "j" + std::string(reinterpret_cast<const char*>(&zero), 4) + ".";
  CHECK(too_large(chain).find("nesting deeper than 100") != std::string::npos);
  // A billion laughs: a list of 10 references to a list of 10 references to ... 30 levels deep.
  std::string laughs;
  laughs = std::string(
               "\x80\x02"
               "Bx\x00\x00\x00",
               7) +
           std::string(120, 'x') + std::string("q\x00", 2);
  for (int level = 1; level <= 30; ++level) {
    laughs += "(";
    for (int k = 0; k < 10; ++k) laughs += "h" + std::string(1, static_cast<char>(level - 1));
    laughs += std::string("tq") + static_cast<char>(level);
  }
  laughs += ".";
  CHECK(too_large(laughs).find("memo references count each time") != std::string::npos);
  CHECK(too_large("L" + std::string(3000, '9') + "L\n.").find("int of 3000 digits is over 1024 bytes") != std::string::npos);
  const auto huge_int = from_json(json{{"$int", std::string(100000, '7')}});
  REQUIRE_FALSE(huge_int.has_value());
  CHECK(huge_int.error().code == ErrorCode::TooLarge);
  // A million values from a megabyte: refused at max_values (262,144), not built.
  CHECK(too_large("\x80\x02" + std::string(1000000, ']') + ".").find("more than 262144 values") != std::string::npos);
  // Smaller limits apply.
  Limits small;
  small.max_input_bytes = 10;
  CHECK(too_large("\x80\x02X\x05\x00\x00\x00"
                  "abcde."sv,
                  small)
            .find("input of 13 bytes is over 10") != std::string::npos);
  small = {};
  small.max_values = 100;
  CHECK(too_large("\x80\x02](" + std::string(200, 'N') + "e.", small).find("more than 100 values") != std::string::npos);
  small = {};
  small.max_memo = 3;
  CHECK(too_large("\x80\x04N\x94\x94\x94\x94."sv, small).find("more than 3 memo entries") != std::string::npos);
  small = {};
  small.max_int_bytes = 8;
  CHECK(too_large("\x80\x02\x8a\x09" + std::string(9, '\x01') + ".", small).find("int of 9 bytes is over 8") != std::string::npos);
}

TEST_CASE("decode follows Python for dict keys, ints, floats and bools of protocol 0") {
  // Equal keys (1 == 1.0 == True) keep the first key and the last value.
  const Value d = decoded("}(K\x01Va\nG?\xf0\x00\x00\x00\x00\x00\x00Vb\n\x88Vc\nK\x02Vd\nu."sv);
  REQUIRE(d.entries.size() == 2);
  CHECK(d.entries[0].first == integer(1));
  CHECK(d.entries[0].second == str("c"));
  CHECK(d.entries[1].first == integer(2));
  CHECK(decoded("I01\n."sv) == boolean(true));
  CHECK(decoded("I00\n."sv) == boolean(false));
  CHECK(decoded("I-5\n."sv) == integer(-5));
  CHECK(decoded("L-9223372036854775809L\n."sv) == big_integer("-9223372036854775809"));
  CHECK(decoded("Finf\n."sv) == real(std::numeric_limits<double>::infinity()));
  CHECK(decoded("\x80\x02\x8a\x00."sv) == integer(0));
  CHECK(decoded("\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."sv) == integer(std::numeric_limits<std::int64_t>::min()));
  CHECK(decoded("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00."sv) == big_integer("9223372036854775808"));
  CHECK(decoded("\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff."sv) == big_integer("-9223372036854775809"));
  // Shared values are copied; a pickle with a bytearray decodes to bytes.
  const Value shared = decoded(
      "\x80\x02]q\x00K\x01"
      "ah\x00h\x00\x86."sv);
  CHECK(shared == tuple({list({integer(1)}), list({integer(1)})}));
  CHECK(repr(decoded("\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00xy."sv)) == "b'xy'");
}

TEST_CASE("the constructors keep the invariants") {
  CHECK_THROWS_AS(str("\xff"), ValueError);
  CHECK_THROWS_AS(big_integer("12a"), ValueError);
  CHECK_THROWS_AS(big_integer("007"), ValueError);
  CHECK_THROWS_AS(global("os", "system"), ValueError);
  CHECK_THROWS_AS(object("builtins", "eval", {str("1")}), ValueError);
  CHECK_THROWS_AS(dict({{list({}), none()}}), ValueError);
  CHECK(big_integer("-0") == integer(0));
  CHECK(big_integer("9223372036854775807") == integer(std::numeric_limits<std::int64_t>::max()));
  CHECK(big_integer("-9223372036854775808") == integer(std::numeric_limits<std::int64_t>::min()));
  CHECK(big_integer("9223372036854775808").kind == Kind::BigInt);
  CHECK(big_integer("+12") == integer(12));
  CHECK(dict({{integer(1), str("a")}, {boolean(true), str("b")}, {real(2.0), str("c")}, {integer(2), str("d")}}) ==
        dict({{integer(1), str("b")}, {real(2.0), str("d")}}));
  Value bad = str("x");
  bad.text = "\xff";
  CHECK_THROWS_AS(encode(bad), ValueError);
  Value evil = exception("queue", "Empty", {});
  evil.module = "os";
  evil.name = "system";
  CHECK_THROWS_AS(encode(evil), ValueError);
  CHECK(repr(tuple({str("#ERROR"), exception("builtins", "KeyError", {str("x")})})) == "('#ERROR', KeyError('x'))");
  CHECK(repr(tuple({str("it's"), bytes(std::string("\x00\n", 2)), real(1e16), real(0.0001), real(1.5e-7), integer(-3)})) ==
        "(\"it's\", b'\\x00\\n', 1e+16, 0.0001, 1.5e-07, -3)");
}

TEST_CASE("JSON mapping: tagged values, escaping of dollar keys, and refusals") {
  const Value all = list({none(), boolean(false), integer(-7), big_integer("123456789012345678901234567890"), real(0.5),
                          real(std::numeric_limits<double>::quiet_NaN()), real(-std::numeric_limits<double>::infinity()), str("é"),
                          bytes(std::string("\x00\xff", 2)), tuple({}), tuple({integer(1)}), dict({}), dict({{str("$tuple"), list({})}}),
                          dict({{str("$x"), integer(1)}, {str("y"), integer(2)}}), dict({{tuple({integer(1), none()}), bytes("k")}}),
                          global("queue", "Empty"), exception("builtins", "KeyError", {str("x")}),
                          token("Queue", tuple({str("h"), integer(1)}), "id")});
  const json j = to_json(all);
  CHECK(j[3] == json::parse(R"({"$int":"123456789012345678901234567890"})"));
  CHECK(j[5] == json::parse(R"({"$float":"nan"})"));
  CHECK(j[8] == json::parse(R"({"$bytes":"AP8="})"));
  CHECK(j[10] == json::parse(R"({"$tuple":[1]})"));
  CHECK(j[12] == json::parse(R"({"$dict":[["$tuple",[]]]})"));
  CHECK(j[13] == json::parse(R"({"$x":1,"y":2})"));
  CHECK(j[14] == json::parse(R"({"$dict":[[{"$tuple":[1,null]},{"$bytes":"aw=="}]]})"));
  CHECK(j[15] == json::parse(R"({"$global":["queue","Empty"]})"));
  auto back = from_json(json::parse(j.dump()));
  REQUIRE_MESSAGE(back.has_value(), back.error().message);
  CHECK(*back == all);
  // What JSON loses: the order of a dict's keys (JSON objects are written sorted; docs/PYTHON.md).
  const Value unordered = dict({{str("b"), integer(1)}, {str("a"), integer(2)}});
  const Value sorted = *from_json(to_json(unordered));
  CHECK(sorted == unordered);
  CHECK(sorted.entries[0].first == str("a"));
  const Value tagged_order = dict({{integer(2), none()}, {integer(1), none()}});
  CHECK(from_json(to_json(tagged_order))->entries[0].first == integer(2));
  // Any JSON is a value: an unsigned beyond int64 is a big int, an object a dict.
  CHECK(*from_json(json::parse("18446744073709551615")) == big_integer("18446744073709551615"));
  CHECK(*from_json(json::parse(R"({"b":[1,2.5,"x"]})")) == dict({{str("b"), list({integer(1), real(2.5), str("x")})}}));
  auto bad = [](const char* text) {
    const auto r = from_json(json::parse(text));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.starts_with("pickle: "));
    return r.error().message;
  };
  CHECK(bad(R"({"$set":[1]})").find("unknown tag \"$set\"") != std::string::npos);
  CHECK(bad(R"({"$bytes":"AP8"})").find("base64") != std::string::npos);
  CHECK(bad(R"({"$bytes":"AP9="})").find("base64") != std::string::npos);  // non-canonical padding bits
  CHECK(bad(R"({"$int":"12x"})").find("$int") != std::string::npos);
  CHECK(bad(R"({"$global":["os","system"]})") == "pickle: global 'os.system' is not allowed");
  CHECK(bad(R"({"$object":{"class":["builtins","eval"],"args":["1"]}})") == "pickle: global 'builtins.eval' is not allowed");
  CHECK(bad(R"({"$object":{"class":["queue","Empty"],"args":[],"extra":1}})").find("unknown field") != std::string::npos);
  CHECK(bad(R"({"$dict":[[[1],2]]})").find("unhashable") != std::string::npos);
  CHECK(bad(R"({"$float":"1.5"})").find("$float") != std::string::npos);
  std::string deep(200, '[');
  deep += std::string(200, ']');
  const auto r = from_json(json::parse(deep));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == ErrorCode::TooLarge);
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster::pickle
