#!/usr/bin/env bash
# `make replay`: replay the shared conversation trace
# (Mooncake FAST'25) through the real block manager at a few capacities and
# policies, plus one run with a G2 host tier, and print a hit-ratio table.
#   scripts/replay-table.sh [BUILD_DIR]      (KVB_TRACE=FILE to use another trace)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-build/release}"
bench="$build/bench/kvblockd-bench"
trace="${KVB_TRACE:-$root/../shared/traces/conversation_trace.jsonl}"

if [[ ! -x "$bench" ]]; then
  echo "replay-table: $bench not found; build first (make build)" >&2
  exit 1
fi
if [[ ! -r "$trace" ]]; then
  echo "replay-table: no trace at $trace; set KVB_TRACE to a Mooncake-format JSONL trace" >&2
  exit 1
fi

# One replay; prints "<hit_ratio> <evictions> <g2_hits> <seconds>" from the JSON line.
replay() {
  local json
  json="$("$bench" replay --trace "$trace" "$@" 2>/dev/null | tail -n 1)"
  field() { sed -E "s/.*\"$1\":\"?([^,\"}]*).*/\1/" <<<"$json"; }
  echo "$(field hit_ratio) $(field evictions) $(field g2_hit_blocks) $(field seconds) $(field baseline_unbounded_hit_ratio)"
}

echo "kvblockd demo: prefix-cache hit ratio on $(basename "$trace") ($(wc -l <"$trace") requests, 512-token blocks)"
echo "every run goes through the real BlockManager (kvblockd-bench replay)"
echo
printf '%-12s %-18s %-8s %10s %12s %10s %8s\n' policy "G1 capacity" "G2" "hit ratio" evictions "G2 hits" seconds
printf '%-12s %-18s %-8s %10s %12s %10s %8s\n' ------ ----------- -- --------- --------- ------- -------
baseline=""
for cap in 100000 1000000 10000000 30000000 unbounded; do
  for policy in lru s3fifo; do
    read -r ratio ev g2 secs base < <(replay --capacity-tokens "$cap" --policy "$policy")
    baseline="$base"
    label="$cap tokens"
    [[ "$cap" == unbounded ]] && label="unbounded"
    printf '%-12s %-18s %-8s %10.4f %12s %10s %8s\n' "$policy" "$label" "-" "$ratio" "$ev" "$g2" "$secs"
  done
done
for policy in lru s3fifo; do
  read -r ratio ev g2 secs base < <(replay --capacity-tokens 1000000 --host-capacity-tokens 10000000 --policy "$policy")
  printf '%-12s %-18s %-8s %10.4f %12s %10s %8s\n' "$policy" "1000000 tokens" "10M tok" "$ratio" "$ev" "$g2" "$secs"
done
echo
echo "unbounded = the theoretical maximum for this trace: $baseline"
echo "(G2 row: a host tier of 10M tokens; evicted G1 blocks are written back to it and onboarded on a hit)"
