#!/usr/bin/env bash
# The daemon demo (`make run`): start kvblockd on its
# defaults with a temp socket, run the engine simulator (and, when the daemon
# has a GPU, again with its KV cache in GPU memory), a short mixed load and a
# trace replay through the daemon, a cluster act (two more kvblockd workers
# joined over UCX on loopback: blocks offloaded through one are onboarded,
# fetched and checked through the other), print a results table and the
# daemon's counters, then stop it with SIGTERM and check it exited 0.
# usage: scripts/run-daemon-demo.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-build/release}"
kvblockd="$build/daemon/kvblockd"
ctl="$build/client/kvblockctl"
sim="$build/examples/engine_sim"
bench="$build/bench/kvblockd-bench"
trace="${KVB_TRACE:-$root/../shared/traces/conversation_trace.jsonl}"
sessions="${KVB_DEMO_SESSIONS:-64}"
seconds="${KVB_DEMO_SECONDS:-5}"
for bin in "$kvblockd" "$ctl" "$sim" "$bench"; do
  [[ -x "$bin" ]] || { echo "run-daemon-demo: $bin is not built (cmake --build $build)" >&2; exit 2; }
done

work="$(mktemp -d /tmp/kvb-demo-XXXXXX)"
sock="$work/kvblockd.sock"
daemon_pid=""
worker_pids=()
cleanup() {
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  for pid in "${worker_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting kvblockd (defaults, socket $sock)"
"$kvblockd" --socket "$sock" 2>"$work/kvblockd.log" &
daemon_pid=$!
# Bounded readiness wait: kvblockctl status answers once the daemon listens.
# shellcheck source=scripts/lib/daemon.sh
source "$(dirname "$0")/lib/daemon.sh"
if ! kvb_wait_ready "$ctl" "$sock" "$daemon_pid"; then
  echo "run-daemon-demo: kvblockd did not become ready within 10 s; its log:" >&2
  cat "$work/kvblockd.log" >&2
  exit 1
fi

echo "== engine_sim: attach, register a memfd KV cache, offload / lookup / onboard, verify bytes"
"$sim" --socket "$sock" --blocks 64 | tee "$work/sim.txt"

gpu_sim=""
if "$ctl" --socket "$sock" stats --json | grep -q '"gpu_present":true'; then
  echo "== engine_sim on GPU 0: a Llama-3-8B-shaped KV cache in device memory (CUDA IPC), offload, onboard layer by layer, verify bytes"
  "$sim" --socket "$sock" --device 0 --blocks 64 --layers 32 --inner-dim 1024 --layerwise 4 | tee "$work/sim-gpu.txt"
  gpu_sim="$work/sim-gpu.txt"
else
  echo "== no GPU in kvblockd (stats: gpu_present false): the device KV path is skipped"
fi

echo "== load: $sessions sessions, mixed (60 % lookup, 20 % onboard, 20 % offload), $seconds s"
"$bench" load --socket "$sock" --sessions "$sessions" --duration "$seconds" --mix mixed --baseline off \
  2>"$work/load.err" | tee "$work/load.txt"
replay_json=""
if [[ -r "$trace" ]]; then
  echo "== replay: one pass of the shared conversation trace through the daemon (lookup, then offload the misses)"
  "$bench" load --socket "$sock" --sessions 16 --duration 30 --passes 1 --mix replay --trace "$trace" --baseline off \
    2>"$work/replay.err" | tee "$work/replay.txt"
  replay_json="$(tail -n 1 "$work/replay.txt")"
fi

echo "== cluster: workers A and B (static peers, UCX on 127.0.0.1); engine_sim offloads 16 blocks through A, onboards them through B"
cluster_result="not run"
wait_log() {  # wait_log FILE TEXT: bounded wait (20 s) for TEXT in FILE
  for _ in $(seq 1 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
"$kvblockd" --socket "$work/a.sock" --cluster-listen 127.0.0.1:0 --cluster-worker A 2>"$work/a.log" &
worker_pids+=($!)
if wait_log "$work/a.log" "cluster: worker A of cluster"; then
  a_addr="$(grep -o "cluster: worker A of cluster '[^']*' on [0-9.]*:[0-9]*" "$work/a.log" | head -n 1 | awk '{print $NF}')"
  "$kvblockd" --socket "$work/b.sock" --cluster-listen 127.0.0.1:0 --cluster-worker B --cluster-peers "$a_addr" \
    2>"$work/b.log" &
  worker_pids+=($!)
  if wait_log "$work/b.log" "cluster: worker A joined" && wait_log "$work/a.log" "cluster: worker B joined"; then
    "$sim" --socket "$work/a.sock" --blocks 16 --salt 77 --only offload | tee "$work/sim-a.txt"
    # B learns A's blocks through index events: bounded wait for its index.
    for _ in $(seq 1 100); do
      n="$("$ctl" --socket "$work/b.sock" stats --json | python3 -c 'import json, sys
print(json.load(sys.stdin).get("cluster", {}).get("index_blocks", 0))')" || n=0
      [[ "$n" -ge 16 ]] && break
      sleep 0.1
    done
    # A router asks B where the prefix lives (engine_sim's shape is kvblockctl's default).
    echo "-- kvblockctl locate on B (what a KV-aware router asks):"
    "$ctl" --socket "$work/b.sock" --salt 77 locate $("$sim" --blocks 16 --salt 77 --print-hashes) |
      tee "$work/locate.txt"
    "$sim" --socket "$work/b.sock" --blocks 16 --salt 77 --only onboard | tee "$work/sim-b.txt"
    "$ctl" --socket "$work/b.sock" cluster | tee "$work/cluster.txt"
    cluster_result="$(grep -o 'byte-exact\|MISMATCH' "$work/sim-b.txt"); locate on B: A holds $(awk '$1 == "A" {print $2}' "$work/locate.txt")/16; lookup on B: $(grep -o 'prefix [0-9]*/[0-9]*' "$work/sim-b.txt"); $(grep -E '^  onboard +[0-9]' "$work/sim-b.txt" | tr -s ' ')"
  else
    cluster_result="workers did not join within 20 s (logs: a.log, b.log)"
    tail -n 5 "$work/a.log" "$work/b.log" >&2
  fi
else
  cluster_result="worker A did not start its cluster listener"
  tail -n 5 "$work/a.log" >&2
fi
for pid in "${worker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
worker_pids=()

echo "== kvblockctl stats --json"
"$ctl" --socket "$sock" stats --json | tee "$work/stats.json"

echo "== stopping kvblockd (SIGTERM)"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""

field() {  # field JSON KEY: the value at a dotted KEY of a JSON object (numbers to 3 decimals)
  python3 -c 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v = v.get(k) if isinstance(v, dict) else None
print(round(v, 3) if isinstance(v, float) else ("" if v is None else v))' "$1" "$2"
}
load_json="$(tail -n 1 "$work/load.txt")"
stats_json="$(cat "$work/stats.json")"
echo
echo "== results"
printf '%-28s %s\n' "engine_sim verify" "$(grep -o 'byte-exact\|MISMATCH' "$work/sim.txt")"
if [[ -n "$gpu_sim" ]]; then
  printf '%-28s %s; %s\n' "engine_sim on GPU 0" "$(grep -o 'byte-exact\|MISMATCH' "$gpu_sim")" \
    "$(grep -E '^  (offload|onboard)' "$gpu_sim" | tr -s ' ' | tr '\n' ';')"
fi
printf '%-28s %s ops/s, p50 %s ms, p99 %s ms, errors %s\n' "mixed load ($sessions sessions)" \
  "$(field "$load_json" ops_per_s)" "$(field "$load_json" p50_ms)" "$(field "$load_json" p99_ms)" \
  "$(field "$load_json" errors)"
if [[ -n "$replay_json" ]]; then
  printf '%-28s %s requests/s, p50 %s ms, p99 %s ms, prefix hit ratio %s, errors %s\n' "trace replay (16 sessions)" \
    "$(field "$replay_json" ops_per_s)" "$(field "$replay_json" p50_ms)" "$(field "$replay_json" p99_ms)" \
    "$(field "$replay_json" hit_ratio)" "$(field "$replay_json" errors)"
fi
printf '%-28s %s\n' "cluster (A -> B over UCX)" "$cluster_result"
printf '%-28s sessions %s, inflight_requests %s, leased_blocks %s, offloaded %s B, onboarded %s B\n' \
  "daemon counters" "$(field "$stats_json" sessions)" "$(field "$stats_json" inflight_requests)" \
  "$(field "$stats_json" leased_blocks)" "$(field "$stats_json" bytes_offloaded)" "$(field "$stats_json" bytes_onboarded)"
printf '%-28s %s\n' "kvblockd exit status" "$rc"
if [[ $rc -ne 0 ]]; then
  echo "run-daemon-demo: kvblockd exited $rc; its log:" >&2
  tail -n 20 "$work/kvblockd.log" >&2
  exit 1
fi
