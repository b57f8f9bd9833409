#!/usr/bin/env bash
# clang-format check of C++ files. With a base revision, only files changed
# since it; else every tracked C++ file. Exit 1 and list the files that differ.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
base="${1:-}"
if [[ -n "$base" ]] && git rev-parse -q --verify "$base^{commit}" >/dev/null; then
  mapfile -t files < <(git diff --name-only --diff-filter=ACMR "$base" -- '*.cpp' '*.h' '*.cu' '*.cuh')
else
  mapfile -t files < <(git ls-files -- '*.cpp' '*.h' '*.cu' '*.cuh')
fi
[[ ${#files[@]} -eq 0 ]] && { echo "format: no C++ files to check"; exit 0; }
bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
done
if [[ ${#bad[@]} -gt 0 ]]; then
  echo "format: these files differ from .clang-format (run: clang-format -i FILE):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "format: ${#files[@]} files ok"
