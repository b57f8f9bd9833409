#include "kvb/blockmgr/pool.h"

#include <gtest/gtest.h>

#include <set>

#include "kvb/blockmgr/host_region.h"
#include "test_pools.h"

namespace kvb {
namespace {

using test::make_host_pool;

TEST(Pool, AllocateAndFreeKeepCapacityAccounting) {
  auto pool = make_host_pool(7, 4);
  EXPECT_EQ(pool->capacity(), 4U);
  EXPECT_EQ(pool->free_count(), 4U);
  std::set<std::uint32_t> seen;
  std::vector<BlockRef> refs;
  for (int i = 0; i < 4; ++i) {
    auto r = pool->allocate();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->pool, PoolId{7});
    EXPECT_TRUE(seen.insert(r->block.value()).second) << "block handed out twice";
    EXPECT_EQ(*pool->state(*r), BlockState::partial);
    refs.push_back(*r);
  }
  EXPECT_EQ(pool->free_count(), 0U);
  EXPECT_EQ(pool->used_count(), 4U);
  EXPECT_EQ(pool->count(BlockState::partial), 4U);
  auto full = pool->allocate();
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code, Errc::out_of_capacity);
  for (auto r : refs) ASSERT_TRUE(pool->free(r).has_value());
  EXPECT_EQ(pool->free_count(), 4U);
  EXPECT_EQ(pool->count(BlockState::free), 4U);
}

TEST(Pool, DoubleFreeIsAnError) {
  auto pool = make_host_pool(1, 2);
  auto r = pool->allocate();
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(pool->free(*r).has_value());
  auto again = pool->free(*r);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::wrong_state);
  EXPECT_NE(again.error().message.find("double free"), std::string::npos) << again.error().message;
  EXPECT_EQ(pool->free_count(), 2U) << "a double free must not grow the free list";
}

TEST(Pool, ForeignAndOutOfRangeIdsAreErrors) {
  auto pool = make_host_pool(1, 2);
  auto other = make_host_pool(2, 2);
  auto r = other->allocate();
  ASSERT_TRUE(r.has_value());
  auto foreign = pool->free(*r);
  ASSERT_FALSE(foreign.has_value());
  EXPECT_EQ(foreign.error().code, Errc::invalid_argument);
  EXPECT_NE(foreign.error().message.find("belongs to pool 2"), std::string::npos) << foreign.error().message;

  auto range = pool->free(BlockRef{PoolId{1}, BlockId{2}});
  ASSERT_FALSE(range.has_value());
  EXPECT_NE(range.error().message.find("out of range"), std::string::npos) << range.error().message;
  EXPECT_FALSE(pool->state(BlockRef{PoolId{1}, BlockId{99}}).has_value());
  EXPECT_FALSE(pool->mark_complete(*r).has_value());
}

TEST(Pool, OnlyCompleteBlocksCanBeRegistered) {
  auto pool = make_host_pool(1, 2);
  auto r = pool->allocate();
  ASSERT_TRUE(r.has_value());
  auto early = pool->mark_registered(*r);
  ASSERT_FALSE(early.has_value());
  EXPECT_EQ(early.error().code, Errc::wrong_state);
  EXPECT_NE(early.error().message.find("partial"), std::string::npos) << early.error().message;
  ASSERT_TRUE(pool->mark_complete(*r).has_value());
  EXPECT_FALSE(pool->mark_complete(*r).has_value()) << "complete -> complete is not a transition";
  ASSERT_TRUE(pool->mark_registered(*r).has_value());
  EXPECT_EQ(*pool->state(*r), BlockState::registered);
  EXPECT_EQ(pool->count(BlockState::registered), 1U);
  ASSERT_TRUE(pool->free(*r).has_value());
  EXPECT_EQ(*pool->state(*r), BlockState::free);
}

TEST(Pool, RejectsLayerSeparateLayoutsAndSmallRegions) {
  auto layered = Layout::make(test::small_spec(), LayoutKind::layer_separate_block_outer, 4);
  ASSERT_TRUE(layered.has_value());
  auto region = HostRegion::create(1);
  ASSERT_TRUE(region.has_value());
  auto bad = Pool::make(PoolId{1}, *layered, std::move(*region));
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("fully_contiguous"), std::string::npos) << bad.error().message;

  // 40000 blocks of 128 bytes do not fit in one 2 MiB region.
  auto big = Layout::make(test::small_spec(), LayoutKind::fully_contiguous, 40000);
  ASSERT_TRUE(big.has_value());
  auto small = HostRegion::create(1);
  ASSERT_TRUE(small.has_value());
  auto too_small = Pool::make(PoolId{1}, *big, std::move(*small));
  ASSERT_FALSE(too_small.has_value());
  EXPECT_NE(too_small.error().message.find("smaller"), std::string::npos) << too_small.error().message;
  EXPECT_FALSE(Pool::make(PoolId{1}, *big, nullptr).has_value());
}

TEST(Pool, BlocksOccupyDisjointBytesOfTheRegion) {
  auto pool = make_host_pool(1, 3);
  const auto bytes = pool->layout().block_bytes();
  for (std::uint32_t b = 0; b + 1 < 3; ++b)
    EXPECT_GE(pool->block_data(BlockId{b + 1}) - pool->block_data(BlockId{b}), static_cast<std::ptrdiff_t>(bytes));
  EXPECT_LE(pool->block_data(BlockId{2}) + bytes, pool->region().data() + pool->region().size());
  const auto space = pool->space();
  EXPECT_TRUE(space.validate().has_value());
}

}  // namespace
}  // namespace kvb
