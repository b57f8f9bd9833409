#!/usr/bin/env bash
# Runs the CUDA copy engines' tests and benchmarks on a machine with a GPU.
#
#   scripts/gpu-check.sh BIN_DIR OUT_DIR [quick|full]
#
# BIN_DIR holds test_kernels_gpu, kvblockd-bench (and optionally
# kvb_micro_kernels) from a CUDA build, e.g. `scripts/gpu-pack.sh` output,
# or build/release/{tests/kernels,bench} flattened. Results:
#   OUT_DIR/tests.log        gtest output of test_kernels_gpu
#   OUT_DIR/sanitizer.log    compute-sanitizer memcheck of the same (if present)
#   OUT_DIR/bench.jsonl      one JSON line per `kvblockd-bench copy` run
#   OUT_DIR/bench.log        their stderr/stdout
# Exit status: non-zero when a test fails (benchmarks never fail the run).
set -u
bin=${1:?BIN_DIR}
out=${2:?OUT_DIR}
mode=${3:-full}
mkdir -p "$out"
rc=0

nvidia-smi -L 2>&1 | tee "$out/device.txt"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.max,pcie.link.width.max,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | tee -a "$out/device.txt"

echo "== test_kernels_gpu"
"$bin/test_kernels_gpu" 2>&1 | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1

if command -v compute-sanitizer >/dev/null && [ "$mode" = full ]; then
  echo "== compute-sanitizer memcheck test_kernels_gpu (kernel and staged paths)"
  compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
    "$bin/test_kernels_gpu" --gtest_filter='*cuda_kernel*:*cuda_staged*' >"$out/sanitizer.log" 2>&1
  s=$?
  tail -5 "$out/sanitizer.log"
  [ "$s" -eq 0 ] || rc=1
fi

bench() {
  echo "-- copy $*" >>"$out/bench.log"
  "$bin/kvblockd-bench" copy "$@" 2>>"$out/bench.log" | tee -a "$out/bench.log" | tail -1 >>"$out/bench.jsonl"
}

echo "== benchmarks"
: >"$out/bench.jsonl"
chunks="4096 32768 262144 1048576"
[ "$mode" = quick ] && chunks="32768 1048576"
for c in $chunks; do
  # device -> device: the gather kernel (direct and descriptor form), one plan at a time and 4 in flight
  for f in "" --descriptors; do
    for n in 1 4; do
      bench --engine cuda-kernel --direction d2d --src-layout lsbo --dst-layout fc --chunk-bytes "$c" --iters 9 \
        --inflight $n $f
    done
  done
  bench --engine cuda-batch --direction d2d --src-layout lsbo --dst-layout fc --chunk-bytes "$c" --iters 5
  # offload (device layer-separate -> host pool) and onboard (host pool -> device)
  for e in cuda-staged "cuda-staged --descriptors" cuda-kernel cuda-batch; do
    bench --engine $e --direction d2h --src-layout lsbo --dst-layout fc --chunk-bytes "$c"
    bench --engine $e --direction h2d --src-layout fc --dst-layout lsbo --chunk-bytes "$c"
  done
done
# per-chunk cudaMemcpyAsync, the baseline of the batching target
for d in d2d d2h; do
  bench --engine cuda-memcpy --direction $d --src-layout lsbo --dst-layout fc --chunk-bytes 32768 --iters 3
done
# Fully contiguous both sides (runs merge into one big copy).
for e in cuda-kernel cuda-batch; do
  bench --engine "$e" --direction d2d --src-layout fc --dst-layout fc --chunk-bytes 32768 --iters 9
done
# Completion: block in the driver instead of polling
bench --engine cuda-kernel --direction d2d --src-layout lsbo --dst-layout fc --chunk-bytes 32768 --iters 9 --poll-us 0
# The latency case: one block of a Llama-3-8B-like model, 64 chunks of 32 KiB.
for e in cuda-kernel cuda-staged cuda-batch cuda-memcpy; do
  for d in d2d h2d d2h; do
    [ "$e" = cuda-staged ] && [ "$d" = d2d ] && continue
    bench --engine "$e" --direction "$d" --src-layout lsbo --dst-layout fc --chunk-bytes 32768 --blocks 1 --iters 301
  done
done
bench --engine cuda-kernel --direction d2d --src-layout lsbo --dst-layout fc --chunk-bytes 32768 --blocks 1 --iters 301 \
  --poll-us 0

if [ -x "$bin/kvb_micro_kernels" ]; then
  echo "== kvb_micro_kernels"
  "$bin/kvb_micro_kernels" --benchmark_min_time=0.2 2>&1 | tee "$out/micro.log" | tail -20
fi
if command -v cuobjdump >/dev/null; then
  cuobjdump --dump-resource-usage "$bin/test_kernels_gpu" 2>&1 | grep -iE "gather|REG" | tee "$out/resources.txt" | head -8
fi

echo "== summary (engine direction layouts chunk gbps baseline ratio)"
python3 - "$out/bench.jsonl" <<'EOF' | tee "$out/summary.txt"
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    print(f"{r['engine']:12} {r['direction']:4} spin {r.get('spin_us', '-')!s:>3} n {r.get('inflight', 1)} {'desc' if r.get('descriptors') else 'dir '} poll {r.get('poll_us', '-')!s:>3} stg {r.get('staging_mib', '-')!s:>3} {r['src_layout'][:12]:>12}->{r['dst_layout'][:12]:12} "
          f"{r['chunk_bytes']:>8} x{r['runs']:>7} runs {r['bytes']>>20:>5} MiB  "
          f"{r['gbps']:8.2f} GB/s  {r['baseline']:22} {r['baseline_gbps']:8.2f}  ratio {r['ratio']:.3f}")
EOF
exit $rc
