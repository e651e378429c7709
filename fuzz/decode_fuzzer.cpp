// libFuzzer target: protocol::decode on arbitrary frames, then encode/decode of what it accepts.
// Input: "COMMAND\nBODY" (frame 0 is the signature), or, starting with '!', frames separated by
// 0x1F (any count, any signature). See scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "protocol/message.h"

namespace proto = taskmaster::protocol;

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
  auto m = proto::decode(frames);
  if (!m) return 0;
  // What decode accepts, encode must write back in a form decode accepts again, identically.
  const auto again = proto::encode(*m);
  auto m2 = proto::decode(std::vector<std::string_view>(again.begin(), again.end()));
  if (!m2) std::abort();
  if (proto::encode(*m2) != again) std::abort();
  return 0;
}
