// The safe pickle subset (pickle.h). The decoder is a stack machine like CPython's Unpickler, over a
// graph of Nodes owned by one arena (so memo sharing and in-place APPEND/SETITEM/BUILD behave as in
// Python, and nothing is destroyed recursively); the graph becomes a Value tree at STOP, with the
// depth, value and payload budgets of Limits (a memo entry referenced N times costs N copies).
#include "pyman/pickle.h"

#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <unordered_map>

namespace taskmaster::pickle {

namespace {

// ---- The allow-list -------------------------------------------------------------------------------
// Classes a pickle may name (GLOBAL / STACK_GLOBAL) and instantiate (REDUCE, NEWOBJ, NEWOBJ_EX, and
// copyreg._reconstructor below). Instantiating any of them runs no user code: they are the objects
// CPython's multiprocessing.managers itself puts on the wire.
struct AllowedClass {
  std::string_view module, name, why;
};
constexpr std::array kAllowedClasses{
    AllowedClass{"multiprocessing.managers", "Token", "identifies a shared object: in #PROXY replies and in pickled proxies"},
    AllowedClass{"_queue", "Empty", "Queue.get raises it (#ERROR); queue.Empty is _queue.Empty, pickled under this name"},
    AllowedClass{"queue", "Empty", "the public name of the same class (what encode() writes for exception(\"queue\", \"Empty\"))"},
    AllowedClass{"queue", "Full", "Queue.put raises it on a bounded queue (#ERROR)"},
    AllowedClass{"builtins", "Exception", "the base of what a server method raises (#ERROR)"},
    AllowedClass{"builtins", "KeyError", "the server's reply to an unknown ident or typeid (#ERROR)"},
    AllowedClass{"builtins", "AttributeError", "the server's reply to a method not exposed (#ERROR)"},
    AllowedClass{"builtins", "TypeError", "the server's reply to bad arguments (#ERROR)"},
    AllowedClass{"builtins", "ValueError", "the server's reply to a bad value (#ERROR)"},
    AllowedClass{"builtins", "RuntimeError", "a generic server-side failure (#ERROR)"},
    AllowedClass{"builtins", "AssertionError", "managers.py asserts on requests (#ERROR)"},
};

// Python 2 names CPython 3 writes for protocols 0 to 2 (fix_imports), mapped back as its Unpickler does.
std::string_view py3_module(std::string_view module) {
  if (module == "__builtin__" || module == "exceptions") return "builtins";
  if (module == "copy_reg") return "copyreg";
  if (module == "Queue") return "queue";
  return module;
}

// Constructors the decoder evaluates itself into plain values; never values of their own.
enum class Builtin {
  None,
  CodecsEncode,   // _codecs.encode(str, 'latin1'): how protocols 0-2 write bytes
  Bytes,          // builtins.bytes(): how protocols 0-2 write b''
  Bytearray,      // builtins.bytearray(bytes): how protocols 0-4 write a bytearray (decoded as bytes)
  Reconstructor,  // copyreg._reconstructor(cls, object, None): how protocols 0-1 write a Token
  Object,         // builtins.object: the second argument of copyreg._reconstructor
};
Builtin builtin_of(std::string_view module, std::string_view name) {
  if (module == "_codecs" && name == "encode") return Builtin::CodecsEncode;
  if (module == "builtins" && name == "bytes") return Builtin::Bytes;
  if (module == "builtins" && name == "bytearray") return Builtin::Bytearray;
  if (module == "copyreg" && name == "_reconstructor") return Builtin::Reconstructor;
  if (module == "builtins" && name == "object") return Builtin::Object;
  return Builtin::None;
}

struct Failure {
  ErrorCode code;
  std::string message;
};
[[noreturn]] void fail(std::string message) { throw Failure{ErrorCode::BadField, "pickle: " + std::move(message)}; }
[[noreturn]] void too_large(std::string message) { throw Failure{ErrorCode::TooLarge, "pickle: " + std::move(message)}; }

// Text from the input, for a one-line message: control bytes, bytes past ASCII and backslashes
// escaped (so that the message is valid UTF-8 however the input was cut), at most 80 bytes of it.
std::string printable(std::string_view s) {
  std::string out;
  for (const char c : s.substr(0, 80)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7F || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}
std::string dotted(std::string_view module, std::string_view name) { return printable(std::string(module) + "." + std::string(name)); }

// ---- UTF-8 -----------------------------------------------------------------------------------------
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF) return false;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    i += n + 1;
  }
  return true;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Code points of valid UTF-8 (REQUIRES valid_utf8(s)).
template <class F> void for_each_code_point(std::string_view s, F f) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    std::uint32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
    for (std::size_t k = 1; k <= n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    f(cp);
    i += n + 1;
  }
}

// ---- Big integers: magnitude as little-endian 32-bit limbs --------------------------------------------
using Limbs = std::vector<std::uint32_t>;

void trim(Limbs& m) {
  while (!m.empty() && m.back() == 0) m.pop_back();
}

// Decimal digits of the magnitude (empty limbs: "0").
std::string limbs_to_decimal(Limbs m) {
  trim(m);
  if (m.empty()) return "0";
  std::string out;
  while (!m.empty()) {
    std::uint64_t rem = 0;
    for (std::size_t i = m.size(); i-- > 0;) {
      const std::uint64_t cur = (rem << 32) | m[i];
      m[i] = static_cast<std::uint32_t>(cur / 1000000000u);
      rem = cur % 1000000000u;
    }
    trim(m);
    for (int k = 0; k < 9; ++k) {
      out += static_cast<char>('0' + rem % 10);
      rem /= 10;
      if (m.empty() && rem == 0) break;
    }
  }
  return std::string(out.rbegin(), out.rend());
}

// REQUIRES digits non-empty, all '0'-'9'.
Limbs decimal_to_limbs(std::string_view digits) {
  Limbs m;
  for (const char ch : digits) {
    std::uint64_t carry = static_cast<std::uint64_t>(ch - '0');
    for (auto& limb : m) {
      const std::uint64_t cur = static_cast<std::uint64_t>(limb) * 10 + carry;
      limb = static_cast<std::uint32_t>(cur);
      carry = cur >> 32;
    }
    if (carry) m.push_back(static_cast<std::uint32_t>(carry));
  }
  return m;
}

// A canonical integer from sign and magnitude: Int when it fits in int64, else BigInt.
Value int_from_magnitude(bool negative, Limbs m) {
  trim(m);
  if (m.size() <= 2) {
    const std::uint64_t u = m.empty() ? 0 : (m.size() == 1 ? m[0] : (static_cast<std::uint64_t>(m[1]) << 32) | m[0]);
    if (!negative && u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return integer(static_cast<std::int64_t>(u));
    if (negative && u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1) {
      return integer(static_cast<std::int64_t>(0 - u));
    }
  }
  Value v;
  v.kind = Kind::BigInt;
  v.text = (negative ? "-" : "") + limbs_to_decimal(std::move(m));
  return v;
}

// Little-endian two's complement (LONG1/LONG4) to an integer.
Value int_from_twos_complement(std::string_view le) {
  if (le.empty()) return integer(0);
  const bool negative = (static_cast<unsigned char>(le.back()) & 0x80) != 0;
  Limbs m((le.size() + 3) / 4, 0);
  for (std::size_t i = 0; i < le.size(); ++i) {
    const std::uint32_t byte = static_cast<unsigned char>(negative ? ~le[i] : le[i]) & 0xFFu;
    m[i / 4] |= byte << (8 * (i % 4));
  }
  if (negative) {  // magnitude = ~x + 1
    for (auto& limb : m) {
      if (++limb != 0) break;
    }
  }
  return int_from_magnitude(negative, std::move(m));
}

// The shortest little-endian two's complement of sign * magnitude (as CPython's encode_long).
std::string twos_complement(bool negative, Limbs m) {
  trim(m);
  std::string out;
  for (const auto limb : m) {
    for (int k = 0; k < 4; ++k) out += static_cast<char>((limb >> (8 * k)) & 0xFF);
  }
  if (negative) {  // ~(m - 1) over the bytes
    for (auto& ch : out) {
      const auto byte = static_cast<unsigned char>(ch);
      ch = static_cast<char>(byte - 1);
      if (byte != 0) break;
    }
    for (auto& ch : out) ch = static_cast<char>(~static_cast<unsigned char>(ch));
  }
  // Drop redundant sign bytes.
  const char fill = negative ? '\xff' : '\0';
  while (!out.empty() && out.back() == fill) out.pop_back();
  const bool top_negative = !out.empty() && (static_cast<unsigned char>(out.back()) & 0x80);
  if (out.empty() || top_negative != negative) out += fill;
  return out;
}

// An int of `digits` decimal digits within Limits::max_int_bytes (a byte holds log10(256) ~ 2.408 digits).
void check_int_digits(std::size_t digits, const Limits& limits) {
  if (digits > limits.max_int_bytes * 2408 / 1000 + 1) {
    too_large("int of " + std::to_string(digits) + " digits is over " + std::to_string(limits.max_int_bytes) + " bytes");
  }
}

// Parses an optional sign then decimal digits (no leading zeros unless "0"); nullopt-like false on failure.
bool parse_decimal(std::string_view s, bool& negative, std::string_view& digits) {
  negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return false;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
  }
  digits = s;
  return true;
}

// ---- Dict keys: Python's equality as a canonical byte string ---------------------------------------------
// Equal keys (1 == 1.0 == True, ('a', 1) == ('a', True)) give equal strings. Unhashable values (list,
// dict) and objects (hashed by identity in Python, which a tree of values cannot express) are refused.
const Value& deref(const Value& v) { return v; }

std::string float_key(double d) {
  if (std::isfinite(d) && d == std::floor(d)) {
    // An integral float equals the int of the same value: the same key as that int.
    char buf[400];
    const int n = std::snprintf(buf, sizeof buf, "%.0f", d);
    std::string s(buf, static_cast<std::size_t>(n));
    if (s == "-0") s = "0";
    return "n" + s;
  }
  std::uint64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  return "f" + std::to_string(bits);
}

template <class V> void key_bytes(const V& v, std::string& out, std::size_t depth, std::size_t max_depth) {
  if (depth > max_depth) too_large("nesting deeper than " + std::to_string(max_depth));
  switch (v.kind) {
    case Kind::None: out += 'N'; return;
    case Kind::Bool: out += v.boolean ? "n1" : "n0"; break;
    case Kind::Int: out += "n" + std::to_string(v.integer); break;
    case Kind::BigInt: out += "n" + v.text; break;
    case Kind::Float: out += float_key(v.real); break;
    case Kind::Str: out += "s" + std::to_string(v.text.size()) + ":" + v.text; return;
    case Kind::Bytes: out += "b" + std::to_string(v.text.size()) + ":" + v.text; return;
    case Kind::Global: out += "g" + std::to_string(v.module.size()) + ":" + v.module + v.name; break;
    case Kind::Tuple:
      out += "t" + std::to_string(v.items.size()) + "(";
      for (const auto& item : v.items) key_bytes(deref(item), out, depth + 1, max_depth);
      out += ')';
      return;
    case Kind::List:
    case Kind::Dict: fail(std::string("unhashable dict key of type ") + std::string(kind_name(v.kind)));
    case Kind::Object: fail("an object as a dict key is not supported");
  }
  out += ';';
}

// ---- The decoder's graph ----------------------------------------------------------------------------
struct Node {
  Kind kind = Kind::None;
  Builtin builtin = Builtin::None;  // Global: one of the evaluated constructors
  bool boolean = false;
  bool newobj = false;
  bool built = false;     // Object: BUILD seen
  bool visiting = false;  // to_value: on the current path (a cycle if met again)
  std::int64_t integer = 0;
  double real = 0;
  std::string text;          // Str, Bytes, BigInt
  std::string module, name;  // Global, Object
  std::vector<Node*> items;  // Tuple, List, Object {args, state}; Dict: keys at even, values at odd indices
};
const Node& deref(const Node* n) { return *n; }

struct Decoder {
  std::string_view in;
  const Limits& limits;
  std::size_t pos = 0;
  int proto = 0;
  std::deque<Node> arena;
  std::vector<Node*> stack;
  std::vector<std::size_t> marks;
  std::unordered_map<std::uint64_t, Node*> memo;
  std::unordered_map<const Node*, std::unordered_map<std::string, std::size_t>> dict_index;
  std::size_t key_bytes_spent = 0;
  Node none_node, true_node, false_node;
  std::size_t values = 0, payload = 0;

  Decoder(std::string_view data, const Limits& l) : in(data), limits(l) {
    true_node.kind = false_node.kind = Kind::Bool;
    true_node.boolean = true;
  }

  std::string where() const { return " at byte " + std::to_string(pos); }

  Node* make(Kind kind) {
    if (arena.size() >= limits.max_values) too_large("more than " + std::to_string(limits.max_values) + " values");
    arena.emplace_back();
    arena.back().kind = kind;
    return &arena.back();
  }
  void push(Node* n) {
    if (stack.size() >= limits.max_values) too_large("more than " + std::to_string(limits.max_values) + " values on the stack");
    stack.push_back(n);
  }
  Node* pop() {
    if (stack.empty() || (!marks.empty() && stack.size() == marks.back())) fail("stack underflow" + where());
    Node* n = stack.back();
    stack.pop_back();
    return n;
  }
  Node* top() {
    if (stack.empty() || (!marks.empty() && stack.size() == marks.back())) fail("stack underflow" + where());
    return stack.back();
  }
  // The items since the last MARK, which is removed.
  std::vector<Node*> pop_mark() {
    if (marks.empty()) fail("no MARK" + where());
    const std::size_t m = marks.back();
    marks.pop_back();
    std::vector<Node*> items(stack.begin() + static_cast<std::ptrdiff_t>(m), stack.end());
    stack.resize(m);
    return items;
  }

  std::string_view read(std::size_t n, const char* what) {
    if (n > in.size() - pos) fail(std::string("truncated in ") + what + where());
    const auto s = in.substr(pos, n);
    pos += n;
    return s;
  }
  std::uint64_t read_le(std::size_t n, const char* what) {
    const auto s = read(n, what);
    std::uint64_t v = 0;
    for (std::size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(s[i]);
    return v;
  }
  std::size_t read_length(std::size_t n, const char* what) {
    const std::uint64_t len = read_le(n, what);
    if (len > in.size() - pos) {
      if (len > limits.max_input_bytes) too_large(std::string(what) + " of " + std::to_string(len) + " bytes" + where());
      fail(std::string("truncated in ") + what + where());
    }
    return static_cast<std::size_t>(len);
  }
  // A text line (protocol 0 operands), without its '\n'.
  std::string_view read_line(const char* what, std::size_t max_len) {
    const auto nl = in.find('\n', pos);
    if (nl == std::string_view::npos) fail(std::string("truncated in ") + what + where());
    if (nl - pos > max_len) too_large(std::string(what) + " line longer than " + std::to_string(max_len) + where());
    const auto s = in.substr(pos, nl - pos);
    pos = nl + 1;
    return s;
  }

  Node* scalar(Value v) {
    Node* n = make(v.kind);
    n->integer = v.integer;
    n->text = std::move(v.text);
    return n;
  }
  Node* str_node(std::string text, const char* what) {
    if (!valid_utf8(text)) fail(std::string(what) + " is not valid UTF-8 (lone surrogates are not supported)" + where());
    Node* n = make(Kind::Str);
    n->text = std::move(text);
    return n;
  }
  Node* bytes_node(std::string_view data) {
    Node* n = make(Kind::Bytes);
    n->text = data;
    return n;
  }
  Node* text_int(std::string_view line, const char* what) {
    bool negative;
    std::string_view digits;
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
    if (!parse_decimal(line, negative, digits)) fail(std::string("bad ") + what + " operand" + where());
    check_int_digits(digits.size(), limits);
    return scalar(int_from_magnitude(negative, decimal_to_limbs(digits)));
  }
  std::size_t int_line_max() const { return limits.max_int_bytes * 3 + 2; }

  Node* global(std::string_view module_in, std::string_view name) {
    const std::string_view module = py3_module(module_in);
    if (!valid_utf8(module) || !valid_utf8(name)) fail("global name is not valid UTF-8" + where());
    const Builtin b = builtin_of(module, name);
    if (b == Builtin::None && !allowed_global(module, name)) {
      fail("global '" + dotted(module, name) + "' is not allowed");
    }
    Node* n = make(Kind::Global);
    n->builtin = b;
    n->module = module;
    n->name = name;
    return n;
  }
  static std::string global_name(const Node* g) { return dotted(g->module, g->name); }

  Node* object(Node* cls, std::vector<Node*> args, bool newobj) {
    Node* args_node = make(Kind::Tuple);
    args_node->items = std::move(args);
    Node* n = make(Kind::Object);
    n->module = cls->module;
    n->name = cls->name;
    n->newobj = newobj;
    n->items = {args_node, &none_node};
    return n;
  }

  Node* reduce(Node* callable, Node* args) {
    if (callable->kind != Kind::Global) fail("REDUCE on a " + std::string(kind_name(callable->kind)) + where());
    if (args->kind != Kind::Tuple) fail("REDUCE arguments are not a tuple" + where());
    const auto& a = args->items;
    switch (callable->builtin) {
      case Builtin::CodecsEncode: {
        if (a.size() != 2 || a[0]->kind != Kind::Str || a[1]->kind != Kind::Str || (a[1]->text != "latin1" && a[1]->text != "latin-1")) {
          fail("_codecs.encode is allowed only as (str, 'latin1'), how pickle writes bytes" + where());
        }
        std::string out;
        bool ok = true;
        for_each_code_point(a[0]->text, [&](std::uint32_t cp) {
          if (cp > 0xFF) ok = false;
          out += static_cast<char>(cp);
        });
        if (!ok) fail("_codecs.encode: str is not latin-1" + where());
        return bytes_node(out);
      }
      case Builtin::Bytes:
      case Builtin::Bytearray:
        if (a.empty()) return bytes_node("");
        if (a.size() == 1 && a[0]->kind == Kind::Bytes) return a[0];
        fail(global_name(callable) + " is allowed only with no arguments or one bytes" + where());
      case Builtin::Reconstructor:
        if (a.size() != 3 || a[0]->kind != Kind::Global || a[0]->builtin != Builtin::None || a[1]->kind != Kind::Global ||
            a[1]->builtin != Builtin::Object || a[2]->kind != Kind::None) {
          fail("copyreg._reconstructor is allowed only as (allowed class, object, None)" + where());
        }
        return object(a[0], {}, true);
      case Builtin::Object: fail("REDUCE on builtins.object is not allowed" + where());
      case Builtin::None: break;
    }
    return object(callable, a, false);
  }

  void set_item(Node* dict, Node* key, Node* value) {
    if (dict->kind != Kind::Dict) fail("SETITEM on a " + std::string(kind_name(dict->kind)) + where());
    std::string k;
    key_bytes(*key, k, 0, limits.max_depth);
    key_bytes_spent += k.size();
    if (key_bytes_spent > limits.max_payload_bytes) too_large("dict keys over " + std::to_string(limits.max_payload_bytes) + " bytes");
    auto& index = dict_index[dict];
    const auto [it, inserted] = index.emplace(std::move(k), dict->items.size());
    if (inserted) {
      dict->items.push_back(key);
      dict->items.push_back(value);
    } else {
      dict->items[it->second + 1] = value;  // Python keeps the first key and the last value
    }
  }
  void append(Node* list, Node* item) {
    if (list->kind != Kind::List) fail("APPEND to a " + std::string(kind_name(list->kind)) + where());
    list->items.push_back(item);
  }
  void memo_put(std::uint64_t index) {
    Node* n = top();
    if (memo.size() >= limits.max_memo && !memo.count(index)) too_large("more than " + std::to_string(limits.max_memo) + " memo entries");
    memo[index] = n;
  }
  void memo_get(std::uint64_t index) {
    const auto it = memo.find(index);
    if (it == memo.end()) fail("memo entry " + std::to_string(index) + " not found" + where());
    push(it->second);
  }
  std::uint64_t text_index(const char* what) {
    const auto line = read_line(what, 20);
    std::uint64_t v = 0;
    const auto r = std::from_chars(line.data(), line.data() + line.size(), v);
    if (r.ec != std::errc() || r.ptr != line.data() + line.size() || line.empty()) fail(std::string("bad ") + what + " operand" + where());
    return v;
  }

  // Protocol 0's UNICODE operand: raw-unicode-escape (latin-1 bytes, \uXXXX and \UXXXXXXXX escapes).
  Node* raw_unicode(std::string_view line) {
    std::string out;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const auto c = static_cast<unsigned char>(line[i]);
      if (c == '\\' && i + 1 < line.size() && (line[i + 1] == 'u' || line[i + 1] == 'U')) {
        const std::size_t n = line[i + 1] == 'u' ? 4 : 8;
        if (i + 2 + n > line.size()) fail("bad \\u escape in UNICODE" + where());
        std::uint32_t cp = 0;
        const auto r = std::from_chars(line.data() + i + 2, line.data() + i + 2 + n, cp, 16);
        if (r.ec != std::errc() || r.ptr != line.data() + i + 2 + n) fail("bad \\u escape in UNICODE" + where());
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("UNICODE code point out of range (lone surrogates are not supported)" + where());
        append_utf8(out, cp);
        i += 1 + n;
      } else {
        append_utf8(out, c);
      }
    }
    return str_node(std::move(out), "UNICODE");
  }

  Node* ascii_str(std::string_view data, const char* what) {
    for (const char c : data) {
      if (static_cast<unsigned char>(c) >= 0x80) fail(std::string(what) + " is not ASCII (Python 3 decodes it as ASCII)" + where());
    }
    return str_node(std::string(data), what);
  }

  Node* run() {
    if (in.size() > limits.max_input_bytes) too_large("input of " + std::to_string(in.size()) + " bytes is over " + std::to_string(limits.max_input_bytes));
    while (pos < in.size()) {
      const std::size_t at = pos;
      const auto op = static_cast<unsigned char>(in[pos++]);
      switch (op) {
        case 0x80: {  // PROTO
          const auto p = read_le(1, "PROTO");
          if (p > 5) fail("unsupported protocol " + std::to_string(p));
          proto = static_cast<int>(p);
          break;
        }
        case 0x95: read_length(8, "FRAME"); break;  // FRAME: its bytes follow; framing needs no more checks here
        case '.': {                                 // STOP
          Node* result = pop();
          if (pos != in.size()) fail("bytes after STOP at byte " + std::to_string(at));
          return result;
        }
        case '(':  // MARK
          if (marks.size() >= limits.max_depth) too_large("MARKs nested deeper than " + std::to_string(limits.max_depth) + where());
          marks.push_back(stack.size());
          break;
        case '0':  // POP (a MARK when the stack above it is empty, as CPython)
          if (!marks.empty() && stack.size() == marks.back()) {
            marks.pop_back();
          } else {
            pop();
          }
          break;
        case '1': pop_mark(); break;  // POP_MARK
        case '2': push(top()); break;  // DUP
        case 'N': push(&none_node); break;
        case 0x88: push(&true_node); break;   // NEWTRUE
        case 0x89: push(&false_node); break;  // NEWFALSE
        case 'I': {                           // INT: also protocol 0's bools
          const auto line = read_line("INT", int_line_max());
          if (line == "01") {
            push(&true_node);
          } else if (line == "00") {
            push(&false_node);
          } else {
            push(text_int(line, "INT"));
          }
          break;
        }
        case 'L': {  // LONG: decimal with an optional trailing 'L'
          auto line = read_line("LONG", int_line_max());
          if (!line.empty() && line.back() == 'L') line.remove_suffix(1);
          push(text_int(line, "LONG"));
          break;
        }
        case 'J': push(scalar(integer(static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4, "BININT")))))); break;
        case 'K': push(scalar(integer(static_cast<std::int64_t>(read_le(1, "BININT1"))))); break;
        case 'M': push(scalar(integer(static_cast<std::int64_t>(read_le(2, "BININT2"))))); break;
        case 0x8a:  // LONG1
        case 0x8b: {  // LONG4
          const char* what = op == 0x8a ? "LONG1" : "LONG4";
          const std::uint64_t n = read_le(op == 0x8a ? 1 : 4, what);
          if (op == 0x8b && n > 0x7FFFFFFF) fail("negative LONG4 length" + where());
          if (n > limits.max_int_bytes) too_large(std::string("int of ") + std::to_string(n) + " bytes is over " + std::to_string(limits.max_int_bytes) + where());
          push(scalar(int_from_twos_complement(read(static_cast<std::size_t>(n), what))));
          break;
        }
        case 'F': {  // FLOAT
          const auto line = read_line("FLOAT", 400);
          double d = 0;
          const auto r = std::from_chars(line.data(), line.data() + line.size(), d);
          if (r.ec != std::errc() || r.ptr != line.data() + line.size()) fail("bad FLOAT operand" + where());
          Node* n = make(Kind::Float);
          n->real = d;
          push(n);
          break;
        }
        case 'G': {  // BINFLOAT: big-endian IEEE 754
          const auto s = read(8, "BINFLOAT");
          std::uint64_t bits = 0;
          for (const char c : s) bits = (bits << 8) | static_cast<unsigned char>(c);
          Node* n = make(Kind::Float);
          n->real = std::bit_cast<double>(bits);
          push(n);
          break;
        }
        case 'V': push(raw_unicode(read_line("UNICODE", limits.max_input_bytes))); break;
        case 'X': push(str_node(std::string(read(read_length(4, "BINUNICODE"), "BINUNICODE")), "BINUNICODE")); break;
        case 0x8c: push(str_node(std::string(read(read_length(1, "SHORT_BINUNICODE"), "SHORT_BINUNICODE")), "SHORT_BINUNICODE")); break;
        case 0x8d: push(str_node(std::string(read(read_length(8, "BINUNICODE8"), "BINUNICODE8")), "BINUNICODE8")); break;
        case 'T': {  // BINSTRING (a Python 2 str): a signed length
          const auto n = read_le(4, "BINSTRING");
          if (n > 0x7FFFFFFF) fail("negative BINSTRING length" + where());
          pos -= 4;
          push(ascii_str(read(read_length(4, "BINSTRING"), "BINSTRING"), "BINSTRING"));
          break;
        }
        case 'U': push(ascii_str(read(read_length(1, "SHORT_BINSTRING"), "SHORT_BINSTRING"), "SHORT_BINSTRING")); break;
        case 'B': push(bytes_node(read(read_length(4, "BINBYTES"), "BINBYTES"))); break;
        case 'C': push(bytes_node(read(read_length(1, "SHORT_BINBYTES"), "SHORT_BINBYTES"))); break;
        case 0x8e: push(bytes_node(read(read_length(8, "BINBYTES8"), "BINBYTES8"))); break;
        case 0x96: push(bytes_node(read(read_length(8, "BYTEARRAY8"), "BYTEARRAY8"))); break;  // a bytearray: bytes
        case ')': push(make(Kind::Tuple)); break;                                           // EMPTY_TUPLE
        case 't': {                                                                         // TUPLE
          Node* n = make(Kind::Tuple);
          n->items = pop_mark();
          push(n);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const std::size_t count = op - 0x84u;
          Node* n = make(Kind::Tuple);
          n->items.resize(count);
          for (std::size_t i = count; i-- > 0;) n->items[i] = pop();
          push(n);
          break;
        }
        case ']': push(make(Kind::List)); break;  // EMPTY_LIST
        case 'l': {                               // LIST
          Node* n = make(Kind::List);
          n->items = pop_mark();
          push(n);
          break;
        }
        case 'a': {  // APPEND
          Node* item = pop();
          append(top(), item);
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_mark();
          Node* list = top();
          for (Node* item : items) append(list, item);
          break;
        }
        case '}': push(make(Kind::Dict)); break;  // EMPTY_DICT
        case 'd': {                               // DICT
          auto items = pop_mark();
          if (items.size() % 2) fail("DICT with an odd number of items" + where());
          Node* n = make(Kind::Dict);
          for (std::size_t i = 0; i < items.size(); i += 2) set_item(n, items[i], items[i + 1]);
          push(n);
          break;
        }
        case 's': {  // SETITEM
          Node* value = pop();
          Node* key = pop();
          set_item(top(), key, value);
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items" + where());
          Node* d = top();
          for (std::size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
          break;
        }
        case 'p': memo_put(text_index("PUT")); break;
        case 'q': memo_put(read_le(1, "BINPUT")); break;
        case 'r': memo_put(read_le(4, "LONG_BINPUT")); break;
        case 0x94: memo_put(memo.size()); break;  // MEMOIZE
        case 'g': memo_get(text_index("GET")); break;
        case 'h': memo_get(read_le(1, "BINGET")); break;
        case 'j': memo_get(read_le(4, "LONG_BINGET")); break;
        case 'c': {  // GLOBAL
          const auto module = read_line("GLOBAL", 256);
          const auto name = read_line("GLOBAL", 256);
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Node* name = pop();
          Node* module = pop();
          if (module->kind != Kind::Str || name->kind != Kind::Str) fail("STACK_GLOBAL operands are not str" + where());
          push(global(module->text, name->text));
          break;
        }
        case 'R': {  // REDUCE
          Node* args = pop();
          Node* callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 0x81:  // NEWOBJ
        case 0x92: {  // NEWOBJ_EX
          if (op == 0x92) {
            Node* kwargs = pop();
            if (kwargs->kind != Kind::Dict || !kwargs->items.empty()) fail("NEWOBJ_EX with keyword arguments is not supported" + where());
          }
          Node* args = pop();
          Node* cls = pop();
          if (cls->kind != Kind::Global || cls->builtin != Builtin::None) fail("NEWOBJ on something not an allowed class" + where());
          if (args->kind != Kind::Tuple) fail("NEWOBJ arguments are not a tuple" + where());
          push(object(cls, args->items, true));
          break;
        }
        case 'b': {  // BUILD
          Node* state = pop();
          Node* obj = top();
          if (obj->kind != Kind::Object) fail("BUILD on a " + std::string(kind_name(obj->kind)) + where());
          if (obj->built) fail("BUILD twice on one object" + where());
          obj->built = true;
          // None or {} changes nothing in CPython's load_build (an exception whose __dict__ exists but is empty
          // is pickled with BUILD {}): the same value as no BUILD.
          if (!(state->kind == Kind::None || (state->kind == Kind::Dict && state->items.empty()))) obj->items[1] = state;
          break;
        }
        case 0x8f:  // EMPTY_SET
        case 0x90:  // ADDITEMS
        case 0x91:  // FROZENSET
          fail("sets are not supported (opcode " + opcode_name(op) + " at byte " + std::to_string(at) + ")");
        default: fail("opcode " + opcode_name(op) + " at byte " + std::to_string(at) + " is not supported");
      }
    }
    fail("truncated: no STOP");
  }

  static std::string opcode_name(unsigned char op) {
    static constexpr std::pair<unsigned char, const char*> kNames[] = {
        {'P', "PERSID"}, {'Q', "BINPERSID"}, {'S', "STRING"}, {'i', "INST"},   {'o', "OBJ"},   {0x82, "EXT1"},
        {0x83, "EXT2"},  {0x84, "EXT4"},     {0x97, "NEXT_BUFFER"},             {0x98, "READONLY_BUFFER"},
        {0x8f, "EMPTY_SET"}, {0x90, "ADDITEMS"}, {0x91, "FROZENSET"},
    };
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", op);
    for (const auto& [code, name] : kNames) {
      if (code == op) return std::string(name) + " (" + hex + ")";
    }
    return hex;
  }

  // The graph below n as a tree, within the budgets.
  Value to_value(Node* n, std::size_t depth) {
    if (depth > limits.max_depth) too_large("nesting deeper than " + std::to_string(limits.max_depth));
    if (++values > limits.max_values) too_large("more than " + std::to_string(limits.max_values) + " values (memo references count each time)");
    if (n->kind == Kind::Global && n->builtin != Builtin::None) fail("global '" + global_name(n) + "' is allowed only as a constructor");
    Value v;
    v.kind = n->kind;
    v.boolean = n->boolean;
    v.integer = n->integer;
    v.real = n->real;
    v.newobj = n->newobj;
    payload += n->text.size();
    if (payload > limits.max_payload_bytes) too_large("more than " + std::to_string(limits.max_payload_bytes) + " bytes of str/bytes (memo references count each time)");
    v.text = n->text;
    v.module = n->module;
    v.name = n->name;
    if (n->items.empty()) return v;
    if (n->visiting) fail("recursive structures are not supported");
    n->visiting = true;
    if (n->kind == Kind::Dict) {
      v.entries.reserve(n->items.size() / 2);
      for (std::size_t i = 0; i < n->items.size(); i += 2) {
        Value key = to_value(n->items[i], depth + 1);
        v.entries.emplace_back(std::move(key), to_value(n->items[i + 1], depth + 1));
      }
    } else {
      v.items.reserve(n->items.size());
      for (Node* item : n->items) v.items.push_back(to_value(item, depth + 1));
    }
    n->visiting = false;
    return v;
  }
};

// ---- Encoder (protocol 3) ------------------------------------------------------------------------------
void put_le(std::string& out, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void encode_into(const Value& v, std::string& out, std::size_t depth);

void encode_global(std::string_view module, std::string_view name, std::string& out) {
  if (!allowed_global(module, name)) throw ValueError("pickle: global '" + dotted(module, name) + "' is not allowed");
  out += 'c';
  out += module;
  out += '\n';
  out += name;
  out += '\n';
}

void encode_sized(char op, std::string_view data, std::string& out) {
  if (data.size() > 0xFFFFFFFFu) throw ValueError("pickle: a str or bytes over 4 GiB");
  out += op;
  put_le(out, data.size(), 4);
  out += data;
}

void encode_into(const Value& v, std::string& out, std::size_t depth) {
  if (depth > 1000) throw ValueError("pickle: value nested deeper than 1000");
  switch (v.kind) {
    case Kind::None: out += 'N'; return;
    case Kind::Bool: out += v.boolean ? '\x88' : '\x89'; return;
    case Kind::Int:
      if (v.integer >= 0 && v.integer < 256) {
        out += 'K';
        put_le(out, static_cast<std::uint64_t>(v.integer), 1);
      } else if (v.integer >= 0 && v.integer < 65536) {
        out += 'M';
        put_le(out, static_cast<std::uint64_t>(v.integer), 2);
      } else if (v.integer >= std::numeric_limits<std::int32_t>::min() && v.integer <= std::numeric_limits<std::int32_t>::max()) {
        out += 'J';
        put_le(out, static_cast<std::uint64_t>(v.integer), 4);
      } else {
        const bool negative = v.integer < 0;
        const std::uint64_t mag = negative ? 0 - static_cast<std::uint64_t>(v.integer) : static_cast<std::uint64_t>(v.integer);
        const auto le = twos_complement(negative, {static_cast<std::uint32_t>(mag), static_cast<std::uint32_t>(mag >> 32)});
        out += '\x8a';
        put_le(out, le.size(), 1);
        out += le;
      }
      return;
    case Kind::BigInt: {
      bool negative;
      std::string_view digits;
      if (!parse_decimal(v.text, negative, digits)) throw ValueError("pickle: a BigInt that is not a decimal: " + printable(v.text));
      const auto le = twos_complement(negative, decimal_to_limbs(digits));
      if (le.size() < 256) {
        out += '\x8a';
        put_le(out, le.size(), 1);
      } else {
        out += '\x8b';
        put_le(out, le.size(), 4);
      }
      out += le;
      return;
    }
    case Kind::Float: {
      out += 'G';
      const auto bits = std::bit_cast<std::uint64_t>(v.real);
      for (int i = 7; i >= 0; --i) out += static_cast<char>((bits >> (8 * i)) & 0xFF);
      return;
    }
    case Kind::Str:
      if (!valid_utf8(v.text)) throw ValueError("pickle: a str that is not valid UTF-8");
      encode_sized('X', v.text, out);
      return;
    case Kind::Bytes: encode_sized('B', v.text, out); return;
    case Kind::Tuple:
      if (v.items.empty()) {
        out += ')';
        return;
      }
      if (v.items.size() > 3) out += '(';
      for (const auto& item : v.items) encode_into(item, out, depth + 1);
      out += v.items.size() > 3 ? 't' : static_cast<char>(0x84 + v.items.size());
      return;
    case Kind::List:
      out += ']';
      if (v.items.empty()) return;
      out += '(';
      for (const auto& item : v.items) encode_into(item, out, depth + 1);
      out += 'e';
      return;
    case Kind::Dict:
      out += '}';
      if (v.entries.empty()) return;
      out += '(';
      for (const auto& [key, value] : v.entries) {
        encode_into(key, out, depth + 1);
        encode_into(value, out, depth + 1);
      }
      out += 'u';
      return;
    case Kind::Global: encode_global(v.module, v.name, out); return;
    case Kind::Object:
      if (v.items.size() != 2 || v.items[0].kind != Kind::Tuple) throw ValueError("pickle: an Object without {args tuple, state}");
      encode_global(v.module, v.name, out);
      encode_into(v.items[0], out, depth + 1);
      out += v.newobj ? '\x81' : 'R';
      if (v.items[1].kind != Kind::None) {
        encode_into(v.items[1], out, depth + 1);
        out += 'b';
      }
      return;
  }
}

// ---- repr --------------------------------------------------------------------------------------------
void repr_into(const Value& v, std::string& out);

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Python's repr: the shortest round-trip digits, exponent form when exp < -4 or >= 16.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const auto e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (const char c : mantissa) {
    if (c != '.') digits += c;
  }
  std::string out;
  if (exp < -4 || exp >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += ebuf;
  } else if (exp < 0) {
    out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
  } else {
    const auto int_len = static_cast<std::size_t>(exp + 1);
    if (digits.size() <= int_len) {
      out = digits + std::string(int_len - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, int_len) + "." + digits.substr(int_len);
    }
  }
  return (negative ? "-" : "") + out;
}

void quote_into(std::string_view s, bool is_bytes, std::string& out) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const char q = has_single && s.find('"') == std::string_view::npos ? '"' : '\'';
  if (is_bytes) out += 'b';
  out += q;
  auto escape = [&](std::uint32_t c) {
    char buf[12];
    if (c == static_cast<unsigned char>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F || (is_bytes && c >= 0x80) || (!is_bytes && c >= 0x80 && c < 0xA0)) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else if (is_bytes) {
      out += static_cast<char>(c);
    } else {
      append_utf8(out, c);
    }
  };
  if (is_bytes) {
    for (const char c : s) escape(static_cast<unsigned char>(c));
  } else {
    for_each_code_point(s, escape);
  }
  out += q;
}

void repr_items(const Items& items, std::string& out) {
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    repr_into(items[i], out);
  }
}

void repr_into(const Value& v, std::string& out) {
  switch (v.kind) {
    case Kind::None: out += "None"; return;
    case Kind::Bool: out += v.boolean ? "True" : "False"; return;
    case Kind::Int: out += std::to_string(v.integer); return;
    case Kind::BigInt: out += v.text; return;
    case Kind::Float: out += float_repr(v.real); return;
    case Kind::Str: quote_into(v.text, false, out); return;
    case Kind::Bytes: quote_into(v.text, true, out); return;
    case Kind::Tuple:
      out += '(';
      repr_items(v.items, out);
      if (v.items.size() == 1) out += ',';
      out += ')';
      return;
    case Kind::List:
      out += '[';
      repr_items(v.items, out);
      out += ']';
      return;
    case Kind::Dict:
      out += '{';
      for (std::size_t i = 0; i < v.entries.size(); ++i) {
        if (i) out += ", ";
        repr_into(v.entries[i].first, out);
        out += ": ";
        repr_into(v.entries[i].second, out);
      }
      out += '}';
      return;
    case Kind::Global: out += "<class '" + v.module + "." + v.name + "'>"; return;
    case Kind::Object:
      out += (v.module == "builtins" ? "" : v.module + ".") + v.name + "(";
      if (v.items.size() == 2) {
        repr_items(v.items[0].items, out);
        if (v.items[1].kind != Kind::None) {
          out += v.items[0].items.empty() ? "" : ", ";
          out += "state=";
          repr_into(v.items[1], out);
        }
      }
      out += ')';
      return;
  }
}

// ---- JSON ------------------------------------------------------------------------------------------------
constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < data.size(); i += 3) {
    std::uint32_t chunk = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) chunk |= static_cast<unsigned char>(data[i + 1]) << 8;
    if (i + 2 < data.size()) chunk |= static_cast<unsigned char>(data[i + 2]);
    out += kBase64[(chunk >> 18) & 63];
    out += kBase64[(chunk >> 12) & 63];
    out += i + 1 < data.size() ? kBase64[(chunk >> 6) & 63] : '=';
    out += i + 2 < data.size() ? kBase64[chunk & 63] : '=';
  }
  return out;
}

// Strict: padded, no whitespace, canonical (unused bits zero), so that decode(encode(x)) is the identity both ways.
bool base64_decode(std::string_view s, std::string& out) {
  if (s.size() % 4) return false;
  for (std::size_t i = 0; i < s.size(); i += 4) {
    std::uint32_t chunk = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = s[i + k];
      std::uint32_t d = 0;
      if (c == '=' && i + 4 == s.size() && k >= 2) {
        ++pad;
      } else {
        if (pad) return false;
        const auto p = kBase64.find(c);
        if (p == std::string_view::npos) return false;
        d = static_cast<std::uint32_t>(p);
      }
      chunk = (chunk << 6) | d;
    }
    if ((pad == 1 && (chunk & 0xFF)) || (pad == 2 && (chunk & 0xFFFF))) return false;
    out += static_cast<char>(chunk >> 16);
    if (pad < 2) out += static_cast<char>((chunk >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(chunk & 0xFF);
  }
  return true;
}

nlohmann::json json_items(const Items& items) {
  auto a = nlohmann::json::array();
  for (const auto& item : items) a.push_back(to_json(item));
  return a;
}

struct FromJson {
  const Limits& limits;
  std::size_t values = 0;

  Items items(const nlohmann::json& j, std::size_t depth, const char* what) {
    if (!j.is_array()) fail(std::string(what) + " must be an array");
    Items out;
    out.reserve(j.size());
    for (const auto& item : j) out.push_back(value(item, depth + 1));
    return out;
  }
  static std::pair<std::string, std::string> global_pair(const nlohmann::json& j, const char* what) {
    if (!j.is_array() || j.size() != 2 || !j[0].is_string() || !j[1].is_string()) fail(std::string(what) + " must be [\"module\", \"name\"]");
    auto module = j[0].get<std::string>(), name = j[1].get<std::string>();
    if (!allowed_global(module, name)) fail("global '" + dotted(module, name) + "' is not allowed");
    return {module, name};
  }

  Value tagged(const std::string& tag, const nlohmann::json& j, std::size_t depth) {
    if (tag == "$int") {
      if (!j.is_string()) fail("$int must be a decimal string");
      const auto& text = j.get_ref<const std::string&>();
      check_int_digits(text.size() - (text.starts_with('-') ? 1 : 0), limits);  // digits, not the sign
      try {
        return big_integer(j.get<std::string>());
      } catch (const ValueError&) {
        fail("$int must be a decimal string");
      }
    }
    if (tag == "$float") {
      if (j == "nan") return real(std::numeric_limits<double>::quiet_NaN());
      if (j == "inf") return real(std::numeric_limits<double>::infinity());
      if (j == "-inf") return real(-std::numeric_limits<double>::infinity());
      fail("$float must be \"nan\", \"inf\" or \"-inf\"");
    }
    if (tag == "$bytes") {
      std::string data;
      if (!j.is_string() || !base64_decode(j.get_ref<const std::string&>(), data)) fail("$bytes must be base64 (padded)");
      return bytes(std::move(data));
    }
    if (tag == "$tuple") return tuple(items(j, depth, "$tuple"));
    if (tag == "$dict") {
      if (!j.is_array()) fail("$dict must be an array of [key, value]");
      Entries entries;
      for (const auto& pair : j) {
        if (!pair.is_array() || pair.size() != 2) fail("$dict must be an array of [key, value]");
        Value key = value(pair[0], depth + 1);
        entries.emplace_back(std::move(key), value(pair[1], depth + 1));
      }
      return make_dict(std::move(entries));
    }
    if (tag == "$global") {
      auto [module, name] = global_pair(j, "$global");
      return global(module, name);
    }
    if (tag == "$object") {
      if (!j.is_object() || !j.contains("class") || !j.contains("args")) fail("$object must have \"class\" and \"args\"");
      for (const auto& [k, unused] : j.items()) {
        if (k != "class" && k != "args" && k != "state" && k != "newobj") fail("$object has an unknown field \"" + printable(k) + "\"");
      }
      auto [module, name] = global_pair(j["class"], "$object.class");
      Value state = j.contains("state") ? value(j["state"], depth + 1) : none();
      const auto it = j.find("newobj");
      if (it != j.end() && !it->is_boolean()) fail("$object.newobj must be a boolean");
      return object(module, name, items(j["args"], depth, "$object.args"), std::move(state), it != j.end() && it->get<bool>());
    }
    fail("unknown tag \"" + printable(tag) + "\" (a dict whose only key starts with '$' is written as {\"$dict\": [[key, value]]})");
  }

  Value make_dict(Entries entries) {
    try {
      return dict(std::move(entries));
    } catch (const ValueError& e) {
      throw Failure{ErrorCode::BadField, e.what()};
    }
  }

  Value value(const nlohmann::json& j, std::size_t depth) {
    if (depth > limits.max_depth) too_large("nesting deeper than " + std::to_string(limits.max_depth));
    if (++values > limits.max_values) too_large("more than " + std::to_string(limits.max_values) + " values");
    switch (j.type()) {
      case nlohmann::json::value_t::null: return none();
      case nlohmann::json::value_t::boolean: return boolean(j.get<bool>());
      case nlohmann::json::value_t::number_integer: return integer(j.get<std::int64_t>());
      case nlohmann::json::value_t::number_unsigned: {
        const auto u = j.get<std::uint64_t>();
        return big_integer(std::to_string(u));
      }
      case nlohmann::json::value_t::number_float: return real(j.get<double>());
      case nlohmann::json::value_t::string: return str(j.get<std::string>());
      case nlohmann::json::value_t::array: return list(items(j, depth, "array"));
      case nlohmann::json::value_t::object: {
        if (j.size() == 1 && j.begin().key().starts_with("$")) return tagged(j.begin().key(), j.begin().value(), depth);
        Entries entries;
        for (const auto& [k, item] : j.items()) entries.emplace_back(str(k), value(item, depth + 1));
        return make_dict(std::move(entries));
      }
      case nlohmann::json::value_t::binary: return bytes(std::string(j.get_binary().begin(), j.get_binary().end()));
      case nlohmann::json::value_t::discarded: break;
    }
    fail("a discarded JSON value");
  }
};

}  // namespace

// ---- Public ------------------------------------------------------------------------------------------------

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int:
    case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
  }
  return "?";
}

Value::Value() = default;
Value::Value(const Value&) = default;
Value::Value(Value&&) noexcept = default;
Value& Value::operator=(const Value&) = default;
Value& Value::operator=(Value&&) noexcept = default;
Value::~Value() = default;

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k.kind == Kind::Str && k.text == key) return &v;
  }
  return nullptr;
}

// As Python: the same keys (by Python's equality) with equal values, in any order.
static bool dict_equal(const Value& a, const Value& b) {
  if (a.entries.size() != b.entries.size()) return false;
  std::unordered_map<std::string, const Value*> index;
  std::string k;
  try {
    for (const auto& [key, value] : a.entries) {
      k.clear();
      key_bytes(key, k, 0, 1000);
      index.emplace(k, &value);
    }
    for (const auto& [key, value] : b.entries) {
      k.clear();
      key_bytes(key, k, 0, 1000);
      const auto it = index.find(k);
      if (it == index.end() || !(*it->second == value)) return false;
    }
  } catch (const Failure&) {
    return a.entries == b.entries;  // keys no factory makes (a list, an object): in order
  }
  return true;
}

bool operator==(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::None: return true;
    case Kind::Bool: return a.boolean == b.boolean;
    case Kind::Int: return a.integer == b.integer;
    case Kind::Float: return std::bit_cast<std::uint64_t>(a.real) == std::bit_cast<std::uint64_t>(b.real) || (std::isnan(a.real) && std::isnan(b.real));
    case Kind::BigInt:
    case Kind::Str:
    case Kind::Bytes: return a.text == b.text;
    case Kind::Tuple:
    case Kind::List: return a.items == b.items;
    case Kind::Dict: return dict_equal(a, b);
    case Kind::Global: return a.module == b.module && a.name == b.name;
    case Kind::Object: return a.module == b.module && a.name == b.name && a.newobj == b.newobj && a.items == b.items;
  }
  return false;
}

Value none() { return Value{}; }
Value boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.boolean = b;
  return v;
}
Value integer(std::int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.integer = i;
  return v;
}
Value big_integer(std::string_view decimal) {
  bool negative;
  std::string_view digits;
  if (!parse_decimal(decimal, negative, digits)) throw ValueError("pickle: not a decimal integer: " + printable(decimal));
  if (digits == "0") negative = false;
  if (digits.size() < 19) {
    std::int64_t i = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), i);
    return integer(negative ? -i : i);
  }
  if (digits.size() <= 20) return int_from_magnitude(negative, decimal_to_limbs(digits));
  Value v;
  v.kind = Kind::BigInt;
  v.text = (negative ? "-" : "") + std::string(digits);
  return v;
}
Value real(double d) {
  Value v;
  v.kind = Kind::Float;
  v.real = d;
  return v;
}
namespace {
Value with_text(Kind kind, std::string text) {
  Value v;
  v.kind = kind;
  v.text = std::move(text);
  return v;
}
Value with_items(Kind kind, Items items) {
  Value v;
  v.kind = kind;
  v.items = std::move(items);
  return v;
}
}  // namespace
Value str(std::string utf8) {
  if (!valid_utf8(utf8)) throw ValueError("pickle: a str that is not valid UTF-8");
  return with_text(Kind::Str, std::move(utf8));
}
Value bytes(std::string data) { return with_text(Kind::Bytes, std::move(data)); }
Value tuple(Items items) { return with_items(Kind::Tuple, std::move(items)); }
Value list(Items items) { return with_items(Kind::List, std::move(items)); }
Value dict(Entries entries) {
  Value v;
  v.kind = Kind::Dict;
  std::unordered_map<std::string, std::size_t> index;
  for (auto& [key, value] : entries) {
    std::string k;
    try {
      key_bytes(key, k, 0, 1000);
    } catch (const Failure& f) {
      throw ValueError(f.message);
    }
    const auto [it, inserted] = index.emplace(std::move(k), v.entries.size());
    if (inserted) {
      v.entries.emplace_back(std::move(key), std::move(value));
    } else {
      v.entries[it->second].second = std::move(value);
    }
  }
  return v;
}
Value global(std::string module, std::string name) {
  if (!allowed_global(module, name)) throw ValueError("pickle: global '" + dotted(module, name) + "' is not allowed");
  Value v;
  v.kind = Kind::Global;
  v.module = std::move(module);
  v.name = std::move(name);
  return v;
}
Value object(std::string module, std::string name, Items args, Value state, bool newobj) {
  Value v = global(std::move(module), std::move(name));
  v.kind = Kind::Object;
  v.newobj = newobj;
  v.items.push_back(tuple(std::move(args)));
  v.items.push_back(std::move(state));
  return v;
}
Value exception(std::string module, std::string name, Items args) { return object(std::move(module), std::move(name), std::move(args)); }
Value token(std::string typeid_, Value address, std::string id) {
  return object("multiprocessing.managers", "Token", {}, tuple({str(std::move(typeid_)), std::move(address), str(std::move(id))}), true);
}

bool allowed_global(std::string_view module, std::string_view name) {
  for (const auto& c : kAllowedClasses) {
    if (c.module == module && c.name == name) return true;
  }
  return false;
}

Expected<Value> decode(std::string_view data, const Limits& limits) {
  try {
    Decoder d(data, limits);
    Node* root = d.run();
    return d.to_value(root, 0);
  } catch (const Failure& f) {
    return make_error(f.code, f.message);
  } catch (const ValueError& e) {
    return make_error(ErrorCode::BadField, e.what());
  } catch (const std::bad_alloc&) {
    return make_error(ErrorCode::TooLarge, "pickle: out of memory");
  }
}

std::string encode(const Value& value) {
  std::string out = "\x80\x03";
  encode_into(value, out, 0);
  out += '.';
  return out;
}

std::string repr(const Value& value) {
  std::string out;
  repr_into(value, out);
  return out;
}

nlohmann::json to_json(const Value& v) {
  using nlohmann::json;
  switch (v.kind) {
    case Kind::None: return nullptr;
    case Kind::Bool: return v.boolean;
    case Kind::Int: return v.integer;
    case Kind::BigInt: return {{"$int", v.text}};
    case Kind::Float:
      if (std::isnan(v.real)) return {{"$float", "nan"}};
      if (std::isinf(v.real)) return {{"$float", v.real > 0 ? "inf" : "-inf"}};
      return v.real;
    case Kind::Str: return v.text;
    case Kind::Bytes: return {{"$bytes", base64_encode(v.text)}};
    case Kind::Tuple: return {{"$tuple", json_items(v.items)}};
    case Kind::List: return json_items(v.items);
    case Kind::Dict: {
      bool plain = !(v.entries.size() == 1 && v.entries[0].first.kind == Kind::Str && v.entries[0].first.text.starts_with("$"));
      for (const auto& [key, value] : v.entries) plain = plain && key.kind == Kind::Str;
      if (plain) {
        auto o = json::object();
        for (const auto& [key, value] : v.entries) o[key.text] = to_json(value);
        return o;
      }
      auto pairs = json::array();
      for (const auto& [key, value] : v.entries) pairs.push_back(json::array({to_json(key), to_json(value)}));
      return {{"$dict", pairs}};
    }
    case Kind::Global: return {{"$global", json::array({v.module, v.name})}};
    case Kind::Object: {
      json o = {{"class", json::array({v.module, v.name})}, {"args", v.items.empty() ? json::array() : json_items(v.items[0].items)}};
      if (v.items.size() == 2 && v.items[1].kind != Kind::None) o["state"] = to_json(v.items[1]);
      if (v.newobj) o["newobj"] = true;
      return {{"$object", o}};
    }
  }
  return nullptr;
}

Expected<Value> from_json(const nlohmann::json& json, const Limits& limits) {
  try {
    FromJson f{limits};
    return f.value(json, 0);
  } catch (const Failure& f) {
    return make_error(f.code, f.message);
  } catch (const ValueError& e) {
    return make_error(ErrorCode::BadField, e.what());
  }
}

}  // namespace taskmaster::pickle
