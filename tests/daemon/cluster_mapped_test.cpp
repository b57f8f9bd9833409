// Same-host mapped fetch (docs/cluster.md, "Same-host mapped fetch"): two
// real kvblockd workers on one host over UCX_TLS=sm. B maps A's G2 pool
// memfd (pidfd_getfd) and copies the blocks A pinned for it; the log, the
// stats and the bytes show it. The pin protects the blocks: A's engine
// fills A's pool (every unpinned block evicted and reused) while B's copy
// is held back by a fault injection (KVB_INJECT_MAPPED_COPY_DELAY_MS), and
// B's bytes are still exact. Over tcp, or with cluster.map_same_host
// false, nothing is mapped and the fetch goes by UCX. By default
// (cluster.cache_same_host false) a same-host holder's blocks are not kept
// on B, so the copy into B's engine reads them straight from the mapping
// (no G2 copy); with cluster.cache_same_host true they are copied into B's
// G2 first and stay there.
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "cluster_support.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

/// Two workers joined over `tls`, B naming A, with extra arguments each;
/// `b_env` set in B's environment (a fault injection) while it starts.
struct Pair {
  std::unique_ptr<DaemonProcess> a_;
  std::unique_ptr<DaemonProcess> b_;
  Pair(const std::string& tls, std::vector<std::string> a_more, std::vector<std::string> b_more,
       const char* b_env = nullptr, const char* b_env_value = nullptr) {
    a_ = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("A", tls, std::move(a_more)));
    EXPECT_TRUE(a_->ready()) << a_->log();
    b_more.insert(b_more.end(), {"--cluster-peers", bootstrap_of(*a_)});
    if (b_env != nullptr) ::setenv(b_env, b_env_value, 1);
    b_ = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("B", tls, std::move(b_more)));
    if (b_env != nullptr) ::unsetenv(b_env);
  }
  DaemonProcess& a() { return *a_; }
  DaemonProcess& b() { return *b_; }
};

TEST(ClusterMapped, AnSmFetchOnOneHostCopiesFromTheHoldersMappedPoolAndReleasesThePin) {
  Pair w("sm", {}, {"--cluster-cache-same-host", "true"});
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
  TestEngine on_a(w.a().socket_path(), 16, /*salt=*/3);
  ASSERT_TRUE(on_a.attach()) << w.a().log();
  ASSERT_TRUE(offload_blocks(on_a, 1, 0, 8, 4000));
  ASSERT_TRUE(w.b().wait_for_log("A holds 8 blocks", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  TestEngine on_b(w.b().socket_path(), 16, /*salt=*/3);
  ASSERT_TRUE(on_b.attach()) << w.b().log();
  ASSERT_TRUE(onboard_blocks(on_b, 2, 0, 8, 4000)) << w.b().log();

  EXPECT_EQ(log_lines_with(w.b(), "cluster: worker A's pool"), 1U) << w.b().log();
  EXPECT_GE(log_lines_with(w.b(), "bulk by mapped (same host)"), 1U) << w.b().log();
  // The log reaches the test through a pipe a thread drains: wait for the
  // line before counting it (the onboard's answer may come first).
  ASSERT_TRUE(w.b().wait_for_log("fetch of 8 blocks from A sent (mapped)", 20s)) << w.b().log();
  EXPECT_EQ(log_lines_with(w.b(), "fetch of 8 blocks from A sent (mapped)"), 1U) << w.b().log();
  std::uint64_t id = 10;
  const auto json_b = stats_of(on_b.client(), id++);
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.mapped_requests"), 1) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.mapped_blocks"), 8) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.blocks_in"), 8) << json_b;
  EXPECT_EQ(member_text(json_b, "A", "bulk"), "mapped (same host)") << json_b;
  const long long bytes = stat_of(stats_of(on_a.client(), id++), "bytes_offloaded");  // the 8 blocks
  EXPECT_GT(bytes, 0);
  EXPECT_EQ(member_stat(json_b, "A", "bytes_in"), bytes) << json_b;
  // A: one pin served, its 8 leases released by B's kvb.unpin (not expiry).
  EXPECT_EQ(wait_stat(on_a.client(), id, "leased_blocks", 0), 0);
  const auto json_a = stats_of(on_a.client(), id++);
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.pins_served"), 1) << json_a;
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.pins_expired"), 0) << json_a;
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.blocks_out"), 8) << json_a;
  EXPECT_EQ(member_stat(json_a, "B", "bytes_out"), bytes) << json_a;
  EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
  EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
}

// By default (cluster.cache_same_host false), and with cluster.cache_fetched
// false, B keeps no copy of a same-host holder's blocks: the onboard's copy
// into B's engine reads A's pinned blocks straight out of the mapping (one
// copy, no G2 block on B), beside blocks B holds itself in the same onboard.
class StraightIntoTheEngine : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(StraightIntoTheEngine, TheOnboardCopiesFromTheHoldersMappingWithNoG2Copy) {
  Pair w("sm", {}, GetParam());
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
  TestEngine on_a(w.a().socket_path(), 16, /*salt=*/3);
  ASSERT_TRUE(on_a.attach()) << w.a().log();
  ASSERT_TRUE(offload_blocks(on_a, 1, 0, 8, 4000));  // hashes 4000-4007 on A
  ASSERT_TRUE(w.b().wait_for_log("A holds 8 blocks", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  TestEngine on_b(w.b().socket_path(), 24, /*salt=*/3);
  ASSERT_TRUE(on_b.attach()) << w.b().log();
  ASSERT_TRUE(offload_blocks(on_b, 2, 8, 4, 4000));  // hashes 4008-4011 on B itself
  std::uint64_t id = 10;
  const long long b_before = stat_of(stats_of(on_b.client(), id++), "bytes_onboarded");
  // 12 blocks into engine blocks 8-19: 8 read from A's mapping, 4 from B's G2.
  ASSERT_TRUE(onboard_blocks(on_b, 3, 0, 12, 4000)) << w.b().log();

  // The log reaches the test through a pipe a thread drains: wait for the
  // line before counting it (the onboard's answer may come first).
  ASSERT_TRUE(w.b().wait_for_log("fetch of 8 blocks from A sent (mapped)", 20s)) << w.b().log();
  EXPECT_EQ(log_lines_with(w.b(), "fetch of 8 blocks from A sent (mapped)"), 1U) << w.b().log();
  const auto json_b = stats_of(on_b.client(), id++);
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.direct_requests"), 1) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.direct_blocks"), 8) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.mapped_blocks"), 0) << json_b;  // nothing copied into G2
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.blocks_in"), 0) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.failures"), 0) << json_b;
  EXPECT_EQ(stat_of(json_b, "leased_blocks"), 0) << json_b;
  const long long bytes = stat_of(stats_of(on_a.client(), id++), "bytes_offloaded");  // A's 8 blocks
  EXPECT_EQ(member_stat(json_b, "A", "bytes_in"), bytes) << json_b;
  EXPECT_EQ(stat_of(json_b, "bytes_onboarded") - b_before, bytes / 8 * 12) << json_b;
  // Not kept: a second onboard of A's blocks reads them from A again.
  ASSERT_TRUE(onboard_blocks(on_b, 4, 0, 8, 4000)) << w.b().log();
  EXPECT_EQ(stat_of(stats_of(on_b.client(), id++), "cluster.fetch.direct_blocks"), 16);
  // A: two pins served, every lease released by B's kvb.unpin.
  EXPECT_EQ(wait_stat(on_a.client(), id, "leased_blocks", 0), 0);
  const auto json_a = stats_of(on_a.client(), id++);
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.pins_served"), 2) << json_a;
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.pins_expired"), 0) << json_a;
  EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
  EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
}

INSTANTIATE_TEST_SUITE_P(ClusterMapped, StraightIntoTheEngine,
                         ::testing::Values(std::vector<std::string>{},
                                           std::vector<std::string>{"--cluster-cache-fetched", "false"}),
                         [](const auto& info) {
                           return info.param.empty() ? std::string("ByDefault") : std::string("CacheFetchedFalse");
                         });

// The same fetch with the mapping turned off (cluster.map_same_host
// false) and over tcp goes by UCX: nothing mapped, the bytes exact.
TEST(ClusterMapped, TcpAndMapSameHostFalseFetchByUcx) {
  for (const auto& [tls, more] :
       {std::pair<std::string, std::vector<std::string>>{"tcp", {}}, {"sm", {"--cluster-map-same-host", "false"}}}) {
    SCOPED_TRACE(tls);
    Pair w(tls, more, more);
    ASSERT_TRUE(w.b().ready()) << w.b().log();
    ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
    TestEngine on_a(w.a().socket_path(), 16, /*salt=*/3);
    ASSERT_TRUE(on_a.attach()) << w.a().log();
    ASSERT_TRUE(offload_blocks(on_a, 1, 0, 4, 4000));
    ASSERT_TRUE(w.b().wait_for_log("A holds 4 blocks", 20s)) << w.b().log();
    TestEngine on_b(w.b().socket_path(), 16, /*salt=*/3);
    ASSERT_TRUE(on_b.attach()) << w.b().log();
    ASSERT_TRUE(onboard_blocks(on_b, 2, 0, 4, 4000)) << w.b().log();
    const auto json_b = stats_of(on_b.client(), 3);
    EXPECT_EQ(stat_of(json_b, "cluster.fetch.blocks_in"), 4) << json_b;
    EXPECT_EQ(stat_of(json_b, "cluster.fetch.mapped_blocks"), 0) << json_b;
    EXPECT_EQ(member_text(json_b, "A", "bulk"), "am_rendezvous") << json_b;
    EXPECT_EQ(log_lines_with(w.b(), "mapped read-only"), 0U) << w.b().log();
    EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
    EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
  }
}

// The pin keeps the blocks: B's copy is held back 1.5 s per block
// (KVB_INJECT_MAPPED_COPY_DELAY_MS, a fault injection) after A pinned
// them; meanwhile A's engine offloads two pools' worth of other blocks (lru),
// so A evicts and reuses every block it can. B's onboard is still byte-exact,
// and A evicted (its pool was really under pressure). Both ways: copied
// into B's G2 first (cached), and straight into B's engine (not cached).
class PinnedBlocks : public ::testing::TestWithParam<bool> {};

TEST_P(PinnedBlocks, APinnedBlockIsNotEvictedOrReusedWhileTheRequesterCopies) {
  const bool cached = GetParam();
  Pair w("sm", {"--host-pool-bytes", "256KiB", "--eviction-policy", "lru"},
         {"--cluster-cache-same-host", cached ? "true" : "false"}, "KVB_INJECT_MAPPED_COPY_DELAY_MS", "1500");
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
  TestEngine on_a(w.a().socket_path(), 64, /*salt=*/9);
  ASSERT_TRUE(on_a.attach()) << w.a().log();
  ASSERT_TRUE(offload_blocks(on_a, 1, 0, 4, 8000));
  std::uint64_t id = 100;
  const long long capacity = stat_of(stats_of(on_a.client(), id++), "g2.capacity");
  ASSERT_GE(capacity, 8) << w.a().log();
  ASSERT_LE(capacity, 48) << "the pool is larger than the engine's blocks can fill";
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("A holds 4 blocks", 20s)) << w.b().log();

  TestEngine on_b(w.b().socket_path(), 16, /*salt=*/9);
  ASSERT_TRUE(on_b.attach()) << w.b().log();
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 4; ++blk) {
    on_b.zero(8 + blk);
    onboard.items.push_back({8000 + blk, BlockId{8 + blk}});
  }
  ASSERT_TRUE(on_b.client().call(RequestId{2}, onboard));
  ASSERT_EQ(wait_stat(on_a.client(), id, "cluster.fetch.pins_served", 1), 1) << w.a().log();
  // Two pools' worth of other blocks (other bytes) through A, 4 at a time
  // (engine blocks 8-63 over again, under new hashes): every block A can
  // evict is evicted and reused.
  for (long long n = 0; n < 2 * capacity; n += 4) {
    proto::OffloadRequest offload;
    for (std::uint32_t k = 0; k < 4; ++k) {
      const auto blk = static_cast<std::uint32_t>(8 + (n + k) % 56);
      on_a.fill(blk, static_cast<std::uint32_t>(1000 + n + k));
      offload.items.push_back({BlockId{blk}, static_cast<std::uint64_t>(90000 + n + k)});
    }
    ASSERT_TRUE(on_a.client().call(RequestId{id}, offload));
    ASSERT_TRUE(on_a.client().notification_of(RequestId{id}, 10s));  // ok, or out of capacity: either is fine
    ++id;
  }
  const auto json_a = stats_of(on_a.client(), id++);
  EXPECT_GT(stat_of(json_a, "g2.evictions"), 0) << json_a;
  EXPECT_EQ(stat_of(json_a, "g2.leased"), 4) << json_a;  // the pinned blocks, still held for B

  auto onboarded = on_b.client().notification_of(RequestId{2}, 30s);
  ASSERT_TRUE(onboarded) << w.b().log();
  ASSERT_EQ(onboarded->text, "2:ok") << w.b().log();
  for (std::uint32_t blk = 0; blk < 4; ++blk) {
    on_b.fill(blk, blk + 1);
    EXPECT_TRUE(on_b.same(blk, 8 + blk)) << "block " << blk << " is not what A offloaded";
  }
  EXPECT_EQ(stat_of(stats_of(on_b.client(), 3), cached ? "cluster.fetch.mapped_blocks" : "cluster.fetch.direct_blocks"),
            4);
  EXPECT_EQ(wait_stat(on_a.client(), id, "g2.leased", 0), 0);
  EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
  EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
}

INSTANTIATE_TEST_SUITE_P(ClusterMapped, PinnedBlocks, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("IntoG2") : std::string("StraightIntoTheEngine");
                         });

// A storm of pins: A is stopped while B sends 32 onboards of one block
// (32 pin requests wait in A's queue); resumed, A pins each, B copies all
// 32 byte-exact from its mapping and releases every pin.
TEST(ClusterMapped, A32PinStormEndsWithEveryBlockExactAndEveryPinReleased) {
  constexpr std::uint32_t kFetches = 32;
  Pair w("sm", {}, {"--cluster-cache-same-host", "true"});
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
  TestEngine on_a(w.a().socket_path(), kFetches, /*salt=*/4);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, kFetches, 8000));
  ASSERT_TRUE(w.b().wait_for_log("A holds 32 blocks", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  TestEngine on_b(w.b().socket_path(), 2 * kFetches, /*salt=*/4);
  ASSERT_TRUE(on_b.attach());
  w.a().signal(SIGSTOP);
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    on_b.zero(kFetches + k);
    ASSERT_TRUE(on_b.client().send(RequestId{100 + k}, proto::OnboardRequest{{{8000 + k, BlockId{kFetches + k}}}}));
  }
  ASSERT_TRUE(w.b().wait_for_log_lines(
      [](std::string_view line) {
        return line.find("cluster: fetch of 1 blocks from A sent (mapped)") != std::string_view::npos;
      },
      kFetches, 20s))
      << w.b().log();
  w.a().signal(SIGCONT);
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    auto done = on_b.client().notification_of(RequestId{100 + k}, 30s);
    ASSERT_TRUE(done) << "onboard " << k << w.b().log();
    EXPECT_EQ(done->text, std::to_string(100 + k) + ":ok");
  }
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    on_b.fill(k, k + 1);
    EXPECT_TRUE(on_b.same(k, kFetches + k)) << "block " << k;
  }
  EXPECT_EQ(stat_of(stats_of(on_b.client(), 1), "cluster.fetch.mapped_blocks"), kFetches);
  std::uint64_t id = 20;
  EXPECT_EQ(wait_stat(on_a.client(), id, "leased_blocks", 0), 0);
  const auto json = stats_of(on_a.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.pins_served"), kFetches) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.pins_expired"), 0) << json;
  EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
  EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
}

// A holder that dies while the requester copies: B's copy is held back
// (KVB_INJECT_MAPPED_COPY_DELAY_MS, a fault injection) after A pinned the
// blocks, A is SIGKILLed and B drops it; B's mapping stays valid and the
// bytes were complete when pinned, so the onboard is ok and byte-exact.
TEST_P(PinnedBlocks, AHolderKilledWhileTheRequesterCopiesLeavesTheCopyExact) {
  const bool cached = GetParam();
  Pair w("sm", {}, {"--cluster-cache-same-host", cached ? "true" : "false"}, "KVB_INJECT_MAPPED_COPY_DELAY_MS", "1000");
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
  TestEngine on_a(w.a().socket_path(), 16, /*salt=*/6);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 1, 0, 4, 7000));
  ASSERT_TRUE(w.b().wait_for_log("A holds 4 blocks", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  TestEngine on_b(w.b().socket_path(), 16, /*salt=*/6);
  ASSERT_TRUE(on_b.attach());
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 4; ++blk) {
    on_b.zero(8 + blk);
    onboard.items.push_back({7000 + blk, BlockId{8 + blk}});
  }
  ASSERT_TRUE(on_b.client().call(RequestId{2}, onboard));
  std::uint64_t id = 10;
  ASSERT_EQ(wait_stat(on_a.client(), id, "cluster.fetch.pins_served", 1), 1) << w.a().log();
  w.a().kill();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A lost", 20s)) << w.b().log();
  auto onboarded = on_b.client().notification_of(RequestId{2}, 30s);
  ASSERT_TRUE(onboarded) << w.b().log();
  ASSERT_EQ(onboarded->text, "2:ok") << w.b().log();
  for (std::uint32_t blk = 0; blk < 4; ++blk) {
    on_b.fill(blk, blk + 1);
    EXPECT_TRUE(on_b.same(blk, 8 + blk)) << "block " << blk;
  }
  const auto json = stats_of(on_b.client(), 3);
  EXPECT_EQ(stat_of(json, cached ? "cluster.fetch.mapped_blocks" : "cluster.fetch.direct_blocks"), 4) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
}

// A requester lost while it holds pins: B's copy is held back
// (KVB_INJECT_MAPPED_COPY_DELAY_MS, a fault injection) after A pinned its
// blocks, B is SIGKILLed: A drops B and releases B's pins with it (not by
// their expiry: pins_expired stays 0), and its leases are back to 0.
TEST(ClusterMapped, PinsOfALostRequesterAreReleased) {
  Pair w("sm", {}, {"--request-timeout-ms", "60000"}, "KVB_INJECT_MAPPED_COPY_DELAY_MS", "20000");
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.a().wait_for_log("cluster: worker B joined", 20s)) << w.a().log();
  TestEngine on_a(w.a().socket_path(), 16, /*salt=*/8);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 1, 0, 4, 7100));
  ASSERT_TRUE(w.b().wait_for_log("A holds 4 blocks", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  TestEngine on_b(w.b().socket_path(), 16, /*salt=*/8);
  ASSERT_TRUE(on_b.attach());
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 4; ++blk) onboard.items.push_back({7100 + blk, BlockId{8 + blk}});
  ASSERT_TRUE(on_b.client().call(RequestId{2}, onboard));
  std::uint64_t id = 10;
  ASSERT_EQ(wait_stat(on_a.client(), id, "cluster.fetch.pins_served", 1), 1) << w.a().log();
  EXPECT_EQ(stat_of(stats_of(on_a.client(), id++), "leased_blocks"), 4);
  w.b().kill();
  ASSERT_TRUE(w.a().wait_for_log("cluster: worker B lost", 20s)) << w.a().log();
  EXPECT_EQ(wait_stat(on_a.client(), id, "leased_blocks", 0), 0);
  const auto json = stats_of(on_a.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.pins_expired"), 0) << json;
  EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
}

// The pin table is bounded per peer (32): A is stopped while B's two
// engines send 48 one-block onboards, and B's copies are held back 300 ms each
// (KVB_INJECT_MAPPED_COPY_DELAY_MS, a fault injection) so no pin is
// released while A works through the burst. A pins 32 and refuses the rest
// busy; B fetches those by UCX (kvb.fetch). Every block arrives exact and
// every pin is released. Both ways: into B's G2 (cached) and straight into
// B's engines (a refused borrow falls back to the UCX fetch).
TEST_P(PinnedBlocks, PinsBeyondThePerPeerBoundAreRefusedAndFetchedByUcx) {
  constexpr std::uint32_t kFetches = 48, kPerEngine = 24;
  const bool cached = GetParam();
  Pair w("sm", {}, {"--cluster-cache-same-host", cached ? "true" : "false"}, "KVB_INJECT_MAPPED_COPY_DELAY_MS", "300");
  ASSERT_TRUE(w.b().ready()) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("cluster: worker A joined", 20s)) << w.b().log();
  TestEngine on_a(w.a().socket_path(), kFetches, /*salt=*/2);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, kFetches, 8000));
  ASSERT_TRUE(w.b().wait_for_log("A holds 48 blocks", 20s)) << w.b().log();
  ASSERT_TRUE(w.b().wait_for_log("mapped read-only", 20s)) << w.b().log();
  std::vector<std::unique_ptr<TestEngine>> on_b;
  for (int e = 0; e < 2; ++e) {
    on_b.push_back(std::make_unique<TestEngine>(w.b().socket_path(), 2 * kPerEngine, /*salt=*/2));
    ASSERT_TRUE(on_b.back()->attach());
  }
  w.a().signal(SIGSTOP);
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    TestEngine& e = *on_b[k / kPerEngine];
    const std::uint32_t i = k % kPerEngine;
    e.zero(kPerEngine + i);
    ASSERT_TRUE(e.client().send(RequestId{100 + k}, proto::OnboardRequest{{{8000 + k, BlockId{kPerEngine + i}}}}));
  }
  ASSERT_TRUE(w.b().wait_for_log_lines(
      [](std::string_view line) {
        return line.find("cluster: fetch of 1 blocks from A sent (mapped)") != std::string_view::npos;
      },
      kFetches, 20s))
      << w.b().log();
  w.a().signal(SIGCONT);
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    TestEngine& e = *on_b[k / kPerEngine];
    const std::uint32_t i = k % kPerEngine;
    auto done = e.client().notification_of(RequestId{100 + k}, 60s);
    ASSERT_TRUE(done) << "onboard " << k << w.b().log();
    EXPECT_EQ(done->text, std::to_string(100 + k) + ":ok");
    e.fill(i, k + 1);
    EXPECT_TRUE(e.same(i, kPerEngine + i)) << "block " << k;
  }
  std::uint64_t id = 20;
  EXPECT_EQ(wait_stat(on_a.client(), id, "leased_blocks", 0), 0);
  const auto json = stats_of(on_a.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.pins_served"), 32) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.pins_refused"), kFetches - 32) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.served"), kFetches - 32) << json;  // by UCX
  EXPECT_EQ(stat_of(json, "cluster.fetch.pins_expired"), 0) << json;
  const auto json_b = stats_of(on_b[0]->client(), id++);
  EXPECT_EQ(stat_of(json_b, cached ? "cluster.fetch.mapped_blocks" : "cluster.fetch.direct_blocks"), 32) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.blocks_in"), cached ? kFetches : kFetches - 32) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.requests"), kFetches) << json_b;
  EXPECT_EQ(stat_of(json_b, "cluster.fetch.failures"), 0) << json_b;
  EXPECT_EQ(w.b().stop(SIGTERM), 0) << w.b().log();
  EXPECT_EQ(w.a().stop(SIGTERM), 0) << w.a().log();
}

}  // namespace
}  // namespace kvb::test
