// The field validator (internal to the protocol library): bodies are read into a JsonDoc
// (json_doc.h); Fields checks an object's fields against the rules of PROTOCOL.md §4 and §6.
// Decoding throws Bad; decode() (message.cpp) catches it, so nothing escapes the decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "protocol/json_doc.h"
#include "protocol/message.h"

namespace taskmaster::protocol::detail {

struct Bad {
  Error error;
};

[[noreturn]] inline void fail(ErrorCode code, std::string message) { throw Bad{Error{code, std::move(message)}}; }

// Where a value sits in the body, for error messages: "SUBMIT.tasks[3].function". A chain of these
// lives on the stack while decoding; the text is built only when there is an error to report.
// A Where refers to its parent: keep the parent alive (name it) while the child is in use.
struct Where {
  std::string_view root;  // the command, at the top of the chain
  const Where* parent = nullptr;
  const char* key = nullptr;  // ".key" below the parent, or else
  std::size_t index = 0;      // "[index]" below the parent

  Where operator/(const char* k) const { return Where{{}, this, k, 0}; }
  Where operator[](std::size_t i) const { return Where{{}, this, nullptr, i}; }

  std::string str() const;
};

class Fields {
 public:
  Fields(JsonValue obj, const Where& where) : obj_(checked_object(obj, where)), where_(where) {}

  bool has(const char* k) const { return static_cast<bool>(obj_.find(k)); }
  const Where& where() const { return where_; }
  Where path(const char* k) const { return where_ / k; }

  JsonValue find(const char* k) const { return obj_.find(k); }
  JsonValue need(const char* k) const {
    const JsonValue v = find(k);
    if (!v) fail(ErrorCode::BadField, where_.str() + ": field '" + k + "' is missing");
    return v;
  }

  template <class N> N integer(const char* k, N lo, N hi) const { return to_int<N>(need(k), path(k), lo, hi); }
  template <class N> N integer_or(const char* k, N dflt, N lo, N hi) const {
    const JsonValue v = find(k);
    return v ? to_int<N>(v, path(k), lo, hi) : dflt;
  }
  bool boolean_or(const char* k, bool dflt) const;
  std::string text(const char* k, std::size_t max) const { return to_text(need(k), path(k), max); }
  std::string text_or(const char* k, std::string dflt, std::size_t max) const {
    const JsonValue v = find(k);
    return v ? to_text(v, path(k), max) : std::move(dflt);
  }
  std::string name(const char* k) const { return to_name(need(k), path(k)); }
  JsonValue array(const char* k, std::size_t max) const;

  template <class N> static N to_int(JsonValue v, const Where& where, N lo, N hi) {
    if (!v.is_integer()) fail(ErrorCode::BadField, where.str() + " must be an integer");
    if constexpr (std::is_unsigned_v<N>) {
      if (v.is_unsigned()) {
        const std::uint64_t x = v.as_unsigned();
        if (x >= lo && x <= hi) return static_cast<N>(x);
      }
    } else {
      if (v.is_unsigned()) {
        const std::uint64_t x = v.as_unsigned();
        if (x <= static_cast<std::uint64_t>(hi) && static_cast<std::int64_t>(x) >= lo) return static_cast<N>(x);
      } else {
        const std::int64_t x = v.as_signed();
        if (x >= lo && x <= hi) return static_cast<N>(x);
      }
    }
    fail(ErrorCode::BadField, where.str() + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  static std::string to_text(JsonValue v, const Where& where, std::size_t max);
  static std::string to_name(JsonValue v, const Where& where);

 private:
  static JsonValue checked_object(JsonValue v, const Where& where) {
    if (!v.is_object()) fail(ErrorCode::BadField, where.str() + " must be a JSON object");
    return v;
  }

  JsonObject obj_;
  Where where_;
};

// An args or result value as compact JSON (PROTOCOL.md §4.4: its size is measured so).
std::string compact(JsonValue v, const Where& where, std::size_t max);

// A non-empty list of names (HELLO's functions and queues), at most kMaxListItems.
std::vector<std::string> names(const Fields& f, const char* k);

}  // namespace taskmaster::protocol::detail
