// The remote index's cost per index event (docs/cluster.md, "index"): a
// peer holding `held` blocks stores one and evicts one per iteration (two
// events), as a worker under a steady offload load does. Baseline, same
// run: the node-based structure RemoteIndex was before (an unordered_map of
// holder vectors plus an unordered_set per worker), doing the same
// bookkeeping. items_per_second counts events.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cluster/remote_index.h"

namespace {

using kvb::daemon::cluster::BlockKey;
using kvb::daemon::cluster::RemoteIndex;
using kvb::daemon::cluster::WorkerIndex;

struct KeyHash {
  std::size_t operator()(const BlockKey& k) const noexcept {
    return static_cast<std::size_t>(k.key ^ (k.layout * 0x9E3779B97F4A7C15ULL));
  }
};

// What RemoteIndex was until 2026-12-02.
class NodeBasedIndex {
 public:
  void add(WorkerIndex worker, BlockKey key) {
    if (!by_worker_[worker].insert(key).second) return;
    holders_[key].push_back(worker);
  }
  void remove(WorkerIndex worker, BlockKey key) {
    auto mine = by_worker_.find(worker);
    if (mine == by_worker_.end() || mine->second.erase(key) == 0) return;
    auto it = holders_.find(key);
    if (it == holders_.end()) return;
    std::erase(it->second, worker);
    if (it->second.empty()) holders_.erase(it);
  }

 private:
  std::unordered_map<BlockKey, std::vector<WorkerIndex>, KeyHash> holders_;
  std::unordered_map<WorkerIndex, std::unordered_set<BlockKey, KeyHash>> by_worker_;
};

BlockKey nth(std::uint64_t i) { return BlockKey{7, i * 0x9E3779B97F4A7C15ULL}; }

template <class Index>
void StoreAndEvict(benchmark::State& state) {
  const auto held = static_cast<std::uint64_t>(state.range(0));
  Index index;
  std::uint64_t next = 0;
  std::uint64_t oldest = 0;
  for (; next < held; ++next) index.add(1, nth(next));
  for (auto _ : state) {
    index.add(1, nth(next++));
    index.remove(1, nth(oldest++));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 2);
}

BENCHMARK_TEMPLATE(StoreAndEvict, RemoteIndex)->Arg(20'000)->Arg(200'000);
BENCHMARK_TEMPLATE(StoreAndEvict, NodeBasedIndex)->Arg(20'000)->Arg(200'000);

}  // namespace

BENCHMARK_MAIN();
