// The daemon's GPU paths that run on every machine: layer groups announced in
// order, the checks of a device register_kv, its refusal without a GPU, the
// G2 pinning fallback, and a layer-wise onboard through BlockService on the
// host engine (with a fake engine that finishes plans in reverse order).
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "block_service.h"
#include "device_kv.h"
#include "kvb/kernels/copy_engines.h"
#include "layer_groups.h"
#include "test_engine_kv.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

// ---- LayerGroups -------------------------------------------------------------

std::vector<std::pair<std::uint32_t, std::uint32_t>> announced_ranges(LayerGroups& groups,
                                                                      const std::vector<std::size_t>& order,
                                                                      const std::vector<bool>& ok = {}) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const Status st = ok.empty() || ok[i] ? kvb::ok() : fail(Errc::io_error, "group {} failed", order[i]);
    groups.finish(order[i], st, [&](LayerRange r) { out.emplace_back(r.first, r.count); });
  }
  return out;
}

TEST(LayerGroups, SplitsLayersAndTheLastGroupMayBeSmaller) {
  LayerGroups g(10, 4);
  ASSERT_EQ(g.size(), 3U);
  EXPECT_EQ(g.range(0).first, 0U);
  EXPECT_EQ(g.range(2).first, 8U);
  EXPECT_EQ(g.range(2).count, 2U);
  LayerGroups whole(32, 0);
  ASSERT_EQ(whole.size(), 1U);
  EXPECT_EQ(whole.range(0).count, 32U);
  LayerGroups one_each(3, 1);
  EXPECT_EQ(one_each.size(), 3U);
  LayerGroups wide(3, 100);
  ASSERT_EQ(wide.size(), 1U);
  EXPECT_EQ(wide.range(0).count, 3U);
}

TEST(LayerGroups, AnnouncesInLayerOrderWhateverOrderPlansFinishIn) {
  LayerGroups g(8, 2);  // groups 0..3
  const auto got = announced_ranges(g, {2, 0, 3, 1});
  const std::vector<std::pair<std::uint32_t, std::uint32_t>> want{{0, 2}, {2, 2}, {4, 2}, {6, 2}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(g.announced(), 4U);
  EXPECT_FALSE(g.error());
}

TEST(LayerGroups, NothingIsAnnouncedAfterAFailureAndTheEndIsStillReported) {
  LayerGroups g(8, 2);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> got;
  const auto note = [&](LayerRange r) { got.emplace_back(r.first, r.count); };
  EXPECT_FALSE(g.finish(0, kvb::ok(), note));
  EXPECT_FALSE(g.finish(2, kvb::ok(), note));
  EXPECT_FALSE(g.finish(1, fail(Errc::io_error, "boom"), note));
  EXPECT_TRUE(g.finish(3, kvb::ok(), note));  // every plan ended
  EXPECT_EQ(got, (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{0, 2}}));
  ASSERT_TRUE(g.error());
  EXPECT_EQ(g.error()->message, "boom");
}

// ---- device register_kv -----------------------------------------------------

Layout test_layout(LayoutKind kind, std::uint32_t blocks) {
  LayoutSpec spec{
      .num_layers = 2, .outer_dim = 2, .page_size = 4, .inner_dim = 32, .dtype = DType::u8, .alignment = 256};
  return *Layout::make(spec, kind, blocks);
}

// A well-formed CUDA IPC registration of a layer-separate cache: two layer
// regions in one 1 MiB allocation.
proto::RegisterKvRequest ipc_request(const Layout& layout) {
  proto::RegisterKvRequest r;
  r.memory = proto::MemoryHandle::cuda_ipc;
  r.layout_kind = layout.kind();
  r.num_blocks = layout.num_blocks();
  r.region_bytes = layout.region_bytes();
  r.cuda_ipc_handles = {std::vector<std::byte>(64, std::byte{1})};
  r.device_uuid = std::vector<std::byte>(16, std::byte{2});
  r.allocation_bytes = {1 << 20};
  r.regions = {{0, 0}, {0, 1 << 19}};
  return r;
}

std::string invalid(const Layout& layout, const proto::RegisterKvRequest& r, std::size_t fds = 0) {
  auto st = validate_device_registration(layout, r, fds);
  if (st) return "ok";
  EXPECT_EQ(st.error().code, Errc::invalid_argument) << st.error().message;
  return st.error().message;
}

TEST(DeviceRegistration, AWellFormedRequestPassesBothHandleKinds) {
  const Layout layout = test_layout(LayoutKind::layer_separate_block_outer, 16);
  auto r = ipc_request(layout);
  EXPECT_EQ(invalid(layout, r), "ok");
  r.memory = proto::MemoryHandle::cuda_vmm;
  r.cuda_ipc_handles.clear();
  r.fd_count = 1;
  EXPECT_EQ(invalid(layout, r, 1), "ok");
  // Fully contiguous: one region.
  const Layout flat = test_layout(LayoutKind::fully_contiguous, 16);
  auto f = ipc_request(flat);
  f.regions = {{0, 4096}};
  EXPECT_EQ(invalid(flat, f), "ok");
}

TEST(DeviceRegistration, HandlesAndFdsAreChecked) {
  const Layout layout = test_layout(LayoutKind::layer_separate_block_outer, 16);
  auto r = ipc_request(layout);
  r.cuda_ipc_handles[0].resize(63);
  EXPECT_NE(invalid(layout, r).find("cuda_ipc_handles[0] has 63 bytes"), std::string::npos);
  r = ipc_request(layout);
  r.cuda_ipc_handles.clear();
  EXPECT_NE(invalid(layout, r).find("needs cuda_ipc_handles"), std::string::npos);
  r = ipc_request(layout);
  r.fd_count = 1;
  EXPECT_NE(invalid(layout, r, 1).find("carries no fds"), std::string::npos);
  r = ipc_request(layout);
  r.memory = proto::MemoryHandle::cuda_vmm;
  EXPECT_NE(invalid(layout, r).find("takes fds, not cuda_ipc_handles"), std::string::npos);
  r.cuda_ipc_handles.clear();
  r.fd_count = 1;
  EXPECT_NE(invalid(layout, r, 0).find("one fd per allocation (fd_count 1, 0 arrived)"), std::string::npos);
  r = ipc_request(layout);
  r.device_uuid.resize(15);
  EXPECT_NE(invalid(layout, r).find("device_uuid has 15 bytes"), std::string::npos);
  r = ipc_request(layout);
  r.memory = proto::MemoryHandle::memfd;
  EXPECT_NE(invalid(layout, r).find("not device memory"), std::string::npos);
}

TEST(DeviceRegistration, SizesAndOffsetsMustLieInsideTheAllocations) {
  const Layout layout = test_layout(LayoutKind::layer_separate_block_outer, 16);
  auto r = ipc_request(layout);
  r.allocation_bytes = {};
  EXPECT_NE(invalid(layout, r).find("allocation_bytes has 0 entries for 1 allocations"), std::string::npos);
  r = ipc_request(layout);
  r.allocation_bytes = {0};
  EXPECT_NE(invalid(layout, r).find("allocation_bytes[0] is 0"), std::string::npos);
  r = ipc_request(layout);
  r.regions.pop_back();
  EXPECT_NE(invalid(layout, r).find("needs 2 regions; regions has 1"), std::string::npos);
  r = ipc_request(layout);
  r.region_bytes = layout.region_bytes() - 1;
  EXPECT_NE(invalid(layout, r).find("is under the"), std::string::npos);
  r = ipc_request(layout);
  r.regions[1].offset = (1 << 20) - layout.region_bytes() + 1;  // one byte past the allocation
  EXPECT_NE(invalid(layout, r).find("regions[1]"), std::string::npos);
  EXPECT_NE(invalid(layout, r).find("ends past allocation 0"), std::string::npos);
  r.regions[1].offset = (1 << 20) - layout.region_bytes();  // exactly at the end: fine
  EXPECT_EQ(invalid(layout, r), "ok");
  r.regions[1].offset = ~0ULL;  // no wrap-around
  EXPECT_NE(invalid(layout, r).find("ends past allocation"), std::string::npos);
  r = ipc_request(layout);
  r.regions[0].allocation = 1;
  EXPECT_NE(invalid(layout, r).find("regions[0].allocation 1 is out of range"), std::string::npos);
  r = ipc_request(layout);
  r.cuda_ipc_handles.push_back(std::vector<std::byte>(64));
  r.allocation_bytes.push_back(1 << 20);
  EXPECT_NE(invalid(layout, r).find("allocation 1 is used by no region"), std::string::npos);
}

// ---- BlockService: device memory without a GPU, pinning fallback --------------

// Routes the default logger into a ring buffer for the test's lifetime.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64)), old_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("captured", sink_);
    logger->set_level(spdlog::level::trace);
    // Kept for the process's life: the service's background threads (engine
    // prefault) outlive this object and may be logging through the default
    // logger's raw pointer while it is swapped back (ASan: heap-use-after-free).
    static auto* kept = new std::vector<std::shared_ptr<spdlog::logger>>();  // NOLINT(cppcoreguidelines-owning-memory)
    kept->push_back(logger);
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(old_); }
  [[nodiscard]] std::vector<std::string> warnings() const {
    std::vector<std::string> out;
    for (auto& line : sink_->last_formatted())
      if (line.find("[warning]") != std::string::npos) out.push_back(line);
    return out;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> old_;
};

/// A pinning that always fails: stands in for cudaHostRegister refusing (the
/// real call cannot be made to fail on demand, nor run without a GPU).
Result<std::unique_ptr<MemoryRegion>> fake_failing_pin(std::byte*, std::uint64_t) {
  return fail(Errc::out_of_capacity, "cudaHostRegister(2097152 bytes): out of memory (cudaErrorMemoryAllocation)");
}

/// A pinning that succeeds without CUDA: a registration object that pins nothing.
class FakePinned final : public MemoryRegion {
 public:
  FakePinned(std::byte* base, std::uint64_t bytes) : base_(base), bytes_(bytes) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::host_pinned; }
  [[nodiscard]] std::byte* data() const noexcept override { return base_; }
  [[nodiscard]] std::uint64_t size() const noexcept override { return bytes_; }

 private:
  std::byte* base_;
  std::uint64_t bytes_;
};

class GpuPathsService : public ::testing::Test {
 protected:
  BlockService& make(BlockServiceOptions options) {
    options.host_pool_bytes = 1ULL << 20;
    options.max_layouts = 4;
    service_.emplace(io_, engines_, std::move(options));
    return *service_;
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

  boost::asio::io_context io_;
  CopyEngines engines_{CopyEngineOptions{.host = {.workers = 2}, .use_cuda = false}};
  std::optional<BlockService> service_;
};

TEST_F(GpuPathsService, DeviceMemoryWithoutAGpuIsRefusedWithTheReason) {
  BlockService& service = make({});
  LayoutPool* pool = nullptr;
  ASSERT_TRUE(test::register_test_engine_kv(service, pool, 4));
  const Layout layout = test_layout(LayoutKind::layer_separate_block_outer, 16);
  for (auto memory : {proto::MemoryHandle::cuda_ipc, proto::MemoryHandle::cuda_vmm}) {
    auto r = ipc_request(layout);
    r.memory = memory;
    auto kv = service.register_kv(*pool, r, {});
    ASSERT_FALSE(kv);
    EXPECT_EQ(kv.error().code, Errc::unavailable);
    EXPECT_NE(kv.error().message.find("needs a GPU; this daemon has none (CUDA disabled by configuration)"),
              std::string::npos)
        << kv.error().message;
  }
}

TEST_F(GpuPathsService, APoolWhosePinningFailsStaysPageableWithOneWarning) {
  CapturedLog log;
  int attempts = 0;
  BlockService& service = make({.pin = [&](std::byte* base, std::uint64_t bytes) {
    ++attempts;
    return fake_failing_pin(base, bytes);
  }});
  LayoutPool* pool = nullptr;
  auto kv = test::register_test_engine_kv(service, pool, 4);
  ASSERT_TRUE(kv) << kv.error().to_string();
  ASSERT_TRUE(service.attach_layout(proto::WireLayout{3, 1, 2, 8, 0, 256}));  // a second pool
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(service.pin_failures(), 2U);
  EXPECT_EQ(service.pinned_pools(), 0U);
  for (const auto& p : service.pools()) EXPECT_EQ(p->manager->pool(Tier::g2).region().kind(), MemoryKind::host);
  const auto warnings = log.warnings();
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_NE(warnings[0].find("could not be pinned"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("cudaErrorMemoryAllocation"), std::string::npos) << warnings[0];
  // The pageable pool still serves: offload and onboard on the host engine.
  std::memset((*kv)->regions[0]->data(), 0x5A, (*kv)->regions[0]->size());
  std::optional<Status> done;
  service.start_offload(*pool, *kv, 0, {{BlockId{1}, 77}}, std::make_shared<OpControl>(),
                        [&](Status s) { done = std::move(s); });
  ASSERT_TRUE(run_until(done));
  std::optional<Status> back;
  service.start_onboard(*pool, *kv, 0, {{77, BlockId{3}}}, {}, std::make_shared<OpControl>(),
                        [&](Status s) { back = std::move(s); });
  ASSERT_TRUE(run_until(back));
  EXPECT_EQ(std::memcmp((*kv)->regions[0]->data() + std::size_t{3} * 256, (*kv)->regions[0]->data() + 256, 256), 0);
  // The rule then sends device <-> pool copies to the staged engine only.
  const auto kinds = engine_preference(MemoryKind::device, MemoryKind::host);
  ASSERT_EQ(kinds.size(), 1U);
  EXPECT_EQ(kinds[0], CopyEngineKind::cuda_staged);
}

TEST_F(GpuPathsService, APinnedPoolIsHostPinnedMemory) {
  BlockService& service =
      make({.pin = [](std::byte* base, std::uint64_t bytes) -> Result<std::unique_ptr<MemoryRegion>> {
        return std::unique_ptr<MemoryRegion>(std::make_unique<FakePinned>(base, bytes));
      }});
  LayoutPool* pool = nullptr;
  ASSERT_TRUE(test::register_test_engine_kv(service, pool, 4));
  EXPECT_EQ(service.pinned_pools(), 1U);
  EXPECT_EQ(pool->manager->pool(Tier::g2).region().kind(), MemoryKind::host_pinned);
}

// ---- layer-wise onboard through BlockService ----------------------------------

/// Holds every plan and, on release, completes them newest first through the
/// real host engine: a fault the real engines cannot produce on demand (their
/// completion order is not controllable).
class FakeReversingEngine final : public CopyEngine {
 public:
  explicit FakeReversingEngine(CopyEngine& real) : real_(real) {}
  [[nodiscard]] std::string_view name() const noexcept override { return "fake-reversing"; }
  [[nodiscard]] bool supports(MemoryKind s, MemoryKind d) const noexcept override { return real_.supports(s, d); }
  void submit(TransferPlan plan, CopyDone done) override {
    const std::lock_guard lock(mutex_);
    held_.emplace_back(std::move(plan), std::move(done));
  }
  std::size_t held() {
    const std::lock_guard lock(mutex_);
    return held_.size();
  }
  /// Runs the held plans one at a time, newest first, each to completion.
  void release_reversed() {
    std::vector<std::pair<TransferPlan, CopyDone>> held;
    {
      const std::lock_guard lock(mutex_);
      held.swap(held_);
    }
    for (auto it = held.rbegin(); it != held.rend(); ++it) {
      std::promise<Status> copied;
      real_.submit(std::move(it->first), [&](Status s) { copied.set_value(std::move(s)); });
      it->second(copied.get_future().get());
    }
  }

 private:
  CopyEngine& real_;
  std::mutex mutex_;
  std::vector<std::pair<TransferPlan, CopyDone>> held_;
};

TEST_F(GpuPathsService, LayerwiseOnboardAnnouncesGroupsInLayerOrderThenCompletes) {
  FakeReversingEngine reversing(engines_.host());
  BlockService& service =
      make({.select = [&](MemoryKind, MemoryKind, int) -> Result<CopyEngine*> { return &reversing; }});
  LayoutPool* pool = nullptr;
  auto kv = test::register_test_engine_kv(service, pool, 8);  // 2 layers: K,V of 128 bytes each
  ASSERT_TRUE(kv) << kv.error().to_string();
  for (std::uint32_t l = 0; l < 2; ++l)
    for (std::uint64_t i = 0; i < (*kv)->regions[l]->size(); ++i)
      (*kv)->regions[l]->data()[i] = static_cast<std::byte>((i * 7 + std::uint64_t{l} * 31) & 0xFF);
  std::optional<Status> offloaded;
  service.start_offload(*pool, *kv, 0, {{BlockId{0}, 10}, {BlockId{1}, 11}}, std::make_shared<OpControl>(),
                        [&](Status s) { offloaded = std::move(s); });
  io_.restart();
  io_.poll();
  reversing.release_reversed();
  ASSERT_TRUE(run_until(offloaded));

  std::vector<std::pair<std::uint32_t, std::uint32_t>> progress;
  std::optional<Status> done;
  bool done_after_progress = false;
  service.start_onboard(*pool, *kv, 0, {{10, BlockId{5}}, {11, BlockId{6}}},
                        OnboardProgress{1, [&](LayerRange r) { progress.emplace_back(r.first, r.count); }},
                        std::make_shared<OpControl>(), [&](Status s) {
                          done_after_progress = progress.size() == 2;
                          done = std::move(s);
                        });
  EXPECT_EQ(reversing.held(), 2U);  // one plan per layer group
  reversing.release_reversed();     // layer 1's plan finishes first
  ASSERT_TRUE(run_until(done));
  EXPECT_EQ(progress, (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{0, 1}, {1, 1}}));
  EXPECT_TRUE(done_after_progress);
  for (std::uint32_t l = 0; l < 2; ++l)
    for (auto [src, dst] : {std::pair{0, 5}, std::pair{1, 6}})
      EXPECT_EQ(std::memcmp((*kv)->regions[l]->data() + std::size_t{256} * dst,
                            (*kv)->regions[l]->data() + std::size_t{256} * src, 256),
                0)
          << "layer " << l << " block " << dst;
  EXPECT_EQ(service.g2_counters().leased, 0U);
  EXPECT_EQ(service.moved().onboard, 2U * 512U);
}

TEST_F(GpuPathsService, ACancelledLayerwiseOnboardAnnouncesNothingMore) {
  FakeReversingEngine reversing(engines_.host());
  BlockService& service =
      make({.select = [&](MemoryKind, MemoryKind, int) -> Result<CopyEngine*> { return &reversing; }});
  LayoutPool* pool = nullptr;
  auto kv = test::register_test_engine_kv(service, pool, 8);
  ASSERT_TRUE(kv);
  std::optional<Status> offloaded;
  service.start_offload(*pool, *kv, 0, {{BlockId{0}, 10}}, std::make_shared<OpControl>(),
                        [&](Status s) { offloaded = std::move(s); });
  reversing.release_reversed();
  ASSERT_TRUE(run_until(offloaded));
  auto control = std::make_shared<OpControl>();
  int announced = 0;
  std::optional<Status> done;
  service.start_onboard(*pool, *kv, 0, {{10, BlockId{4}}}, OnboardProgress{1, [&](LayerRange) { ++announced; }},
                        control, [&](Status s) { done = std::move(s); });
  control->cancelled = true;  // the request timed out / the session ended
  reversing.release_reversed();
  auto st = run_until(done);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::cancelled);
  EXPECT_EQ(announced, 0);
  EXPECT_EQ(service.g2_counters().leased, 0U);
}

}  // namespace
}  // namespace kvb::daemon
