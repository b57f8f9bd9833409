#!/usr/bin/env bash
# Issue 12's scale table: one kvblockd on its defaults, an open-loop lookup
# load (kvblockd-bench load --mix lookup --rate R) of 1,000 and 10,000
# sessions at 5,000, 20,000 and 40,000 lookups/s, 10 s each, in that order
# on one daemon; one line per run (p50/p99/p999/max ms, errors).
# usage: scripts/scale-table.sh [BUILD_DIR]
set -euo pipefail
b="${1:-build/release}"
work="$(mktemp -d /tmp/kvb-scale.XXXXXX)"
# shellcheck source=scripts/lib/daemon.sh
source "$(dirname "$0")/lib/daemon.sh"
kvb_start_daemon "$b" "$work/s.sock" "$work/kvblockd.log"
for sessions in 1000 10000; do
  for rate in 5000 20000 40000; do
    "$b/bench/kvblockd-bench" load --socket "$work/s.sock" --sessions "$sessions" --mix lookup --rate "$rate" \
      --duration 10 --baseline off 2>&1 | grep '^{' | python3 -c '
import json, sys
s, r = sys.argv[1], sys.argv[2]
j = json.load(sys.stdin)
v = (s, r, j["ops_per_s"], j["p50_ms"], j["p99_ms"], j["p999_ms"], j["max_ms"], j["errors"] + j["setup_errors"])
print("sessions %6s rate %6s: %8.0f lookups/s  p50 %.2f  p99 %.2f  p999 %.2f  max %.2f ms  errors %d" % v)' "$sessions" "$rate"
  done
done
