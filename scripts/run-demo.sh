#!/usr/bin/env bash
# `make run`: until the daemon exists, replay the shared conversation trace
# through the block manager at a few capacities and policies and print a
# hit-ratio table.
set -euo pipefail
build="${1:-build/release}"
bench="$build/bench/kvblockd-bench"
exec "$bench" replay --help
