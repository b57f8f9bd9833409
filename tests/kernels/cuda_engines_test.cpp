// CUDA engines on a real GPU: byte equality for every path (kernel, batch
// DMA, per-chunk memcpy, staged) in every direction (device -> device, pinned host ->
// device, device -> pinned host), checked against the naive host reference.
// Without a usable device every test skips with the reason.
#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <ostream>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "block_space_fixture.h"
#include "kvb/kernels/copy_engines.h"
#include "kvb/kernels/cuda_regions.h"

namespace kvb {

// Readable test names in gtest/ctest output.
inline void PrintTo(CopyEngineKind kind, std::ostream* os) { *os << to_string(kind); }

namespace {

using namespace std::chrono_literals;

// Pageable host memory (what a host pool is when its pinning failed).
class PageableRegion final : public MemoryRegion {
 public:
  explicit PageableRegion(std::uint64_t bytes) : storage_(bytes) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::host; }
  [[nodiscard]] std::byte* data() const noexcept override { return const_cast<std::byte*>(storage_.data()); }
  [[nodiscard]] std::uint64_t size() const noexcept override { return storage_.size(); }

 private:
  std::vector<std::byte> storage_;
};

// Memory for one block space on the device, in pinned or in pageable host
// memory, with a host mirror (test::HostSpace) that holds the same bytes.
struct CudaSpace {
  test::HostSpace mirror;
  std::vector<std::unique_ptr<MemoryRegion>> regions;
  BlockSpace space;
  int ordinal;

  CudaSpace(const LayoutSpec& spec, LayoutKind kind, std::uint32_t blocks, MemoryKind memory, int device)
      : mirror(spec, kind, blocks), space{mirror.space.layout, {}}, ordinal(device) {
    for (std::uint32_t r = 0; r < space.layout.num_regions(); ++r) {
      // +16 bytes so the region base can be misaligned by 3 (unaligned paths).
      const std::uint64_t bytes = space.layout.region_bytes() + 16;
      Result<std::unique_ptr<MemoryRegion>> region = std::unique_ptr<MemoryRegion>();
      if (memory == MemoryKind::host) {
        region = std::unique_ptr<MemoryRegion>(std::make_unique<PageableRegion>(bytes));
      } else if (memory == MemoryKind::device) {
        region = DeviceRegion::allocate(device, bytes).map([](auto p) {
          return std::unique_ptr<MemoryRegion>(std::move(p));
        });
      } else {
        region =
            PinnedHostRegion::allocate(bytes).map([](auto p) { return std::unique_ptr<MemoryRegion>(std::move(p)); });
      }
      if (!region) throw std::runtime_error(region.error().to_string());
      regions.push_back(std::move(*region));
      space.regions.push_back({regions.back()->data() + 3, space.layout.region_bytes(), memory});
    }
  }
  [[nodiscard]] Status upload() {
    for (std::size_t r = 0; r < regions.size(); ++r)
      if (auto st =
              cuda_copy_sync(ordinal, space.regions[r].base, mirror.space.regions[r].base, space.layout.region_bytes());
          !st)
        return st;
    return ok();
  }
  [[nodiscard]] Result<std::vector<std::vector<std::byte>>> download() const {
    std::vector<std::vector<std::byte>> out = mirror.storage;
    for (std::size_t r = 0; r < regions.size(); ++r)
      if (auto st = cuda_copy_sync(ordinal, out[r].data(), space.regions[r].base, space.layout.region_bytes()); !st)
        return tl::unexpected(st.error());
    return out;
  }
};

class CudaEngines : public ::testing::TestWithParam<CopyEngineKind> {
 protected:
  void SetUp() override {
    auto device = probe_cuda_device(0);
    if (!device) GTEST_SKIP() << "no CUDA device: " << device.error().message;
    // A staging buffer of one page and no minimum run length: the staged
    // engine stages every host <-> device plan here, across many slabs.
    CopyEngineOptions options;
    options.cuda.staging_bytes = 4096;
    options.cuda.staged_min_run_bytes = 0;
    engines_ = std::make_unique<CopyEngines>(options);
    auto engine = engines_->get(GetParam(), device->ordinal);
    if (!engine) GTEST_SKIP() << to_string(GetParam()) << " is not available in this build: " << engine.error().message;
    engine_ = *engine;
    device_ = device->ordinal;
  }

  void check(MemoryKind src_mem, MemoryKind dst_mem, LayoutKind sk, LayoutKind dk, const LayoutSpec& spec,
             LayerRange layers = {}) {
    CudaSpace src(spec, sk, 9, src_mem, device_), dst(spec, dk, 7, dst_mem, device_);
    const std::vector<BlockPair> pairs{
        {BlockId{8}, BlockId{0}}, {BlockId{0}, BlockId{6}}, {BlockId{3}, BlockId{3}}, {BlockId{4}, BlockId{4}}};
    copy_and_compare(src, dst, pairs,
                     static_cast<std::uint64_t>(spec.chunk_bytes()) * 31 +
                         std::uint64_t{static_cast<unsigned>(sk)} * 7 + static_cast<unsigned>(dk),
                     fmt::format("{} -> {} layers {}+{}", to_string(sk), to_string(dk), layers.first, layers.count),
                     layers);
  }

  // Fills both spaces (seeded), runs one plan of `pairs` on the engine and
  // checks the destination against the naive reference, byte for byte.
  void copy_and_compare(CudaSpace& src, CudaSpace& dst, const std::vector<BlockPair>& pairs, std::uint64_t seed,
                        const std::string& what, LayerRange layers = {}) {
    std::mt19937_64 rng(seed);
    src.mirror.fill(rng);
    dst.mirror.fill(rng);
    ASSERT_TRUE(src.upload());
    ASSERT_TRUE(dst.upload());
    const auto want = test::naive_copy(src.mirror, dst.mirror, pairs, layers);
    auto plan = TransferPlan::build(src.space, dst.space, pairs, layers);
    ASSERT_TRUE(plan) << plan.error().to_string();
    std::promise<Status> promise;
    auto future = promise.get_future();
    engine_->submit(std::move(*plan), [&](Status s) { promise.set_value(std::move(s)); });
    ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
    auto st = future.get();
    ASSERT_TRUE(st) << st.error().to_string();
    auto got = dst.download();
    ASSERT_TRUE(got) << got.error().to_string();
    // Region bases are offset by 3 bytes inside the allocation; the mirror is not.
    for (std::size_t r = 0; r < want.size(); ++r)
      ASSERT_TRUE(std::equal(want[r].begin(), want[r].end(), (*got)[r].begin()))
          << engine_->name() << " " << to_string(src.space.kind()) << " -> " << to_string(dst.space.kind()) << " "
          << what << " region " << r;
  }

  std::unique_ptr<CopyEngines> engines_;
  CopyEngine* engine_ = nullptr;
  int device_ = 0;
};

const LayoutSpec kSpecs[] = {
    {.num_layers = 4, .outer_dim = 2, .page_size = 16, .inner_dim = 128, .dtype = DType::bf16},  // 4 KiB chunks
    {.num_layers = 3, .outer_dim = 1, .page_size = 3, .inner_dim = 7, .dtype = DType::f16},      // MLA, 42 B chunks
    {.num_layers = 2, .outer_dim = 2, .page_size = 1, .inner_dim = 3, .dtype = DType::u8, .alignment = 1},
    // 128 B chunks, 160 per block: plans of more runs than a launch carries
    // inline, so the kernel reads its descriptors from mapped pinned memory.
    {.num_layers = 80, .outer_dim = 2, .page_size = 1, .inner_dim = 64, .dtype = DType::bf16}};

TEST_P(CudaEngines, DeviceToDevice) {
  for (const auto& spec : kSpecs)
    for (auto sk : test::kAllKinds)
      for (auto dk : test::kAllKinds) check(MemoryKind::device, MemoryKind::device, sk, dk, spec);
}

TEST_P(CudaEngines, PinnedHostToDevice) {
  for (const auto& spec : kSpecs)
    for (auto dk : test::kAllKinds)
      check(MemoryKind::host_pinned, MemoryKind::device, LayoutKind::fully_contiguous, dk, spec);
}

TEST_P(CudaEngines, DeviceToPinnedHost) {
  for (const auto& spec : kSpecs)
    for (auto sk : test::kAllKinds)
      check(MemoryKind::device, MemoryKind::host_pinned, sk, LayoutKind::fully_contiguous, spec);
}

// A pool whose pinning failed is pageable: only cuda-staged takes it, through
// its pinned bounce buffer (the kernel cannot reach pageable memory).
TEST_P(CudaEngines, PageableHostOnlyThroughTheStagedEngine) {
  if (GetParam() != CopyEngineKind::cuda_staged) {
    EXPECT_FALSE(engine_->supports(MemoryKind::device, MemoryKind::host));
    EXPECT_FALSE(engine_->supports(MemoryKind::host, MemoryKind::device));
    return;
  }
  for (const auto& spec : kSpecs)
    for (auto k : test::kAllKinds) {
      check(MemoryKind::device, MemoryKind::host, k, LayoutKind::fully_contiguous, spec);
      check(MemoryKind::host, MemoryKind::device, LayoutKind::fully_contiguous, k, spec);
    }
}

// One group of layers per plan (a layer-wise onboard), every direction.
TEST_P(CudaEngines, LayerRanges) {
  const LayoutSpec spec{.num_layers = 5, .outer_dim = 2, .page_size = 16, .inner_dim = 64, .dtype = DType::bf16};
  for (LayerRange layers : {LayerRange{0, 1}, LayerRange{1, 3}, LayerRange{4, 1}}) {
    check(MemoryKind::host_pinned, MemoryKind::device, LayoutKind::fully_contiguous,
          LayoutKind::layer_separate_block_outer, spec, layers);
    check(MemoryKind::device, MemoryKind::host_pinned, LayoutKind::layer_separate_outer_block,
          LayoutKind::fully_contiguous, spec, layers);
    check(MemoryKind::device, MemoryKind::device, LayoutKind::fully_contiguous, LayoutKind::fully_contiguous, spec,
          layers);
  }
}

// cuda-kernel with one descriptor per run built on the host (the form used
// for plans of more than 128 regions a side, and by cuda-staged's slabs)
// instead of chunk addresses computed on the device; and with completion by
// the driver's blocking wait instead of polling (spin 0, poll 0).
TEST_P(CudaEngines, DescriptorFormEveryDirection) {
  if (GetParam() != CopyEngineKind::cuda_kernel) GTEST_SKIP() << "the descriptor form is a cuda-kernel option";
  CopyEngineOptions options;
  options.cuda.direct_chunks = false;
  options.cuda.completion_spin_us = 0;
  options.cuda.completion_poll_us = 0;
  engines_ = std::make_unique<CopyEngines>(options);
  auto engine = engines_->get(CopyEngineKind::cuda_kernel, device_);
  ASSERT_TRUE(engine) << engine.error().to_string();
  engine_ = *engine;
  for (const auto& spec : kSpecs) {
    for (auto sk : test::kAllKinds)
      for (auto dk : test::kAllKinds) check(MemoryKind::device, MemoryKind::device, sk, dk, spec);
    check(MemoryKind::host_pinned, MemoryKind::device, LayoutKind::fully_contiguous,
          LayoutKind::layer_separate_block_outer, spec);
    check(MemoryKind::device, MemoryKind::host_pinned, LayoutKind::layer_separate_outer_block,
          LayoutKind::fully_contiguous, spec);
  }
}

// A plan of more pairs than a launch carries inline (96): the direct forms
// read the pairs from device memory.
TEST_P(CudaEngines, ManyPairsUseTheDevicePairTable) {
  const LayoutSpec spec{.num_layers = 3, .outer_dim = 2, .page_size = 1, .inner_dim = 40, .dtype = DType::u8};
  const std::pair<MemoryKind, MemoryKind> directions[] = {{MemoryKind::device, MemoryKind::host_pinned},
                                                          {MemoryKind::host_pinned, MemoryKind::device},
                                                          {MemoryKind::device, MemoryKind::device}};
  for (const auto& [src_mem, dst_mem] : directions) {
    const bool host_dst = dst_mem == MemoryKind::host_pinned;
    CudaSpace src(spec, host_dst ? LayoutKind::layer_separate_outer_block : LayoutKind::fully_contiguous, 300, src_mem,
                  device_);
    CudaSpace dst(spec, host_dst ? LayoutKind::fully_contiguous : LayoutKind::layer_separate_block_outer, 250, dst_mem,
                  device_);
    std::vector<BlockPair> pairs;
    for (std::uint32_t i = 0; i < 200; ++i) pairs.push_back({BlockId{299 - i}, BlockId{(i * 7) % 250}});
    copy_and_compare(src, dst, pairs, 3, "200 pairs");
  }
}

// Plans submitted back to back without waiting, each to its own destination
// block: the engine's stream order (and for cuda-staged, the hand-over of
// its two staging halves from one plan to the next) keeps every one intact.
TEST_P(CudaEngines, BackToBackPlansEachLandIntact) {
  const LayoutSpec spec{.num_layers = 4, .outer_dim = 2, .page_size = 16, .inner_dim = 128, .dtype = DType::bf16};
  const std::pair<MemoryKind, MemoryKind> directions[] = {{MemoryKind::device, MemoryKind::host_pinned},
                                                          {MemoryKind::host_pinned, MemoryKind::device},
                                                          {MemoryKind::device, MemoryKind::device}};
  for (const auto& [src_mem, dst_mem] : directions) {
    CudaSpace src(spec, LayoutKind::layer_separate_block_outer, 9, src_mem, device_);
    CudaSpace dst(spec, LayoutKind::fully_contiguous, 7, dst_mem, device_);
    std::mt19937_64 rng(11);
    src.mirror.fill(rng);
    dst.mirror.fill(rng);
    ASSERT_TRUE(src.upload());
    ASSERT_TRUE(dst.upload());
    std::vector<BlockPair> all;
    constexpr int kPlans = 6;
    std::vector<std::promise<Status>> promises(kPlans);
    for (int i = 0; i < kPlans; ++i) {
      const std::vector<BlockPair> pairs{
          {BlockId{static_cast<std::uint32_t>(8 - i)}, BlockId{static_cast<std::uint32_t>(i)}}};
      all.insert(all.end(), pairs.begin(), pairs.end());
      auto plan = TransferPlan::build(src.space, dst.space, pairs);
      ASSERT_TRUE(plan) << plan.error().to_string();
      engine_->submit(std::move(*plan), [&promises, i](Status s) { promises[i].set_value(std::move(s)); });
    }
    for (auto& p : promises) {
      auto f = p.get_future();
      ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
      auto st = f.get();
      ASSERT_TRUE(st) << st.error().to_string();
    }
    const auto want = test::naive_copy(src.mirror, dst.mirror, all);
    auto got = dst.download();
    ASSERT_TRUE(got) << got.error().to_string();
    for (std::size_t r = 0; r < want.size(); ++r)
      ASSERT_TRUE(std::equal(want[r].begin(), want[r].end(), (*got)[r].begin()))
          << engine_->name() << " " << to_string(src_mem) << " -> " << to_string(dst_mem) << " region " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, CudaEngines,
                         ::testing::Values(CopyEngineKind::cuda_kernel, CopyEngineKind::cuda_batch,
                                           CopyEngineKind::cuda_memcpy, CopyEngineKind::cuda_staged),
                         [](const auto& info) {
                           std::string n(to_string(info.param));
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace kvb
