// Randomized consistency of the registry, leases and eviction through the
// public API: whatever the sequence of stores, lookups, releases and
// evictions, every hash the manager finds is registered under that hash, the
// counters agree with what can be found, and no block is lost.
#include <gtest/gtest.h>

#include <random>

#include "kvb/blockmgr/block_manager.h"
#include "test_pools.h"

namespace kvb {
namespace {

void check_consistent(BlockManager& bm, std::uint64_t universe) {
  std::uint32_t found = 0;
  for (std::uint64_t v = 0; v < universe; ++v) {
    BlockLease lease = bm.find(Tier::g2, SequenceHash{v});
    if (!lease) continue;
    ++found;
    auto hash = bm.hash_of(lease);
    ASSERT_TRUE(hash.has_value());
    ASSERT_EQ(hash->value(), v) << "the registry points at a block registered under another hash";
  }
  const auto c = bm.counters().tier(Tier::g2);
  ASSERT_EQ(found, c.registered);
  ASSERT_EQ(c.free + c.partial + c.complete + c.registered, c.capacity) << "a block was lost";
}

TEST(RegistryStress, RandomOperationsKeepTheRegistryConsistent) {
  for (const char* policy : {"lru", "s3fifo", "prefix"}) {
    ManualClock clock;
    BlockManagerConfig config;
    config.g2.pool = test::make_host_pool(2, 64);
    config.g2.policy = policy;
    config.clock = &clock;
    auto bm = std::move(*BlockManager::make(std::move(config)));
    std::mt19937_64 rng(1234);
    constexpr std::uint64_t kUniverse = 300;
    std::vector<BlockLeases> held;
    for (int step = 0; step < 4000; ++step) {
      clock.advance(1);
      const auto op = rng() % 10;
      if (op < 5) {  // store a few hashes (some already registered: conflicts)
        const auto n = static_cast<std::uint32_t>(1 + rng() % 6);
        auto leases = bm->allocate(Tier::g2, n);
        if (!leases) continue;  // everything leased: fine
        for (std::uint32_t i = 0; i < n; ++i) {
          const SequenceHash hash{rng() % kUniverse};
          if (rng() % 8 == 0) {
            ASSERT_TRUE(bm->discard(std::move((*leases)[i])).has_value());
          } else {  // a random parent, often unregistered, sometimes a cycle: the tree must cope
            const auto parent = rng() % 3 == 0 ? std::nullopt : std::optional(SequenceHash{rng() % kUniverse});
            (void)bm->commit((*leases)[i], hash, parent);
          }
        }
        if (rng() % 2 == 0) held.push_back(std::move(*leases));
      } else if (op < 8) {  // a lookup, sometimes kept for a while
        std::vector<SequenceHash> hs;
        for (int i = 0; i < 4; ++i) hs.emplace_back(rng() % kUniverse);
        auto match = bm->lookup(hs);
        if (rng() % 3 == 0) held.push_back(std::move(match.leases));
      } else if (!held.empty()) {  // end some held leases
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(rng() % held.size()));
      }
      if (held.size() > 6) held.erase(held.begin());
      if (step % 500 == 0) check_consistent(*bm, kUniverse);
    }
    held.clear();
    check_consistent(*bm, kUniverse);
    const auto c = bm->counters();
    EXPECT_GT(c.evictions, 100U) << policy;
    EXPECT_GT(c.register_conflicts, 10U) << policy;
    EXPECT_EQ(c.tier(Tier::g2).leased, 0U) << policy;
    EXPECT_EQ(c.tier(Tier::g2).inactive, c.tier(Tier::g2).registered) << policy;
  }
}

TEST(RegistryStressDeathTest, ALeaseOutlivingItsManagerAbortsLoudly) {
  EXPECT_DEATH(
      {
        BlockManagerConfig config;
        config.g2.pool = test::make_host_pool(2, 4);
        auto bm = std::move(*BlockManager::make(std::move(config)));
        auto* leaked = new BlockLeases(std::move(*bm->allocate(Tier::g2, 1)));
        (void)leaked;
        bm.reset();
      },
      "live leases");
}

}  // namespace
}  // namespace kvb
