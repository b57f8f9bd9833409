// Metrics: the daemon's counters and latency histograms, rendered as
// Prometheus text (docs/operations.md, "Metrics"). Event-loop thread only.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace kvb::daemon {

struct DaemonCore;

/// How a request ended, as the requests_total label says.
enum class Outcome : std::uint8_t { ok = 0, error = 1, busy = 2, timeout = 3, cancelled = 4 };
[[nodiscard]] std::string_view to_string(Outcome outcome) noexcept;

class Metrics {
 public:
  /// Latency bucket upper bounds, seconds.
  static constexpr std::array<double, 14> kBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                      0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   5.0};

  /// One request of operation `op` ended with `outcome` after `seconds`.
  void record(std::string_view op, Outcome outcome, double seconds);
  void session_opened() { ++sessions_total_; }
  void connection_refused(std::string_view reason) { ++refused_[std::string(reason)]; }
  void protocol_error() { ++protocol_errors_; }

  /// Prometheus text exposition of these counters plus the gauges of `core`.
  [[nodiscard]] std::string render(const DaemonCore& core) const;

 private:
  static constexpr std::size_t kOutcomes = 5;
  struct OpStats {
    std::string op;
    std::array<std::uint64_t, kOutcomes> outcomes{};
    std::array<std::uint64_t, kBuckets.size()> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  // A handful of operations: a linear scan beats a map and allocates nothing per request.
  std::vector<OpStats> ops_;
  std::map<std::string, std::uint64_t> refused_;
  std::uint64_t sessions_total_ = 0;
  std::uint64_t protocol_errors_ = 0;
};

}  // namespace kvb::daemon
