// BlockManager with a disk tier (G3) over a real SlotStore: write-back of
// G2 victims, the admission filter, lookup G2 -> G3, promote byte-exact,
// corrupt blocks dropped, restart recovery, write failures.
#include <cstring>
#include <memory>

#include "kvb/blockmgr/block_manager.h"
#include "kvb/blockmgr/host_region.h"
#include "kvb/storage/slot_store.h"
#include "storage_test_util.h"

namespace kvb {
namespace {

using storage::SlotStore;
using storage::SlotStoreOptions;
using test::EventQueue;
using test::TempDir;

SequenceHash h(std::uint64_t v) { return SequenceHash{v}; }

class DiskTierTest : public testing::Test {
 protected:
  void open_store(std::optional<storage::FaultPlan> faults = std::nullopt, std::uint32_t slots = 16) {
    SlotStoreOptions o;
    o.directory = dir_.path();
    o.spec = test::page_spec();
    o.bytes = storage::FileHeader::plan(o.spec, slots).file_bytes;
    o.faults = faults;
    auto s = SlotStore::open(o);
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
  }
  void make_manager(std::uint32_t g2_blocks, std::uint32_t admit = 1) {
    auto layout = Layout::make(test::page_spec(), LayoutKind::fully_contiguous, g2_blocks);
    ASSERT_TRUE(layout);
    auto region = HostRegion::create(layout->region_bytes());
    ASSERT_TRUE(region);
    auto pool = Pool::make(PoolId{2}, *layout, std::move(*region));
    ASSERT_TRUE(pool);
    BlockManagerConfig c;
    c.g2.pool = std::move(*pool);
    c.g2.policy = "lru";  // these tests name G2's victims in release order
    c.g3.store = store_.get();
    c.g3.admit_min_frequency = admit;
    c.post = events_.poster();
    auto bm = BlockManager::make(std::move(c));
    ASSERT_TRUE(bm) << bm.error().to_string();
    bm_ = std::move(*bm);
  }
  // Stores `hash` in G2 holding pattern(hash) and lets it go (inactive).
  void store(std::uint64_t hash) {
    auto lease = bm_->allocate(Tier::g2, 1);
    ASSERT_TRUE(lease) << lease.error().to_string();
    const auto bytes = test::pattern(hash, bm_->pool(Tier::g2).layout().block_bytes());
    std::memcpy(bm_->pool(Tier::g2).block_data((*lease)[0].block()), bytes.data(), bytes.size());
    ASSERT_TRUE(bm_->commit((*lease)[0], h(hash)));
  }
  void drain() {
    ASSERT_TRUE(events_.run_until([&] { return bm_->transfers_in_flight() == 0; })) << "transfers did not end";
  }
  // Promotes the G3 leases and checks each result against pattern(hash).
  std::vector<Result<BlockLease>> promote(std::span<const BlockLease> leases) {
    std::optional<std::vector<Result<BlockLease>>> out;
    auto started = bm_->promote(leases, [&](std::vector<Result<BlockLease>> r) { out = std::move(r); });
    EXPECT_TRUE(started) << started.error().to_string();
    if (!started) return {};
    EXPECT_FALSE(out.has_value()) << "done ran inside promote()";
    EXPECT_TRUE(events_.run_until([&] { return out.has_value(); }));
    return out ? std::move(*out) : std::vector<Result<BlockLease>>{};
  }
  bool holds(const BlockLease& lease, std::uint64_t hash) {
    const auto want = test::pattern(hash, bm_->pool(Tier::g2).layout().block_bytes());
    return lease.tier() == Tier::g2 &&
           std::memcmp(bm_->pool(Tier::g2).block_data(lease.block()), want.data(), want.size()) == 0;
  }
  void TearDown() override {
    if (bm_) drain();
    bm_.reset();
    store_.reset();
  }

  TempDir dir_;
  EventQueue events_;
  std::unique_ptr<SlotStore> store_;
  std::unique_ptr<BlockManager> bm_;
};

TEST_F(DiskTierTest, G2VictimsAreWrittenBackAndPromotedByteExact) {
  open_store();
  make_manager(4);
  for (std::uint64_t i = 1; i <= 10; ++i) store(i);
  drain();
  auto c = bm_->counters();
  EXPECT_EQ(c.g3_writes, 6U);
  EXPECT_EQ(c.tier(Tier::g3).registered, 6U);
  EXPECT_EQ(c.tier(Tier::g3).capacity, 16U);
  EXPECT_EQ(c.tier(Tier::g2).evictions, 6U);
  // Blocks 1..6 went to disk, 7..10 are in G2: a lookup walks G2 then G3.
  std::vector<SequenceHash> all;
  for (std::uint64_t i = 1; i <= 10; ++i) all.push_back(h(i));
  auto match = bm_->lookup(all);
  EXPECT_EQ(match.matched(), 10U);
  EXPECT_EQ(match.g3_blocks, 6U);
  EXPECT_EQ(match.g2_blocks, 4U);
  std::vector<BlockLease> g3;
  for (auto& lease : match.leases)
    if (lease.tier() == Tier::g3) g3.push_back(std::move(lease));
  match.leases.release();
  ASSERT_EQ(g3.size(), 6U);
  std::vector<SequenceHash> promoted;
  for (const auto& lease : g3) promoted.push_back(*bm_->hash_of(lease));
  // G2 holds 4 blocks: promote 4 of them at a time.
  auto results = promote(std::span(g3).first(4));
  ASSERT_EQ(results.size(), 4U);
  for (std::size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(results[i]) << results[i].error().to_string();
    EXPECT_TRUE(holds(*results[i], promoted[i].value())) << "block " << promoted[i].value();
  }
  EXPECT_EQ(bm_->counters().promotes, 4U);
  EXPECT_EQ(store_->counters().reads, 4U);
  results.clear();
  g3.clear();
}

TEST_F(DiskTierTest, AdmissionFilterWritesOnlyBlocksUsedTwice) {
  open_store();
  make_manager(2, /*admit=*/2);
  store(1);
  store(2);
  {
    auto hit = bm_->lookup(std::vector{h(1)});  // block 1 is used a second time
    ASSERT_EQ(hit.matched(), 1U);
  }
  store(3);  // evicts 2 (used once): dropped
  store(4);  // evicts 1 (used twice): written back
  drain();
  const auto c = bm_->counters();
  EXPECT_EQ(c.g3_admission_rejects, 1U);
  EXPECT_EQ(c.g3_writes, 1U);
  EXPECT_EQ(bm_->peek(std::vector{h(1)}), 1U);
  EXPECT_EQ(bm_->peek(std::vector{h(2)}), 0U);
}

TEST_F(DiskTierTest, CorruptBlockIsAMissAndItsNeighboursArePromoted) {
  open_store();
  make_manager(3);
  for (std::uint64_t i = 1; i <= 6; ++i) store(i);  // 1, 2, 3 go to disk
  drain();
  ASSERT_EQ(bm_->counters().g3_writes, 3U);
  auto one = bm_->find(Tier::g3, h(2));
  ASSERT_TRUE(one);
  test::flip_byte(store_->path(), store_->geometry().payload_offset(one.block().value()) + 100);
  one.release();
  auto match = bm_->lookup(std::vector{h(1), h(2), h(3)});
  ASSERT_EQ(match.g3_blocks, 3U);
  auto results = promote(match.leases.view());
  ASSERT_EQ(results.size(), 3U);
  ASSERT_TRUE(results[0]);
  EXPECT_FALSE(results[1]);
  ASSERT_TRUE(results[2]);
  EXPECT_TRUE(holds(*results[0], 1));
  EXPECT_TRUE(holds(*results[2], 3));
  results.clear();
  match.leases.release();
  EXPECT_EQ(bm_->counters().promote_failures, 1U);
  EXPECT_EQ(store_->counters().checksum_failures, 1U);
  EXPECT_EQ(bm_->peek(std::vector{h(2)}), 0U) << "a block that failed its check must be a miss";
  // The promotions evicted G2's blocks, whose write-backs end when they end:
  // wait for them, then G3 holds every block written but the corrupt one.
  drain();
  const auto c = bm_->counters();
  EXPECT_EQ(c.tier(Tier::g3).registered, c.g3_writes - 1);
  EXPECT_EQ(bm_->peek(std::vector{h(2)}), 0U);
}

TEST_F(DiskTierTest, RestartFindsTheDurableBlocksInG3) {
  open_store();
  make_manager(2);
  for (std::uint64_t i = 1; i <= 7; ++i) store(i);  // 1..5 go to disk
  drain();
  bm_.reset();
  store_.reset();
  open_store();
  make_manager(2);
  EXPECT_EQ(store_->recovery().intact, 5U);
  const auto c = bm_->counters();
  EXPECT_EQ(c.tier(Tier::g3).registered, 5U);
  EXPECT_EQ(c.tier(Tier::g3).inactive, 5U);
  auto match = bm_->lookup(std::vector{h(4), h(5)});
  ASSERT_EQ(match.g3_blocks, 2U);
  auto results = promote(match.leases.view());
  ASSERT_EQ(results.size(), 2U);
  EXPECT_TRUE(results[0] && holds(*results[0], 4));
  EXPECT_TRUE(results[1] && holds(*results[1], 5));
  results.clear();
  match.leases.release();
  // G3's policy was fed oldest first: the next G3 victim is block 1.
  for (std::uint64_t i = 20; i <= 40; ++i) store(i);
  drain();
  EXPECT_EQ(bm_->peek(std::vector{h(1)}), 0U);
}

TEST_F(DiskTierTest, DiskFullKeepsG2Serving) {
  storage::FaultPlan plan;
  plan.write_errno = ENOSPC;
  open_store(plan);
  make_manager(2);
  for (std::uint64_t i = 1; i <= 5; ++i) store(i);
  drain();
  const auto c = bm_->counters();
  EXPECT_EQ(c.g3_write_failures, 3U);
  EXPECT_EQ(c.g3_writes, 0U);
  EXPECT_EQ(c.tier(Tier::g3).free, 16U) << "failed writes give their slots back";
  EXPECT_EQ(bm_->peek(std::vector{h(4), h(5)}), 2U);  // G2 still serves
  EXPECT_EQ(bm_->peek(std::vector{h(1)}), 0U);
}

TEST_F(DiskTierTest, ConfigErrorsAreNamed) {
  open_store();
  BlockManagerConfig c;
  c.g3.store = store_.get();
  c.post = events_.poster();
  auto layout = Layout::make(test::odd_spec(), LayoutKind::fully_contiguous, 2);
  auto region = HostRegion::create(layout->region_bytes());
  c.g2.pool = std::move(*Pool::make(PoolId{2}, *layout, std::move(*region)));
  auto bm = BlockManager::make(std::move(c));
  ASSERT_FALSE(bm);
  EXPECT_NE(bm.error().message.find("G3 store blocks"), std::string::npos) << bm.error().message;
}

}  // namespace
}  // namespace kvb
