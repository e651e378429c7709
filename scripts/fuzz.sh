#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UndefinedBehaviorSanitizer) and runs
# each for a bounded time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 60; e.g. 600 for a 10-minute run
#   scripts/fuzz.sh --seeds                  only rewrite fuzz/corpus/decode from docs/PROTOCOL.md
# Seeds: the examples of docs/PROTOCOL.md (decode), fuzz/corpus/state, and fuzz/corpus/pickle (CPython's
# pickles of the objects in tests/pickle_vectors.py, protocols 0-5, and some refused ones). New inputs the fuzzer
# finds go to build-fuzz/corpus/TARGET (not into the repository); a crash is saved as
# build-fuzz/artifacts/TARGET-crash-*: copy it into fuzz/corpus/TARGET, and ctest replays it for good.
set -euo pipefail
cd "$(dirname "$0")/.."

write_seeds() {
  python3 - <<'PY'
import os, re
doc = open("docs/PROTOCOL.md", encoding="utf-8").read()
out = "fuzz/corpus/decode"
os.makedirs(out, exist_ok=True)
n = 0
for m in re.finditer(r"<!-- (example|invalid): ([A-Z_]+)[^>]*-->\s*```json\n(.*?)```", doc, re.S):
    n += 1
    with open(f"{out}/spec-{n:03d}-{m.group(2).lower()}", "w", encoding="utf-8") as f:
        f.write(m.group(2) + "\n" + m.group(3).strip())
print(f"fuzz: {n} seeds from docs/PROTOCOL.md in {out}")
PY
}

if [[ ${1:-} == --seeds ]]; then write_seeds; exit 0; fi
seconds=${1:-60}
write_seeds
bash scripts/setup.sh
# The same tree as scripts/test.sh's sanitizer build, so CI builds it once.
CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON \
  -DTASKMASTER_SANITIZE=address,undefined -DTASKMASTER_FUZZ=ON >/dev/null
cmake --build build-asan --target decode_fuzzer state_fuzzer pickle_fuzzer
mkdir -p build-fuzz/artifacts
status=0
for target in decode state pickle; do
  mkdir -p "build-fuzz/corpus/$target"
  echo "fuzz: $target for $seconds s"
  if ! ASAN_OPTIONS=detect_leaks=1 build-asan/fuzz/${target}_fuzzer "build-fuzz/corpus/$target" "fuzz/corpus/$target" \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=5 -print_final_stats=1 \
      -artifact_prefix="build-fuzz/artifacts/$target-" 2>"build-fuzz/$target.log"; then
    status=1
    echo "fuzz: $target FOUND A PROBLEM; see build-fuzz/$target.log and build-fuzz/artifacts/" >&2
  fi
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+.*DONE" "build-fuzz/$target.log" || true
done
exit $status
