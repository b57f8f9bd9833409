// The baseline of kvb_micro_transport: raw UCX active-message ping-pong
// between two workers driven by one thread (what the manager's round trip
// costs without the manager).
#pragma once

#include <cstddef>
#include <string>

namespace kvb::bench {

/// Runs `round_trips` 64-byte AM ping-pongs over UCX_TLS=`tls` (after a
/// warm-up) and returns nanoseconds per round trip; negative if UCX failed
/// (the reason is written to `error`).
double raw_ucx_pingpong_ns(const std::string& tls, std::size_t round_trips, std::string& error);

}  // namespace kvb::bench
