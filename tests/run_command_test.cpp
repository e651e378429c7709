// taskmaster run's pieces in-process: {} substitution, base64, reading an exec outcome.
#include "cli/run_command.h"

#include <doctest/doctest.h>

namespace taskmaster::cli {

TEST_CASE("run: {} is replaced in every argument, also inside a word, and the item is appended when absent") {
  using V = std::vector<std::string>;
  CHECK(substitute({"gzip", "-9", "{}"}, "a.log") == V{"gzip", "-9", "a.log"});
  CHECK(substitute({"cp", "{}", "backup/{}.bak"}, "x y") == V{"cp", "x y", "backup/x y.bak"});
  CHECK(substitute({"echo", "{}{}"}, "ab") == V{"echo", "abab"});
  CHECK(substitute({"echo", "-n"}, "item") == V{"echo", "-n", "item"});
  CHECK(substitute({"echo", "{", "}"}, "i") == V{"echo", "{", "}", "i"});  // only the pair counts
}

TEST_CASE("run: base64 decodes standard base64 and refuses anything else") {
  CHECK(base64_decode("") == std::string());
  CHECK(base64_decode("aGk=") == std::string("hi"));
  CHECK(base64_decode("aGVsbG8=") == std::string("hello"));
  CHECK(base64_decode("/wAB") == std::string("\xff\x00\x01", 3));
  CHECK_FALSE(base64_decode("a*b=").has_value());
  CHECK_FALSE(base64_decode("aG=k").has_value());
}

TEST_CASE("run: an exec outcome gives the raw output and the exit code as a shell would") {
  protocol::Outcome o;
  o.status = protocol::TaskState::Done;
  o.value = R"({"exit_code":3,"signal":0,"stdout":"out\n","stderr":"err"})";
  auto r = read_outcome(o);
  CHECK(r.ran);
  CHECK(r.code == 3);
  CHECK(r.out == "out\n");
  CHECK(r.err == "err");
  // Bytes that are not UTF-8 come in the *_base64 fields, which win over the text ones.
  o.value = R"({"exit_code":0,"signal":0,"stdout":"\ufffd","stdout_base64":"/wAB","stderr":""})";
  r = read_outcome(o);
  CHECK(r.out == std::string("\xff\x00\x01", 3));
  CHECK(r.code == 0);
  o.value = R"({"exit_code":-1,"signal":9,"stdout":"","stderr":""})";
  CHECK(read_outcome(o).code == 128 + 9);
  o.status = protocol::TaskState::Dead;
  o.value = "exec: timed out after 1000 ms";
  r = read_outcome(o);
  CHECK_FALSE(r.ran);
  CHECK(r.code == 1);
  CHECK(r.error == "exec: timed out after 1000 ms");
  o.status = protocol::TaskState::Done;
  o.value = "42";  // not an exec result
  CHECK_FALSE(read_outcome(o).ran);
}

}  // namespace taskmaster::cli
