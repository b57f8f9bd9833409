#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh runs into one folder that can travel to a
# machine with a GPU: the binaries of a CUDA build (stripped) and the shared
# libraries they need beyond the C/C++ runtime (lib/, found with ldd).
#
#   scripts/gpu-pack.sh [BUILD_DIR] [PACK_DIR]    (default build/release, .gpu-pack)
#
# Then, on the GPU machine: scripts/gpu-check.sh PACK_DIR OUT_DIR
set -euo pipefail
build="${1:-build/release}"
pack="${2:-.gpu-pack}"
bins=(
  "$build/daemon/kvblockd"
  "$build/examples/engine_sim"
  "$build/tests/kernels/test_kernels_gpu"
  "$build/tests/kernels/test_kernels_host"
  "$build/tests/daemon/test_daemon_gpu"
  "$build/bench/kvblockd-bench"
  "$build/bench/micro_kernels/kvb_micro_kernels"
)
rm -rf "$pack"
mkdir -p "$pack/lib"
for b in "${bins[@]}"; do
  if [[ ! -x "$b" ]]; then
    echo "gpu-pack: $b is missing (a CUDA build of every target: cmake --build $build)" >&2
    exit 2
  fi
  cp "$b" "$pack/"
  strip --strip-unneeded "$pack/$(basename "$b")" 2>/dev/null || true
done
# Shared libraries outside the C/C++ runtime (which every Linux has).
for b in "${bins[@]}"; do
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | ld-linux* | libstdc++.so* | libgcc_s.so* | \
      libcuda.so*) ;;
    *) cp -L "$lib" "$pack/lib/" ;;
  esac
done
# UCX loads its transports from ucx/ beside libucs at run time.
ucs="$(ldd "$build/bench/kvblockd-bench" | awk '/libucs.so/ {print $3}')"
if [[ -n "$ucs" && -d "$(dirname "$ucs")/ucx" ]]; then
  mkdir -p "$pack/lib/ucx"
  cp -L "$(dirname "$ucs")"/ucx/*.so* "$pack/lib/ucx/" 2>/dev/null || true
fi
cp scripts/gpu-check.sh "$pack/"
du -sh "$pack"
