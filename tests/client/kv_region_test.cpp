// KvRegion (the client's memfd KV cache) against blockmgr's Layout: the
// client carries its own copy of the index math, so it must agree exactly.
#include <sys/mman.h>

#include <cstring>

#include <gtest/gtest.h>

#include "kvb/blockmgr/layout.h"
#include "kvb/client/kv_region.h"

namespace {

using kvb::client::BlockShape;
using kvb::client::KvRegion;
using kvb::client::WireLayoutKind;

BlockShape shape(std::uint32_t layers, std::uint32_t outer, std::uint32_t page, std::uint32_t inner, std::uint8_t dtype,
                 std::uint32_t alignment) {
  BlockShape s;
  s.num_layers = layers;
  s.outer_dim = outer;
  s.page_size = page;
  s.inner_dim = inner;
  s.dtype = dtype;
  s.alignment = alignment;
  return s;
}

kvb::LayoutSpec to_spec(const BlockShape& s) {
  kvb::LayoutSpec spec;
  spec.num_layers = s.num_layers;
  spec.outer_dim = s.outer_dim;
  spec.page_size = s.page_size;
  spec.inner_dim = s.inner_dim;
  spec.dtype = static_cast<kvb::DType>(s.dtype);
  spec.alignment = s.alignment;
  return spec;
}

TEST(KvRegion, MatchesBlockmgrLayoutForEveryKind) {
  const BlockShape shapes[] = {shape(3, 2, 16, 24, 2, 256), shape(2, 1, 7, 5, 3, 64), shape(1, 2, 3, 3, 0, 512)};
  for (const auto& s : shapes) {
    for (auto kind : {WireLayoutKind::fully_contiguous, WireLayoutKind::layer_separate_block_outer,
                      WireLayoutKind::layer_separate_outer_block}) {
      const std::uint32_t blocks = 5;
      auto region = KvRegion::create(s, kind, blocks);
      ASSERT_TRUE(region) << region.error().to_string();
      auto layout = kvb::Layout::make(to_spec(s), static_cast<kvb::LayoutKind>(kind), blocks);
      ASSERT_TRUE(layout) << layout.error().to_string();
      EXPECT_EQ(region->num_regions(), layout->num_regions());
      EXPECT_EQ(region->region_bytes(), layout->region_bytes());
      EXPECT_EQ(kvb::client::chunk_bytes(s), layout->chunk_bytes());
      EXPECT_EQ(kvb::client::block_bytes(s), layout->block_bytes());
      for (std::uint32_t b = 0; b < blocks; ++b)
        for (std::uint32_t l = 0; l < s.num_layers; ++l)
          for (std::uint32_t o = 0; o < s.outer_dim; ++o) {
            const auto mine = region->place(b, l, o);
            const auto theirs = layout->chunk(kvb::BlockId{b}, l, o);
            ASSERT_EQ(mine.region, theirs.region) << b << "/" << l << "/" << o;
            ASSERT_EQ(mine.offset, theirs.offset) << b << "/" << l << "/" << o;
          }
    }
  }
}

TEST(KvRegion, MemfdIsSharedWithAnotherMapping) {
  auto region = KvRegion::create(shape(2, 2, 4, 8, 1, 256), WireLayoutKind::layer_separate_block_outer, 4);
  ASSERT_TRUE(region) << region.error().to_string();
  ASSERT_EQ(region->fds().size(), 2U);
  auto chunk = region->chunk(3, 1, 1);
  std::memset(chunk.data(), 0x5A, chunk.size());
  // What the daemon would do with the fd it receives: map it and read.
  void* other = ::mmap(nullptr, region->region_bytes(), PROT_READ, MAP_SHARED, region->fds()[1], 0);
  ASSERT_NE(other, MAP_FAILED);
  const auto place = region->place(3, 1, 1);
  EXPECT_EQ(std::memcmp(static_cast<std::byte*>(other) + place.offset, chunk.data(), chunk.size()), 0);
  ::munmap(other, region->region_bytes());
}

TEST(KvRegion, CloseFdsKeepsTheMapping) {
  auto region = KvRegion::create(shape(1, 2, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 2);
  ASSERT_TRUE(region);
  region->close_fds();
  EXPECT_TRUE(region->fds().empty());
  EXPECT_EQ(region->num_regions(), 1U);
  auto chunk = region->chunk(1, 0, 1);
  std::memset(chunk.data(), 1, chunk.size());  // still mapped
  region->close_fds();                         // idempotent
}

TEST(KvRegion, InvalidShapesNameTheField) {
  auto bad_outer = KvRegion::create(shape(1, 3, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 2);
  ASSERT_FALSE(bad_outer);
  EXPECT_EQ(bad_outer.error().code, kvb::Errc::invalid_argument);
  EXPECT_NE(bad_outer.error().message.find("outer_dim"), std::string::npos);
  auto bad_align = KvRegion::create(shape(1, 2, 4, 8, 1, 100), WireLayoutKind::fully_contiguous, 2);
  ASSERT_FALSE(bad_align);
  EXPECT_NE(bad_align.error().message.find("alignment"), std::string::npos);
  auto no_blocks = KvRegion::create(shape(1, 2, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 0);
  ASSERT_FALSE(no_blocks);
  EXPECT_NE(no_blocks.error().message.find("num_blocks"), std::string::npos);
}

TEST(KvRegion, MoveTransfersOwnership) {
  auto region = KvRegion::create(shape(1, 2, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 2);
  ASSERT_TRUE(region);
  KvRegion moved = std::move(*region);
  EXPECT_EQ(moved.num_regions(), 1U);
  EXPECT_EQ(region->num_regions(), 0U);  // NOLINT(bugprone-use-after-move): checking the moved-from state
}

}  // namespace
