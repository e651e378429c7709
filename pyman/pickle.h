// A safe subset of Python's pickle format, for the multiprocessing.managers listener (docs/PYTHON.md,
// "Pickle subset and value mapping"). decode() never runs or names code beyond an explicit allow-list:
// it builds plain values (None, bool, int of any size, float, str, bytes, tuple, list, dict) and, for
// the few classes the managers protocol itself sends (multiprocessing.managers.Token, queue.Empty,
// queue.Full and some builtins exceptions), opaque Global/Object values. Anything else is refused with
// a one-line error ("pickle: global 'os.system' is not allowed"). Every size is bounded by Limits.
// encode() writes protocol 3 pickles that CPython 3 unpickles to the same values.
// to_json()/from_json() map values to JSON and back without loss (tagged objects for what JSON lacks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/expected.h"

namespace taskmaster::pickle {

enum class Kind {
  None,
  Bool,
  Int,     // fits in int64: Value::integer
  BigInt,  // does not fit in int64: Value::text, canonical decimal ("-" then digits, no leading zero)
  Float,   // Value::real
  Str,     // Value::text, valid UTF-8
  Bytes,   // Value::text, any bytes (a pickled bytearray decodes to Bytes too)
  Tuple,   // Value::items
  List,    // Value::items
  Dict,    // Value::entries: keys unique (Python's equality: 1 == 1.0 == True), in insertion order
  Global,  // Value::module, Value::name: an allow-listed global named as a value (e.g. a class)
  Object,  // an instance of an allow-listed class: module/name is the class (the callable),
           // items[0] the args tuple, items[1] the state (None: no BUILD), newobj as below
};
std::string_view kind_name(Kind kind);  // "None", "bool", "int", "int", "float", "str", "bytes", ...

struct Value;
using Items = std::vector<Value>;
using Entries = std::vector<std::pair<Value, Value>>;

// A tree of values (no sharing, no cycles). Build them with the functions below the struct; they keep
// the invariants (UTF-8 str, canonical BigInt, unique dict keys, allow-listed globals).
struct Value {
  Kind kind = Kind::None;
  bool boolean = false;      // Bool
  std::int64_t integer = 0;  // Int
  double real = 0;           // Float
  std::string text;          // Str, Bytes, BigInt
  std::string module, name;  // Global; Object: its class / callable
  Items items;               // Tuple, List; Object: {args (a Tuple), state}
  Entries entries;           // Dict
  bool newobj = false;       // Object: true: cls.__new__(cls, *args) (NEWOBJ), false: callable(*args) (REDUCE)

  // Declared here, defaulted in pickle.cpp: Entries holds std::pair<Value, Value>, which must not be
  // instantiated while Value is incomplete (clang refuses the implicit members).
  Value();
  Value(const Value&);
  Value(Value&&) noexcept;
  Value& operator=(const Value&);
  Value& operator=(Value&&) noexcept;
  ~Value();

  bool is(Kind k) const { return kind == k; }
  // REQUIRES kind == Object
  const Value& args() const { return items.at(0); }
  const Value& state() const { return items.at(1); }
  // Dict: the value for a str key, or nullptr.
  const Value* find(std::string_view key) const;
};
bool operator==(const Value& a, const Value& b);  // structural (Float by bits, NaN == NaN); Dict as Python's ==, in any order

// Thrown by the constructors and encode() for a value that breaks the invariants above (invalid
// UTF-8 in a str, a bad decimal, a global not on the allow-list). Values from decode/from_json never do.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

Value none();
Value boolean(bool b);
Value integer(std::int64_t i);
Value big_integer(std::string_view decimal);  // any size; an Int when it fits in int64. Throws ValueError.
Value real(double d);
Value str(std::string utf8);  // throws ValueError on invalid UTF-8
Value bytes(std::string data);
Value tuple(Items items);
Value list(Items items);
Value dict(Entries entries);  // a later equal key replaces the earlier one's value, as in Python. Throws on an unhashable key.
Value global(std::string module, std::string name);  // throws ValueError unless allowed_global()
// An instance: REDUCE (callable(*args)) or, with newobj, NEWOBJ (cls.__new__(cls, *args)), then BUILD
// with state unless it is None. Throws ValueError unless allowed_global(module, name).
Value object(std::string module, std::string name, Items args, Value state = none(), bool newobj = false);
// An exception instance as CPython pickles it: object(module, name, args), e.g.
// exception("queue", "Empty", {}) or exception("builtins", "KeyError", {str("x")}).
Value exception(std::string module, std::string name, Items args);
// multiprocessing.managers.Token(typeid, address, id) as CPython pickles it (NEWOBJ, BUILD with the
// (typeid, address, id) tuple). address: for TCP a tuple (host str, port int).
Value token(std::string typeid_, Value address, std::string id);

// The allow-list: the globals decode() accepts (as Global, or as the class of an Object) and encode() writes.
// (The decoder also evaluates a few constructors itself, never as values: see pickle.cpp.)
bool allowed_global(std::string_view module, std::string_view name);

struct Limits {
  std::size_t max_input_bytes = 16u << 20;    // the whole pickle
  std::size_t max_depth = 100;                // nesting of containers/objects in the result
  std::size_t max_values = 1u << 20;          // values in the result, each copy of a memo entry counted
  std::size_t max_payload_bytes = 64u << 20;  // str/bytes/BigInt bytes in the result, copies counted
  std::size_t max_int_bytes = 1024;           // one int: two's-complement bytes (LONG1/LONG4), or ~2.4 digits per byte as text
  std::size_t max_memo = 1u << 20;            // memo entries
};

// Decodes one pickle (protocols 0 to 5; bytes after STOP are an error). Errors: ErrorCode::TooLarge
// when a limit is hit, ErrorCode::BadField otherwise, the message "pickle: ..." in one line.
Expected<Value> decode(std::string_view data, const Limits& limits = {});

// Protocol 3 (readable by every Python 3; bytes as BINBYTES), no memo. Throws ValueError for a Value that breaks the invariants.
std::string encode(const Value& value);

// Python's repr() of the value for the plain types ("('#RETURN', None)", "b'\\x00'"); objects as
// module.name(args...). For messages and logs.
std::string repr(const Value& value);

// JSON mapping (docs/PYTHON.md): None null, bool, Int a JSON integer, Float a JSON float (NaN/±inf:
// {"$float": "nan"|"inf"|"-inf"}), str a string, list an array, a dict with only str keys an object.
// Tagged single-key objects for the rest:
//   {"$int": "decimal"} BigInt            {"$bytes": "base64"} bytes      {"$tuple": [...]} tuple
//   {"$dict": [[k, v], ...]} a dict with a non-str key, or whose only key starts with '$'
//   {"$global": ["module", "name"]}       {"$object": {"class": ["module", "name"], "args": [...], "state": v, "newobj": bool}}
nlohmann::json to_json(const Value& value);
// The inverse: from_json(to_json(v)) == v. Also takes any JSON (an unsigned integer beyond int64 is a
// BigInt). Errors (ErrorCode::BadField, "pickle: ..."): an unknown '$' tag, bad base64, a global not
// allowed, an unhashable key, nesting beyond limits.max_depth.
Expected<Value> from_json(const nlohmann::json& json, const Limits& limits = {});

}  // namespace taskmaster::pickle
