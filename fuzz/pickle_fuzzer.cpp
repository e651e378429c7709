// libFuzzer target: pickle::decode (pyman/pickle.h) on arbitrary bytes, within small limits; what it
// accepts must survive encode/decode and to_json/from_json unchanged, and what it refuses must be a
// one-line "pickle: ..." error. Input starting with '{' or '[' is also read as JSON for from_json.
// Seeds: fuzz/corpus/pickle (CPython's pickles of tests/pickle_vectors.py, and refused ones).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pyman/pickle.h"

namespace pickle = taskmaster::pickle;

static void check_error(const taskmaster::Error& e) {
  if (!e.message.starts_with("pickle: ") || e.message.find('\n') != std::string::npos) std::abort();
}

// v came from decode or from_json: every representation of it gives it back.
static void check_value(const pickle::Value& v, const pickle::Limits& limits) {
  (void)pickle::repr(v);
  const std::string once = pickle::encode(v);
  auto again = pickle::decode(once, limits);
  if (!again || !(*again == v)) std::abort();
  if (pickle::encode(*again) != once) std::abort();
  const auto j = pickle::to_json(v);
  auto back = pickle::from_json(nlohmann::json::parse(j.dump()), limits);
  if (!back || !(*back == v)) std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  pickle::Limits limits;
  limits.max_values = 1 << 14;
  limits.max_payload_bytes = 1 << 20;
  limits.max_depth = 64;
  auto v = pickle::decode(in, limits);
  if (v) {
    check_value(*v, limits);
  } else {
    check_error(v.error());
  }
  if (!in.empty() && (in[0] == '{' || in[0] == '[')) {
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || j.is_null()) return 0;
    auto fj = pickle::from_json(j, limits);
    if (fj) {
      check_value(*fj, limits);
    } else {
      check_error(fj.error());
    }
  }
  return 0;
}
