// The host pools' prefault (config key `prefault`): a new pool's pages are
// populated in the background, the pool is usable meanwhile and keeps its
// bytes, the stats count the populated bytes, and shutdown while it runs
// neither hangs nor crashes.
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio/executor_work_guard.hpp>

#include "block_service.h"
#include "kvb/kernels/copy_engines.h"
#include "test_engine_kv.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kPoolBytes = 64ULL << 20;

/// Pages of [base, base + bytes) resident in memory (mincore).
std::uint64_t resident_pages(const std::byte* base, std::uint64_t bytes) {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((bytes + page - 1) / page);
  if (::mincore(const_cast<std::byte*>(base), bytes, vec.data()) != 0) return 0;
  std::uint64_t n = 0;
  for (unsigned char v : vec) n += v & 1U;
  return n;
}

class PoolPrefaultTest : public ::testing::Test {
 protected:
  std::unique_ptr<BlockService> make(bool prefault, std::uint64_t pool_bytes = kPoolBytes) {
    BlockServiceOptions options;  // not designated: GCC 12's -Wmaybe-uninitialized false positive
    options.host_pool_bytes = pool_bytes;
    options.max_layouts = 2;
    options.prefault = prefault;
    return std::make_unique<BlockService>(io_, engines_, std::move(options));
  }

  /// Runs the loop until every pool's prefault is done (bounded: 60 s); the
  /// totals then. The prefault thread posts its "ready" line to the loop, so
  /// each run_one_for returns at that event (the guard keeps the loop
  /// waiting for it instead of returning at once for want of work).
  PrefaultTotals wait_ready(const BlockService& service) {
    io_.restart();
    auto guard = boost::asio::make_work_guard(io_);
    for (int i = 0; i < 600; ++i) {
      const PrefaultTotals now = service.prefault_totals();
      if (now.pool_bytes != 0 && now.populated_bytes == now.pool_bytes) return now;
      io_.run_one_for(100ms);
    }
    return service.prefault_totals();
  }

  boost::asio::io_context io_;
  CopyEngines engines_{CopyEngineOptions{.host = {.workers = 2}, .use_cuda = false}};
};

TEST_F(PoolPrefaultTest, ANewPoolIsPopulatedInTheBackgroundAndKeepsItsBytes) {
  auto service = make(true);
  LayoutPool* pool = nullptr;
  auto kv = test::register_test_engine_kv(*service, pool, 16);
  ASSERT_TRUE(kv) << kv.error().to_string();
  const MemoryRegion& region = pool->manager->pool(Tier::g2).region();
  ASSERT_GE(region.size(), kPoolBytes / 2);
  // Usable at once: bytes written while the prefault runs stay as written.
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::byte* last = region.data() + region.size() - page;
  std::memset(region.data(), 0x5a, page);
  std::memset(last, 0xa5, page);

  const PrefaultTotals totals = wait_ready(*service);
  EXPECT_TRUE(totals.enabled);
  EXPECT_EQ(totals.pool_bytes, region.size());
  EXPECT_EQ(totals.populated_bytes, region.size());
  EXPECT_EQ(totals.pools_ready, 1U);
  EXPECT_EQ(resident_pages(region.data(), region.size()), region.size() / page);
  for (std::uint64_t i = 0; i < page; ++i) {
    ASSERT_EQ(region.data()[i], std::byte{0x5a}) << i;
    ASSERT_EQ(last[i], std::byte{0xa5}) << i;
  }
  // Everything in between is still the zeroes of a fresh memfd.
  std::vector<std::byte> zero(page);
  for (std::uint64_t off = page; off + page < region.size(); off += page) {
    ASSERT_EQ(std::memcmp(region.data() + off, zero.data(), page), 0) << off;
  }
}

TEST_F(PoolPrefaultTest, OffPopulatesNothing) {
  auto service = make(false);
  LayoutPool* pool = nullptr;
  auto kv = test::register_test_engine_kv(*service, pool, 16);
  ASSERT_TRUE(kv) << kv.error().to_string();
  const MemoryRegion& region = pool->manager->pool(Tier::g2).region();
  io_.restart();
  io_.poll();
  const PrefaultTotals totals = service->prefault_totals();
  EXPECT_FALSE(totals.enabled);
  EXPECT_EQ(totals.pool_bytes, region.size());
  EXPECT_EQ(totals.populated_bytes, 0U);
  EXPECT_EQ(totals.pools_ready, 0U);
  EXPECT_EQ(pool->prefault, nullptr);
  EXPECT_EQ(resident_pages(region.data(), region.size()), 0U);
}

// Destroying the service while a large pool is being populated stops the
// thread (between chunks) before the pool memory is unmapped.
TEST_F(PoolPrefaultTest, ShutdownWhilePopulatingStopsTheThread) {
  auto service = make(true, 512ULL << 20);
  LayoutPool* pool = nullptr;
  auto kv = test::register_test_engine_kv(*service, pool, 16);
  ASSERT_TRUE(kv) << kv.error().to_string();
  ASSERT_NE(pool->prefault, nullptr);
  const auto started = std::chrono::steady_clock::now();
  kv->reset();
  service.reset();
  // Stopping waits for one chunk at most, not for the whole pool; the bound
  // is generous (a loaded machine), the point is that it returns.
  EXPECT_LT(std::chrono::steady_clock::now() - started, 60s);
}

}  // namespace
}  // namespace kvb::daemon
