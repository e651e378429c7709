#!/usr/bin/env bash
# Lays out the C++ sources (*.cpp, *.h) by .clang-format, with clang-format 14 (Debian 12's
# clang-format package; scripts/setup.sh installs it). Another version may lay out some lines
# differently: set CLANG_FORMAT to pick the binary.
#   scripts/format.sh            formats every file in place
#   scripts/format.sh --check    changes nothing; lists the files it would change, and fails if any
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
clang_format=${CLANG_FORMAT:-clang-format}
if ! command -v "$clang_format" >/dev/null; then
  echo "format: $clang_format not found (bash scripts/setup.sh installs it)" >&2
  exit 2
fi
version=$("$clang_format" --version)
[[ $version =~ version\ 14\. ]] || echo "format: warning: .clang-format is tuned for clang-format 14; this is $version" >&2

mapfile -t files < <(find common master protocol worker client cli bench fuzz tests examples -type f \( -name '*.cpp' -o -name '*.h' \) | sort)
if ((check == 0)); then
  "$clang_format" -i --style=file "${files[@]}"
  exit 0
fi
unformatted=()
for f in "${files[@]}"; do
  "$clang_format" --style=file "$f" | cmp -s - "$f" || unformatted+=("$f")
done
if ((${#unformatted[@]})); then
  echo "format: ${#unformatted[@]} of ${#files[@]} files are not laid out by .clang-format (bash scripts/format.sh fixes them):" >&2
  printf '  %s\n' "${unformatted[@]}" >&2
  exit 1
fi
echo "format: all ${#files[@]} files are formatted"
