#include <type_traits>
#include <unordered_set>

#include <gtest/gtest.h>

#include "kvb/common/ids.h"

namespace kvb {
namespace {

static_assert(!std::is_convertible_v<BlockId, PoolId>, "ids of different kinds never convert");
static_assert(!std::is_convertible_v<std::uint32_t, BlockId>, "integers never become ids implicitly");
static_assert(!std::is_convertible_v<BlockId, std::uint32_t>, "ids never become integers implicitly");
static_assert(!std::is_constructible_v<void*, BlockId>, "ids never become pointers");

TEST(StrongId, ComparesHashesAndFormatsByValue) {
  BlockId a{3}, b{3}, c{7};
  EXPECT_EQ(a, b);
  EXPECT_LT(a, c);
  std::unordered_set<BlockId> set{a, b, c};
  EXPECT_EQ(set.size(), 2U);
  EXPECT_EQ(fmt::format("block {}", c), "block 7");
  EXPECT_EQ(RequestId{1ULL << 40}.value(), 1ULL << 40);
}

}  // namespace
}  // namespace kvb
