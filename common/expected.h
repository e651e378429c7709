// Expected<T>: a value or an Error, with the names of C++23's std::expected so that moving to the
// standard type later is a rename. Used for every failure caused by input from outside.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace taskmaster {

// One code per kind of failure. The wire spelling (error_code_name) appears in ERROR replies,
// docs/PROTOCOL.md §7 and the CLI's messages.
enum class ErrorCode {
  BadFrame,        // wrong frame count or empty frame
  BadSignature,    // frame 0 is not the protocol signature
  UnknownCommand,  // frame 1 names no command of this protocol version
  TooLarge,        // a body or a field is over its limit
  BadJson,         // the body is not valid JSON (or nests too deeply)
  BadField,        // a field is missing, has the wrong type or is out of range
  NotAllowed,      // a valid command this peer may not send now (wrong role, not registered)
  UnknownJob,      // the job does not exist (never did, or its results expired)
  UnknownTask,     // a result for a task this worker does not hold
  Unavailable,     // the master cannot take this now (shutting down, disk problem)
  KeyReused,       // SUBMIT's idempotency key is that of another job (another function, args or options)
  Unreachable,     // client side: no answer from the master in time
  AuthFailed,      // client side: the security handshake failed
  Internal,        // a bug: reported rather than crashing
};

std::string_view error_code_name(ErrorCode code);
// The inverse of error_code_name; Internal for a name it does not know.
ErrorCode error_code_from_name(std::string_view name);

struct Error {
  ErrorCode code = ErrorCode::Internal;
  std::string message;  // what and where: "SUBMIT: tasks[3].function must be a string"
};

template <class T> class Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Expected(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  // REQUIRES: has_value()
  T& value() & {
    assert(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // REQUIRES: !has_value()
  const Error& error() const {
    assert(!has_value());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// Expected<void>: success carries nothing.
struct Ok {};
using Status = Expected<Ok>;

inline Error make_error(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

}  // namespace taskmaster
