// BlockService over a real BlockManager, HostCopyEngine and memfd engine
// regions: tenants, dedupe, cancellation (a cancelled offload registers
// nothing and frees its blocks), onboard of a missing hash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "block_service.h"
#include "kvb/kernels/copy_engines.h"
#include "test_engine_kv.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kEngineBlocks = 16;

class BlockServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto kv = test::register_test_engine_kv(service_, pool_, kEngineBlocks);
    ASSERT_TRUE(kv) << kv.error().to_string();
    kv_ = *kv;
    for (std::uint32_t l = 0; l < 2; ++l) {
      std::memset(kv_->regions[l]->data(), static_cast<int>(l + 1), kv_->regions[l]->size());
    }
  }

  // Copies still in flight hold leases: let them end before the manager does.
  void TearDown() override {
    io_.restart();
    io_.run_for(5s);
  }

  /// Runs the loop until `done` has a value (bounded).
  Status run_until(std::optional<Status>& done) {
    io_.restart();  // a previous run may have run out of work
    for (int i = 0; i < 10000 && !done; ++i) io_.run_one_for(10ms);
    return done ? *done : fail(Errc::timeout, "no completion");
  }

  Status offload(std::uint64_t salt, std::vector<proto::OffloadItem> items, std::shared_ptr<OpControl> control) {
    std::optional<Status> done;
    service_.start_offload(*pool_, kv_, salt, std::move(items), std::move(control),
                           [&](Status s) { done = std::move(s); });
    return run_until(done);
  }

  boost::asio::io_context io_;
  CopyEngines engines_{CopyEngineOptions{.host = {.workers = 2}, .use_cuda = false}};
  BlockService service_{io_, engines_, BlockServiceOptions{.host_pool_bytes = 1ULL << 20, .max_layouts = 2}};
  LayoutPool* pool_ = nullptr;
  std::shared_ptr<EngineKv> kv_;
};

TEST_F(BlockServiceTest, OffloadRegistersUnderTheSaltedHashOnly) {
  ASSERT_TRUE(offload(7, {{BlockId{0}, 100}, {BlockId{1}, 101}}, std::make_shared<OpControl>()));
  const std::uint64_t hashes[] = {100, 101};
  EXPECT_EQ(service_.lookup(*pool_, 7, hashes).matched, 2U);
  EXPECT_EQ(service_.lookup(*pool_, 8, hashes).matched, 0U);
  EXPECT_EQ(service_.g2_counters().registered, 2U);
  EXPECT_EQ(service_.moved().offload, 2U * 512U);
  // Offloading the same hashes again copies nothing.
  auto again = offload(7, {{BlockId{0}, 100}, {BlockId{0}, 100}}, std::make_shared<OpControl>());
  ASSERT_TRUE(again) << again.error().to_string();
  EXPECT_EQ(service_.moved().offload, 2U * 512U);
  EXPECT_EQ(service_.g2_counters().leased, 0U);
}

TEST_F(BlockServiceTest, ACancelledOffloadRegistersNothingAndFreesItsBlocks) {
  auto control = std::make_shared<OpControl>();
  std::optional<Status> done;
  service_.start_offload(*pool_, kv_, 1, {{BlockId{2}, 200}, {BlockId{3}, 201}}, control,
                         [&](Status s) { done = std::move(s); });
  control->cancelled = true;  // the request ended (timeout) while its copy runs
  auto status = run_until(done);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, Errc::cancelled);
  const std::uint64_t hashes[] = {200};
  EXPECT_EQ(service_.lookup(*pool_, 1, hashes).matched, 0U);
  const auto g2 = service_.g2_counters();
  EXPECT_EQ(g2.registered, 0U);
  EXPECT_EQ(g2.partial, 0U);
  EXPECT_EQ(g2.complete, 0U);
  EXPECT_EQ(g2.free, g2.capacity);
}

TEST_F(BlockServiceTest, OnboardCopiesBackAndNamesAMissingHash) {
  ASSERT_TRUE(offload(3, {{BlockId{4}, 300}}, std::make_shared<OpControl>()));
  for (auto& region : kv_->regions) std::memset(region->data() + std::size_t{128} * 2 * 9, 0, 256);  // engine block 9
  std::optional<Status> done;
  service_.start_onboard(*pool_, kv_, 3, {{300, BlockId{9}}}, {}, std::make_shared<OpControl>(),
                         [&](Status s) { done = std::move(s); });
  auto onboarded = run_until(done);
  ASSERT_TRUE(onboarded) << onboarded.error().to_string();
  for (std::uint32_t l = 0; l < 2; ++l) {
    EXPECT_EQ(std::memcmp(kv_->regions[l]->data() + std::size_t{256} * 9,
                          kv_->regions[l]->data() + std::size_t{256} * 4, 256),
              0);
  }
  std::optional<Status> missing;
  service_.start_onboard(*pool_, kv_, 3, {{999, BlockId{10}}}, {}, std::make_shared<OpControl>(),
                         [&](Status s) { missing = std::move(s); });
  auto status = run_until(missing);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, Errc::not_found);
  EXPECT_NE(status.error().message.find("0x00000000000003e7"), std::string::npos) << status.error().message;
  EXPECT_EQ(service_.g2_counters().leased, 0U);
}

// A host pool of 3 blocks on `policy`, to see which block an offload evicts.
struct TinyPool {
  explicit TinyPool(std::string policy)
      : service{
            io, engines,
            BlockServiceOptions{
                .host_pool_bytes = std::uint64_t{3} * 512, .max_layouts = 1, .eviction_policy = std::move(policy)}} {
    auto registered = test::register_test_engine_kv(service, pool, kEngineBlocks);
    EXPECT_TRUE(registered) << registered.error().to_string();
    if (registered) kv = *registered;
  }
  ~TinyPool() {
    try {  // lets the copies still posted finish before the service goes
      io.restart();
      io.run_for(5s);
    } catch (...) {
      ADD_FAILURE() << "the io_context threw while draining";
    }
  }
  Status offload(std::vector<proto::OffloadItem> items) {
    std::optional<Status> done;
    service.start_offload(*pool, kv, 1, std::move(items), std::make_shared<OpControl>(),
                          [&](Status s) { done = std::move(s); });
    io.restart();
    for (int i = 0; i < 10000 && !done; ++i) io.run_one_for(10ms);
    return done ? *done : fail(Errc::timeout, "no completion");
  }
  // Whether the pool holds `hash`, without leasing it (a lookup would count a use).
  bool holds(std::uint64_t hash) const {
    const SequenceHash key = salted_key(hash, 1);
    return pool->manager->peek(std::span(&key, 1)) == 1;
  }

  boost::asio::io_context io;
  CopyEngines engines{CopyEngineOptions{.host = {.workers = 1}, .use_cuda = false}};
  BlockService service;
  LayoutPool* pool = nullptr;
  std::shared_ptr<EngineKv> kv;
};

TEST(BlockServiceEviction, TheEvictionPolicySettingReachesThePoolsAndPrefixIsTheDefault) {
  for (const char* policy : {"prefix", "lru", "s3fifo"}) {
    TinyPool tiny(policy);
    EXPECT_EQ(tiny.pool->manager->policy(Tier::g2).name(), policy);
  }
  boost::asio::io_context io;
  CopyEngines engines{CopyEngineOptions{.host = {.workers = 1}, .use_cuda = false}};
  BlockService defaults{io, engines, BlockServiceOptions{.host_pool_bytes = 1ULL << 20, .max_layouts = 1}};
  LayoutPool* pool = nullptr;
  ASSERT_TRUE(test::register_test_engine_kv(defaults, pool, 4));
  EXPECT_EQ(pool->manager->policy(Tier::g2).name(), "prefix");
}

TEST(BlockServiceEviction, AnOffloadsItemsAreAChainThatPrefixKeepsWhole) {
  // 10 is stored alone, then extended by 11 in an offload of [10, 11], then an
  // unrelated 20 arrives. The pool is full: storing 30 evicts one block.
  // prefix knows 11 extends 10 (the offload's chain), so the dead end 11 goes
  // and 10 stays; lru evicts 10, the oldest, and strands 11.
  for (const auto& [policy, keeps_10] : {std::pair{"prefix", true}, std::pair{"lru", false}}) {
    TinyPool tiny(policy);
    ASSERT_TRUE(tiny.offload({{BlockId{0}, 10}}));
    ASSERT_TRUE(tiny.offload({{BlockId{0}, 10}, {BlockId{1}, 11}}));
    ASSERT_TRUE(tiny.offload({{BlockId{2}, 20}}));
    ASSERT_TRUE(tiny.offload({{BlockId{3}, 30}}));
    EXPECT_EQ(tiny.holds(10), keeps_10) << policy;
    EXPECT_EQ(tiny.holds(11), !keeps_10) << policy;
    EXPECT_TRUE(tiny.holds(20) && tiny.holds(30)) << policy;
  }
}

TEST_F(BlockServiceTest, RegisterKvChecksFdsAndSizes) {
  proto::RegisterKvRequest reg;
  reg.layout_kind = LayoutKind::layer_separate_block_outer;
  reg.num_blocks = 4;
  reg.region_bytes = 1024;
  reg.fd_count = 1;  // layer separate needs one fd per layer: 2
  std::vector<UniqueFd> one;
  one.emplace_back(::memfd_create("kv", MFD_CLOEXEC));
  auto wrong = service_.register_kv(*pool_, reg, std::move(one));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, Errc::invalid_argument);
  reg.fd_count = 2;
  std::vector<UniqueFd> small;
  for (int i = 0; i < 2; ++i) small.push_back(test::sealed_memfd(0));  // 0 bytes long
  auto tiny = service_.register_kv(*pool_, reg, std::move(small));
  ASSERT_FALSE(tiny);
  EXPECT_NE(tiny.error().message.find("fewer than region_bytes"), std::string::npos) << tiny.error().message;
  // Only memory that cannot shrink under the daemon's mapping is accepted.
  std::vector<UniqueFd> unsealed;
  for (int i = 0; i < 2; ++i) {
    unsealed.emplace_back(::memfd_create("kv", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(unsealed.back().get(), 1024), 0);
  }
  auto refused = service_.register_kv(*pool_, reg, std::move(unsealed));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::invalid_argument);
  EXPECT_NE(refused.error().message.find("region 0"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("F_SEAL_SHRINK"), std::string::npos) << refused.error().message;
  EXPECT_EQ(service_.attach_layout(proto::WireLayout{1, 1, 1, 1, 0, 256}).has_value(), true);
  auto third = service_.attach_layout(proto::WireLayout{3, 1, 1, 1, 0, 256});  // max_layouts 2
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::out_of_capacity);
}

// Hostile case 5: a pool no session uses gives its slot to a new shape, but
// only once nothing holds its blocks; its blocks go with it.
TEST_F(BlockServiceTest, AnIdlePoolIsReclaimedForANewShapeOnceNothingHoldsItsBlocks) {
  ASSERT_TRUE(offload(5, {{BlockId{0}, 100}}, std::make_shared<OpControl>()));
  constexpr proto::WireLayout second{2, 2, 4, 16, 0, 256};
  constexpr proto::WireLayout third{2, 2, 4, 64, 0, 256};
  auto other = service_.attach_layout(second);
  ASSERT_TRUE(other) << other.error().to_string();
  auto full = service_.attach_layout(third);  // max_layouts 2, both attached
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::out_of_capacity);
  EXPECT_NE(full.error().message.find("2 in use by sessions"), std::string::npos) << full.error().message;

  // The first pool's session ends while a lookup still leases its block.
  const std::uint64_t hashes[] = {100};
  LookupResult held = service_.lookup(*pool_, 5, hashes);
  ASSERT_EQ(held.matched, 1U);
  service_.detach_layout(*pool_);
  EXPECT_FALSE(service_.reclaimable(*pool_));
  auto busy = service_.attach_layout(third);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, Errc::out_of_capacity);
  EXPECT_NE(busy.error().message.find("1 in use by sessions, 1 idle but still busy"), std::string::npos)
      << busy.error().message;

  held.leases.release();
  EXPECT_TRUE(service_.reclaimable(*pool_));
  const TierCounters g2_before = service_.g2_counters();
  ASSERT_EQ(g2_before.hits, 1U);
  auto reclaimed = service_.attach_layout(third);
  ASSERT_TRUE(reclaimed) << reclaimed.error().to_string();
  pool_ = nullptr;  // gone
  EXPECT_EQ(service_.layouts_reclaimed(), 1U);
  EXPECT_EQ(service_.pools().size(), 2U);
  const TierCounters g2 = service_.g2_counters();
  EXPECT_EQ(g2.registered, 0U);
  EXPECT_EQ(g2.hits, g2_before.hits) << "event counters stay monotonic";
  EXPECT_EQ(g2.evictions, g2_before.evictions) << "dropped blocks are no evictions";

  // The first shape comes back once a slot is idle: an empty pool.
  auto back_full = service_.attach_layout(test::kTestLayout);
  ASSERT_FALSE(back_full);
  service_.detach_layout(**other);
  auto back = service_.attach_layout(test::kTestLayout);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(service_.lookup(**back, 5, hashes).matched, 0U);
  EXPECT_EQ(service_.layouts_reclaimed(), 2U);
}

}  // namespace
}  // namespace kvb::daemon

namespace kvb::daemon {
namespace {

// check_fits (hostile case 9): an offload that waits for a copy slot is only
// held to the pool's size (leases may end before it runs); one that starts
// now must fit the free and evictable blocks.
TEST(BlockServiceAdmission, AnOffloadIsCheckedAgainstThePoolAndWhenItStartsNowAgainstItsRoom) {
  TinyPool tiny("lru");
  ASSERT_TRUE(tiny.offload({{BlockId{0}, 10}, {BlockId{1}, 11}, {BlockId{2}, 12}}));
  const std::vector<proto::OffloadItem> two_new{{BlockId{3}, 20}, {BlockId{4}, 21}};
  const std::vector<proto::OffloadItem> four_new{
      {BlockId{3}, 20}, {BlockId{4}, 21}, {BlockId{5}, 22}, {BlockId{6}, 23}};
  const std::vector<proto::OffloadItem> held{{BlockId{0}, 10}, {BlockId{1}, 11}, {BlockId{2}, 12}, {BlockId{0}, 10}};
  EXPECT_TRUE(tiny.service.check_fits(*tiny.pool, 1, two_new, true));  // 3 evictable blocks
  const std::uint64_t hashes[] = {10, 11, 12};
  auto leases = tiny.service.lookup(*tiny.pool, 1, hashes);  // every block leased: none evictable
  ASSERT_EQ(leases.matched, 3U);
  EXPECT_TRUE(tiny.service.check_fits(*tiny.pool, 1, two_new, false));  // may fit once the leases end
  const auto now = tiny.service.check_fits(*tiny.pool, 1, two_new, true);
  ASSERT_FALSE(now);
  EXPECT_EQ(now.error().code, Errc::out_of_capacity);
  const auto never = tiny.service.check_fits(*tiny.pool, 1, four_new, false);
  ASSERT_FALSE(never);
  EXPECT_NE(never.error().message.find("can never fit"), std::string::npos) << never.error().message;
  EXPECT_TRUE(tiny.service.check_fits(*tiny.pool, 1, held, true));  // held hashes are not new blocks
}

}  // namespace
}  // namespace kvb::daemon
