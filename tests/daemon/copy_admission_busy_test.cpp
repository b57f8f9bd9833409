// Copy admission under load: with copy_slots 1 and copy_queue 1, a third
// offload is refused (busy, naming both limits) and leaves nothing behind;
// once the running and queued copies complete, a new one is admitted again.
//
// The parts are the real CopyAdmission, BlockService, memfd engine regions
// and HostCopyEngine, wired the way Session::accept_async and on_offload wire
// them (start -> start_offload, done -> admission.release()). The only fake is
// FakePausedCopyEngine: it holds submitted plans until the test releases
// them, so copies stay in flight deterministically (a real engine cannot be
// made to wait on demand).
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "block_service.h"
#include "copy_admission.h"
#include "kvb/kernels/copy_engines.h"
#include "test_engine_kv.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kEngineBlocks = 8;

/// Holds every submitted plan until release_all(), then hands it to the real
/// engine. Safe from any thread.
class FakePausedCopyEngine final : public CopyEngine {
 public:
  explicit FakePausedCopyEngine(CopyEngine& real) : real_(real) {}

  [[nodiscard]] std::string_view name() const noexcept override { return real_.name(); }
  [[nodiscard]] bool supports(MemoryKind src, MemoryKind dst) const noexcept override {
    return real_.supports(src, dst);
  }
  void submit(TransferPlan plan, CopyDone done) override {
    const std::lock_guard lock(mutex_);
    held_.emplace_back(std::move(plan), std::move(done));
  }

  /// Plans submitted and not yet released.
  [[nodiscard]] std::size_t held() const {
    const std::lock_guard lock(mutex_);
    return held_.size();
  }
  /// Hands every held plan to the real engine.
  void release_all() {
    std::vector<std::pair<TransferPlan, CopyDone>> held;
    {
      const std::lock_guard lock(mutex_);
      held.swap(held_);
    }
    for (auto& [plan, done] : held) real_.submit(std::move(plan), std::move(done));
  }

 private:
  CopyEngine& real_;
  mutable std::mutex mutex_;
  std::vector<std::pair<TransferPlan, CopyDone>> held_;
};

class CopyAdmissionBusyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto kv = test::register_test_engine_kv(service_, pool_, kEngineBlocks);
    ASSERT_TRUE(kv) << kv.error().to_string();
    kv_ = *kv;
  }

  // A failed assertion may leave copies held: let them end before the manager does.
  void TearDown() override {
    paused_.release_all();
    io_.restart();
    io_.run_for(5s);
  }

  /// Admits an offload of engine block `block` under `hash` the way Session
  /// does; `done` gets its result on the loop.
  Status admit_offload(std::uint32_t block, std::uint64_t hash, std::optional<Status>& done, bool& started) {
    return admission_.admit([this, block, hash, &done, &started] {
      started = true;
      service_.start_offload(*pool_, kv_, 0, {{BlockId{block}, hash}}, std::make_shared<OpControl>(),
                             [this, &done](Status s) {
                               admission_.release();
                               done = std::move(s);
                             });
    });
  }

  /// Runs the loop until `done` has a value (bounded in count and time).
  Status run_until(std::optional<Status>& done) {
    io_.restart();
    for (int i = 0; i < 10000 && !done; ++i) io_.run_one_for(10ms);
    return done ? *done : fail(Errc::timeout, "no completion");
  }

  // Set field by field: GCC 12 warns (-Wmaybe-uninitialized, a false
  // positive) on a designated initializer of BlockServiceOptions.
  BlockServiceOptions options() {
    BlockServiceOptions o;
    o.host_pool_bytes = 1ULL << 20;
    o.max_layouts = 1;
    o.select = [this](MemoryKind, MemoryKind, int) -> Result<CopyEngine*> { return &paused_; };
    return o;
  }

  boost::asio::io_context io_;
  CopyEngines engines_{CopyEngineOptions{.host = {.workers = 1}, .use_cuda = false}};
  FakePausedCopyEngine paused_{engines_.host()};
  BlockService service_{io_, engines_, options()};
  CopyAdmission admission_{"host", /*slots=*/1, /*queue_limit=*/1};
  LayoutPool* pool_ = nullptr;
  std::shared_ptr<EngineKv> kv_;
};

TEST_F(CopyAdmissionBusyTest, AFullQueueRefusesBusyLeavesNothingAndAdmitsAgainOnceDrained) {
  std::optional<Status> first_done, second_done, refused_done, later_done;
  bool first_started = false, second_started = false, refused_started = false, later_started = false;

  // Fill the one slot (its copy is held by the engine) and the one queue place.
  ASSERT_TRUE(admit_offload(0, 100, first_done, first_started));
  ASSERT_TRUE(admit_offload(1, 101, second_done, second_started));
  EXPECT_TRUE(first_started);
  EXPECT_FALSE(second_started);
  EXPECT_EQ(admission_.running(), 1U);
  EXPECT_EQ(admission_.queued(), 1U);
  EXPECT_EQ(paused_.held(), 1U);
  EXPECT_EQ(service_.copies_in_flight(), 1U);
  const TierCounters before = service_.g2_counters();

  // The next request is refused at once, naming the engine and both limits.
  auto refused = admit_offload(2, 102, refused_done, refused_started);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  const std::string& message = refused.error().message;
  EXPECT_NE(message.find("'host'"), std::string::npos) << message;
  EXPECT_NE(message.find("copy_slots 1"), std::string::npos) << message;
  EXPECT_NE(message.find("copy_queue 1"), std::string::npos) << message;

  // Nothing of the refused request ran, was queued, allocated or registered.
  EXPECT_FALSE(refused_started);
  EXPECT_EQ(admission_.running(), 1U);
  EXPECT_EQ(admission_.queued(), 1U);
  EXPECT_EQ(paused_.held(), 1U);
  EXPECT_EQ(service_.copies_in_flight(), 1U);
  const TierCounters after = service_.g2_counters();
  EXPECT_EQ(after.free, before.free);
  EXPECT_EQ(after.partial, before.partial);
  EXPECT_EQ(after.registered, before.registered);
  EXPECT_EQ(after.leased, before.leased);
  EXPECT_EQ(after.in_transfer, before.in_transfer);

  // The first copy completes: its slot goes to the queued one, in order.
  paused_.release_all();
  auto first = run_until(first_done);
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_TRUE(second_started);
  EXPECT_EQ(admission_.running(), 1U);
  EXPECT_EQ(admission_.queued(), 0U);
  EXPECT_EQ(paused_.held(), 1U);

  paused_.release_all();
  auto second = run_until(second_done);
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_EQ(admission_.running(), 0U);
  EXPECT_EQ(admission_.queued(), 0U);
  EXPECT_FALSE(refused_done.has_value());  // a refused request never completes

  // Drained: the request that was refused is admitted now and completes.
  ASSERT_TRUE(admit_offload(2, 102, later_done, later_started));
  EXPECT_TRUE(later_started);
  paused_.release_all();
  auto later = run_until(later_done);
  ASSERT_TRUE(later) << later.error().to_string();

  const std::uint64_t hashes[] = {100, 101, 102};
  EXPECT_EQ(service_.lookup(*pool_, 0, hashes).matched, 3U);
  const TierCounters end = service_.g2_counters();
  EXPECT_EQ(end.registered, 3U);
  EXPECT_EQ(end.partial, 0U);
  EXPECT_EQ(end.leased, 0U);
  EXPECT_EQ(end.in_transfer, 0U);
  EXPECT_EQ(service_.copies_in_flight(), 0U);
  EXPECT_EQ(admission_.running(), 0U);
}

}  // namespace
}  // namespace kvb::daemon
