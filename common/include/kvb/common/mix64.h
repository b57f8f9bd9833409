// mix64: the splitmix64 finaliser, a fast bijection of 64-bit values with
// good avalanche. For deriving ids and keys (tenant-salted registry keys,
// synthetic hashes in tools and tests), never for content checksums.
#pragma once

#include <cstdint>

namespace kvb {

[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// The murmur3 64-bit finaliser: spreads sequential ids (trace block ids,
/// multiples of a constant) like random values; for hash-table homes.
[[nodiscard]] constexpr std::uint64_t fmix64(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

}  // namespace kvb
