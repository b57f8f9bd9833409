// Loopback helpers of the integration tests: a TCP port the kernel picked
// (for programs that cannot listen on port 0 and report the port, e.g.
// kvblockd's metrics_port or etcd's client URL), and one HTTP GET.
#pragma once

#include <cstdint>
#include <string>

namespace kvb::test {

/// A TCP port on 127.0.0.1 that was free a moment ago (0 on failure).
[[nodiscard]] std::uint16_t free_port();

/// One HTTP GET on 127.0.0.1:port; the whole response ("" on failure).
/// Bounded: a 10 s receive timeout.
[[nodiscard]] std::string http_get(std::uint16_t port, const std::string& target);

}  // namespace kvb::test
