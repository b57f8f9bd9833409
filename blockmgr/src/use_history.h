// UseHistory: how many times recently evicted hashes had been used, so that
// a block that comes back is not taken for a new one (TinyLFU's and
// S3-FIFO's memory of evicted keys, with a count). A lossy, direct-mapped
// table: remember() overwrites whatever shared the slot, so the oldest
// memories fade first on average, and every call is one memory access.
// 8 bytes an entry. Private to blockmgr/src.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/mix64.h"

namespace kvb::detail {

class UseHistory {
 public:
  /// A table of about `entries` slots (a power of two, at least 16).
  explicit UseHistory(std::uint64_t entries) : slots_(std::bit_ceil(std::max<std::uint64_t>(entries, 16)), 0) {}

  /// Remembers that `hash` was used `uses` times (0 is not remembered).
  void remember(SequenceHash hash, std::uint8_t uses) noexcept {
    const std::uint64_t m = mix(hash);
    slots_[m & (slots_.size() - 1)] = (tag(m) << 8) | uses;
  }

  /// Asks for the slot of `hash` to be in cache soon (a hint: take() or
  /// remember() of `hash` follows).
  void prefetch(SequenceHash hash) const noexcept { __builtin_prefetch(&slots_[mix(hash) & (slots_.size() - 1)]); }

  /// The uses remembered for `hash` (and forgets them); nullopt if none.
  std::optional<std::uint8_t> take(SequenceHash hash) noexcept {
    const std::uint64_t m = mix(hash);
    std::uint64_t& slot = slots_[m & (slots_.size() - 1)];
    if (slot == 0 || (slot >> 8) != tag(m)) return std::nullopt;
    const auto uses = static_cast<std::uint8_t>(slot & 0xFF);
    slot = 0;
    return uses;
  }

 private:
  // The murmur3 finalizer (sequential trace ids spread like xxh3 values).
  static std::uint64_t mix(SequenceHash hash) noexcept { return fmix64(hash.value()); }
  // 56 bits that tell hashes sharing a slot apart (index bits come from the
  // low end, the tag from the high end).
  static std::uint64_t tag(std::uint64_t m) noexcept { return m >> 8; }

  std::vector<std::uint64_t> slots_;  // (tag << 8) | uses; 0 = empty
};

}  // namespace kvb::detail
