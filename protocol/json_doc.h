// protocol/json_doc.h: the read-only JSON document that protocol::decode reads bodies into.
// Internal to protocol/: message.cpp is its only user, and the only code that knows the wire format.
//
// Why not nlohmann::json's DOM: decoding is the hot path of every process (a SUBMIT, TASKS, RESULTS
// or OUTCOMES carries up to 100000 entries), and the DOM costs a heap allocation per value and per
// string, a std::map per object, and dump() a serializer (and a localeconv) per args or result.
// nlohmann still does all the reading: JsonDoc::parse runs nlohmann::json::sax_parse (its lexer,
// its rules of what is JSON) and records what it reports in one flat array of nodes ("a tape") and
// one string arena, both reused from body to body.
//
// So decoding stays exactly what it was with the DOM:
// - JsonDoc::parse accepts exactly what nlohmann::json::parse accepts (it is nlohmann's parser),
//   except that it also stops at a nesting depth and refuses a NUL byte (which nlohmann's lexer
//   takes for the end of the input);
// - values have nlohmann's types: an integer is Unsigned if not negative, else Signed (-0 too);
//   what does not fit 64 bits, or has a fraction or exponent, is a Float;
// - an object's repeated key means its last value;
// - JsonValue::dump writes exactly what nlohmann::json::dump() writes for the same value.
// tests/protocol_test.cpp checks the decoder, and dump against nlohmann's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace taskmaster::protocol {

enum class JsonKind : std::uint8_t { Null, False, True, Unsigned, Signed, Float, String, Array, Object };

class JsonValue;

class JsonDoc {
 public:
  // Reads `text` into this document (replacing what it held). False if `text` is not one JSON value
  // surrounded by optional white space (nlohmann::json::parse judges), holds a NUL byte, or nests
  // arrays and objects deeper than `max_depth` (parsing stops there, so hostile nesting costs
  // nothing). The document does not refer to `text` afterwards.
  bool parse(std::string_view text, int max_depth);

  // REQUIRES: parse() returned true.
  JsonValue root() const;

  // Gives back memory kept from a huge body; call after use.
  void trim();

 private:
  friend class JsonValue;
  friend class JsonObject;
  friend class TapeBuilder;

  struct Node {
    std::uint32_t end = 0;    // index of the first node after this one's subtree
    std::uint32_t begin = 0;  // String: its characters (decoded), in arena_
    std::uint32_t len = 0;
    JsonKind kind = JsonKind::Null;
    union {
      std::uint64_t u = 0;  // Unsigned
      std::int64_t i;       // Signed (only negative numbers and -0 are Signed, as in nlohmann)
      double d;             // Float
      std::uint64_t count;  // Array: elements; Object: members (a key node, then its value's)
    };
  };

  std::vector<Node> nodes_;
  std::string arena_;  // every string and key, decoded
};

// A value in a JsonDoc: a node index. Cheap to copy; valid as long as its document is unchanged.
// A default-constructed JsonValue is "no value" (what find() returns for a missing key).
class JsonValue {
 public:
  JsonValue() = default;
  JsonValue(const JsonDoc* doc, std::uint32_t index) : doc_(doc), index_(index) {}

  explicit operator bool() const { return doc_ != nullptr; }
  JsonKind kind() const { return node().kind; }
  bool is_object() const { return kind() == JsonKind::Object; }
  bool is_array() const { return kind() == JsonKind::Array; }
  bool is_string() const { return kind() == JsonKind::String; }
  bool is_boolean() const { return kind() == JsonKind::True || kind() == JsonKind::False; }
  bool is_integer() const { return kind() == JsonKind::Unsigned || kind() == JsonKind::Signed; }
  bool is_unsigned() const { return kind() == JsonKind::Unsigned; }

  bool as_bool() const { return kind() == JsonKind::True; }                    // REQUIRES: is_boolean()
  std::uint64_t as_unsigned() const { return node().u; }                       // REQUIRES: is_unsigned()
  std::int64_t as_signed() const { return node().i; }                          // REQUIRES: kind() == Signed
  std::string_view as_string() const;                                          // REQUIRES: is_string()
  std::size_t size() const { return static_cast<std::size_t>(node().count); }  // REQUIRES: array or object

  // An object's member `key` (the last one, if the key repeats, as nlohmann keeps), or no value.
  // REQUIRES: is_object()
  JsonValue find(std::string_view key) const;

  // An array's elements, in order: for (JsonValue e : v.elements()). REQUIRES: is_array()
  class Iterator {
   public:
    Iterator(const JsonDoc* doc, std::uint32_t index) : doc_(doc), index_(index) {}
    JsonValue operator*() const { return JsonValue(doc_, index_); }
    Iterator& operator++() {
      index_ = doc_->nodes_[index_].end;
      return *this;
    }
    bool operator!=(const Iterator& o) const { return index_ != o.index_; }

   private:
    const JsonDoc* doc_;
    std::uint32_t index_;
  };
  struct Range {
    Iterator b, e;
    Iterator begin() const { return b; }
    Iterator end() const { return e; }
  };
  Range elements() const { return {Iterator(doc_, index_ + 1), Iterator(doc_, node().end)}; }

  // Appends the value as compact JSON, exactly as nlohmann::json::dump() would write it: no white
  // space, object members sorted by key (a repeated key: its last value), strings in raw UTF-8
  // with only the escapes JSON requires, integers in decimal, other numbers in nlohmann's
  // shortest round-trip form ("100.0", "1e+100").
  void dump(std::string& out) const;

 private:
  friend class JsonObject;
  const JsonDoc::Node& node() const { return doc_->nodes_[index_]; }

  const JsonDoc* doc_ = nullptr;
  std::uint32_t index_ = 0;
};

// An object's members gathered in one pass, for a reader that looks up several keys in it: each
// lookup then scans a small array instead of the document.
class JsonObject {
 public:
  explicit JsonObject(JsonValue object);  // REQUIRES: object.is_object()
  JsonValue value() const { return object_; }
  // As JsonValue::find.
  JsonValue find(std::string_view key) const;

 private:
  static constexpr std::size_t kGathered = 16;  // larger objects are searched in the document
  struct Member {
    std::string_view key;
    std::uint32_t value;
  };
  JsonValue object_;
  std::size_t size_ = 0;
  Member members_[kGathered];
};

inline JsonValue JsonDoc::root() const { return JsonValue(this, 0); }

// Length of the UTF-8 sequence starting at s[i] (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), or 0 if it is not valid UTF-8. The same rule as nlohmann's lexer.
std::size_t utf8_sequence(std::string_view s, std::size_t i);

}  // namespace taskmaster::protocol
