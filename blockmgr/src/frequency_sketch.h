// FrequencySketch: approximate use counts of sequence hashes, for the disk
// tier's admission filter ("write a G2 victim to G3 only if it was used at
// least N times"). A count-min sketch: 4 rows of saturating 8-bit counters
// indexed by independent mixes of the hash; the estimate is the smallest of
// the 4. Every 10 x width additions all counters are halved, so popularity
// fades (TinyLFU's reset). O(1), no allocation after construction. Private
// to blockmgr/src.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <vector>

#include "kvb/blockmgr/sequence_hash.h"

namespace kvb::detail {

class FrequencySketch {
 public:
  /// Sized for about `items` distinct hashes in play (the tiers' capacity).
  explicit FrequencySketch(std::uint64_t items)
      : width_(std::bit_ceil(std::clamp<std::uint64_t>(items * 2, 64, 1ULL << 24))),
        counters_(width_ * kRows, 0),
        reset_after_(width_ * 10) {}

  void add(SequenceHash hash) noexcept {
    for (std::uint32_t r = 0; r < kRows; ++r) {
      std::uint8_t& c = counters_[r * width_ + index(hash, r)];
      if (c < 255) ++c;
    }
    if (++additions_ >= reset_after_) halve();
  }

  [[nodiscard]] std::uint32_t estimate(SequenceHash hash) const noexcept {
    std::uint32_t best = 255;
    for (std::uint32_t r = 0; r < kRows; ++r)
      best = std::min<std::uint32_t>(best, counters_[r * width_ + index(hash, r)]);
    return best;
  }

 private:
  static constexpr std::uint32_t kRows = 4;
  static constexpr std::array<std::uint64_t, kRows> kSeeds = {0x9E3779B97F4A7C15ULL, 0xC2B2AE3D27D4EB4FULL,
                                                              0x165667B19E3779F9ULL, 0xD6E8FEB86659FD93ULL};

  [[nodiscard]] std::uint64_t index(SequenceHash hash, std::uint32_t row) const noexcept {
    std::uint64_t x = (hash.value() ^ kSeeds[row]) * 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 29;
    return x & (width_ - 1);
  }

  void halve() noexcept {
    for (auto& c : counters_) c = static_cast<std::uint8_t>(c >> 1);
    additions_ /= 2;
  }

  std::uint64_t width_;
  std::vector<std::uint8_t> counters_;
  std::uint64_t reset_after_;
  std::uint64_t additions_ = 0;
};

}  // namespace kvb::detail
