#include "pyman/wire.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <stdexcept>

namespace taskmaster::pyman {

namespace {

void put_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_be(std::string_view s) {
  std::uint64_t v = 0;
  for (unsigned char c : s) v = (v << 8) | c;
  return v;
}

const EVP_MD* digest_of(std::string_view name) {
  if (name == "md5") return EVP_md5();
  if (name == "sha256") return EVP_sha256();
  if (name == "sha384") return EVP_sha384();
  if (name == "sha3_256") return EVP_sha3_256();
  if (name == "sha3_384") return EVP_sha3_384();
  return nullptr;
}

bool same(std::string_view a, std::string_view b) { return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

// connection.py's _get_digest_name_and_payload: a 16- or 20-byte message is the legacy form
// (name ""); else "{name}payload" with an allowed name; nullopt otherwise.
std::optional<std::pair<std::string, std::string_view>> split_digest(std::string_view m) {
  if (m.size() == 16 || m.size() == 20) return std::pair{std::string(), m};
  if (m.empty() || m[0] != '{') return std::nullopt;
  const auto close = m.find('}', 1);
  if (close == std::string_view::npos || close > 9) return std::nullopt;
  std::string name(m.substr(1, close - 1));
  if (!digest_of(name)) return std::nullopt;
  return std::pair{name, m.substr(close + 1)};
}

constexpr std::size_t kMessageLength = 40;  // random bytes of our challenge, as Python 3.12+

}  // namespace

std::string frame(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 12);
  if (payload.size() > 0x7fffffff) {
    put_be(out, 0xffffffffu, 4);
    put_be(out, payload.size(), 8);
  } else {
    put_be(out, payload.size(), 4);
  }
  out.append(payload);
  return out;
}

Expected<std::optional<std::string>> FrameReader::next() {
  const std::string_view avail = std::string_view(buf_).substr(pos_);
  if (avail.size() < 4) return std::optional<std::string>();
  const auto len32 = static_cast<std::int32_t>(static_cast<std::uint32_t>(get_be(avail.substr(0, 4))));
  std::size_t header = 4;
  std::uint64_t size = 0;
  if (len32 == -1) {
    if (avail.size() < 12) return std::optional<std::string>();
    size = get_be(avail.substr(4, 8));
    header = 12;
  } else if (len32 < 0) {
    return make_error(ErrorCode::BadFrame, "a frame length is negative (" + std::to_string(len32) + ")");
  } else {
    size = static_cast<std::uint64_t>(len32);
  }
  if (size > max_)
    return make_error(ErrorCode::TooLarge, "a frame of " + std::to_string(size) + " bytes is over the bound of " + std::to_string(max_));
  if (avail.size() - header < size) return std::optional<std::string>();
  std::string payload(avail.substr(header, size));
  pos_ += header + size;
  if (pos_ == buf_.size() || pos_ > (1u << 16)) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return std::optional<std::string>(std::move(payload));
}

std::optional<std::string> hmac(std::string_view digest, std::string_view key, std::string_view message) {
  const EVP_MD* md = digest_of(digest);
  if (!md) return std::nullopt;
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()), message.size(),
            out.data(), &len))
    return std::nullopt;
  return std::string(reinterpret_cast<const char*>(out.data()), len);
}

ServerHandshake::ServerHandshake(std::string authkey) : key_(std::move(authkey)) {}

std::string ServerHandshake::challenge() {
  std::array<unsigned char, kMessageLength> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) throw std::runtime_error("no random bytes (RAND_bytes)");
  sent_ = "{sha256}" + std::string(reinterpret_cast<const char*>(random.data()), random.size());
  stage_ = 1;
  return std::string(kChallenge) + sent_;
}

ServerHandshake::Step ServerHandshake::on_frame(std::string_view m) {
  Step step;
  const auto fail = [&step](std::string why) {
    step.state = State::Failed;
    step.why = std::move(why);
    return step;
  };
  switch (stage_) {
    case 1: {  // the client's answer to our challenge
      const auto split = split_digest(m);
      const std::string name = split && !split->first.empty() ? split->first : "md5";
      const auto expected = split ? hmac(name, key_, sent_) : std::nullopt;
      if (!expected || !same(*expected, split->second)) {
        step.send.emplace_back(kFailure);
        return fail("wrong authkey (its answer to the challenge was not the HMAC of the authkey)");
      }
      step.send.emplace_back(kWelcome);
      stage_ = 2;
      return step;
    }
    case 2: {  // the client's challenge
      if (!m.starts_with(kChallenge)) return fail("the client sent no challenge");
      const std::string_view message = m.substr(kChallenge.size());
      if (message.size() < 20) return fail("the client's challenge is too short");
      std::string answer;
      if (message.size() == 20) {
        answer = *hmac("md5", key_, message);
      } else {
        const auto split = split_digest(message);
        if (!split) return fail("the client's challenge names no digest this server knows");
        answer = "{" + split->first + "}" + *hmac(split->first, key_, message);
      }
      step.send.push_back(std::move(answer));
      stage_ = 3;
      return step;
    }
    case 3:
      if (m != kWelcome) return fail("the client refused this server's answer (a different authkey)");
      stage_ = 4;
      step.state = State::Done;
      return step;
    default:
      return fail("a frame out of order in the handshake");
  }
}

}  // namespace taskmaster::pyman
