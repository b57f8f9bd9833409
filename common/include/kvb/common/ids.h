// Typed indices: BlockId, PoolId, PeerId, RequestId, SessionId.
//
// Each id is its own type: never compared with, converted to or from another
// id or an integer implicitly, and never cast to a pointer.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

#include <fmt/format.h>

namespace kvb {

template <class Tag, class Rep>
class StrongId {
 public:
  using rep_type = Rep;

  constexpr StrongId() noexcept = default;
  constexpr explicit StrongId(Rep value) noexcept : value_(value) {}

  [[nodiscard]] constexpr Rep value() const noexcept { return value_; }

  friend constexpr bool operator==(StrongId, StrongId) noexcept = default;
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  friend constexpr auto operator<=>(StrongId, StrongId) noexcept = default;

 private:
  Rep value_{};
};

/// Index of a block inside one pool or one registered engine KV cache.
using BlockId = StrongId<struct BlockIdTag, std::uint32_t>;
/// A block pool owned by the daemon (one per tier and device).
using PoolId = StrongId<struct PoolIdTag, std::uint32_t>;
/// A remote worker.
using PeerId = StrongId<struct PeerIdTag, std::uint32_t>;
/// A client-chosen request id, unique within its session.
using RequestId = StrongId<struct RequestIdTag, std::uint64_t>;
/// One attached client connection.
using SessionId = StrongId<struct SessionIdTag, std::uint64_t>;

}  // namespace kvb

template <class Tag, class Rep>
struct std::hash<kvb::StrongId<Tag, Rep>> {
  std::size_t operator()(kvb::StrongId<Tag, Rep> id) const noexcept { return std::hash<Rep>{}(id.value()); }
};

template <class Tag, class Rep>
struct fmt::formatter<kvb::StrongId<Tag, Rep>> : fmt::formatter<Rep> {
  auto format(kvb::StrongId<Tag, Rep> id, format_context& ctx) const {
    return fmt::formatter<Rep>::format(id.value(), ctx);
  }
};
