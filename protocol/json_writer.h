// Writer: compact JSON text written directly (internal to the protocol library: message.cpp
// encodes every body with it). Strings go through append_json_string (message.h, json_writer.cpp).
#pragma once

#include <charconv>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "protocol/message.h"

namespace taskmaster::protocol::detail {

// Writes compact JSON directly, so that args and results (already compact JSON text) are copied
// into a message without being parsed again.

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  // Keys are string literals (our own ASCII constants): their length is known at compile time.
  Writer& begin_object() {
    comma();
    out_ += '{';
    first_ = true;
    return *this;
  }
  Writer& end_object() {
    out_ += '}';
    first_ = false;
    return *this;
  }
  template <std::size_t K> Writer& begin_array(const char (&k)[K]) {
    key_then(k, "[");
    first_ = true;
    return *this;
  }
  Writer& end_array() {
    out_ += ']';
    first_ = false;
    return *this;
  }
  template <std::size_t K> Writer& begin_object(const char (&k)[K]) {
    key_then(k, "{");
    first_ = true;
    return *this;
  }

  template <std::size_t K> Writer& field(const char (&k)[K], std::string_view v) {
    key_then(k, "");
    append_json_string(out_, v);
    return *this;
  }
  template <std::size_t K> Writer& field(const char (&k)[K], const char* v) { return field(k, std::string_view(v)); }
  template <std::size_t K> Writer& field(const char (&k)[K], bool v) {
    key_then(k, v ? "true" : "false");
    return *this;
  }
  template <std::size_t K, class N, std::enable_if_t<std::is_integral_v<N> && !std::is_same_v<N, bool>, int> = 0>
  Writer& field(const char (&k)[K], N v) {
    char buf[K + 3 + kMaxDigits];
    char* p = key(buf, k);
    p = std::to_chars(p, buf + sizeof buf, v).ptr;
    out_.append(buf, p);
    return *this;
  }
  template <std::size_t K> Writer& raw(const char (&k)[K], std::string_view json_text) {
    key_then(k, "");
    out_ += json_text;
    return *this;
  }

  template <class N> Writer& element(N v) {
    char buf[1 + kMaxDigits];
    char* p = buf;
    if (!first_) *p++ = ',';
    first_ = false;
    p = std::to_chars(p, buf + sizeof buf, v).ptr;
    out_.append(buf, p);
    return *this;
  }
  Writer& element_string(std::string_view v) {
    comma();
    append_json_string(out_, v);
    return *this;
  }

 private:
  static constexpr std::size_t kMaxDigits = 20;  // of a 64-bit integer, with its sign

  void comma() {
    if (!first_) out_ += ',';
    first_ = false;
  }
  // Writes ',"k":' at p (no comma before the first member) and returns its end. Pieces are
  // composed on the stack and appended at once: std::string's append is an out-of-line call, and
  // made per piece it was most of the cost of encoding.
  template <std::size_t K>  // K counts the literal's terminating NUL
  char* key(char* p, const char (&k)[K]) {
    if (!first_) *p++ = ',';
    first_ = false;
    *p++ = '"';
    std::memcpy(p, k, K - 1);
    p += K - 1;
    *p++ = '"';
    *p++ = ':';
    return p;
  }
  template <std::size_t K, std::size_t T> void key_then(const char (&k)[K], const char (&tail)[T]) {
    char buf[K + 3 + T];
    char* p = key(buf, k);
    std::memcpy(p, tail, T - 1);
    out_.append(buf, p + T - 1);
  }
  template <std::size_t K> void key_then(const char (&k)[K], std::string_view tail) {  // "true" or "false"
    char buf[K + 3 + 5];
    char* p = key(buf, k);
    std::memcpy(p, tail.data(), tail.size());
    out_.append(buf, p + tail.size());
  }

  std::string& out_;
  bool first_ = true;
};

}  // namespace taskmaster::protocol::detail
