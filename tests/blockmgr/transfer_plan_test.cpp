#include <cstring>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "kvb/blockmgr/copy_engine.h"
#include "kvb/blockmgr/transfer_plan.h"

namespace kvb {
namespace {

LayoutSpec small_spec(std::uint32_t outer = 2) {
  return {.num_layers = 3, .outer_dim = outer, .page_size = 4, .inner_dim = 8, .dtype = DType::f16, .alignment = 64};
}

// Owns host memory for a block space.
struct HostSpace {
  std::vector<std::vector<std::byte>> storage;
  BlockSpace space;

  HostSpace(LayoutKind kind, std::uint32_t blocks, std::uint32_t outer = 2)
      : space{*Layout::make(small_spec(outer), kind, blocks), {}} {
    for (std::uint32_t r = 0; r < space.layout.num_regions(); ++r) {
      storage.emplace_back(space.layout.region_bytes());
      space.regions.push_back({storage.back().data(), storage.back().size(), MemoryKind::host});
    }
  }
  void fill_pattern(std::uint8_t seed) {
    for (auto& s : storage)
      for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::byte>((i * 131 + seed) & 0xFF);
  }
  std::byte* chunk(BlockId b, std::uint32_t l, std::uint32_t o) {
    auto loc = space.layout.chunk(b, l, o);
    return storage[loc.region].data() + loc.offset;
  }
};

TEST(TransferPlan, ConsecutiveFullyContiguousBlocksMergeIntoOneRun) {
  HostSpace src(LayoutKind::fully_contiguous, 8), dst(LayoutKind::fully_contiguous, 8);
  // Block bytes (3*2*64 = 384) are a multiple of alignment (64): no padding.
  std::vector<BlockPair> pairs{{BlockId{2}, BlockId{5}}, {BlockId{3}, BlockId{6}}, {BlockId{4}, BlockId{7}}};
  auto plan = TransferPlan::build(src.space, dst.space, pairs);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_EQ(plan->runs().size(), 1U);
  EXPECT_EQ(plan->num_chunks(), 3U * 3 * 2);
  EXPECT_EQ(plan->total_bytes(), 3U * 384);
}

TEST(TransferPlan, LayerSeparateGatherCopiesEveryChunkToItsPlace) {
  for (auto kind : {LayoutKind::layer_separate_block_outer, LayoutKind::layer_separate_outer_block}) {
    for (std::uint32_t outer : {1U, 2U}) {
      HostSpace src(kind, 6, outer), dst(LayoutKind::fully_contiguous, 4, outer);
      src.fill_pattern(7);
      std::vector<BlockPair> pairs{{BlockId{5}, BlockId{0}}, {BlockId{1}, BlockId{3}}};
      auto plan = TransferPlan::build(src.space, dst.space, pairs);
      ASSERT_TRUE(plan) << plan.error().to_string();
      SyncHostCopyEngine engine;
      bool called = false;
      engine.submit(std::move(*plan), [&](Status s) {
        called = true;
        EXPECT_TRUE(s);
      });
      ASSERT_TRUE(called);
      for (auto p : pairs)
        for (std::uint32_t l = 0; l < 3; ++l)
          for (std::uint32_t o = 0; o < outer; ++o)
            ASSERT_EQ(std::memcmp(src.chunk(p.src, l, o), dst.chunk(p.dst, l, o), 64), 0)
                << to_string(kind) << " outer " << outer << " block " << p.src.value() << " layer " << l;
    }
  }
}

TEST(TransferPlan, RejectsOutOfRangeDuplicateAndMismatchedShapes) {
  HostSpace a(LayoutKind::fully_contiguous, 4), b(LayoutKind::fully_contiguous, 4);
  std::vector<BlockPair> out_of_range{{BlockId{4}, BlockId{0}}};
  auto r1 = TransferPlan::build(a.space, b.space, out_of_range);
  ASSERT_FALSE(r1);
  EXPECT_NE(r1.error().message.find("source block 4 out of range"), std::string::npos);

  std::vector<BlockPair> dup{{BlockId{0}, BlockId{1}}, {BlockId{2}, BlockId{1}}};
  auto r2 = TransferPlan::build(a.space, b.space, dup);
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message.find("appears twice"), std::string::npos);

  HostSpace mla(LayoutKind::fully_contiguous, 4, 1);
  std::vector<BlockPair> one{{BlockId{0}, BlockId{0}}};
  auto r3 = TransferPlan::build(a.space, mla.space, one);
  ASSERT_FALSE(r3);
  EXPECT_NE(r3.error().message.find("block shapes differ"), std::string::npos);

  auto short_space = b.space;
  short_space.regions[0].size -= 1;
  auto r4 = TransferPlan::build(a.space, short_space, one);
  ASSERT_FALSE(r4);
  EXPECT_NE(r4.error().message.find("destination block space: region 0 holds"), std::string::npos);
}

// A layer-wise onboard copies one group of layers per plan: each plan holds
// exactly its layers' chunks, and the groups together copy every chunk.
TEST(TransferPlan, LayerRangesCopyOnlyTheirLayers) {
  for (auto kind :
       {LayoutKind::fully_contiguous, LayoutKind::layer_separate_block_outer, LayoutKind::layer_separate_outer_block}) {
    HostSpace src(LayoutKind::fully_contiguous, 4), dst(kind, 4);
    src.fill_pattern(3);
    std::vector<BlockPair> pairs{{BlockId{0}, BlockId{2}}, {BlockId{3}, BlockId{1}}};
    SyncHostCopyEngine engine;
    for (std::uint32_t first = 0; first < 3; ++first) {
      auto plan = TransferPlan::build(src.space, dst.space, pairs, LayerRange{first, 1});
      ASSERT_TRUE(plan) << plan.error().to_string();
      EXPECT_EQ(plan->layers().first, first);
      EXPECT_EQ(plan->num_chunks(), 2U * 1 * 2);
      EXPECT_EQ(plan->total_bytes(), 2U * 2 * 64);
      engine.submit(std::move(*plan), [](Status s) { EXPECT_TRUE(s); });
      for (auto p : pairs)
        for (std::uint32_t l = 0; l < 3; ++l)
          for (std::uint32_t o = 0; o < 2; ++o) {
            const bool copied = l <= first;
            EXPECT_EQ(std::memcmp(src.chunk(p.src, l, o), dst.chunk(p.dst, l, o), 64) == 0, copied)
                << to_string(kind) << " after layer " << first << ": block " << p.dst.value() << " layer " << l;
          }
    }
  }
  HostSpace a(LayoutKind::fully_contiguous, 2), b(LayoutKind::fully_contiguous, 2);
  std::vector<BlockPair> one{{BlockId{0}, BlockId{1}}};
  auto all = TransferPlan::build(a.space, b.space, one);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->layers().first, 0U);
  EXPECT_EQ(all->layers().count, 3U);
  for (LayerRange bad : {LayerRange{3, 1}, LayerRange{1, 3}, LayerRange{2, 0}}) {
    auto r = TransferPlan::build(a.space, b.space, one, bad);
    ASSERT_FALSE(r) << bad.first << "+" << bad.count;
    EXPECT_NE(r.error().message.find("layers ["), std::string::npos) << r.error().message;
  }
}

TEST(SyncHostCopyEngine, RefusesDeviceMemory) {
  HostSpace a(LayoutKind::fully_contiguous, 2), b(LayoutKind::fully_contiguous, 2);
  b.space.regions[0].kind = MemoryKind::device;
  std::vector<BlockPair> one{{BlockId{0}, BlockId{0}}};
  auto plan = TransferPlan::build(a.space, b.space, one);
  ASSERT_TRUE(plan);
  Status result;
  SyncHostCopyEngine{}.submit(std::move(*plan), [&](Status s) { result = s; });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::unsupported);
}

}  // namespace
}  // namespace kvb
