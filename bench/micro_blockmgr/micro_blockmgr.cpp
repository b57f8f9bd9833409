// Micro benchmarks of the block manager, one thread (issue 2 targets):
//   allocate + free   >= 20 M blocks/s
//   match + register  >=  5 M block hashes/s
// Each figure is printed beside a baseline measured in the same run (the
// plain standard-library structure doing the same bookkeeping) and the ratio.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvb/blockmgr/block_manager.h"
#include "kvb/blockmgr/host_region.h"

namespace {

using namespace kvb;

std::unique_ptr<Pool> make_pool(std::uint32_t id, std::uint32_t blocks) {
  LayoutSpec spec;
  spec.num_layers = 1;
  spec.outer_dim = 1;
  spec.page_size = 16;
  spec.inner_dim = 1;
  spec.dtype = DType::u8;
  spec.alignment = 16;
  auto layout = Layout::make(spec, LayoutKind::fully_contiguous, blocks);
  auto region = HostRegion::create(layout->region_bytes());
  if (!region) {
    std::fprintf(stderr, "%s\n", region.error().to_string().c_str());
    std::exit(1);
  }
  return std::move(*Pool::make(PoolId{id}, *layout, std::move(*region)));
}

std::unique_ptr<BlockManager> make_manager(std::uint32_t blocks, const char* policy) {
  BlockManagerConfig config;
  config.g1 = TierConfig{make_pool(1, blocks), policy};
  return std::move(*BlockManager::make(std::move(config)));
}

// ---- allocate + free --------------------------------------------------------

// Pool::allocate + Pool::free of one block.
void BM_PoolAllocateFree(benchmark::State& state) {
  auto pool = make_pool(1, 4096);
  for (auto _ : state) {
    auto ref = pool->allocate();
    benchmark::DoNotOptimize(ref);
    (void)pool->free(*ref);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolAllocateFree);

// BlockManager::allocate of a batch of write leases, then their release
// (each block goes back to free). Items = blocks.
void BM_ManagerAllocateRelease(benchmark::State& state) {
  const auto batch = static_cast<std::uint32_t>(state.range(0));
  auto bm = make_manager(4096, "lru");
  for (auto _ : state) {
    auto leases = bm->allocate(Tier::g1, batch);
    benchmark::DoNotOptimize(leases);
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_ManagerAllocateRelease)->Arg(1)->Arg(32);

// Baseline: malloc + free of a 64-byte block descriptor.
void BM_Baseline_MallocFree(benchmark::State& state) {
  for (auto _ : state) {
    void* p = std::malloc(64);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Baseline_MallocFree);

// ---- match + register -------------------------------------------------------

// A stream of 32-block sequences over a 65536-block tier in steady state
// (evicting): each sequence shares its first 16 blocks with an earlier one
// (match) and brings 16 new blocks (allocate + complete + register, each
// with its parent hash); then its leases end. Items = block hashes looked
// up (32 per sequence).
void BM_MatchRegister(benchmark::State& state, const char* policy) {
  constexpr std::uint32_t kLen = 32, kShared = 16, kPrefixes = 256;
  auto bm = make_manager(65536, policy);
  std::vector<std::vector<SequenceHash>> prefixes(kPrefixes);
  std::uint64_t next = 1;
  for (auto& p : prefixes)
    for (std::uint32_t i = 0; i < kShared; ++i) p.emplace_back(next++ * 0x9E3779B97F4A7C15ULL);
  std::vector<SequenceHash> seq(kLen);
  std::uint64_t round = 0, matched = 0;
  for (auto _ : state) {
    const auto& prefix = prefixes[round++ % kPrefixes];
    std::copy(prefix.begin(), prefix.end(), seq.begin());
    for (std::uint32_t i = kShared; i < kLen; ++i) seq[i] = SequenceHash{next++ * 0x9E3779B97F4A7C15ULL};
    PrefixMatch match = bm->lookup(seq);
    matched += match.matched();
    const std::uint32_t fresh_n = kLen - match.matched();
    auto fresh = bm->allocate(Tier::g1, fresh_n);
    for (std::uint32_t i = 0; i < fresh_n; ++i) {
      const std::uint32_t pos = match.matched() + i;
      (void)bm->commit((*fresh)[i], seq[pos], pos > 0 ? std::optional(seq[pos - 1]) : std::nullopt);
    }
  }
  state.SetItemsProcessed(state.iterations() * kLen);
  state.counters["matched_per_seq"] = static_cast<double>(matched) / static_cast<double>(state.iterations());
}
BENCHMARK_CAPTURE(BM_MatchRegister, lru, "lru");
BENCHMARK_CAPTURE(BM_MatchRegister, s3fifo, "s3fifo");
BENCHMARK_CAPTURE(BM_MatchRegister, prefix, "prefix");

// Match only: lookup of a fully registered 32-block sequence (leases taken
// and released). Items = block hashes.
void BM_Match(benchmark::State& state) {
  auto bm = make_manager(65536, "lru");
  std::vector<SequenceHash> seq;
  for (std::uint64_t i = 1; i <= 32; ++i) seq.emplace_back(i * 0x9E3779B97F4A7C15ULL);
  {
    auto fresh = bm->allocate(Tier::g1, 32);
    for (std::uint32_t i = 0; i < 32; ++i) (void)bm->commit((*fresh)[i], seq[i]);
  }
  for (auto _ : state) {
    PrefixMatch match = bm->lookup(seq);
    benchmark::DoNotOptimize(match.g1_blocks);
  }
  state.SetItemsProcessed(state.iterations() * 32);
}
BENCHMARK(BM_Match);

// Baseline: the same match + register bookkeeping with a std::unordered_map
// (hash -> block) and a std::vector free list, no leases and no policy:
// 16 finds, then 16 inserts and 16 erases of the oldest entries.
void BM_Baseline_UnorderedMap(benchmark::State& state) {
  constexpr std::uint32_t kLen = 32, kShared = 16, kPrefixes = 256, kCap = 65536;
  std::unordered_map<std::uint64_t, std::uint32_t> map;
  map.reserve(kCap);
  std::vector<std::uint64_t> fifo(kCap);
  std::size_t fifo_head = 0, fifo_size = 0;
  std::vector<std::vector<std::uint64_t>> prefixes(kPrefixes);
  std::uint64_t next = 1;
  for (auto& p : prefixes)
    for (std::uint32_t i = 0; i < kShared; ++i) p.push_back(next++ * 0x9E3779B97F4A7C15ULL);
  std::uint64_t round = 0;
  for (auto _ : state) {
    const auto& prefix = prefixes[round++ % kPrefixes];
    std::uint32_t m = 0;
    for (auto h : prefix) {
      if (map.find(h) == map.end()) break;
      ++m;
    }
    benchmark::DoNotOptimize(m);
    for (std::uint32_t i = m; i < kLen; ++i) {
      const std::uint64_t h = i < kShared ? prefix[i] : next++ * 0x9E3779B97F4A7C15ULL;
      if (fifo_size == kCap) {
        map.erase(fifo[fifo_head]);
        fifo_head = (fifo_head + 1) % kCap;
        --fifo_size;
      }
      map.emplace(h, i);
      fifo[(fifo_head + fifo_size++) % kCap] = h;
    }
  }
  state.SetItemsProcessed(state.iterations() * kLen);
}
BENCHMARK(BM_Baseline_UnorderedMap);

// Records items/s per benchmark while printing the usual console table.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      auto it = run.counters.find("items_per_second");
      if (it != run.counters.end() && run.run_type == Run::RT_Iteration)
        rates[run.benchmark_name()] = static_cast<double>(it->second);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> rates;
};

void summary(const RecordingReporter& r, const char* what, const std::string& name, double target,
             const std::string& baseline) {
  auto find = [&](const std::string& n) {
    auto it = r.rates.find(n);
    return it == r.rates.end() ? 0.0 : it->second;
  };
  const double x = find(name), b = find(baseline);
  if (x == 0) return;  // filtered out
  std::printf("%-34s %7.2f M/s  target %5.1f M/s: %-4s  baseline %s %7.2f M/s  ratio %.2fx\n", what, x / 1e6,
              target / 1e6, x >= target ? "MET" : "MISS", baseline.c_str(), b / 1e6, b > 0 ? x / b : 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::printf("\nblock manager, one thread (targets from issue 2):\n");
  summary(reporter, "allocate+free (Pool)", "BM_PoolAllocateFree", 20e6, "BM_Baseline_MallocFree");
  summary(reporter, "allocate+free (BlockManager, x32)", "BM_ManagerAllocateRelease/32", 20e6,
          "BM_Baseline_MallocFree");
  summary(reporter, "allocate+free (BlockManager, x1)", "BM_ManagerAllocateRelease/1", 20e6, "BM_Baseline_MallocFree");
  summary(reporter, "match+register (lru)", "BM_MatchRegister/lru", 5e6, "BM_Baseline_UnorderedMap");
  summary(reporter, "match+register (s3fifo)", "BM_MatchRegister/s3fifo", 5e6, "BM_Baseline_UnorderedMap");
  summary(reporter, "match+register (prefix)", "BM_MatchRegister/prefix", 5e6, "BM_Baseline_UnorderedMap");
  summary(reporter, "match only", "BM_Match", 5e6, "BM_Baseline_UnorderedMap");
  return 0;
}
