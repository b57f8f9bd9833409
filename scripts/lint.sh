#!/usr/bin/env bash
# clang-tidy (.clang-tidy at the root, findings are errors) over every C++
# source file the build compiles, from BUILD_DIR's compile_commands.json.
# CUDA sources (.cu) are nvcc's and left out. Exit 1 on any finding.
# usage: scripts/lint.sh [BUILD_DIR] [JOBS]   (default build/release, nproc)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build/release}" && pwd)"
jobs="${2:-$(nproc)}"
[[ -r "$build/compile_commands.json" ]] ||
  { echo "lint: no $build/compile_commands.json (configure first: cmake --preset release)" >&2; exit 2; }
runner="$(command -v run-clang-tidy || command -v run-clang-tidy-14 || true)"
[[ -n "$runner" ]] || { echo "lint: run-clang-tidy is missing (apt install clang-tidy)" >&2; exit 2; }
start=$(date +%s)
# Files under the source tree's own folders (not the build tree), .cpp only.
status=0
"$runner" -p "$build" -j "$jobs" -quiet "^$root/(common|blockmgr|kernels|transport|client|daemon|storage|bench|examples|tests)/.*\.cpp$" \
  >"$build/lint.log" 2>&1 || status=$?
grep -E "(warning|error): " "$build/lint.log" | sort -u || true
echo "lint: clang-tidy $(( $(date +%s) - start )) s, exit $status (full output: $build/lint.log)"
exit $status
