#!/usr/bin/env bash
# scripts/fuzz.sh BUILD_DIR RUNS: runs the libFuzzer protocol target for RUNS
# executions, starting from the committed corpus (tests/fuzz/corpus/protocol)
# plus a work corpus in BUILD_DIR/fuzz-corpus that keeps what it finds.
# Prints the executions and whether anything crashed (crash-* files are left
# in BUILD_DIR/fuzz-artifacts). FUZZ_MERGE=1 merges the new inputs into the
# committed corpus afterwards (then commit them).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:?usage: scripts/fuzz.sh BUILD_DIR RUNS}"
runs="${2:-1000000}"
target="$build/tests/fuzz/kvb_fuzz_protocol"
corpus=tests/fuzz/corpus/protocol
work="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
mkdir -p "$work" "$artifacts"
log="$build/fuzz.log"
start=$(date +%s)
set +e
"$target" -runs="$runs" -max_len=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "$corpus" \
  >"$log" 2>&1
rc=$?
set -e
secs=$(( $(date +%s) - start ))
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
echo "fuzz: ${execs} executions in ${secs} s, exit ${rc}, ${crashes} crash/leak/timeout/oom inputs in ${artifacts} (log: ${log})"
if [[ "${FUZZ_MERGE:-0}" == "1" ]]; then
  "$target" -merge=1 "$corpus" "$work" >>"$log" 2>&1
  echo "fuzz: merged new inputs into $corpus ($(ls "$corpus" | wc -l) files)"
fi
[[ $rc -eq 0 && $crashes -eq 0 ]] || { tail -40 "$log"; exit 1; }
