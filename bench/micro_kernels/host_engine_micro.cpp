// Per-plan overhead of HostCopyEngine: submit -> done for small plans
// (cache-resident on purpose: this measures the queue, the wake-up and the
// completion, not DRAM; kvblockd-bench copy measures bandwidth). Every
// iteration also times memcpy of the same total bytes on the calling thread
// (the baseline), and the counters report both and their ratio. The engine's
// worker runs on another core, so its copy is never as cache-hot as the
// caller's memcpy: for plans beyond a few KiB the ratio mostly shows that,
// not engine overhead.
#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "kvb/kernels/host_copy_engine.h"

namespace kvb {
namespace {

using Clock = std::chrono::steady_clock;

struct Buffers {
  std::vector<std::vector<std::byte>> src, dst;
  BlockSpace src_space, dst_space;
};

// `blocks` blocks of 8 layers x (K, V) x `chunk` bytes, layer separate ->
// fully contiguous (a gather), blocks i -> i.
Buffers make_buffers(std::uint32_t blocks, std::uint32_t chunk) {
  const LayoutSpec spec{.num_layers = 8, .outer_dim = 2, .page_size = 1, .inner_dim = chunk, .dtype = DType::u8};
  Buffers b{{},
            {},
            {*Layout::make(spec, LayoutKind::layer_separate_block_outer, blocks), {}},
            {*Layout::make(spec, LayoutKind::fully_contiguous, blocks), {}}};
  for (std::uint32_t r = 0; r < b.src_space.layout.num_regions(); ++r) {
    b.src.emplace_back(b.src_space.layout.region_bytes(), std::byte{1});
    b.src_space.regions.push_back({b.src.back().data(), b.src.back().size(), MemoryKind::host});
  }
  b.dst.emplace_back(b.dst_space.layout.region_bytes(), std::byte{0});
  b.dst_space.regions.push_back({b.dst.back().data(), b.dst.back().size(), MemoryKind::host});
  return b;
}

void BM_HostEngineGather(benchmark::State& state) {
  const auto blocks = static_cast<std::uint32_t>(state.range(0));
  const auto chunk = static_cast<std::uint32_t>(state.range(1));
  Buffers b = make_buffers(blocks, chunk);
  std::vector<BlockPair> pairs;
  for (std::uint32_t i = 0; i < blocks; ++i) pairs.push_back({BlockId{i}, BlockId{i}});
  const auto plan = TransferPlan::build(b.src_space, b.dst_space, pairs);
  if (!plan) {
    state.SkipWithError(plan.error().message.c_str());
    return;
  }
  HostCopyEngine engine;
  const std::uint64_t bytes = plan->total_bytes();
  std::vector<std::byte> flat_src(bytes, std::byte{1}), flat_dst(bytes);
  std::mutex m;
  std::condition_variable cv;
  double engine_s = 0, memcpy_s = 0;
  for (auto _ : state) {
    TransferPlan p = *plan;
    bool done = false;
    const auto t0 = Clock::now();
    engine.submit(std::move(p), [&](const Status&) {
      std::lock_guard lock(m);
      done = true;
      cv.notify_one();
    });
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return done; });
    }
    const auto t1 = Clock::now();
    std::memcpy(flat_dst.data(), flat_src.data(), bytes);
    benchmark::DoNotOptimize(flat_dst.data());
    const auto t2 = Clock::now();
    engine_s += std::chrono::duration<double>(t1 - t0).count();
    memcpy_s += std::chrono::duration<double>(t2 - t1).count();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["engine_us"] = engine_s / n * 1e6;
  state.counters["memcpy_us"] = memcpy_s / n * 1e6;
  state.counters["engine_GBps"] = static_cast<double>(bytes) * n / engine_s / 1e9;
  state.counters["memcpy_GBps"] = static_cast<double>(bytes) * n / memcpy_s / 1e9;
  state.counters["ratio"] = memcpy_s / engine_s;
  state.counters["runs"] = static_cast<double>(plan->runs().size());
}

BENCHMARK(BM_HostEngineGather)
    ->ArgNames({"blocks", "chunk"})
    ->Args({1, 1024})
    ->Args({1, 32768})
    ->Args({4, 32768})
    ->Args({16, 4096})
    ->UseManualTime();

}  // namespace
}  // namespace kvb

BENCHMARK_MAIN();
