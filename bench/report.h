// One line of figures per configuration, fixed and greppable:
//   RESULT config=throughput mode=memory workers=2 n=20000 tasks_per_s=21450 ... ratio_to_zmq=0.015
// Fields keep their order; a figure that cannot be measured (the master's RSS when it runs
// elsewhere) is "-". With --repeat R each run is a DETAIL line and the RESULT line holds the
// median of every numeric field.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace taskmaster::bench {

struct Field {
  std::string key;
  std::optional<double> value;  // nullopt: printed as text (or "-" if text is empty)
  int decimals = 0;
  std::string text;
};

struct Row {
  std::string config;
  std::vector<Field> fields;

  Row& text(std::string key, std::string value);
  Row& num(std::string key, std::optional<double> value, int decimals = 0);
  // The field's value, if it has a number.
  std::optional<double> get(const std::string& key) const;
};

// The median of each numeric field over runs of the same configuration (text fields from the
// first run). REQUIRES: !runs.empty(), every run has the same fields in the same order.
Row median(const std::vector<Row>& runs);

// "PREFIX config=NAME key=value ..." (no newline).
std::string format(const Row& row, const std::string& prefix = "RESULT");

// Nearest-rank percentile (p in 0..100) of `values`, which it sorts.
double percentile(std::vector<double>& values, double p);

}  // namespace taskmaster::bench
