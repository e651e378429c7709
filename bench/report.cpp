#include "bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace taskmaster::bench {

Row& Row::text(std::string key, std::string value) {
  fields.push_back(Field{std::move(key), std::nullopt, 0, std::move(value)});
  return *this;
}

Row& Row::num(std::string key, std::optional<double> value, int decimals) {
  fields.push_back(Field{std::move(key), value, decimals, ""});
  return *this;
}

std::optional<double> Row::get(const std::string& key) const {
  for (const auto& f : fields)
    if (f.key == key) return f.value;
  return std::nullopt;
}

Row median(const std::vector<Row>& runs) {
  Row out = runs.front();
  for (std::size_t i = 0; i < out.fields.size(); ++i) {
    std::vector<double> values;
    for (const auto& r : runs)
      if (i < r.fields.size() && r.fields[i].value) values.push_back(*r.fields[i].value);
    if (values.empty()) continue;
    std::sort(values.begin(), values.end());
    const std::size_t m = values.size() / 2;
    out.fields[i].value = values.size() % 2 ? values[m] : (values[m - 1] + values[m]) / 2;
  }
  return out;
}

std::string format(const Row& row, const std::string& prefix) {
  std::string line = prefix + " config=" + row.config;
  for (const auto& f : row.fields) {
    line += ' ';
    line += f.key;
    line += '=';
    if (f.value) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.*f", f.decimals, *f.value);
      line += buf;
    } else {
      line += f.text.empty() ? "-" : f.text;
    }
  }
  return line;
}

double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  // Nearest rank: the smallest value with at least p% of the values at or below it.
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

}  // namespace taskmaster::bench
