// `taskmaster bench`: it runs, verifies its own results and prints one RESULT line per
// configuration. Figures only: nothing here asserts a speed (STYLE.md: figures go in bench/).
#include <map>
#include <sstream>

#include <doctest/doctest.h>

#include "support/cluster.h"

namespace taskmaster::test {

namespace {

// RESULT lines as config -> its fields (key -> value text), in the order printed.
std::vector<std::pair<std::string, std::map<std::string, std::string>>> result_lines(const std::string& out) {
  std::vector<std::pair<std::string, std::map<std::string, std::string>>> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RESULT ", 0) != 0) continue;
    std::istringstream words(line.substr(7));
    std::string word, config;
    std::map<std::string, std::string> fields;
    while (words >> word) {
      const auto eq = word.find('=');
      REQUIRE_MESSAGE(eq != std::string::npos, "not key=value: " << word << " in " << line);
      if (word.substr(0, eq) == "config") config = word.substr(eq + 1);
      else fields[word.substr(0, eq)] = word.substr(eq + 1);
    }
    rows.emplace_back(config, fields);
  }
  return rows;
}

double number(const std::map<std::string, std::string>& fields, const std::string& key) {
  auto it = fields.find(key);
  REQUIRE_MESSAGE(it != fields.end(), "no " << key);
  std::size_t used = 0;
  const double v = std::stod(it->second, &used);
  REQUIRE_MESSAGE(used == it->second.size(), key << "=" << it->second << " is not a number");
  return v;
}

CommandResult bench(std::vector<std::string> args, std::chrono::milliseconds timeout) {
  args.insert(args.begin(), {kTaskmaster, "bench"});
  ChildProcess p(args);
  return finish(p, timeout);
}

}  // namespace

TEST_SUITE("bench") {

TEST_CASE("bench --quick runs every configuration, verifies it and prints its figures") {
  auto r = bench({"--quick"}, 120s);
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.code == 0);
  const auto rows = result_lines(r.out);
  std::map<std::string, int> seen;
  for (const auto& row : rows) {
    const auto& config = row.first;  // named: clang 14 cannot capture structured bindings
    const auto& f = row.second;
    CAPTURE(config);
    ++seen[config];
    CHECK(number(f, config == "memory" ? "queued" : "n") > 0);
    if (config == "zmq_ceiling") {
      CHECK(number(f, "tasks_per_s") > 0);
      CHECK(f.at("roles") == "processes");  // as PEERS.md measures it: worker processes, not threads
      continue;
    }
    if (config == "relay_floor") {
      CHECK(f.at("security") == "curve");
      CHECK(number(f, "tasks_per_s") > 0);
      CHECK(number(f, "trips") > 0);
      CHECK(number(f, "p50_us") > 0);
      CHECK(number(f, "p99_us") >= number(f, "p50_us"));
      CHECK(number(f, "ratio_to_zmq") > 0);
      continue;
    }
    CHECK(f.at("mode") == "memory");
    CHECK(f.at("security") == "curve");  // the key and encryption are on
    CHECK(number(f, "master_peak_rss_mib") > 0);
    if (config == "throughput" || config == "cli" || config == "backlog") {
      CHECK(number(f, "tasks_per_s") > 0);
      CHECK(number(f, "ratio_to_zmq") > 0);
      CHECK(number(f, "ratio_to_relay") > 0);
      CHECK(number(f, "master_cpu_s_per_1000") >= 0);
    } else if (config == "latency" || config == "ack") {
      CHECK(number(f, "p50_us") > 0);
      CHECK(number(f, "p99_us") >= number(f, "p50_us"));
      CHECK(number(f, "p50_to_floor") > 0);  // against relay_floor of the same run
      CHECK(number(f, "p99_to_floor") > 0);
    } else if (config == "memory") {
      CHECK(number(f, "bytes_per_task") > 0);
    } else if (config == "big_hello") {
      CHECK(number(f, "functions") == 1024);
      CHECK(number(f, "queues") == 1024);
      CHECK(number(f, "dispatch_s") > 0);
      CHECK(number(f, "status_rtt_ms") > 0);
    } else if (config == "jobs") {
      CHECK(number(f, "tasks_per_s_1_job") > 0);
      CHECK(number(f, "tasks_per_s_10000_jobs") > 0);
    } else if (config == "workers2000") {
      CHECK(number(f, "connected") == number(f, "workers"));
      CHECK(number(f, "idle_cpu_pct") >= 0);
      CHECK(number(f, "tasks_per_s") > 0);
      CHECK(number(f, "spread_max") >= number(f, "spread_min"));
      CHECK(number(f, "spread_max") > 0);
    } else if (config == "exec") {
      // 200 x true through `taskmaster run --each` (1 worker, 2 slots) beside xargs -P2 in the same run.
      CHECK(number(f, "n") == 200);
      CHECK(number(f, "threads") == 2);
      CHECK(number(f, "run_s") > 0);
      CHECK(number(f, "xargs_s") > 0);
      CHECK(number(f, "run_ms_per_task") == doctest::Approx(number(f, "run_s") * 1000 / 200).epsilon(0.01));
      CHECK(number(f, "overhead_ms_per_task") ==
            doctest::Approx(number(f, "run_ms_per_task") - number(f, "xargs_ms_per_task")).epsilon(0.01));
    }
  }
  CHECK(seen["zmq_ceiling"] == 1);
  CHECK(seen["relay_floor"] == 1);
  CHECK(seen["throughput"] == 1);
  CHECK(seen["latency"] == 1);
  CHECK(seen["ack"] == 1);
  CHECK(seen["cli"] == 1);
  CHECK(seen["memory"] == 1);
  CHECK(seen["backlog"] == 2);  // 1,000 and 20,000 tasks already queued
  CHECK(seen["big_hello"] == 1);
  CHECK(seen["jobs"] == 1);
  CHECK(seen["workers2000"] == 1);
  CHECK(seen["exec"] == 1);
}

TEST_CASE("bench refuses an unknown configuration, and --durable says whether this build has it") {
  auto bad = bench({"--only", "latency,nonsense"}, 30s);
  CHECK(bad.code == 2);
  CHECK(bad.err.find("unknown configuration 'nonsense'") != std::string::npos);
  CHECK(bad.out.empty());

  // Until the master has a --data-dir, --durable is refused with a reason; once it has, it runs.
  auto durable = bench({"--durable", "--quick", "--only", "latency"}, 60s);
  INFO("stdout:\n" << durable.out << "\nstderr:\n" << durable.err);
  if (durable.code == 2) {
    CHECK(durable.err.find("--durable is not supported") != std::string::npos);
  } else {
    CHECK(durable.code == 0);
    CHECK(durable.out.find("RESULT config=latency mode=durable") != std::string::npos);
  }
}

}  // TEST_SUITE

}  // namespace taskmaster::test
