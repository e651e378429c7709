#include "protocol/auth.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/log.h"

namespace taskmaster::protocol {

namespace {

void init_sodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw std::runtime_error("libsodium failed to initialise");
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

Expected<LoadedKey> check(std::string key, std::string source) {
  key = trim(std::move(key));
  if (key.empty()) return make_error(ErrorCode::AuthFailed, source + " is empty; make a key with: taskmaster keygen");
  if (key.size() < kMinKeyBytes)
    return make_error(ErrorCode::AuthFailed, source + " is too short (" + std::to_string(key.size()) + " bytes; at least " +
                                                 std::to_string(kMinKeyBytes) + " needed); make a key with: taskmaster keygen");
  return LoadedKey{std::move(key), std::move(source)};
}

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

}  // namespace

namespace {

// The root every secret derives from: BLAKE2b-256 of the shared key, personal "taskmaster-key".
void derive_root(std::string_view shared_key, unsigned char (&root)[crypto_kdf_KEYBYTES]) {
  init_sodium();
  unsigned char personal[crypto_generichash_blake2b_PERSONALBYTES] = {};
  std::memcpy(personal, "taskmaster-key", 14);
  crypto_generichash_blake2b_salt_personal(root, sizeof root, reinterpret_cast<const unsigned char*>(shared_key.data()), shared_key.size(),
                                           nullptr, 0, nullptr, personal);
}

}  // namespace

HttpSecrets derive_http_secrets(std::string_view shared_key) {
  unsigned char root[crypto_kdf_KEYBYTES];
  derive_root(shared_key, root);
  HttpSecrets s;
  for (std::uint64_t id : {3, 4}) {
    unsigned char sub[16];
    crypto_kdf_derive_from_key(sub, sizeof sub, id, "tmhttp01", root);
    char hex[33];
    sodium_bin2hex(hex, sizeof hex, sub, sizeof sub);
    (id == 3 ? s.token : s.csrf) = hex;
    sodium_memzero(sub, sizeof sub);
  }
  sodium_memzero(root, sizeof root);
  return s;
}

CurveKeys derive_keys(std::string_view shared_key) {
  unsigned char root[crypto_kdf_KEYBYTES];
  derive_root(shared_key, root);
  CurveKeys k;
  unsigned char seed[crypto_box_SEEDBYTES];
  crypto_kdf_derive_from_key(seed, sizeof seed, 1, "tmcurve1", root);
  crypto_box_seed_keypair(k.server_public.data(), k.server_secret.data(), seed);
  crypto_kdf_derive_from_key(seed, sizeof seed, 2, "tmcurve1", root);
  crypto_box_seed_keypair(k.client_public.data(), k.client_secret.data(), seed);
  sodium_memzero(seed, sizeof seed);
  sodium_memzero(root, sizeof root);
  return k;
}

std::string generate_key() {
  init_sodium();
  unsigned char bytes[32];
  randombytes_buf(bytes, sizeof bytes);
  char hex[65];
  sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
  sodium_memzero(bytes, sizeof bytes);
  return hex;
}

std::string z85(const CurveKey& key) {
  char out[41];
  zmq_z85_encode(out, key.data(), key.size());
  return out;
}

std::string default_key_path() {
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return std::string(x) + "/taskmaster/key";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.config/taskmaster/key";
  return ".config/taskmaster/key";
}

Expected<LoadedKey> load_key_file(const std::string& path) {
  const std::string source = "key file " + path;
  // O_NONBLOCK: a FIFO with no writer must not hang us (it is refused below as not a regular file).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return make_error(ErrorCode::AuthFailed, "cannot read " + source + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(ErrorCode::AuthFailed, source + " is not a regular file");
  }
  if (st.st_mode & 077) {
    ::close(fd);
    return make_error(ErrorCode::AuthFailed, source + " is accessible by group or others (mode " + mode_text(st.st_mode) +
                                                 "); refusing it. Fix with: chmod 600 " + path);
  }
  std::string data;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return make_error(ErrorCode::AuthFailed, "cannot read " + source + ": " + std::strerror(e));
    }
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > 65536) {
      ::close(fd);
      return make_error(ErrorCode::AuthFailed, source + " is larger than 64 KiB; is it really a key?");
    }
  }
  ::close(fd);
  return check(std::move(data), source);
}

Expected<std::optional<LoadedKey>> find_key(const std::string& key_file_flag) {
  auto from_file = [](const std::string& p) -> Expected<std::optional<LoadedKey>> {
    auto k = load_key_file(p);
    if (!k) return k.error();
    return std::optional<LoadedKey>(std::move(*k));
  };
  if (!key_file_flag.empty()) return from_file(key_file_flag);
  if (const char* f = std::getenv("TASKMASTER_KEY_FILE"); f && *f) return from_file(f);
  if (const char* k = std::getenv("TASKMASTER_KEY")) {
    auto checked = check(k, "TASKMASTER_KEY");
    if (!checked) return checked.error();
    return std::optional<LoadedKey>(std::move(*checked));
  }
  const std::string path = default_key_path();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<LoadedKey>();
  return from_file(path);
}

Expected<std::string> load_key(const std::string& key_file_flag) {
  auto found = find_key(key_file_flag);
  if (!found) return found.error();
  if (!*found)
    return make_error(ErrorCode::AuthFailed,
                      "no key: make one with 'taskmaster keygen' (it goes to " + default_key_path() +
                          "), or give --key-file FILE, TASKMASTER_KEY_FILE or TASKMASTER_KEY; --insecure runs without one");
  return std::move((*found)->key);
}

taskmaster::Status write_key_file(const std::string& path, const std::string& key, bool force) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path() && !fs::exists(p.parent_path(), ec)) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) return make_error(ErrorCode::Internal, "cannot create " + p.parent_path().string() + ": " + ec.message());
    fs::permissions(p.parent_path(), fs::perms::owner_all, ec);
  }
  if (!force && fs::symlink_status(p, ec).type() != fs::file_type::not_found)
    return make_error(ErrorCode::Internal, path + " already exists; use --force to replace it");
  // Write a new file beside it and rename it into place: a failed write never leaves a broken key,
  // and a symlink at `path` is replaced, not followed.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(ErrorCode::Internal, "cannot write " + tmp + ": " + std::strerror(errno));
  const std::string text = key + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(ok ? errno : saved);
    ::unlink(tmp.c_str());
    return make_error(ErrorCode::Internal, "cannot write " + path + ": " + why);
  }
  return Ok{};
}

ZapHandler::ZapHandler(zmq::context_t& ctx, const CurveKey& client_public, RejectLog on_reject)
    : socket_(ctx, zmq::socket_type::rep), client_public_(client_public), on_reject_(std::move(on_reject)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
}

void ZapHandler::handle_requests() {
  for (;;) {
    std::vector<zmq::message_t> req;
    try {
      zmq::message_t part;
      if (!socket_.recv(part, zmq::recv_flags::dontwait)) return;
      req.push_back(std::move(part));
      while (req.back().more() && req.size() < 16) {
        zmq::message_t next;
        (void)socket_.recv(next);
        req.push_back(std::move(next));
      }
    } catch (const zmq::error_t&) {
      return;
    }
    // Frames (RFC 27): version, request id, domain, address, identity, mechanism, credentials...
    auto frame = [&](std::size_t i) { return i < req.size() ? req[i].to_string() : std::string(); };
    std::string code = "400", why;
    if (req.size() < 6 || frame(0) != "1.0") {
      why = "malformed ZAP request";
    } else if (frame(2) != kZapDomain) {
      why = "wrong ZAP domain '" + frame(2) + "'";
    } else if (frame(5) != "CURVE") {
      why = "mechanism " + frame(5) + " instead of CURVE";
    } else if (req.size() < 7 || req[6].size() != client_public_.size() ||
               sodium_memcmp(req[6].data(), client_public_.data(), client_public_.size()) != 0) {
      why = "its client key is not derived from this master's key";
    } else {
      code = "200";
    }
    if (code == "200") {
      ++admitted_;
    } else {
      ++rejected_;
      if (on_reject_) on_reject_(frame(3), why);
    }
    const std::string texts[] = {"1.0", frame(1), code, code == "200" ? "OK" : "authentication failed", "", ""};
    try {
      for (std::size_t i = 0; i < 6; ++i) socket_.send(zmq::buffer(texts[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

std::optional<std::uint64_t> RateLimitedLog::allow(const std::string& key, std::chrono::steady_clock::time_point now) {
  auto& w = windows_[key];
  if (w.start == std::chrono::steady_clock::time_point{} || now - w.start >= period_) {
    const auto held = w.held;
    w = Window{now, 1, 0};
    if (windows_.size() > 4096) windows_.clear();  // bounded memory under a flood of addresses
    return held;
  }
  if (w.used < burst_) {
    ++w.used;
    return 0;
  }
  ++w.held;
  return std::nullopt;
}

}  // namespace taskmaster::protocol
