#!/usr/bin/env bash
# GCC 12 destroys the result of a conditional expression that contains a
# co_await twice (docs/transport.md, "Fixed (2026-12-02)": the double free
# behind the RequestsTimeOut* reports). Fails on any `cond ? ... co_await
# ... : ...` or `... : co_await ...` in our sources; write an if/else.
# usage: scripts/check-coawait.sh   (from anywhere; exit 1 on a finding)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hits="$(git ls-files '*.cpp' '*.h' | xargs grep -nE '\?[^;{}]*\bco_await\b|[^:]:[[:space:]]*co_await\b' || true)"
if [[ -n "$hits" ]]; then
  echo "co_await inside a conditional expression (GCC 12 destroys its result twice; use if/else):" >&2
  echo "$hits" >&2
  exit 1
fi
echo "check-coawait: no co_await in a conditional expression"
