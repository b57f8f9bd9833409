# Shared by the scripts that start a kvblockd and drive it (run-daemon-demo.sh,
# pool-stall.sh, scale-table.sh). Source it; bash only.

# kvb_wait_ready CTL SOCKET PID [SECONDS]: waits (bounded, default 10 s) until
# `kvblockctl status` answers on SOCKET; fails early if PID exits.
kvb_wait_ready() {
  local ctl="$1" sock="$2" pid="$3" seconds="${4:-10}"
  local tries=$((seconds * 10))
  for _ in $(seq 1 "$tries"); do
    "$ctl" --socket "$sock" --timeout-ms 1000 status >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# kvb_start_daemon BUILD_DIR SOCKET LOG [kvblockd flags...]: starts kvblockd
# from BUILD_DIR on SOCKET (stderr to LOG), sets KVB_DAEMON_PID, stops it
# (SIGTERM, then waits) when the script exits, and waits until it is ready;
# on failure prints its log and exits 1.
kvb_start_daemon() {
  local build="$1" sock="$2" log="$3"
  shift 3
  "$build/daemon/kvblockd" --socket "$sock" "$@" 2>"$log" &
  KVB_DAEMON_PID=$!
  trap 'kill "$KVB_DAEMON_PID" 2>/dev/null || true; wait "$KVB_DAEMON_PID" 2>/dev/null || true' EXIT
  if ! kvb_wait_ready "$build/client/kvblockctl" "$sock" "$KVB_DAEMON_PID"; then
    echo "kvblockd did not become ready within 10 s; its log ($log):" >&2
    cat "$log" >&2
    exit 1
  fi
}
