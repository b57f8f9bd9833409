#!/usr/bin/env bash
# `make replay`: replay the shared conversation trace (Mooncake FAST'25)
# through the real block manager with every eviction policy and the offline
# optimum (Belady), at 1, 3, 10 and 30 M tokens of G1, without and with a G2
# host tier of 4x that, and print the hit-ratio table of docs/eviction.md;
# then G1 + G2 + G3 rows (a real slot store) with and without the admission filter.
#   scripts/replay-table.sh [BUILD_DIR]      (KVB_TRACE=FILE to use another trace)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-build/release}"
bench="$build/bench/kvblockd-bench"
trace="${KVB_TRACE:-$root/../shared/traces/conversation_trace.jsonl}"
policies=(lru s3fifo prefix belady)

if [[ ! -x "$bench" ]]; then
  echo "replay-table: $bench not found; build first (make build)" >&2
  exit 1
fi
if [[ ! -r "$trace" ]]; then
  echo "replay-table: no trace at $trace; set KVB_TRACE to a Mooncake-format JSONL trace" >&2
  exit 1
fi

# One replay; prints "<hit_ratio> <baseline_unbounded_hit_ratio>" from its JSON line.
replay() {
  "$bench" replay --trace "$trace" "$@" 2>/dev/null | tail -n 1 |
    python3 -c 'import json, sys; j = json.load(sys.stdin); print(j["hit_ratio"], j["baseline_unbounded_hit_ratio"])'
}

tokens() {  # 3000000 -> 3M
  local t="$1"
  if [[ "$t" == 0 ]]; then echo "-"; elif ((t % 1000000 == 0)); then echo "$((t / 1000000))M"; else echo "$t"; fi
}

baseline=""
# One row: G1 tokens, G2 tokens (0 = none); every policy, then prefix's gain
# over LRU and the share of the LRU-to-Belady gap it closes.
row() {
  local g1="$1" g2="$2" line ratio base
  declare -A r
  for p in "${policies[@]}"; do
    read -r ratio base < <(replay --capacity-tokens "$g1" --host-capacity-tokens "$g2" --policy "$p")
    r[$p]="$ratio"
    baseline="$base"
  done
  line=$(python3 -c '
import sys
lru, s3, pre, bel = map(float, sys.argv[1:5])
gap = bel - lru
closed = f"{100 * (pre - lru) / gap:.0f}%" if gap > 1e-9 else "-"
print(f"{lru:8.4f} {s3:8.4f} {pre:8.4f} {bel:8.4f} {pre - lru:+11.4f} {closed:>10}")' "${r[lru]}" "${r[s3fifo]}" "${r[prefix]}" "${r[belady]}")
  printf '%-8s %-8s %s\n' "$(tokens "$g1")" "$(tokens "$g2")" "$line"
}

echo "kvblockd replay: prefix-cache hit ratio on $(basename "$trace") ($(wc -l <"$trace") requests, 512-token blocks)"
echo "every run goes through the real BlockManager (kvblockd-bench replay); belady = the offline optimum"
echo
printf '%-8s %-8s %8s %8s %8s %8s %11s %10s\n' G1 G2 lru s3fifo prefix belady prefix-lru "gap closed"
printf '%-8s %-8s %8s %8s %8s %8s %11s %10s\n' -- -- --- ------ ------ ------ ---------- ----------
for g1 in 1000000 3000000 10000000 30000000; do row "$g1" 0; done
for g1 in 1000000 3000000 10000000 30000000; do row "$g1" $((4 * g1)); done
echo
printf 'unbounded capacity (every block fits) = the theoretical maximum for this trace: %.4f\n' "$baseline"
echo "gap closed = (prefix - lru) / (belady - lru). G2 rows: a host tier of 4x G1; evicted G1 blocks are"
echo "written back to it and onboarded on a hit (both tiers run the row's policy)."

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
for policy in prefix lru s3fifo; do
  for row in "0 1 none" "30000000 1 every-victim" "30000000 2 used>=2"; do
    read -r disk admit label <<<"$row"
    read -r ratio g3 writes secs < <(disk_replay --capacity-tokens 1000000 --host-capacity-tokens 3000000 \
      --disk-capacity-tokens "$disk" --disk-admit-min-frequency "$admit" --policy "$policy")
    dlabel="30M tok"
    [[ "$disk" == 0 ]] && { dlabel="-"; label="-"; }
    printf '%-8s %-10s %-22s %10.4f %10s %10s %8.1f\n' "$policy" "$dlabel" "$label" "$ratio" "$g3" "$writes" "$secs"
  done
done
