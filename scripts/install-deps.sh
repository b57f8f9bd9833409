#!/usr/bin/env bash
# Installs exactly the Debian 12 packages kvblockd's build, tests and
# `make run` need. Idempotent: installs only what is missing and says what.
#   scripts/install-deps.sh          install what is missing
#   scripts/install-deps.sh --check  exit 1 (listing them) if any is missing
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git python3
  python3-dev python3-venv   # the Python package (python/, built in a venv by make python)
  libnuma1                  # vLLM CPU (make test-vllm)
  libboost1.81-dev          # Asio (C++20 coroutines, channels), Beast
  libucx-dev ucx-utils      # UCX 1.13 and ucx_perftest / ucx_info
  libspdlog-dev libfmt-dev
  libxxhash-dev
  liburing-dev fio          # disk tier (G3) I/O; fio is the baseline of `kvblockd-bench disk`
  libcli11-dev libtomlplusplus-dev libexpected-dev
  nlohmann-json3-dev        # the one JSON library (stats, kvblockctl, bench lines, traces)
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format clang-tidy
  redis-server redis-tools  # the baseline of the load benchmark
  etcd-server               # cluster membership: the cluster tests start a real etcd on loopback
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
