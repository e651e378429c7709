#!/usr/bin/env bash
# Builds everything (installing what is missing) and runs every test: the layout check
# (scripts/format.sh --check), unit and system tests (gcc, warnings as errors), the worker's thread
# pool and handler tests under clang's ThreadSanitizer, then the whole suite built with clang's
# AddressSanitizer and UndefinedBehaviorSanitizer, then each libFuzzer target for a short bounded
# time. Every build here keeps assert() on (TASKMASTER_ASSERTS, the default with tests).
# TASKMASTER_QUICK=1 runs only the layout check and the first build and suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/format.sh --check
# The CI build fails on any warning; scripts/build.sh (the README's, a user's build) does not.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON -DTASKMASTER_WERROR=ON >/dev/null
cmake --build build
(cd build && ctest --output-on-failure --parallel 2 --timeout 600)
[[ ${TASKMASTER_QUICK:-0} == 1 ]] && exit 0

bash scripts/tsan.sh

echo "test: the suite again under AddressSanitizer and UndefinedBehaviorSanitizer"
CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON \
  -DTASKMASTER_SANITIZE=address,undefined -DTASKMASTER_FUZZ=ON >/dev/null
cmake --build build-asan
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure --parallel 2 --timeout 900)

echo "test: fuzzing each target for ${TASKMASTER_FUZZ_SECONDS:-60} s"
bash scripts/fuzz.sh "${TASKMASTER_FUZZ_SECONDS:-60}"
