// libFuzzer target: protocol::decode on arbitrary frames, then encode/decode of what it accepts;
// and the body read into a JsonDoc against nlohmann's DOM (same acceptance, same dump).
// Input: "COMMAND\nBODY" (frame 0 is the signature), or, starting with '!', frames separated by
// 0x1F (any count, any signature). See scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/json_doc.h"
#include "protocol/message.h"

namespace proto = taskmaster::protocol;

// JsonDoc takes what nlohmann::json::parse takes (below the depth limit, without NUL bytes), and
// dumps it as nlohmann does.
static void check_json_doc(std::string_view body) {
  proto::JsonDoc doc;
  const bool taken = doc.parse(body, proto::kMaxJsonDepth);
  if (proto::json_depth(body) > proto::kMaxJsonDepth || body.find('\0') != std::string_view::npos) {
    if (taken) std::abort();
    return;
  }
  std::string expected;
  try {
    expected = nlohmann::json::parse(body).dump();
  } catch (const nlohmann::json::exception&) {
    if (taken) std::abort();
    return;
  }
  if (!taken) std::abort();
  std::string dumped;
  doc.root().dump(dumped);
  if (dumped != expected) std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> frames;
  if (!in.empty() && in[0] == '!') {
    std::string_view rest = in.substr(1);
    for (;;) {
      const auto sep = rest.find('\x1f');
      frames.push_back(rest.substr(0, sep));
      if (sep == std::string_view::npos) break;
      rest = rest.substr(sep + 1);
    }
  } else {
    const auto nl = in.find('\n');
    frames = {proto::kSignature, in.substr(0, nl), nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1)};
  }
  if (frames.size() == 3) check_json_doc(frames[2]);
  auto m = proto::decode(frames);
  if (!m) return 0;
  // What decode accepts, encode must write back in a form decode accepts again, identically.
  const auto again = proto::encode(*m);
  auto m2 = proto::decode(std::vector<std::string_view>(again.begin(), again.end()));
  if (!m2) std::abort();
  if (proto::encode(*m2) != again) std::abort();
  return 0;
}
