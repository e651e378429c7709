#!/usr/bin/env bash
# The tests of the worker's threads under clang's ThreadSanitizer (part of scripts/test.sh): the
# thread pool (tests/pool_test.cpp), the handlers (tests/handlers_test.cpp), the master's worker
# table (tests/workers_test.cpp), and real worker processes, themselves built with ThreadSanitizer,
# against a master (tests/system/workers_test.cpp). Builds only what those need, into build-tsan/.
# A race in any process, the worker and master processes the system tests start included, fails
# the run: every report is written to build-tsan/tsan-logs/ and printed. tests/tsan.supp says what is
# not reported (libzmq's internals: the library is not built with ThreadSanitizer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: the worker's threads under ThreadSanitizer"
CXX=clang++ cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON \
  -DTASKMASTER_SANITIZE=thread >/dev/null
cmake --build build-tsan --target unit_tests system_tests taskmaster
logs=$PWD/build-tsan/tsan-logs
rm -rf "$logs" && mkdir -p "$logs"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp log_path=$logs/tsan"
status=0
build-tsan/tests/unit_tests --source-file='*/tests/pool_test.cpp,*/tests/handlers_test.cpp,*/tests/workers_test.cpp' || status=1
build-tsan/tests/system_tests --source-file='*/tests/system/workers_test.cpp,*/tests/system/http_test.cpp' || status=1
if compgen -G "$logs/tsan*" >/dev/null; then
  status=1
  for f in "$logs"/tsan*; do echo "test: ThreadSanitizer report $f:" >&2; cat "$f" >&2; done
fi
((status == 0)) && echo "test: no data race found"
exit $status
