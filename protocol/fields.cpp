// The field validator of fields.h, and the checks message.h offers on its own (is_valid_name,
// json_depth).
#include "protocol/fields.h"

namespace taskmaster::protocol {

namespace detail {

std::string Where::str() const {
  if (!parent) return std::string(root);
  std::string s = parent->str();
  if (key) {
    s += '.';
    s += key;
  } else {
    s += '[';
    s += std::to_string(index);
    s += ']';
  }
  return s;
}

bool Fields::boolean_or(const char* k, bool dflt) const {
  const JsonValue v = find(k);
  if (!v) return dflt;
  if (!v.is_boolean()) fail(ErrorCode::BadField, path(k).str() + " must be true or false");
  return v.as_bool();
}

JsonValue Fields::array(const char* k, std::size_t max) const {
  const JsonValue v = need(k);
  if (!v.is_array()) fail(ErrorCode::BadField, path(k).str() + " must be an array");
  if (v.size() > max)
    fail(ErrorCode::TooLarge, path(k).str() + " has " + std::to_string(v.size()) + " items; the limit is " + std::to_string(max));
  return v;
}

std::string Fields::to_text(JsonValue v, const Where& where, std::size_t max) {
  if (!v.is_string()) fail(ErrorCode::BadField, where.str() + " must be a string");
  const std::string_view s = v.as_string();
  if (s.size() > max)
    fail(ErrorCode::TooLarge, where.str() + " is " + std::to_string(s.size()) + " bytes; the limit is " + std::to_string(max));
  return std::string(s);
}

std::string Fields::to_name(JsonValue v, const Where& where) {
  std::string s = to_text(v, where, kMaxNameBytes);
  if (!is_valid_name(s))
    fail(ErrorCode::BadField, where.str() + " must be 1 to " + std::to_string(kMaxNameBytes) + " characters of A-Z a-z 0-9 _ . : -");
  return s;
}

std::string compact(JsonValue v, const Where& where, std::size_t max) {
  std::string s;
  v.dump(s);
  if (s.size() > max)
    fail(ErrorCode::TooLarge, where.str() + " is " + std::to_string(s.size()) + " bytes as JSON; the limit is " + std::to_string(max));
  return s;
}

std::vector<std::string> names(const Fields& f, const char* k) {
  const JsonValue arr = f.array(k, kMaxListItems);
  const Where list = f.path(k);
  if (arr.size() == 0) fail(ErrorCode::BadField, list.str() + " must not be empty");
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (JsonValue e : arr.elements()) out.push_back(Fields::to_name(e, list[out.size()]));
  return out;
}

}  // namespace detail

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
                    c == '-';
    if (!ok) return false;
  }
  return true;
}

int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest >= limit) return deepest;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace taskmaster::protocol
