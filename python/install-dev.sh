#!/usr/bin/env bash
# Builds the kvblockd Python package into a cached venv (what `make python` runs):
#   python/install-dev.sh VENV_DIR           make/reuse the venv, build the package into it
#   python/install-dev.sh --into VENV_DIR    only build the package into an existing venv
#                                            (one that has nanobind and scikit-build-core)
# The venv and its build requirements (requirements-dev.txt) are made once and
# reused while that file is unchanged; the extension's CMake build directory
# (build/python/) is kept, so a rebuild compiles only what changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
into=0
if [[ "${1:-}" == "--into" ]]; then into=1; shift; fi
venv="${1:?usage: install-dev.sh [--into] VENV_DIR}"
python="${PYTHON:-python3}"
stamp_want="$(sha256sum "$here/requirements-dev.txt" | cut -c1-16)"
if [[ $into -eq 0 && ( ! -f "$venv/.kvb-stamp" || "$(cat "$venv/.kvb-stamp")" != "$stamp_want" ) ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements-dev.txt"
  echo "$stamp_want" >"$venv/.kvb-stamp"
fi
args=()
command -v ccache >/dev/null && args+=("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
CMAKE_ARGS="${args[*]:-}" CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-$(nproc)}" \
  "$venv/bin/pip" install -q --no-build-isolation "$here"
