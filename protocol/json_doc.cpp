// A flat JSON document filled by nlohmann's SAX parser, with nlohmann's compact output. See json_doc.h.
#include "protocol/json_doc.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "protocol/message.h"  // append_json_string

namespace taskmaster::protocol {

// ---- parsing -----------------------------------------------------------------------------------
// nlohmann's own parser reads the text (json::sax_parse: its lexer, its rules of what is JSON);
// this handler only records what it reports as a flat array of nodes instead of a DOM. Each value
// becomes one node, appended in document order, so a container's children follow it and `end` skips
// over them. An object's key is a String node followed by its value's nodes.

class TapeBuilder {
 public:
  using json = nlohmann::json;

  TapeBuilder(JsonDoc& doc, int max_depth) : doc_(doc), max_depth_(max_depth) {}

  bool null() { return leaf(JsonKind::Null); }
  bool boolean(bool v) { return leaf(v ? JsonKind::True : JsonKind::False); }
  bool number_integer(json::number_integer_t v) {
    // The lexer reports only negative integers (and -0) as signed, as nlohmann's DOM keeps them.
    Node& n = push(JsonKind::Signed);
    n.i = v;
    return true;
  }
  bool number_unsigned(json::number_unsigned_t v) {
    Node& n = push(JsonKind::Unsigned);
    n.u = v;
    return true;
  }
  bool number_float(json::number_float_t v, const json::string_t& text) {
    // nlohmann's DOM parser refuses a number that overflows a double ("1e999"); so does this.
    if (!std::isfinite(v)) return false;
    (void)text;
    Node& n = push(JsonKind::Float);
    n.d = v;
    return true;
  }
  bool string(json::string_t& v) { return string_node(v, true); }
  bool binary(json::binary_t&) { return false; }  // not produced by the JSON format

  bool start_object(std::size_t) { return open(JsonKind::Object); }
  bool key(json::string_t& k) { return string_node(k, false); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(JsonKind::Array); }
  bool end_array() { return close(); }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

 private:
  using Node = JsonDoc::Node;

  // Appends a node and counts it in its container (an object counts its keys, not their values).
  Node& push(JsonKind kind, bool counts = true) {
    if (counts && !open_.empty()) ++doc_.nodes_[open_.back()].count;
    Node& n = doc_.nodes_.emplace_back();
    n.kind = kind;
    n.end = static_cast<std::uint32_t>(doc_.nodes_.size());
    return n;
  }
  bool leaf(JsonKind kind) {
    push(kind, !in_object());
    return true;
  }
  bool in_object() const { return !open_.empty() && doc_.nodes_[open_.back()].kind == JsonKind::Object; }

  bool string_node(const json::string_t& v, bool is_value) {
    if (doc_.arena_.size() + v.size() > std::numeric_limits<std::uint32_t>::max()) return false;
    // A value inside an object was counted with its key.
    Node& n = push(JsonKind::String, !(is_value && in_object()));
    n.begin = static_cast<std::uint32_t>(doc_.arena_.size());
    n.len = static_cast<std::uint32_t>(v.size());
    doc_.arena_ += v;
    return true;
  }

  bool open(JsonKind kind) {
    // Stops the parse at once: hostile nesting costs nothing.
    if (static_cast<int>(open_.size()) >= max_depth_) return false;
    push(kind, !in_object());
    doc_.nodes_.back().count = 0;
    open_.push_back(static_cast<std::uint32_t>(doc_.nodes_.size() - 1));
    return true;
  }
  bool close() {
    doc_.nodes_[open_.back()].end = static_cast<std::uint32_t>(doc_.nodes_.size());
    open_.pop_back();
    return true;
  }

  JsonDoc& doc_;
  int max_depth_;
  std::vector<std::uint32_t> open_;  // the containers being read, outermost first
};

bool JsonDoc::parse(std::string_view text, int max_depth) {
  nodes_.clear();
  arena_.clear();
  // nlohmann's lexer takes a NUL byte for the end of the input, so "{}\0anything" would pass.
  if (text.find('\0') != std::string_view::npos) return false;
  // Offsets are 32-bit; bodies are limited to 16 MiB long before that matters.
  if (text.size() > std::numeric_limits<std::uint32_t>::max() / 2) return false;
  TapeBuilder builder(*this, max_depth);
  return nlohmann::json::sax_parse(text.begin(), text.end(), &builder, nlohmann::json::input_format_t::json,
                                   /*strict=*/true) &&
         !nodes_.empty();
}

void JsonDoc::trim() {
  // A document reused for the next body keeps its memory, except what only a huge body needed.
  constexpr std::size_t kKeepNodes = std::size_t{1} << 18;  // 6 MiB: an OUTCOMES of ~20000 entries
  constexpr std::size_t kKeepArena = std::size_t{1} << 20;
  if (nodes_.capacity() > kKeepNodes) std::vector<Node>().swap(nodes_);
  if (arena_.capacity() > kKeepArena) std::string().swap(arena_);
}

// ---- reading -----------------------------------------------------------------------------------

std::string_view JsonValue::as_string() const {
  const JsonDoc::Node& n = node();
  return std::string_view(doc_->arena_).substr(n.begin, n.len);
}

JsonValue JsonValue::find(std::string_view key) const {
  // Linear: the decoder's objects have a handful of members. Keys of the same length usually differ
  // in their first byte, which spares most calls to memcmp.
  const auto& nodes = doc_->nodes_;
  std::uint32_t found = 0;
  for (std::uint32_t k = index_ + 1, end = nodes[index_].end; k < end; k = nodes[k + 1].end) {
    const JsonDoc::Node& n = nodes[k];
    if (n.len != key.size()) continue;
    const std::string_view name = JsonValue(doc_, k).as_string();
    if (!key.empty() && name[0] != key[0]) continue;
    if (name == key) found = k + 1;  // no break: the last one counts
  }
  return found ? JsonValue(doc_, found) : JsonValue();
}

JsonObject::JsonObject(JsonValue object) : object_(object) {
  const auto& nodes = object.doc_->nodes_;
  if (nodes[object.index_].count > kGathered) return;  // find() asks the object itself
  for (std::uint32_t k = object.index_ + 1, end = nodes[object.index_].end; k < end; k = nodes[k + 1].end)
    members_[size_++] = {JsonValue(object.doc_, k).as_string(), k + 1};
}

JsonValue JsonObject::find(std::string_view key) const {
  if (object_.size() > kGathered) return object_.find(key);
  std::uint32_t found = 0;
  for (std::size_t m = 0; m < size_; ++m) {
    const std::string_view name = members_[m].key;
    if (name.size() == key.size() && (key.empty() || name[0] == key[0]) && name == key)
      found = members_[m].value;  // no break: the last one counts
  }
  return found ? JsonValue(object_.doc_, found) : JsonValue();
}

// ---- writing -----------------------------------------------------------------------------------

namespace {

template <class N> void append_integer(std::string& out, N v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

}  // namespace

void JsonValue::dump(std::string& out) const {
  const JsonDoc::Node& n = node();
  switch (n.kind) {
    case JsonKind::Null: out += "null"; return;
    case JsonKind::False: out += "false"; return;
    case JsonKind::True: out += "true"; return;
    case JsonKind::Unsigned: append_integer(out, n.u); return;
    case JsonKind::Signed: append_integer(out, n.i); return;  // "-0" becomes "0", as in nlohmann
    case JsonKind::Float: {
      // What nlohmann's serializer::dump_float does for a finite double (grisu2, then "100.0"
      // rather than "100"). Calling it directly spares a serializer (and a localeconv) per number.
      char buf[64];
      char* end = nlohmann::detail::to_chars(buf, buf + sizeof buf, n.d);
      out.append(buf, end);
      return;
    }
    case JsonKind::String:
      append_json_string(out, as_string());  // valid UTF-8: escapes exactly as nlohmann's dump
      return;
    case JsonKind::Array: {
      out += '[';
      bool first = true;
      for (JsonValue e : elements()) {
        if (!first) out += ',';
        first = false;
        e.dump(out);
      }
      out += ']';
      return;
    }
    case JsonKind::Object: {
      // nlohmann keeps an object's members in a std::map: sorted by key (byte order), a repeated key
      // holding its last value. Objects usually come sorted (nlohmann wrote them), so check first.
      const auto& nodes = doc_->nodes_;
      const std::uint32_t end = n.end;
      bool sorted = true;
      std::string_view previous;
      for (std::uint32_t k = index_ + 1; k < end && sorted; k = nodes[k + 1].end) {
        const std::string_view key = JsonValue(doc_, k).as_string();
        if (k != index_ + 1 && !(previous < key)) sorted = false;
        previous = key;
      }
      std::vector<std::pair<std::string_view, std::uint32_t>> members;  // key, key node
      members.reserve(sorted ? 0 : n.count);
      if (!sorted) {
        for (std::uint32_t k = index_ + 1; k < end; k = nodes[k + 1].end) members.emplace_back(JsonValue(doc_, k).as_string(), k);
        std::stable_sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out += '{';
      bool first = true;
      auto member = [&](std::uint32_t k) {
        if (!first) out += ',';
        first = false;
        JsonValue(doc_, k).dump(out);
        out += ':';
        JsonValue(doc_, k + 1).dump(out);
      };
      if (sorted) {
        for (std::uint32_t k = index_ + 1; k < end; k = nodes[k + 1].end) member(k);
      } else {
        for (std::size_t m = 0; m < members.size(); ++m)
          if (m + 1 == members.size() || members[m + 1].first != members[m].first) member(members[m].second);
      }
      out += '}';
      return;
    }
  }
}

// ---- UTF-8 -------------------------------------------------------------------------------------

std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  std::size_t n;
  std::uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;  // overlong, out of range, or a surrogate
  return n;
}

}  // namespace taskmaster::protocol
