// SequenceHash: the 64-bit chained hash of a full block of tokens.
//
//   h_i = XXH3_64(h_{i-1} || salt || tokens of block i, seed = salt),  h_{-1} = kSequenceRoot
//
// Equal hashes mean equal prefixes (up to 64-bit collisions). The salt (one
// per tenant) enters every link of the chain, so sequences hashed with
// different salts never match unless the tenants opt in to share a salt.
// (h_{i-1} and the salt enter as two u64, the tokens as u32, in the host's
// byte order.)
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "kvb/common/error.h"

namespace kvb {

/// A strong 64-bit hash: never converted from or to an integer implicitly.
class SequenceHash {
 public:
  constexpr SequenceHash() noexcept = default;
  constexpr explicit SequenceHash(std::uint64_t value) noexcept : value_(value) {}
  [[nodiscard]] constexpr std::uint64_t value() const noexcept { return value_; }
  friend constexpr bool operator==(SequenceHash, SequenceHash) noexcept = default;
  friend constexpr auto operator<=>(SequenceHash, SequenceHash) noexcept = default;

 private:
  std::uint64_t value_ = 0;
};

/// A tenant's salt. Salt 0 is an ordinary salt (the default tenant).
using HashSalt = std::uint64_t;

/// The parent of the first block of every sequence.
inline constexpr SequenceHash kSequenceRoot{0x6b76626c6f636b64ULL};  // "kvblockd"

/// One link of the chain: the hash of block `tokens` following `parent`.
[[nodiscard]] SequenceHash chain_hash(SequenceHash parent, std::span<const std::uint32_t> tokens,
                                      HashSalt salt) noexcept;

/// Hashes of every *full* block of `tokens` (a trailing partial block has no
/// hash: it can never be shared). page_size == 0 is invalid_argument.
[[nodiscard]] Result<std::vector<SequenceHash>> hash_token_blocks(std::span<const std::uint32_t> tokens,
                                                                  std::uint32_t page_size, HashSalt salt);

}  // namespace kvb

template <>
struct std::hash<kvb::SequenceHash> {
  // The value is already a good hash: use it as is.
  std::size_t operator()(kvb::SequenceHash h) const noexcept { return static_cast<std::size_t>(h.value()); }
};

template <>
struct fmt::formatter<kvb::SequenceHash> : fmt::formatter<std::uint64_t> {
  auto format(kvb::SequenceHash h, format_context& ctx) const {
    return fmt::format_to(ctx.out(), "{:016x}", h.value());
  }
};
