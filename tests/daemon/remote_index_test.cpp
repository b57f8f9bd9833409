// RemoteIndex against a model (std::map of holder lists) under random
// events: adds, removes, clears; many keys so the table grows and deletions
// shift probe runs back; some keys held by up to five workers (the side
// lists). Every answer must equal the model's.
#include "cluster/remote_index.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace kvb::daemon::cluster {
namespace {

using Model = std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<WorkerIndex>>;

// Every block of the model has the same holders in `index`, in the order
// they were told, and the counts agree.
void expect_same(const RemoteIndex& index, const Model& model, WorkerIndex workers) {
  ASSERT_EQ(index.size(), model.size());
  std::vector<std::size_t> per(workers, 0);
  for (const auto& [lk, list] : model) {
    const auto held = index.holders(BlockKey{lk.first, lk.second});
    ASSERT_EQ(std::vector<WorkerIndex>(held.begin(), held.end()), list)
        << "layout " << lk.first << " key " << lk.second;
    for (WorkerIndex w : list) ++per[w];
  }
  for (WorkerIndex w = 0; w < workers; ++w) EXPECT_EQ(index.size_of(w), per[w]) << "worker " << w;
}

TEST(RemoteIndex, MatchesAModelUnderRandomAddsRemovesAndClears) {
  constexpr std::uint64_t kKeys = 6000;  // two layouts: up to 12,000 blocks, the table grows from 1,024 slots
  constexpr WorkerIndex kWorkers = 5;
  std::mt19937_64 rng(42);
  RemoteIndex index;
  Model model;
  for (int step = 0; step < 200'000; ++step) {
    const std::uint64_t layout = 1 + rng() % 2;
    // Keys spread over the whole 64-bit space, as salted hashes are.
    const std::uint64_t k = rng() % kKeys;
    const BlockKey key{layout, k * 0x9E3779B97F4A7C15ULL};
    const auto w = static_cast<WorkerIndex>(rng() % kWorkers);
    const auto op = rng() % 1000;
    auto& held = model[{layout, k * 0x9E3779B97F4A7C15ULL}];
    if (op < 560) {
      index.add(w, key);
      if (std::find(held.begin(), held.end(), w) == held.end()) held.push_back(w);
    } else if (op < 999) {
      index.remove(w, key);
      std::erase(held, w);
    } else {
      index.clear(w);
      for (auto& [_, list] : model) std::erase(list, w);
      std::erase_if(model, [](const auto& kv) { return kv.second.empty(); });
    }
    if (auto it = model.find({layout, key.key}); it != model.end() && it->second.empty()) model.erase(it);
    if (step % 10'000 == 0) {
      ASSERT_NO_FATAL_FAILURE(expect_same(index, model, kWorkers)) << "step " << step;
    }
    // A key the model does not hold is held by nobody in the index.
    const BlockKey absent{layout, (kKeys + rng() % kKeys) * 0x9E3779B97F4A7C15ULL};
    ASSERT_TRUE(index.holders(absent).empty());
  }
  expect_same(index, model, kWorkers);
}

TEST(RemoteIndex, PrefixesFollowTheHoldersOfEachBlock) {
  RemoteIndex index;
  for (std::uint64_t k = 0; k < 4; ++k) index.add(0, BlockKey{7, 100 + k});
  for (std::uint64_t k = 4; k < 8; ++k) index.add(1, BlockKey{7, 100 + k});
  for (std::uint64_t k = 0; k < 8; ++k) index.add(2, BlockKey{7, 100 + k});  // a third holder of every block
  const std::vector<std::uint64_t> keys{100, 101, 102, 103, 104, 105, 106, 107, 108};
  EXPECT_EQ(index.continuation(7, keys), 8U);
  EXPECT_EQ(index.continuation(8, keys), 0U);  // another block shape
  EXPECT_EQ(index.prefix_of(0, 7, keys), 4U);
  EXPECT_EQ(index.prefix_of(1, 7, keys), 0U);
  EXPECT_EQ(index.prefix_of(2, 7, keys), 8U);
  index.clear(2);
  EXPECT_EQ(index.prefix_of(2, 7, keys), 0U);
  EXPECT_EQ(index.continuation(7, keys), 8U);
  EXPECT_EQ(index.size(), 8U);
  index.clear(0);
  EXPECT_EQ(index.continuation(7, keys), 0U);
  EXPECT_EQ(index.size_of(1), 4U);
  EXPECT_EQ(index.size(), 4U);
}

}  // namespace
}  // namespace kvb::daemon::cluster
