// kvblockd's entry point as a library, so that tests can link it.
#pragma once

#include <cstdint>

#include "kvb/daemon/config.h"

namespace kvb::daemon {

/// Raises the RLIMIT_NOFILE soft limit to the hard limit (many sessions need
/// many fds). Returns the soft limit now in force.
std::uint64_t raise_fd_limit() noexcept;

/// Runs kvblockd with `config` until SIGTERM or SIGINT, then shuts down
/// gracefully (stop accepting, end in-flight requests with their result or
/// err(shutting down), release everything, unlink the socket). Returns the
/// process exit code: 0 after a clean shutdown, 1 when start-up failed (the
/// reason is logged).
[[nodiscard]] int run_daemon(const DaemonConfig& config);

}  // namespace kvb::daemon
