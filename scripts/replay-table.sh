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

# G1 + G2 + G3: the disk tier is a real slot store (SlotStore, O_DIRECT where
# the file system has it; /dev/shm when writable, so the table measures
# placement, not the device). Evicted G2 blocks are written to it, with or
# without the frequency admission filter (disk.admit_min_frequency).
disk_replay() {
  local json
  json="$("$bench" replay --trace "$trace" "$@" 2>/dev/null | tail -n 1)"
  field() { sed -E "s/.*\"$1\":\"?([^,\"}]*).*/\1/" <<<"$json"; }
  echo "$(field hit_ratio) $(field g3_hit_blocks) $(field g3_writes) $(field seconds)"
}
echo
echo "with a disk tier (G3): G1 1M tokens, G2 3M tokens"
printf '%-8s %-10s %-22s %10s %10s %10s %8s\n' policy "G3" "admission" "hit ratio" "G3 hits" "G3 writes" seconds
printf '%-8s %-10s %-22s %10s %10s %10s %8s\n' ------ -- --------- --------- ------- --------- -------
for policy in lru s3fifo; do
  for row in "0 1 none" "30000000 1 every-victim" "30000000 2 used>=2"; do
    read -r disk admit label <<<"$row"
    read -r ratio g3 writes secs < <(disk_replay --capacity-tokens 1000000 --host-capacity-tokens 3000000 \
      --disk-capacity-tokens "$disk" --disk-admit-min-frequency "$admit" --policy "$policy")
    dlabel="30M tok"
    [[ "$disk" == 0 ]] && { dlabel="-"; label="-"; }
    printf '%-8s %-10s %-22s %10.4f %10s %10s %8s\n' "$policy" "$dlabel" "$label" "$ratio" "$g3" "$writes" "$secs"
  done
done
