// BlockManager with G1 and G2: write-back on eviction, onboard, copy
// failures, and completions that arrive on another thread.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "kvb/blockmgr/block_manager.h"
#include "test_pools.h"

namespace kvb {
namespace {

using test::h;
using test::hashes;

// The owning thread's queue: what an event loop's post() would be.
class EventQueue {
 public:
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  // Runs one posted closure, waiting at most 10 s for it. False on timeout.
  bool run_one() {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !queue_.empty(); })) return false;
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    fn();
    return true;
  }
  PostToOwner poster() {
    return [this](std::function<void()> fn) { post(std::move(fn)); };
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

// Holds submitted plans until the test runs them, then copies on a worker
// thread (as kernels/' HostCopyEngine does) and calls done there.
class FakeDeferredCopyEngine final : public CopyEngine {
 public:
  std::string_view name() const noexcept override { return "fake-deferred"; }
  bool supports(MemoryKind, MemoryKind) const noexcept override { return true; }
  void submit(TransferPlan plan, CopyDone done) override { pending_.emplace_back(std::move(plan), std::move(done)); }
  std::size_t pending() const { return pending_.size(); }
  // Runs every pending plan on a worker thread and joins it.
  void run_on_worker_thread() {
    auto work = std::move(pending_);
    pending_.clear();
    std::thread worker([&] {
      SyncHostCopyEngine sync;
      for (auto& [plan, done] : work) sync.submit(std::move(plan), std::move(done));
    });
    worker.join();
  }
  // Drops the plans and calls done with an error, as if the device failed.
  void fail_all() {
    auto work = std::move(pending_);
    pending_.clear();
    for (auto& [plan, done] : work) done(fail(Errc::io_error, "injected copy failure"));
  }

 private:
  std::vector<std::pair<TransferPlan, CopyDone>> pending_;
};

// Fails every plan inline: the destination holds nothing trustworthy.
class FaultyCopyEngine final : public CopyEngine {
 public:
  std::string_view name() const noexcept override { return "faulty"; }
  bool supports(MemoryKind, MemoryKind) const noexcept override { return true; }
  void submit(TransferPlan, CopyDone done) override { done(fail(Errc::io_error, "injected copy failure")); }
};

std::unique_ptr<BlockManager> make_two_tier(std::uint32_t g1_blocks, std::uint32_t g2_blocks, CopyEngine& engine,
                                            const Clock& clock, PostToOwner post = {},
                                            const std::string& policy = "lru") {
  BlockManagerConfig config;
  config.g1.pool = test::make_host_pool(1, g1_blocks);
  config.g2.pool = test::make_host_pool(2, g2_blocks);
  config.g1.policy = policy;
  config.g2.policy = policy;
  config.engine = &engine;
  config.clock = &clock;
  config.post = std::move(post);
  auto bm = BlockManager::make(std::move(config));
  EXPECT_TRUE(bm.has_value()) << bm.error().to_string();
  return std::move(*bm);
}

// Writes a recognisable pattern (the hash value) into each block, then
// registers it: what a completed engine copy would leave behind.
void store_with_data(BlockManager& bm, Tier tier, const std::vector<SequenceHash>& hs) {
  auto leases = bm.allocate(tier, static_cast<std::uint32_t>(hs.size()));
  ASSERT_TRUE(leases.has_value()) << leases.error().to_string();
  const auto bytes = bm.pool(tier).layout().block_bytes();
  for (std::size_t i = 0; i < hs.size(); ++i) {
    std::byte* data = bm.pool(tier).block_data((*leases)[i].block());
    for (std::uint64_t k = 0; k < bytes; ++k) data[k] = static_cast<std::byte>(hs[i].value() + k);
    ASSERT_TRUE(bm.commit((*leases)[i], hs[i]).has_value());
  }
}

bool holds_pattern(const BlockManager& bm, const BlockLease& lease, SequenceHash hash) {
  const std::byte* data = bm.pool(lease.tier()).block_data(lease.block());
  const auto bytes = bm.pool(lease.tier()).layout().block_bytes();
  for (std::uint64_t k = 0; k < bytes; ++k)
    if (data[k] != static_cast<std::byte>(hash.value() + k)) return false;
  return true;
}

TEST(Tiers, EvictingARegisteredG1BlockWritesItBackToG2) {
  ManualClock clock;
  SyncHostCopyEngine engine;
  auto bm = make_two_tier(2, 4, engine, clock);
  store_with_data(*bm, Tier::g1, hashes({1, 2}));
  auto fresh = bm->allocate(Tier::g1, 2);  // evicts 2 then 1, both written back
  ASSERT_TRUE(fresh.has_value());
  auto match = bm->lookup(hashes({1, 2}));
  ASSERT_EQ(match.matched(), 2U);
  EXPECT_EQ(match.g1_blocks, 0U);
  EXPECT_EQ(match.g2_blocks, 2U);
  EXPECT_TRUE(holds_pattern(*bm, match.leases[0], h(1)));
  EXPECT_TRUE(holds_pattern(*bm, match.leases[1], h(2)));
  const auto c = bm->counters();
  EXPECT_EQ(c.offloads, 2U);
  EXPECT_EQ(c.tier(Tier::g1).evictions, 2U);
  EXPECT_EQ(c.tier(Tier::g2).registered, 2U);
  EXPECT_EQ(c.transfers_in_flight, 0U);
}

TEST(Tiers, AWriteBackCarriesTheParentAndTheUseCountToG2) {
  constexpr std::uint64_t kMinute = 60'000'000'000;
  ManualClock clock;
  SyncHostCopyEngine engine;
  auto bm = make_two_tier(2, 3, engine, clock, {}, "prefix");
  {  // 1 -> 2 in G1, used 3 times
    auto leases = bm->allocate(Tier::g1, 2);
    ASSERT_TRUE(leases.has_value());
    ASSERT_TRUE(bm->commit((*leases)[0], h(1)).has_value());
    ASSERT_TRUE(bm->commit((*leases)[1], h(2), h(1)).has_value());
  }
  for (int i = 0; i < 2; ++i) {
    auto hit = bm->lookup(hashes({1, 2}));
  }
  {  // G1 needs both blocks: 2 then 1 go to G2 (2 arrives before its parent)
    auto fresh = bm->allocate(Tier::g1, 2);
    ASSERT_TRUE(fresh.has_value());
  }
  clock.advance(kMinute);
  store_with_data(*bm, Tier::g2, hashes({7}));
  { auto hit = bm->lookup(hashes({7})); }  // 7: newer, used twice
  // G2 is full. 7 is the newest, but 1 and 2 bring 3 uses each (a longer
  // bonus), and 1 may not go before its child 2.
  auto room = bm->allocate(Tier::g2, 1);
  ASSERT_TRUE(room.has_value()) << room.error().to_string();
  EXPECT_EQ(bm->peek(hashes({7})), 0U);
  const auto match = bm->peek(hashes({1, 2}));
  EXPECT_EQ(match, 2U) << "the written-back sequence stays whole";
}

TEST(Tiers, LookupPrefersG1ThenG2) {
  ManualClock clock;
  SyncHostCopyEngine engine;
  auto bm = make_two_tier(4, 4, engine, clock);
  store_with_data(*bm, Tier::g2, hashes({1, 2, 3}));
  store_with_data(*bm, Tier::g1, hashes({1}));
  auto match = bm->lookup(hashes({1, 2, 3, 4}));
  EXPECT_EQ(match.g1_blocks, 1U);
  EXPECT_EQ(match.g2_blocks, 2U);
  EXPECT_EQ(match.leases[0].tier(), Tier::g1);
  EXPECT_EQ(match.leases[2].tier(), Tier::g2);
  EXPECT_EQ(bm->counters().misses, 1U);
}

TEST(Tiers, OnboardCopiesG2BlocksIntoG1AndRegistersThem) {
  ManualClock clock;
  SyncHostCopyEngine engine;
  auto bm = make_two_tier(4, 4, engine, clock);
  store_with_data(*bm, Tier::g2, hashes({5, 6}));
  auto match = bm->lookup(hashes({5, 6}));
  ASSERT_EQ(match.g2_blocks, 2U);
  std::optional<Result<BlockLeases>> result;
  ASSERT_TRUE(bm->onboard(match.leases.view(), [&](Result<BlockLeases> r) { result = std::move(r); }).has_value());
  ASSERT_TRUE(result.has_value()) << "an inline engine completes before onboard returns";
  ASSERT_TRUE(result->has_value()) << result->error().to_string();
  ASSERT_EQ((*result)->size(), 2U);
  EXPECT_EQ((**result)[0].tier(), Tier::g1);
  EXPECT_TRUE(holds_pattern(*bm, (**result)[0], h(5)));
  EXPECT_TRUE(holds_pattern(*bm, (**result)[1], h(6)));
  result.reset();
  match.leases.release();
  auto again = bm->lookup(hashes({5, 6}));
  EXPECT_EQ(again.g1_blocks, 2U);
  EXPECT_EQ(bm->counters().onboards, 2U);
  EXPECT_EQ(bm->counters().tier(Tier::g2).registered, 2U) << "the G2 copy stays";
}

TEST(Tiers, OnboardRejectsG1Leases) {
  ManualClock clock;
  SyncHostCopyEngine engine;
  auto bm = make_two_tier(4, 4, engine, clock);
  store_with_data(*bm, Tier::g1, hashes({5}));
  auto match = bm->lookup(hashes({5}));
  auto r = bm->onboard(match.leases.view(), [](Result<BlockLeases>) { FAIL() << "must not be called"; });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
}

TEST(Tiers, AnAsyncWriteBackIsNotMatchableUntilItCompletesOnTheOwningThread) {
  ManualClock clock;
  FakeDeferredCopyEngine engine;
  EventQueue loop;
  auto bm = make_two_tier(1, 2, engine, clock, loop.poster());
  store_with_data(*bm, Tier::g1, hashes({9}));
  auto r = bm->allocate(Tier::g1, 1);
  ASSERT_FALSE(r.has_value()) << "the only G1 block is still being written back";
  EXPECT_EQ(r.error().code, Errc::busy);
  ASSERT_EQ(engine.pending(), 1U);
  EXPECT_EQ(bm->peek(hashes({9})), 0U) << "a block being written is never matchable";
  auto c = bm->counters();
  EXPECT_EQ(c.transfers_in_flight, 1U);
  EXPECT_EQ(c.tier(Tier::g1).in_transfer, 1U);
  EXPECT_EQ(c.tier(Tier::g2).partial, 1U);

  engine.run_on_worker_thread();  // done() runs on the worker and posts to the loop
  EXPECT_EQ(bm->peek(hashes({9})), 0U) << "nothing changes until the loop runs the completion";
  ASSERT_TRUE(loop.run_one());
  auto match = bm->lookup(hashes({9}));
  ASSERT_EQ(match.g2_blocks, 1U);
  EXPECT_TRUE(holds_pattern(*bm, match.leases[0], h(9)));
  EXPECT_EQ(bm->counters().transfers_in_flight, 0U);
  EXPECT_TRUE(bm->allocate(Tier::g1, 1).has_value()) << "the G1 block is free again";
}

TEST(Tiers, AFailedWriteBackRegistersNothing) {
  ManualClock clock;
  FaultyCopyEngine engine;
  auto bm = make_two_tier(1, 2, engine, clock);
  store_with_data(*bm, Tier::g1, hashes({9}));
  auto fresh = bm->allocate(Tier::g1, 1);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(bm->peek(hashes({9})), 0U);
  const auto c = bm->counters();
  EXPECT_EQ(c.offload_failures, 1U);
  EXPECT_EQ(c.offloads, 0U);
  EXPECT_EQ(c.tier(Tier::g2).free, 2U);
}

TEST(Tiers, AFailedOnboardReportsTheErrorAndFreesG1) {
  ManualClock clock;
  FakeDeferredCopyEngine engine;
  EventQueue loop;
  auto bm = make_two_tier(2, 2, engine, clock, loop.poster());
  store_with_data(*bm, Tier::g2, hashes({3}));
  auto match = bm->lookup(hashes({3}));
  std::optional<Result<BlockLeases>> result;
  ASSERT_TRUE(bm->onboard(match.leases.view(), [&](Result<BlockLeases> r) { result = std::move(r); }).has_value());
  EXPECT_FALSE(result.has_value());
  EXPECT_EQ(bm->counters().tier(Tier::g1).partial, 1U);
  match.leases.release();  // the caller may let go early: the transfer pins the source
  EXPECT_EQ(bm->counters().tier(Tier::g2).in_transfer, 1U);
  engine.fail_all();
  ASSERT_TRUE(loop.run_one());
  ASSERT_TRUE(result.has_value());
  ASSERT_FALSE(result->has_value());
  EXPECT_EQ(result->error().code, Errc::io_error);
  const auto c = bm->counters();
  EXPECT_EQ(c.onboard_failures, 1U);
  EXPECT_EQ(c.tier(Tier::g1).free, 2U);
  EXPECT_EQ(c.tier(Tier::g2).inactive, 1U) << "the source is inactive again";
  EXPECT_EQ(bm->lookup(hashes({3})).g1_blocks, 0U);
}

TEST(Tiers, ACompletionAfterTheManagerIsGoneIsDropped) {
  ManualClock clock;
  FakeDeferredCopyEngine engine;
  EventQueue loop;
  {
    auto bm = make_two_tier(1, 2, engine, clock, loop.poster());
    store_with_data(*bm, Tier::g1, hashes({9}));
    ASSERT_FALSE(bm->allocate(Tier::g1, 1).has_value());
    ASSERT_EQ(engine.pending(), 1U);
  }
  engine.fail_all();  // done() posts; the closure must see that the manager is gone
  ASSERT_TRUE(loop.run_one());
}

TEST(Tiers, OffloadIsSkippedWhenG2AlreadyHoldsTheHash) {
  ManualClock clock;
  SyncHostCopyEngine engine;
  auto bm = make_two_tier(1, 2, engine, clock);
  store_with_data(*bm, Tier::g2, hashes({4}));
  store_with_data(*bm, Tier::g1, hashes({4}));
  ASSERT_TRUE(bm->allocate(Tier::g1, 1).has_value());
  const auto c = bm->counters();
  EXPECT_EQ(c.offloads, 0U);
  EXPECT_EQ(c.offloads_skipped, 1U);
  EXPECT_EQ(c.tier(Tier::g2).registered, 1U);
}

}  // namespace
}  // namespace kvb
