#!/usr/bin/env bash
# Every GPU check of kvblockd in one command, for a machine with a GPU
# (about 10 minutes on an H100 / H200):
#   1. the GPU tests: the CUDA copy engines (test_kernels_gpu), lazy engines
#      and the selection rule (test_kernels_host CopyEngines.*), and kvblockd
#      with engines' device KV caches (test_daemon_gpu: byte-exact offload /
#      onboard through a real kvblockd for all three layouts and MLA, CUDA
#      IPC and VMM handles, layer-wise progress in order, size checks against
#      the real allocations, a SIGKILLed engine's device memory released);
#   2. compute-sanitizer memcheck of the copy engines' tests and of a
#      kvblockd serving engine_sim on the GPU (IPC, VMM, layer-wise, MLA);
#   3. the issue's benchmark: a 64-block Llama-3-8B request offloaded and
#      onboarded through kvblockd beside one pinned cudaMemcpy of the same
#      bytes, and a one-block onboard's p50 beside cudaMemcpyAsync + event
#      (kvblockd-bench gpu-request, CUDA IPC and VMM);
#   4. the copy engines' sweep (kvblockd-bench copy): the Llama chunk size and
#      1 MiB by default, every size with `full`; it stops early when the run
#      nears its time budget (KVB_GPU_CHECK_BUDGET_S, default 540 s).
#
#   scripts/gpu-pack.sh [BUILD_DIR] [PACK_DIR]      # here: the binaries + their libraries
#   scripts/gpu-check.sh PACK_DIR OUT_DIR [full]     # there
#
# With the device tool: build here (a CUDA build of every target), run
# scripts/gpu-pack.sh (it writes .gpu-pack/, ignored by git), then run
#   scripts/gpu-check.sh .gpu-pack $OUT        with carry [".gpu-pack"]
# and timeout_s 600.
#
# OUT_DIR gets summary.txt (device, verdicts, figures), tests.log,
# sanitizer.log, bench.jsonl (one JSON line per benchmark run) and
# bench.log. Exit status: non-zero when a test or sanitizer run fails
# (benchmarks never fail the run).
set -u
bin="$(cd "${1:?PACK_DIR (scripts/gpu-pack.sh output)}" && pwd)"
out="${2:?OUT_DIR}"
mode="${3:-standard}"
budget="${KVB_GPU_CHECK_BUDGET_S:-540}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export LD_LIBRARY_PATH="$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$bin/lib/ucx" ] && export UCX_MODULE_DIR="$bin/lib/ucx"
export KVB_KVBLOCKD="$bin/kvblockd" KVB_ENGINE_SIM="$bin/engine_sim"
start=$SECONDS
rc=0
summary="$out/summary.txt"
: >"$summary"
: >"$out/tests.log"
: >"$out/sanitizer.log"
: >"$out/bench.jsonl"
: >"$out/bench.log"
note() { echo "$*" | tee -a "$summary"; }
elapsed() { echo $((SECONDS - start)); }

note "== device"
nvidia-smi -L 2>&1 | tee -a "$summary"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.max,pcie.link.width.max,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | tee -a "$summary"

# ---- 1. tests ----------------------------------------------------------------
run_test() {  # run_test NAME CMD...: gtest output to tests.log, verdict to the summary
  local name=$1
  shift
  local log="$out/.test.log"
  "$@" >"$log" 2>&1
  local s=$?
  { echo "== $name (exit $s)"; cat "$log"; } >>"$out/tests.log"
  note "test $name: exit $s ($(elapsed) s): $(grep -oE '^\[  PASSED  \] [0-9]+ tests?' "$log" | sed 's/.*] //') passed," \
    "$(grep -oE '^\[  SKIPPED \] [0-9]+ tests?' "$log" | sed 's/.*] //') skipped," \
    "$(grep -cE '^\[  FAILED  \] .*\(' "$log") failed"
  grep -E '^\[  FAILED  \] .*\(' "$log" | tee -a "$summary"
  grep -m1 -A1 ' Skipped$' "$log" | tail -1 | sed 's/^/  first skip reason: /' | tee -a "$summary"
  rm -f "$log"
  [ "$s" -eq 0 ] || rc=1
}
note "== tests"
run_test test_kernels_gpu "$bin/test_kernels_gpu"
run_test "test_kernels_host CopyEngines" "$bin/test_kernels_host" --gtest_filter='CopyEngines.*'
run_test test_daemon_gpu "$bin/test_daemon_gpu"

# ---- helpers: a kvblockd on a temp socket --------------------------------------
work="$(mktemp -d /tmp/kvb-gpu-check-XXXXXX)"
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill -KILL "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
start_daemon() {  # start_daemon LOG [PREFIX...]: kvblockd on $work/kvblockd.sock
  local log=$1
  shift
  rm -f "$work/kvblockd.sock"
  "$@" "$bin/kvblockd" --socket "$work/kvblockd.sock" --host-pool-bytes 2147483648 >"$log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 600); do  # up to 60 s (compute-sanitizer starts slowly)
    grep -q "listening on" "$log" 2>/dev/null && return 0
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "kvblockd did not start:" && tail -20 "$log"
  return 1
}
stop_daemon() {  # the daemon's exit status
  local s=0
  kill -TERM "$daemon_pid" 2>/dev/null
  wait "$daemon_pid" || s=$?
  daemon_pid=""
  return $s
}

# ---- 2. compute-sanitizer -------------------------------------------------------
[ -x /usr/local/cuda/bin/compute-sanitizer ] && PATH="$PATH:/usr/local/cuda/bin"
if command -v compute-sanitizer >/dev/null && command -v nvidia-smi >/dev/null; then
  note "== compute-sanitizer"
  compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
    "$bin/test_kernels_gpu" --gtest_filter='*cuda_kernel*:*cuda_staged*' >>"$out/sanitizer.log" 2>&1
  s=$?
  note "memcheck test_kernels_gpu (kernel, staged): exit $s; $(grep -c 'ERROR SUMMARY: 0 errors' "$out/sanitizer.log") clean summaries ($(elapsed) s)"
  [ "$s" -eq 0 ] || rc=1
  if start_daemon "$work/sanitized.log" compute-sanitizer --tool memcheck --error-exitcode 3; then
    sims_ok=1
    for args in "--layout fully_contiguous --handles ipc" "--layout layer_separate_block_outer --handles vmm" \
      "--layout layer_separate_outer_block --handles ipc --outer-dim 1 --layerwise 2"; do
      # shellcheck disable=SC2086
      "$bin/engine_sim" --socket "$work/kvblockd.sock" --device 0 --blocks 8 $args >>"$out/sanitizer.log" 2>&1 ||
        sims_ok=0
    done
    stop_daemon
    s=$?
    cat "$work/sanitized.log" >>"$out/sanitizer.log"
    note "memcheck kvblockd serving engine_sim (ipc, vmm, layer-wise MLA): daemon exit $s, engine_sim ok $sims_ok; $(grep 'ERROR SUMMARY' "$work/sanitized.log" | tail -1) ($(elapsed) s)"
    [ "$s" -eq 0 ] && [ "$sims_ok" -eq 1 ] || rc=1
  else
    rc=1
  fi
else
  note "compute-sanitizer: skipped (compute-sanitizer or nvidia-smi not on PATH)"
fi

# ---- 3. the issue's benchmark through kvblockd ------------------------------------
bench() {  # bench SUBCOMMAND ARGS...: its JSON line to bench.jsonl; a failure to the summary
  echo "-- $*" >>"$out/bench.log"
  local res="$out/.bench.out"
  "$bin/kvblockd-bench" "$@" >"$res" 2>>"$out/bench.log"
  local s=$?
  cat "$res" >>"$out/bench.log"
  if [ "$s" -eq 0 ] && tail -1 "$res" | grep -q '^{'; then
    tail -1 "$res" >>"$out/bench.jsonl"
  else
    note "bench $1 failed (exit $s): $* -> $(tail -1 "$out/bench.log")"
  fi
  rm -f "$res"
}
note "== gpu-request (64-block Llama-3-8B request through kvblockd)"
if ! command -v nvidia-smi >/dev/null; then
  note "no nvidia-smi: no GPU here, benchmarks skipped"
elif start_daemon "$work/bench-daemon.log"; then
  for h in ipc vmm; do
    bench gpu-request --socket "$work/kvblockd.sock" --device 0 --blocks 64 --handles "$h"
    grep -E '^(offload|onboard|one-block)' "$out/bench.log" | tail -3 | sed "s/^/  $h: /" | tee -a "$summary"
  done
  stop_daemon || note "kvblockd (bench) exited non-zero: $(tail -3 "$work/bench-daemon.log")"
fi

# ---- 4. the copy engines' sweep ----------------------------------------------------
note "== copy sweep ($mode; budget ${budget} s, $(elapsed) s used)"
command -v nvidia-smi >/dev/null || budget=0
chunks="32768 1048576"
[ "$mode" = full ] && chunks="4096 32768 262144 1048576"
over() { [ "$(elapsed)" -ge "$budget" ]; }
for c in $chunks; do
  over && break
  for n in 1 4; do
    bench copy --engine cuda-kernel --direction d2d --src-layout lsbo --dst-layout fc --chunk-bytes "$c" --iters 9 \
      --inflight $n
  done
  for e in cuda-staged cuda-kernel cuda-batch; do
    over && break
    bench copy --engine $e --direction d2h --src-layout lsbo --dst-layout fc --chunk-bytes "$c"
    bench copy --engine $e --direction h2d --src-layout fc --dst-layout lsbo --chunk-bytes "$c"
  done
done
if ! over; then
  for e in cuda-kernel cuda-staged cuda-memcpy; do
    for d in d2d h2d d2h; do
      [ "$e" = cuda-staged ] && [ "$d" = d2d ] && continue
      bench copy --engine "$e" --direction "$d" --src-layout lsbo --dst-layout fc --chunk-bytes 32768 --blocks 1 \
        --iters 301
    done
  done
fi
over && note "copy sweep stopped at the time budget"

note "== figures (bench.jsonl)"
python3 - "$out/bench.jsonl" <<'PY' | tee -a "$summary"
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("bench") == "gpu_request":
        print(f"gpu-request {r['handles']:8} {r['blocks']} x {r['block_bytes'] >> 20} MiB: "
              f"offload {r['offload_gbps']:.2f} GB/s = {r['offload_ratio']:.3f}x of cudaMemcpy d2h {r['memcpy_d2h_gbps']:.2f}; "
              f"onboard {r['onboard_gbps']:.2f} GB/s = {r['onboard_ratio']:.3f}x of h2d {r['memcpy_h2d_gbps']:.2f}; "
              f"1-block onboard p50 {r['onboard1_p50_us']:.1f} us (p99 {r['onboard1_p99_us']:.1f}) vs "
              f"cudaMemcpyAsync+event {r['memcpy_async1_p50_us']:.1f} us; engines {r['daemon_engines']}")
        continue
    print(f"copy {r['engine']:12} {r['direction']:4} n {r.get('inflight', 1)} {r['src_layout'][:12]:>12}->{r['dst_layout'][:12]:12} "
          f"{r['chunk_bytes']:>8} x{r['runs']:>7} runs {r['bytes'] >> 20:>5} MiB  "
          f"{r['gbps']:8.2f} GB/s  {r['baseline']:22} {r['baseline_gbps']:8.2f}  ratio {r['ratio']:.3f}")
PY
note "== done in $(elapsed) s, exit $rc"
exit $rc
