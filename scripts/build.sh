#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), then configures and builds into build/.
#   scripts/build.sh [TARGET...]      default: everything, tests included
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON >/dev/null
if (($#)); then
  cmake --build build --target "$@"
else
  cmake --build build
fi
