// layout_math.h (shared with the CUDA kernel) against layouts walked in
// memory order, and copy_descriptor_part (the kernel's copy loop) run on the
// host for every lane.
#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>

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

// A random copy between host spaces of the given kinds (random block
// counts and misalignments): both filled, the plan built, and the naive
// reference's result.
struct CopyCase {
  test::HostSpace src;
  test::HostSpace dst;
  std::vector<std::vector<std::byte>> want;
  std::optional<TransferPlan> plan;
};

std::unique_ptr<CopyCase> random_copy_case(std::mt19937_64& rng, const LayoutSpec& spec, LayoutKind sk, LayoutKind dk) {
  const auto sb = 1 + static_cast<std::uint32_t>(rng() % 6), db = 1 + static_cast<std::uint32_t>(rng() % 6);
  const auto src_misalign = static_cast<std::uint32_t>(rng() % 16),
             dst_misalign = static_cast<std::uint32_t>(rng() % 16);
  auto c = std::unique_ptr<CopyCase>(new CopyCase{
      test::HostSpace(spec, sk, sb, src_misalign), test::HostSpace(spec, dk, db, dst_misalign), {}, std::nullopt});
  c->src.fill(rng);
  c->dst.fill(rng);
  const auto pairs = test::random_pairs(rng, sb, db);
  const LayerRange layers = test::random_layers(rng, spec.num_layers);
  c->want = test::naive_copy(c->src, c->dst, pairs, layers);
  auto plan = TransferPlan::build(c->src.space, c->dst.space, pairs, layers);
  EXPECT_TRUE(plan) << plan.error().to_string();
  if (plan) c->plan.emplace(std::move(*plan));
  return c;
}

// The same with random kinds.
std::unique_ptr<CopyCase> random_copy_case(std::mt19937_64& rng, const LayoutSpec& spec) {
  const auto sk = test::kAllKinds[rng() % 3], dk = test::kAllKinds[rng() % 3];
  return random_copy_case(rng, spec, sk, dk);
}

// A staged copy: the host side usually fully contiguous (the host pool),
// the device side any layout.
std::unique_ptr<CopyCase> random_staged_case(std::mt19937_64& rng, const LayoutSpec& spec, bool to_host) {
  const auto device_kind = test::kAllKinds[rng() % 3];
  const auto host_kind = rng() % 3 == 0 ? test::kAllKinds[rng() % 3] : LayoutKind::fully_contiguous;
  return random_copy_case(rng, spec, to_host ? device_kind : host_kind, to_host ? host_kind : device_kind);
}

// The kernel's work split: slices of every descriptor, as launch_shape()
// cuts them, reproduce the plan's copy.
TEST(CopyDescriptor, SlicedLaunchesReproduceTheNaiveCopy) {
  std::mt19937_64 rng(99);
  for (int iter = 0; iter < 40; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    const auto c = random_copy_case(rng, spec);
    const auto& dst = c->dst;
    const auto& want = c->want;
    const auto& plan = c->plan;
    ASSERT_TRUE(plan);
    const auto descriptors = make_descriptors(*plan, 1 + rng() % 5000);
    std::uint64_t largest = 0;
    for (const auto& d : descriptors) largest = std::max(largest, d.bytes);
    const auto sms = 1 + static_cast<std::uint32_t>(rng() % 200);
    const LaunchShape shape = launch_shape(descriptors.size(), largest, plan->total_bytes(), sms);
    ASSERT_GE(std::uint64_t{shape.slices} * shape.slice_bytes, largest);
    ASSERT_LE(shape.grid, std::uint64_t{sms} * kBlocksPerSm);
    ASSERT_LE(shape.grid, std::max<std::uint64_t>(1, descriptors.size() * shape.slices));
    // No thread group without an item while items are left over.
    ASSERT_LE((std::uint64_t{shape.grid} - 1) * (kGatherBlockThreads / shape.lanes),
              std::max<std::uint64_t>(1, descriptors.size() * shape.slices));
    ASSERT_GE(shape.grid, 1U);
    if (shape.slices > 1) {
      ASSERT_EQ(shape.slice_bytes % 16, 0U);
    }
    ASSERT_TRUE(shape.lanes == 32 || shape.lanes == kGatherBlockThreads);
    ASSERT_EQ(shape.lanes == 32, shape.slice_bytes <= kWarpItemMaxBytes);
    // Every work item, in the kernel's grid-stride order over thread groups.
    const std::uint64_t items = descriptors.size() * shape.slices;
    const std::uint64_t groups = std::uint64_t{shape.grid} * (kGatherBlockThreads / shape.lanes);
    for (std::uint64_t g = 0; g < groups; ++g)
      for (std::uint64_t w = g; w < items; w += groups) {
        const CopyDescriptor piece = descriptor_slice(descriptors[w / shape.slices],
                                                      static_cast<std::uint32_t>(w % shape.slices), shape.slice_bytes);
        for (std::uint32_t lane = 0; lane < shape.lanes; ++lane) copy_descriptor_part(piece, lane, shape.lanes);
      }
    ASSERT_EQ(dst.storage, want) << "iteration " << iter << " slices " << shape.slices << " x " << shape.slice_bytes;
  }
}

// The kernel's direct form: chunk addresses computed from the pairs and
// both layouts (chunk_descriptor, as the device runs it), sliced and copied
// in the kernel's grid-stride order, reproduce the plan's copy.
TEST(CopyDescriptor, DirectChunkFormReproducesTheNaiveCopy) {
  std::mt19937_64 rng(1234);
  for (int iter = 0; iter < 60; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    const auto c = random_copy_case(rng, spec);
    const auto& dst = c->dst;
    const auto& want = c->want;
    const auto& plan = c->plan;
    ASSERT_TRUE(plan);
    if (plan->pairs().empty()) {
      EXPECT_FALSE(fits_chunk_plan(*plan));
      continue;
    }
    ASSERT_TRUE(fits_chunk_plan(*plan));
    const ChunkPlan chunks = make_chunk_plan(*plan);
    const std::vector<PairIds> ids = pair_ids(*plan);
    ASSERT_EQ(ids.size(), plan->pairs().size());
    ASSERT_EQ(chunks.chunks, plan->num_chunks());
    ASSERT_EQ(chunks.chunks * chunks.chunk_bytes, plan->total_bytes());
    const auto sms = 1 + static_cast<std::uint32_t>(rng() % 200);
    const LaunchShape shape = launch_shape(chunks.chunks, chunks.chunk_bytes, plan->total_bytes(), sms);
    const std::uint64_t per_pair = std::uint64_t{chunks.layers} * chunks.outer;
    const std::uint64_t items = chunks.chunks * shape.slices;
    const std::uint64_t groups = std::uint64_t{shape.grid} * (kGatherBlockThreads / shape.lanes);
    for (std::uint64_t g = 0; g < groups; ++g)
      for (std::uint64_t w = g; w < items; w += groups) {
        const std::uint64_t c = w / shape.slices;
        const CopyDescriptor d = chunk_descriptor(chunks, ids[c / per_pair], c % per_pair);
        const CopyDescriptor piece =
            descriptor_slice(d, static_cast<std::uint32_t>(w % shape.slices), shape.slice_bytes);
        for (std::uint32_t lane = 0; lane < shape.lanes; ++lane) copy_descriptor_part(piece, lane, shape.lanes);
      }
    ASSERT_EQ(dst.storage, want) << to_string(c->src.space.layout.kind()) << " -> "
                                 << to_string(dst.space.layout.kind()) << " iteration " << iter;
  }
}

TEST(CopyDescriptor, DirectFormNeedsAtMost128RegionsASide) {
  const LayoutSpec wide{.num_layers = 130, .outer_dim = 2, .page_size = 1, .inner_dim = 16, .dtype = DType::u8};
  test::HostSpace src(wide, LayoutKind::layer_separate_block_outer, 2);
  test::HostSpace dst(wide, LayoutKind::fully_contiguous, 2);
  const std::vector<BlockPair> pairs{{BlockId{0}, BlockId{1}}};
  auto plan = TransferPlan::build(src.space, dst.space, pairs);
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_FALSE(fits_chunk_plan(*plan));  // 130 source regions: descriptors instead
  auto flat = TransferPlan::build(dst.space, dst.space, std::vector<BlockPair>{{BlockId{0}, BlockId{1}}});
  ASSERT_TRUE(flat) << flat.error().to_string();
  EXPECT_TRUE(fits_chunk_plan(*flat));
}

TEST(CopyDescriptor, LaunchShapeSpreadsSmallPlansAndKeepsLargeOnesWhole) {
  // 64 chunks of 32 KiB merged into 32 runs of 64 KiB, 132 SMs: 4 KiB
  // slices, one warp each, 8 per block.
  const LaunchShape small = launch_shape(32, 64 << 10, 2 << 20, 132);
  EXPECT_EQ(small.slice_bytes, 4096U);
  EXPECT_EQ(small.slices, 16U);
  EXPECT_EQ(small.lanes, 32U);
  EXPECT_EQ(small.grid, 64U);
  // 4 KiB chunks, 512 MiB: one warp per chunk.
  const LaunchShape chunks = launch_shape(131072, 4096, 512ULL << 20, 132);
  EXPECT_EQ(chunks.slices, 1U);
  EXPECT_EQ(chunks.lanes, 32U);
  EXPECT_EQ(chunks.grid, 132U * kBlocksPerSm);
  // 512 MiB in 64 KiB descriptors: one slice each, 8 blocks per SM.
  const LaunchShape large = launch_shape(8192, 64 << 10, 512ULL << 20, 132);
  EXPECT_EQ(large.slices, 1U);
  EXPECT_EQ(large.slice_bytes, 64U << 10);
  EXPECT_EQ(large.lanes, kGatherBlockThreads);
  EXPECT_EQ(large.grid, 132U * kBlocksPerSm);
  EXPECT_EQ(launch_shape(0, 0, 0, 132).grid, 1U);
}

// A staged copy run on the host: DMA legs as memcpy, kernel legs with the
// kernel's loop, one slab at a time through one small staging buffer.
void run_staged(const StagedPlan& staged, std::uint64_t staging_bytes) {
  for (const auto& slab : staged.slabs) {
    std::uint64_t slab_bytes = 0;
    for (std::uint32_t i = slab.first_dma; i < slab.first_dma + slab.dma_count; ++i) slab_bytes += staged.dma[i].bytes;
    ASSERT_LE(slab_bytes, staging_bytes);
    const auto dma = [&] {
      for (std::uint32_t i = slab.first_dma; i < slab.first_dma + slab.dma_count; ++i) {
        const auto& leg = staged.dma[i];
        std::memcpy(reinterpret_cast<void*>(leg.dst), reinterpret_cast<const void*>(leg.src), leg.bytes);
      }
    };
    if (!staged.to_host) dma();
    for (std::uint32_t i = slab.first_descriptor; i < slab.first_descriptor + slab.descriptor_count; ++i)
      for (std::uint32_t lane = 0; lane < 32; ++lane) copy_descriptor_part(staged.descriptors[i], lane, 32);
    if (staged.to_host) dma();
  }
}

TEST(StagedPlan, ThroughASmallStagingBufferReproducesTheNaiveCopy) {
  std::mt19937_64 rng(5);
  for (int iter = 0; iter < 60; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    for (bool to_host : {true, false}) {
      const auto c = random_staged_case(rng, spec, to_host);
      const auto& dst = c->dst;
      const auto& want = c->want;
      const auto& plan = c->plan;
      ASSERT_TRUE(plan);
      const std::uint64_t staging_bytes = 1 + rng() % 3000;
      const std::uint32_t buffers = 1 + static_cast<std::uint32_t>(rng() % 2);
      std::vector<unsigned char> staging(buffers * staging_bytes + 16);
      const auto base = reinterpret_cast<std::uintptr_t>(staging.data() + 1);
      const StagedPlan staged = make_staged_plan(*plan, to_host, base, staging_bytes, 1 + rng() % 700, buffers);
      // Slab k stays inside staging buffer k % buffers.
      for (std::size_t k = 0; k < staged.slabs.size(); ++k) {
        const std::uint64_t lo = base + (k % buffers) * staging_bytes, hi = lo + staging_bytes;
        const auto& slab = staged.slabs[k];
        for (std::uint32_t i = slab.first_dma; i < slab.first_dma + slab.dma_count; ++i) {
          const auto& leg = staged.dma[i];
          const std::uint64_t at = to_host ? leg.src : leg.dst;
          ASSERT_TRUE(at >= lo && at + leg.bytes <= hi) << "slab " << k << " leaves its staging buffer";
        }
      }
      std::uint64_t dma_bytes = 0, kernel_bytes = 0;
      for (const auto& leg : staged.dma) dma_bytes += leg.bytes;
      for (const auto& d : staged.descriptors) kernel_bytes += d.bytes;
      ASSERT_EQ(dma_bytes, plan->total_bytes());
      ASSERT_EQ(kernel_bytes, plan->total_bytes());
      run_staged(staged, staging_bytes);
      ASSERT_EQ(dst.storage, want) << (to_host ? "to host" : "from host") << " iteration " << iter << " staging "
                                   << staging_bytes;
    }
  }
}

// The direct staged form run on the host: DMA legs as memcpy, the kernel's
// items (staged_chunk_descriptor) with the kernel's loop.
TEST(StagedPlan, DirectFormThroughASmallStagingBufferReproducesTheNaiveCopy) {
  std::mt19937_64 rng(77);
  int staged_plans = 0;
  for (int iter = 0; iter < 80; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    for (bool to_host : {true, false}) {
      const auto c = random_staged_case(rng, spec, to_host);
      const auto& dst = c->dst;
      const auto& want = c->want;
      const auto& plan = c->plan;
      ASSERT_TRUE(plan);
      if (!fits_chunk_plan(*plan)) continue;
      const ChunkPlan chunks = make_chunk_plan(*plan);
      const std::vector<PairIds> ids = pair_ids(*plan);
      const std::uint64_t slab_bytes = chunks.chunk_bytes + rng() % 3000;
      const std::uint32_t buffers = 1 + static_cast<std::uint32_t>(rng() % 2);
      std::vector<unsigned char> staging(buffers * slab_bytes + 16);
      const auto base = reinterpret_cast<std::uintptr_t>(staging.data() + 1);
      const StagedChunkPlan staged = make_staged_chunk_plan(chunks, ids, to_host, base, slab_bytes, buffers);
      ++staged_plans;
      std::uint64_t dma_bytes = 0, slab_chunks = 0;
      for (const auto& leg : staged.dma) dma_bytes += leg.bytes;
      ASSERT_EQ(dma_bytes, plan->total_bytes());
      const std::uint64_t per_pair = std::uint64_t{chunks.layers} * chunks.outer;
      for (std::size_t k = 0; k < staged.slabs.size(); ++k) {
        const auto& slab = staged.slabs[k];
        ASSERT_EQ(slab.first_chunk, slab_chunks);  // slabs cover the chunks in order
        slab_chunks += slab.chunk_count;
        ASSERT_LE(slab.chunk_count * chunks.chunk_bytes, slab_bytes);
        ASSERT_EQ(slab.staging, base + (k % buffers) * slab_bytes);
        const auto dma = [&] {
          for (std::uint32_t i = slab.first_dma; i < slab.first_dma + slab.dma_count; ++i) {
            const auto& leg = staged.dma[i];
            const std::uint64_t at = to_host ? leg.src : leg.dst;
            ASSERT_TRUE(at >= slab.staging && at + leg.bytes <= slab.staging + slab_bytes);
            std::memcpy(reinterpret_cast<void*>(leg.dst), reinterpret_cast<const void*>(leg.src), leg.bytes);
          }
        };
        if (!to_host) dma();
        for (std::uint64_t i = 0; i < slab.chunk_count; ++i) {
          const std::uint64_t c = slab.first_chunk + i;
          const CopyDescriptor d = staged_chunk_descriptor(chunks, ids[c / per_pair], c % per_pair,
                                                           slab.staging + i * chunks.chunk_bytes, to_host);
          for (std::uint32_t lane = 0; lane < 32; ++lane) copy_descriptor_part(d, lane, 32);
        }
        if (to_host) dma();
      }
      ASSERT_EQ(slab_chunks, chunks.chunks);
      ASSERT_EQ(dst.storage, want) << (to_host ? "to host" : "from host") << " iteration " << iter;
    }
  }
  EXPECT_GT(staged_plans, 60);  // the loop did exercise the direct form
}

TEST(StagedPlan, DirectFormWithAContiguousHostSideHasOneLegPerSlab) {
  const LayoutSpec spec{.num_layers = 32, .outer_dim = 2, .page_size = 1, .inner_dim = 32 << 10, .dtype = DType::u8};
  test::HostSpace device(spec, LayoutKind::layer_separate_block_outer, 8);
  test::HostSpace host(spec, LayoutKind::fully_contiguous, 8);
  std::vector<BlockPair> pairs;
  for (std::uint32_t i = 0; i < 8; ++i) pairs.push_back({BlockId{i}, BlockId{i}});
  auto plan = TransferPlan::build(device.space, host.space, pairs);
  ASSERT_TRUE(plan) << plan.error().to_string();
  const ChunkPlan chunks = make_chunk_plan(*plan);
  const StagedChunkPlan staged = make_staged_chunk_plan(chunks, pair_ids(*plan), true, 1 << 30, 1 << 20, 2);
  EXPECT_EQ(staged.slabs.size(), 16U);  // 16 MiB through 1 MiB slabs (32 chunks each)
  EXPECT_EQ(staged.dma.size(), 16U);
  for (const auto& leg : staged.dma) EXPECT_EQ(leg.bytes, 1U << 20);
  EXPECT_EQ(staged.slabs[1].staging, (1U << 30) + (1U << 20));
}

TEST(StagedPlan, ContiguousHostSideBecomesOneDmaLegPerSlab) {
  // Llama-like: 32 layers x K,V x 32 KiB (2 MiB blocks), device
  // layer-separate, host fully contiguous, 8 blocks i -> i. The host side is
  // one 16 MiB range, so 1 MiB of staging makes 16 slabs of one leg each.
  const LayoutSpec spec{.num_layers = 32, .outer_dim = 2, .page_size = 1, .inner_dim = 32 << 10, .dtype = DType::u8};
  test::HostSpace device(spec, LayoutKind::layer_separate_block_outer, 8);
  test::HostSpace host(spec, LayoutKind::fully_contiguous, 8);
  std::vector<BlockPair> pairs;
  for (std::uint32_t i = 0; i < 8; ++i) pairs.push_back({BlockId{i}, BlockId{i}});
  auto plan = TransferPlan::build(device.space, host.space, pairs);
  ASSERT_TRUE(plan) << plan.error().to_string();
  const StagedPlan staged = make_staged_plan(*plan, true, 1 << 20, 1 << 20);
  EXPECT_EQ(staged.slabs.size(), 16U);
  EXPECT_EQ(staged.dma.size(), 16U);
  for (const auto& leg : staged.dma) EXPECT_EQ(leg.bytes, 1U << 20);
  EXPECT_EQ(staged.descriptors.size(), 16U * 16U);  // 64 KiB (K,V of one layer) pieces
}

}  // namespace
}  // namespace kvb
