#!/usr/bin/env bash
# Offload into a fresh 2 GiB host pool with prefault on vs off, same run, same
# command (issue 13). For each mode: start kvblockd, create the pool with a
# one-block engine_sim session, with prefault on wait (bounded) for the log
# line "G2 host pool 1 ready", then run the measured engine_sim.
# Usage: scripts/bench-prefault.sh [BUILD_DIR] (default build/release)
set -euo pipefail
build=${1:-build/release}
kvblockd=$build/daemon/kvblockd
engine_sim=$build/examples/engine_sim
shape=(--layout fully_contiguous --layers 32 --inner-dim 1024)
dir=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
for mode in true false; do
  sock=$dir/kvb-$mode.sock
  log=$dir/kvblockd-$mode.log
  "$kvblockd" --socket "$sock" --host-pool-bytes 2GiB --prefault "$mode" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
  "$engine_sim" --socket "$sock" "${shape[@]}" --blocks 1 >/dev/null
  if [[ $mode == true ]]; then
    for _ in $(seq 600); do grep -q "G2 host pool 1 ready" "$log" && break; sleep 0.1; done
    grep "G2 host pool 1 ready" "$log" || { echo "pool not ready after 60 s" >&2; exit 1; }
  fi
  echo "== prefault=$mode"
  "$engine_sim" --socket "$sock" "${shape[@]}" --blocks 512
  kill "$pid"; wait "$pid" || true; pid=
  grep -E "huge pages for shared memory" "$log" || true
done
