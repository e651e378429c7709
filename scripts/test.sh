#!/usr/bin/env bash
# Builds everything (installing what is missing) and runs every test: unit and system.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure --parallel 2 --timeout 600
