// The daemon's background threads (pool prefault, pool teardown) run at a
// lower priority than the event loop: on a machine with few cores they
// would otherwise take the CPU the loop needs to answer sessions
// (scripts/pool-stall.sh measures it).
#pragma once

#include <sys/resource.h>
#include <unistd.h>

namespace kvb::daemon {

/// The nice value of a background thread (the loop keeps the process's).
inline constexpr int kBackgroundNice = 10;

/// Lowers the calling thread's priority (Linux: nice is per thread).
/// Best effort: a failure leaves it at the process's priority.
inline void lower_this_thread_priority() noexcept {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kBackgroundNice);
}

}  // namespace kvb::daemon
