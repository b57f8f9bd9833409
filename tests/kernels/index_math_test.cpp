// layout_math.h (shared with the CUDA kernel) against layouts walked in
// memory order, and copy_descriptor_part (the kernel's copy loop) run on the
// host for every lane.
#include <gtest/gtest.h>

#include "block_space_fixture.h"
#include "kvb/kernels/copy_descriptor.h"

namespace kvb {
namespace {

TEST(IndexMath, ChunkOffsetsMatchLayoutsWalkedInMemoryOrder) {
  std::mt19937_64 rng(20261123);
  for (int iter = 0; iter < 200; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    const auto blocks = 1 + static_cast<std::uint32_t>(rng() % 9);
    for (auto kind : test::kAllKinds) {
      auto layout = Layout::make(spec, kind, blocks);
      ASSERT_TRUE(layout) << layout.error().to_string();
      const test::NaiveLayout naive(spec, kind, blocks);
      const LayoutGeometry& g = layout->geometry();
      EXPECT_EQ(region_bytes(g), naive.region_bytes) << to_string(kind);
      for (const auto& [key, loc] : naive.where) {
        const auto [b, l, o] = key;
        ASSERT_EQ(chunk_region(g, l), loc.first) << to_string(kind) << " block " << b << " layer " << l;
        ASSERT_EQ(chunk_offset(g, b, l, o), loc.second)
            << to_string(kind) << " block " << b << " layer " << l << " outer " << o;
      }
    }
  }
}

// Runs the kernel's per-thread loop for every lane of one "thread block".
void run_like_kernel(const std::vector<CopyDescriptor>& descriptors, std::uint32_t lanes) {
  for (const auto& d : descriptors)
    for (std::uint32_t lane = 0; lane < lanes; ++lane) copy_descriptor_part(d, lane, lanes);
}

TEST(CopyDescriptor, KernelLoopCopiesEveryByteOnceForEveryAlignment) {
  // src/dst misalignments that select the 16-byte, 4-byte and byte paths.
  const std::pair<std::uint32_t, std::uint32_t> offsets[] = {{0, 0}, {3, 3}, {4, 8}, {12, 0}, {1, 2}, {5, 0}, {15, 15}};
  std::mt19937_64 rng(7);
  for (const auto& [so, doff] : offsets) {
    for (std::uint64_t n : {0ULL, 1ULL, 3ULL, 15ULL, 16ULL, 17ULL, 63ULL, 64ULL, 100ULL, 4099ULL}) {
      std::vector<unsigned char> src(n + 32), dst(n + 32, 0xAB), want(n + 32, 0xAB);
      for (auto& c : src) c = static_cast<unsigned char>(rng());
      for (std::uint64_t i = 0; i < n; ++i) want[doff + i] = src[so + i];
      const CopyDescriptor d{reinterpret_cast<std::uintptr_t>(src.data() + so),
                             reinterpret_cast<std::uintptr_t>(dst.data() + doff), n};
      for (std::uint32_t lanes : {1U, 7U, 256U}) {
        std::fill(dst.begin(), dst.end(), 0xAB);
        run_like_kernel({d}, lanes);
        ASSERT_EQ(dst, want) << "src+" << so << " dst+" << doff << " bytes " << n << " lanes " << lanes;
      }
    }
  }
}

TEST(CopyDescriptor, DescriptorsOfRandomPlansReproduceTheNaiveCopy) {
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 60; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    for (auto sk : test::kAllKinds) {
      for (auto dk : test::kAllKinds) {
        const auto sb = 1 + static_cast<std::uint32_t>(rng() % 6), db = 1 + static_cast<std::uint32_t>(rng() % 6);
        test::HostSpace src(spec, sk, sb, static_cast<std::uint32_t>(rng() % 16));
        test::HostSpace dst(spec, dk, db, static_cast<std::uint32_t>(rng() % 16));
        src.fill(rng);
        dst.fill(rng);
        const auto pairs = test::random_pairs(rng, sb, db);
        const auto want = test::naive_copy(src, dst, pairs);
        auto plan = TransferPlan::build(src.space, dst.space, pairs);
        ASSERT_TRUE(plan) << plan.error().to_string();
        const std::uint64_t max_bytes = 1 + rng() % 200;
        const auto descriptors = make_descriptors(*plan, max_bytes);
        std::uint64_t covered = 0;
        for (const auto& d : descriptors) {
          ASSERT_LE(d.bytes, max_bytes);
          covered += d.bytes;
        }
        ASSERT_EQ(covered, plan->total_bytes());
        run_like_kernel(descriptors, 32);
        ASSERT_EQ(dst.storage, want) << to_string(sk) << " -> " << to_string(dk) << " iteration " << iter;
      }
    }
  }
}

}  // namespace
}  // namespace kvb
