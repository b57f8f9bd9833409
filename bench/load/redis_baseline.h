// The named baseline of `kvblockd-bench load`: redis-benchmark GET over a
// Unix socket at the same concurrency, against a redis-server this run
// starts (`--port 0 --unixsocket S --save ''`) and stops.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvb::bench {

struct RedisBaseline {
  double ops_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  std::string command;  // the redis-benchmark command line that ran
};

/// Runs redis-benchmark -s SOCK -c clients -n requests -t get; nullopt (with
/// `why`) when redis-server / redis-benchmark are missing or fail.
[[nodiscard]] std::optional<RedisBaseline> run_redis_baseline(std::uint32_t clients, std::uint32_t requests,
                                                              std::string& why);

}  // namespace kvb::bench
