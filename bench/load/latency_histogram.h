// LatencyHistogram: latencies in log-linear buckets (~1.5% wide), so that
// percentiles of millions of samples cost a few KiB and merging is a sum.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace kvb::bench {

class LatencyHistogram {
 public:
  /// Records one latency in nanoseconds.
  void record(std::uint64_t ns) noexcept {
    ++counts_[bucket(ns)];
    ++total_;
    if (ns > max_ns_) max_ns_ = ns;
  }
  void merge(const LatencyHistogram& other) noexcept {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    if (other.max_ns_ > max_ns_) max_ns_ = other.max_ns_;
  }
  [[nodiscard]] std::uint64_t count() const noexcept { return total_; }
  [[nodiscard]] std::uint64_t max_ns() const noexcept { return max_ns_; }
  /// The latency (ns, bucket midpoint) below which a fraction q of samples fall.
  [[nodiscard]] double quantile_ns(double q) const noexcept {
    if (total_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_ - 1)) + 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return midpoint(i);
    }
    return static_cast<double>(max_ns_);
  }

 private:
  static constexpr unsigned kSubBits = 6;  // 64 sub-buckets per power of two
  static constexpr std::size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  static std::size_t bucket(std::uint64_t ns) noexcept {
    if (ns < (1ULL << kSubBits)) return static_cast<std::size_t>(ns);
    const unsigned exp = 63U - static_cast<unsigned>(std::countl_zero(ns));  // >= kSubBits
    const unsigned shift = exp - kSubBits;
    const std::uint64_t sub = (ns >> shift) & ((1ULL << kSubBits) - 1);
    return ((shift + 1) << kSubBits) + static_cast<std::size_t>(sub);
  }
  static double midpoint(std::size_t b) noexcept {
    if (b < (1U << kSubBits)) return static_cast<double>(b);
    const unsigned shift = static_cast<unsigned>(b >> kSubBits) - 1;
    const std::uint64_t sub = b & ((1ULL << kSubBits) - 1);
    const std::uint64_t lo = ((1ULL << kSubBits) + sub) << shift;
    return static_cast<double>(lo) + static_cast<double>(1ULL << shift) / 2.0;
  }

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ns_ = 0;
};

}  // namespace kvb::bench
