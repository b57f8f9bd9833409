#!/usr/bin/env bash
# Does creating or reclaiming a host pool stall other sessions? (issue 12,
# item 2; docs/operations.md "Pool creation and the event loop")
#
# One kvblockd (max_layouts 2, host pools of POOL_BYTES, prefault on) serves
# an open-loop lookup load (16 sessions, RATE lookups/s) twice, each for
# SECONDS:
#   baseline  nothing else happens;
#   churn     meanwhile, one session after another says hello with a block
#             shape the daemon has not seen (inner dim 9, 10, ...), offloads
#             a prefix into it and leaves: every hello builds a pool of
#             ~POOL_BYTES / 512 B blocks (up to max_pool_blocks) and, from
#             the second on, first reclaims the previous idle one (its
#             registry dropped, its prefaulted memory unmapped).
# Both runs print the load's p50/p99/p999/max; the churn run's tail against
# the baseline's is what a pool costs the other sessions.
# usage: scripts/pool-stall.sh [BUILD_DIR] [POOL_BYTES] [RATE] [SECONDS]
set -euo pipefail
build="${1:-build/release}"
pool_bytes="${2:-512MiB}"
rate="${3:-4000}"
seconds="${4:-10}"
kvblockd="$build/daemon/kvblockd"
bench="$build/bench/kvblockd-bench"
ctl="$build/client/kvblockctl"
for b in "$kvblockd" "$bench" "$ctl"; do [[ -x "$b" ]] || { echo "pool-stall: $b is not built" >&2; exit 2; }; done
work="$(mktemp -d /tmp/kvb-pool-stall.XXXXXX)"
sock="$work/kvblockd.sock"
# shellcheck source=scripts/lib/daemon.sh
source "$(dirname "$0")/lib/daemon.sh"
kvb_start_daemon "$build" "$sock" "$work/kvblockd.log" --max-layouts 2 --host-pool-bytes "$pool_bytes"

load() {
  "$bench" load --socket "$sock" --sessions 16 --duration "$seconds" --mix lookup --rate "$rate" --baseline off
}

echo "== baseline: $rate lookups/s over 16 sessions for $seconds s, no new shapes"
load | tee "$work/baseline.txt"

echo "== churn: the same load while sessions with new block shapes come and go"
load >"$work/churn.txt" &
loader=$!
sleep 1
shapes=0
start=$(date +%s%N)
dim=9
while kill -0 "$loader" 2>/dev/null && (($(date +%s%N) - start < (seconds - 2) * 1000000000)); do
  t0=$(date +%s%N)
  "$bench" load --socket "$sock" --sessions 1 --duration 0.1 --mix offload --inner-dim "$dim" --baseline off \
    >"$work/shape-$dim.txt" 2>&1 || { echo "pool-stall: the session of shape $dim failed:"; cat "$work/shape-$dim.txt"; }
  echo "  shape inner_dim=$dim: hello + offload + bye in $((($(date +%s%N) - t0) / 1000000)) ms"
  shapes=$((shapes + 1))
  dim=$((dim + 1))
done
wait "$loader"
cat "$work/churn.txt"
echo "== $shapes new shapes during the churn run; kvblockd's pool lines:"
grep -E "G2 host pool|reclaimed" "$work/kvblockd.log" | sed 's/^/  /' | tail -n 12
"$ctl" --socket "$sock" stats --json | python3 -c 'import json, sys
s = json.load(sys.stdin)
print("  layouts_in_use", s.get("layouts_in_use"), "layouts_reclaimed", s.get("layouts_reclaimed"))'
echo "(logs in $work)"
