// integrity.check_host_blocks: host (G2) blocks are summed as they enter G2
// and checked before every copy to an engine; a block whose bytes changed
// is dropped and the onboard fails (not_found), never copies them.
#include <cstring>

#include <gtest/gtest.h>

#include "block_service.h"
#include "kvb/kernels/host_copy_engine.h"
#include "test_engine_kv.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

class HostIntegrityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto kv = test::register_test_engine_kv(service_, pool_, 16);
    ASSERT_TRUE(kv) << kv.error().to_string();
    kv_ = *kv;
    for (std::uint32_t l = 0; l < 2; ++l)
      std::memset(kv_->regions[l]->data(), static_cast<int>(l + 1), kv_->regions[l]->size());
  }
  void TearDown() override {
    io_.restart();
    io_.run_for(2s);
  }
  Status run_until(std::optional<Status>& done) {
    io_.restart();
    for (int i = 0; i < 10000 && !done; ++i) io_.run_one_for(10ms);
    return done ? *done : fail(Errc::timeout, "no completion");
  }
  Status offload(std::vector<proto::OffloadItem> items) {
    std::optional<Status> done;
    service_.start_offload(*pool_, kv_, 0, std::move(items), std::make_shared<OpControl>(),
                           [&](Status s) { done = std::move(s); });
    return run_until(done);
  }
  Status onboard(std::vector<proto::OnboardItem> items) {
    std::optional<Status> done;
    service_.start_onboard(*pool_, kv_, 0, std::move(items), {}, std::make_shared<OpControl>(),
                           [&](Status s) { done = std::move(s); });
    return run_until(done);
  }

  boost::asio::io_context io_;
  CopyEngines engines_{CopyEngineOptions{.host = {.workers = 2}, .use_cuda = false}};
  BlockService service_{
      io_, engines_, BlockServiceOptions{.host_pool_bytes = 1ULL << 20, .max_layouts = 2, .check_host_blocks = true}};
  LayoutPool* pool_ = nullptr;
  std::shared_ptr<EngineKv> kv_;
};

TEST_F(HostIntegrityTest, AHostBlockWhoseBytesChangedIsDroppedNotCopied) {
  ASSERT_TRUE(offload({{BlockId{0}, 100}, {BlockId{1}, 101}}));
  EXPECT_EQ(service_.host_integrity().summed, 2U);
  ASSERT_TRUE(onboard({{100, BlockId{5}}}));
  EXPECT_EQ(service_.host_integrity().checked, 1U);
  // Damage block 101's bytes in host memory (a stray write, a bad DIMM).
  const std::uint64_t key[] = {101};
  auto found = service_.lookup(*pool_, 0, key);
  ASSERT_EQ(found.matched, 1U);
  const Pool& g2 = pool_->manager->pool(Tier::g2);
  g2.block_data(found.leases[0].block())[17] ^= std::byte{0x20};
  found.leases.release();
  std::memset(kv_->regions[0]->data(), 0x77, 512);
  auto bad = onboard({{101, BlockId{6}}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::not_found);
  EXPECT_NE(bad.error().message.find("checksum"), std::string::npos) << bad.error().message;
  EXPECT_EQ(service_.host_integrity().failures, 1U);
  EXPECT_EQ(service_.lookup(*pool_, 0, key).matched, 0U) << "the damaged block must be a miss from now on";
  EXPECT_EQ(pool_->manager->counters().dropped, 1U);
}

}  // namespace
}  // namespace kvb::daemon
