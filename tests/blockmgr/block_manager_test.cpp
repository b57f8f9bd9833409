// BlockManager with one tier: lifecycle, registry, prefix match, leases,
// eviction order, counters.
#include "kvb/blockmgr/block_manager.h"

#include <gtest/gtest.h>

#include "test_pools.h"

namespace kvb {
namespace {

using test::h;
using test::hashes;

std::unique_ptr<BlockManager> make_g2_manager(std::uint32_t blocks, const Clock& clock, std::string policy = "lru") {
  BlockManagerConfig config;
  config.g2.pool = test::make_host_pool(2, blocks);
  config.g2.policy = std::move(policy);
  config.clock = &clock;
  auto bm = BlockManager::make(std::move(config));
  EXPECT_TRUE(bm.has_value()) << bm.error().to_string();
  return std::move(*bm);
}

// Allocates and registers one block per hash; returns their write leases.
BlockLeases store(BlockManager& bm, const std::vector<SequenceHash>& hs, Tier tier = Tier::g2) {
  auto leases = bm.allocate(tier, static_cast<std::uint32_t>(hs.size()));
  EXPECT_TRUE(leases.has_value()) << leases.error().to_string();
  for (std::size_t i = 0; i < hs.size(); ++i) EXPECT_TRUE(bm.commit((*leases)[i], hs[i]).has_value());
  return std::move(*leases);
}

TEST(BlockManager, MakeRejectsBadConfigs) {
  auto none = BlockManager::make({});
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.error().message.find("at least one tier"), std::string::npos);

  BlockManagerConfig two;
  two.g1.pool = test::make_host_pool(1, 4);
  two.g2.pool = test::make_host_pool(2, 4);
  auto no_engine = BlockManager::make(std::move(two));
  ASSERT_FALSE(no_engine.has_value());
  EXPECT_NE(no_engine.error().message.find("engine"), std::string::npos);

  BlockManagerConfig bad_policy;
  bad_policy.g2.pool = test::make_host_pool(2, 4);
  bad_policy.g2.policy = "mru";
  auto bad = BlockManager::make(std::move(bad_policy));
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("valid: prefix, lru, s3fifo"), std::string::npos) << bad.error().message;
}

TEST(BlockManager, PartialAndCompleteBlocksAreNeverMatched) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock);
  const auto hs = hashes({11, 12});
  auto leases = bm->allocate(Tier::g2, 2);
  ASSERT_TRUE(leases.has_value());
  EXPECT_EQ(bm->lookup(hs).matched(), 0U) << "partial blocks must not match";
  ASSERT_TRUE(bm->mark_complete((*leases)[0]).has_value());
  ASSERT_TRUE(bm->mark_complete((*leases)[1]).has_value());
  EXPECT_EQ(bm->lookup(hs).matched(), 0U) << "complete but unregistered blocks must not match";
  ASSERT_TRUE(bm->register_block((*leases)[0], hs[0]).has_value());
  EXPECT_EQ(bm->peek(hs), 1U);
  ASSERT_TRUE(bm->register_block((*leases)[1], hs[1]).has_value());
  auto match = bm->lookup(hs);
  EXPECT_EQ(match.matched(), 2U);
  EXPECT_EQ(match.g2_blocks, 2U);
  EXPECT_EQ(match.leases[0].block(), (*leases)[0].block());
  EXPECT_EQ(*bm->hash_of(match.leases[1]), hs[1]);
}

TEST(BlockManager, RegisteringAnIncompleteBlockIsWrongState) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock);
  auto leases = bm->allocate(Tier::g2, 1);
  ASSERT_TRUE(leases.has_value());
  auto r = bm->register_block((*leases)[0], h(5));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::wrong_state);
  EXPECT_NE(r.error().message.find("partial"), std::string::npos) << r.error().message;
  EXPECT_EQ(bm->peek(hashes({5})), 0U);
}

TEST(BlockManager, OneRegisteredCopyPerHashPerTier) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock);
  auto first = store(*bm, hashes({7}));
  auto second = bm->allocate(Tier::g2, 1);
  ASSERT_TRUE(second.has_value());
  auto dup = bm->commit((*second)[0], h(7));
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code, Errc::already_exists);
  second->release();  // the duplicate was never registered: back to free
  EXPECT_EQ(bm->pool(Tier::g2).free_count(), 3U);
  const auto c = bm->counters();
  EXPECT_EQ(c.register_conflicts, 1U);
  EXPECT_EQ(c.discards, 1U);
  EXPECT_EQ(c.tier(Tier::g2).registered, 1U);
}

TEST(BlockManager, AFailedWriteIsDiscardedNeverRegistered) {
  ManualClock clock;
  auto bm = make_g2_manager(2, clock);
  auto leases = bm->allocate(Tier::g2, 2);
  ASSERT_TRUE(leases.has_value());
  ASSERT_TRUE(bm->discard(std::move((*leases)[0])).has_value());
  EXPECT_FALSE((*leases)[0]) << "discard ends the lease";
  EXPECT_EQ(bm->pool(Tier::g2).free_count(), 1U);
  ASSERT_TRUE(bm->commit((*leases)[1], h(1)).has_value());
  auto registered = bm->discard(std::move((*leases)[1]));
  ASSERT_FALSE(registered.has_value());
  EXPECT_EQ(registered.error().code, Errc::wrong_state);
  EXPECT_TRUE((*leases)[1]) << "a refused discard leaves the lease alone";
}

TEST(BlockManager, ADroppedBlockIsAMissAndFreedWhenItsLeaseEnds) {
  ManualClock clock;
  auto bm = make_g2_manager(2, clock);
  auto leases = bm->allocate(Tier::g2, 1);
  ASSERT_TRUE(leases.has_value());
  ASSERT_TRUE(bm->commit((*leases)[0], h(7)).has_value());
  ASSERT_TRUE(bm->drop((*leases)[0]).has_value());
  EXPECT_EQ(bm->peek(std::vector{h(7)}), 0U) << "a dropped block must never match again";
  EXPECT_EQ(bm->counters().dropped, 1U);
  EXPECT_EQ(bm->drop((*leases)[0]).error().code, Errc::wrong_state);
  EXPECT_EQ(bm->pool(Tier::g2).free_count(), 1U) << "still leased";
  leases->release();
  EXPECT_EQ(bm->pool(Tier::g2).free_count(), 2U);
  EXPECT_EQ(bm->counters().tier(Tier::g2).registered, 0U);
}

TEST(BlockManager, ForeignLeasesAreRejected) {
  ManualClock clock;
  auto a = make_g2_manager(2, clock);
  auto b = make_g2_manager(2, clock);
  auto lease = a->allocate(Tier::g2, 1);
  ASSERT_TRUE(lease.has_value());
  auto r = b->mark_complete((*lease)[0]);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_NE(r.error().message.find("another block manager"), std::string::npos) << r.error().message;
  EXPECT_FALSE(b->register_block(BlockLease{}, h(1)).has_value());
  auto missing = a->allocate(Tier::g1, 1);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::unavailable);
}

TEST(BlockManager, LookupStopsAtTheFirstMissAndCountsHitsAndMisses) {
  ManualClock clock;
  auto bm = make_g2_manager(8, clock);
  { auto s = store(*bm, hashes({1, 2, 4})); }
  auto match = bm->lookup(hashes({1, 2, 3, 4}));
  EXPECT_EQ(match.matched(), 2U) << "3 is missing, so 4 does not count";
  const auto c = bm->counters();
  EXPECT_EQ(c.lookups, 1U);
  EXPECT_EQ(c.hits, 2U);
  EXPECT_EQ(c.misses, 2U);
  EXPECT_EQ(c.tier(Tier::g2).hits, 2U);
}

TEST(BlockManager, SaltedSequencesDoNotMatchEachOther) {
  ManualClock clock;
  auto bm = make_g2_manager(8, clock);
  std::vector<std::uint32_t> tokens(64);
  for (std::uint32_t i = 0; i < 64; ++i) tokens[i] = i * 7;
  const auto tenant_a = *hash_token_blocks(tokens, 16, 0xA);
  const auto tenant_b = *hash_token_blocks(tokens, 16, 0xB);
  { auto s = store(*bm, tenant_a); }
  EXPECT_EQ(bm->lookup(tenant_a).matched(), 4U);
  EXPECT_EQ(bm->lookup(tenant_b).matched(), 0U);
}

TEST(BlockManager, LeasedBlocksAreNeverEvicted) {
  ManualClock clock;
  for (const char* policy : {"lru", "s3fifo"}) {
    auto bm = make_g2_manager(4, clock, policy);
    { auto s = store(*bm, hashes({1, 2, 3, 4})); }
    auto held = bm->lookup(hashes({1, 2}));
    ASSERT_EQ(held.matched(), 2U);
    auto fresh = bm->allocate(Tier::g2, 2);  // must evict 3 and 4, never 1 or 2
    ASSERT_TRUE(fresh.has_value()) << policy;
    EXPECT_EQ(bm->peek(hashes({1, 2})), 2U) << policy;
    EXPECT_EQ(bm->peek(hashes({3})), 0U) << policy;
    EXPECT_EQ(bm->peek(hashes({4})), 0U) << policy;
    auto more = bm->allocate(Tier::g2, 1);
    ASSERT_FALSE(more.has_value()) << policy;
    EXPECT_EQ(more.error().code, Errc::out_of_capacity);
    EXPECT_NE(more.error().message.find("0 evictable"), std::string::npos) << more.error().message;
    const auto c = bm->counters();
    EXPECT_EQ(c.evictions, 2U) << policy;
    EXPECT_EQ(c.tier(Tier::g2).leased, 4U) << policy;
  }
}

TEST(BlockManager, AllocateIsAllOrNothing) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock);
  { auto s = store(*bm, hashes({1, 2})); }
  auto held = bm->lookup(hashes({1}));
  auto r = bm->allocate(Tier::g2, 4);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(bm->peek(hashes({1, 2})), 2U) << "a refused allocate evicts nothing";
}

TEST(BlockManager, LruEvictsASequenceTailBeforeItsHead) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock, "lru");
  { auto s = store(*bm, hashes({1, 2, 3, 4})); }  // released tail first: 4, 3, 2, 1
  std::vector<BlockLeases> held;
  for (std::uint64_t expect_gone : {4, 3, 2, 1}) {
    auto fresh = bm->allocate(Tier::g2, 1);
    ASSERT_TRUE(fresh.has_value());
    held.push_back(std::move(*fresh));
    EXPECT_EQ(bm->peek(hashes({expect_gone})), 0U) << "expected " << expect_gone << " evicted";
    EXPECT_EQ(bm->peek(hashes({1, 2, 3, 4})), expect_gone - 1) << "the head stays";
  }
}

TEST(BlockManager, TheDocumentedRequestPatternReleasesTheTailFirst) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock, "lru");
  { auto s = store(*bm, hashes({1, 2})); }
  {
    const auto seq = hashes({1, 2, 3, 4});
    auto match = bm->lookup(seq);
    ASSERT_EQ(match.matched(), 2U);
    auto fresh = bm->allocate(Tier::g2, 2);
    ASSERT_TRUE(fresh.has_value());
    for (std::uint32_t i = 0; i < 2; ++i) ASSERT_TRUE(bm->commit((*fresh)[i], seq[2 + i]).has_value());
    match.leases.append(std::move(*fresh));
    EXPECT_EQ(match.leases.size(), 4U);
  }
  auto one = bm->allocate(Tier::g2, 1);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(bm->peek(hashes({1, 2, 3, 4})), 3U) << "block 4, the tail, goes first";
}

TEST(BlockManager, LruOrderFollowsTheClockAcrossSequences) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock, "lru");
  { auto s = store(*bm, hashes({1, 2})); }
  clock.advance(100);
  { auto s = store(*bm, hashes({10, 20})); }
  clock.advance(100);
  { auto again = bm->lookup(hashes({1, 2})); }  // sequence 1 used again: now the newest
  EXPECT_EQ(bm->policy(Tier::g2).oldest_inactive_since_ns(), 100U) << "sequence 10,20 released at t=100";
  auto fresh = bm->allocate(Tier::g2, 2);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(bm->peek(hashes({1, 2})), 2U);
  EXPECT_EQ(bm->peek(hashes({10})), 0U);
}

TEST(BlockManager, S3FifoKeepsReusedBlocksOverNewOnes) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock, "s3fifo");
  { auto s = store(*bm, hashes({1, 2, 3, 4})); }
  { auto hit = bm->lookup(hashes({1, 2})); }  // 1 and 2 are reused
  auto fresh = bm->allocate(Tier::g2, 2);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(bm->peek(hashes({1, 2})), 2U) << "reused blocks survive";
  EXPECT_EQ(bm->peek(hashes({3})) + bm->peek(hashes({4})), 0U);
}

TEST(BlockManager, CommitTellsThePolicyTheParentSoPrefixEvictsLeavesFirst) {
  // Sequence 1 -> 2 -> 3, each block its own request, released head first:
  // LRU would evict 1 and strand 2 and 3.
  ManualClock clock;
  auto bm = make_g2_manager(3, clock, "prefix");
  const auto seq = hashes({1, 2, 3});
  for (std::size_t i = 0; i < seq.size(); ++i) {
    auto lease = bm->allocate(Tier::g2, 1);
    ASSERT_TRUE(lease.has_value());
    ASSERT_TRUE(bm->commit((*lease)[0], seq[i], i > 0 ? std::optional(seq[i - 1]) : std::nullopt).has_value());
    clock.advance(1'000'000'000);
  }
  for (std::uint32_t expect_left : {2U, 1U, 0U}) {
    auto fresh = bm->allocate(Tier::g2, 1);
    ASSERT_TRUE(fresh.has_value()) << fresh.error().to_string();
    EXPECT_EQ(bm->peek(seq), expect_left) << "the tail goes first";
    ASSERT_TRUE(bm->commit((*fresh)[0], h(100 + expect_left)).has_value());
  }
}

TEST(BlockManager, PrefixMeasuresIdlenessInTheTiersTrafficNotInClockTime) {
  // The daemon's call sequence at a benchmark's pace (0.4 ms a request, as
  // kvblockd-bench cluster replays an hour of trace in 5 s): block A is
  // stored and hit 3 times (4 uses), then 25,000 one-block requests go by,
  // then B is stored and hit once (2 uses). A's extra doubling of uses is
  // worth 20,000 uses of idleness (prefix_policy.cpp) and it has been idle
  // for 25,000: A goes before B, at any pace, as in the replay at the
  // trace's own pace. With the former wall-clock bonus (4 minutes) the 10 s
  // that passed at the fast pace were nothing, and B went first.
  for (const std::uint64_t ns_per_request : {std::uint64_t{400'000}, std::uint64_t{30'000'000}}) {
    ManualClock clock;
    auto bm = make_g2_manager(3, clock, "prefix");
    auto request = [&](SequenceHash key) {  // lookup; on a miss, offload (allocate + commit); end
      clock.advance(ns_per_request);
      auto match = bm->lookup(std::span(&key, 1));
      if (match.matched() > 0) return;
      auto lease = bm->allocate(Tier::g2, 1);
      ASSERT_TRUE(lease.has_value()) << lease.error().to_string();
      ASSERT_TRUE(bm->commit((*lease)[0], key).has_value());
    };
    for (int i = 0; i < 4; ++i) request(h(1));                             // A: stored, then 3 hits
    for (std::uint64_t i = 0; i < 25'000; ++i) request(h(1'000'000 + i));  // each a dead end, evicted by the next
    for (int i = 0; i < 2; ++i) request(h(2));                             // B: stored, then 1 hit
    auto fresh = bm->allocate(Tier::g2, 2);                                // the last one-off (a dead end), then A or B
    ASSERT_TRUE(fresh.has_value()) << fresh.error().to_string();
    EXPECT_EQ(bm->peek(hashes({1})), 0U) << "A, idle longest, goes; " << ns_per_request << " ns a request";
    EXPECT_EQ(bm->peek(hashes({2})), 1U) << "B, used just now, stays; " << ns_per_request << " ns a request";
  }
}

TEST(BlockManager, ALookupOfTheSameRequestLeasesWithoutANewUse) {
  // The daemon's unpinned lookup releases what it matched; the onboard then
  // leases the blocks again for the same request (LookupUse::same_request):
  // one use, as in the replay. B: stored, then 2 new requests (3 uses). A,
  // later: stored, then 1 request that looked it up and leased it again
  // (2 uses). A, used less, goes first; were the second lease a use, A and
  // B would both have 3 and B, released first, would go.
  ManualClock clock;
  auto bm = make_g2_manager(2, clock, "prefix");
  { auto b = store(*bm, hashes({2})); }
  for (int i = 0; i < 2; ++i) (void)bm->lookup(hashes({2}));
  { auto a = store(*bm, hashes({1})); }
  (void)bm->lookup(hashes({1}));
  auto again = bm->lookup(hashes({1}), LookupUse::same_request);
  EXPECT_EQ(again.matched(), 1U);
  again.leases.release();
  EXPECT_EQ(bm->counters().lookups, 4U) << "counted as any lookup";
  auto fresh = bm->allocate(Tier::g2, 1);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().to_string();
  EXPECT_EQ(bm->peek(hashes({1})), 0U) << "A, one use fewer, goes";
  EXPECT_EQ(bm->peek(hashes({2})), 1U);
}

TEST(BlockManager, FindLeasesOneRegisteredBlockWithoutCounting) {
  ManualClock clock;
  auto bm = make_g2_manager(4, clock);
  { auto s = store(*bm, hashes({1, 2})); }
  BlockLease two = bm->find(Tier::g2, h(2));
  ASSERT_TRUE(two);
  EXPECT_FALSE(bm->find(Tier::g2, h(3)));
  EXPECT_FALSE(bm->find(Tier::g1, h(2)));
  EXPECT_EQ(bm->counters().lookups, 0U);
  EXPECT_EQ(bm->counters().tier(Tier::g2).leased, 1U);
}

TEST(BlockManager, CountersReportBlocksPerState) {
  ManualClock clock;
  auto bm = make_g2_manager(8, clock);
  auto stored = store(*bm, hashes({1, 2, 3}));
  auto partial = bm->allocate(Tier::g2, 2);
  ASSERT_TRUE(partial.has_value());
  ASSERT_TRUE(bm->mark_complete((*partial)[0]).has_value());
  auto c = bm->counters().tier(Tier::g2);
  EXPECT_TRUE(c.present);
  EXPECT_FALSE(bm->counters().tier(Tier::g1).present);
  EXPECT_EQ(c.capacity, 8U);
  EXPECT_EQ(c.free, 3U);
  EXPECT_EQ(c.partial, 1U);
  EXPECT_EQ(c.complete, 1U);
  EXPECT_EQ(c.registered, 3U);
  EXPECT_EQ(c.leased, 5U);
  EXPECT_EQ(c.inactive, 0U);
  stored.release();
  partial->release();
  c = bm->counters().tier(Tier::g2);
  EXPECT_EQ(c.inactive, 3U);
  EXPECT_EQ(c.leased, 0U);
  EXPECT_EQ(c.free, 5U);
  EXPECT_EQ(bm->counters().discards, 2U);
}

TEST(BlockManager, MovedLeasesReleaseOnce) {
  ManualClock clock;
  auto bm = make_g2_manager(2, clock);
  auto leases = store(*bm, hashes({1}));
  BlockLease a = std::move(leases[0]);
  BlockLease b;
  b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_TRUE(b);
  EXPECT_EQ(bm->counters().tier(Tier::g2).leased, 1U);
  b.release();
  b.release();
  EXPECT_EQ(bm->counters().tier(Tier::g2).leased, 0U);
  EXPECT_EQ(bm->counters().tier(Tier::g2).inactive, 1U);
}

}  // namespace
}  // namespace kvb
