// Workers as one cache under churn (docs/cluster.md), real kvblockd
// processes on 127.0.0.1 over UCX_TLS=tcp and sm: a worker killed and
// started again rejoins; a burst of fetches never runs more handlers than
// cluster.fetch_concurrency allows.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "cluster_support.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

class ClusterChurn : public ::testing::TestWithParam<std::string> {};

// A worker killed and started again under the same name rejoins: B drops
// the killed A with its entries; the new A (empty, a new port, naming B)
// joins, and B fetches what the new A offloads, byte-exact.
TEST_P(ClusterChurn, AKilledWorkerStartedAgainRejoinsAndServesItsNewBlocks) {
  const std::string tls = GetParam();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {}));
  ASSERT_TRUE(b.ready()) << b.log();
  const std::string b_addr = bootstrap_of(b);
  auto a = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("A", tls, {"--cluster-peers", b_addr}));
  ASSERT_TRUE(a->ready()) << a->log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  {
    TestEngine on_a(a->socket_path(), 8, /*salt=*/3);
    ASSERT_TRUE(on_a.attach());
    ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 6000));
    ASSERT_TRUE(b.wait_for_log("A holds 4 blocks", 20s)) << b.log();
  }
  a->kill();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A lost", 20s)) << b.log();

  a = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("A", tls, {"--cluster-peers", b_addr}));
  ASSERT_TRUE(a->ready()) << a->log();
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) { return line.find("cluster: worker A joined") != std::string_view::npos; }, 2, 20s))
      << b.log();
  TestEngine on_b(b.socket_path(), 16, /*salt=*/3);
  ASSERT_TRUE(on_b.attach());
  // The old A's blocks are gone with it: the new A holds none of them.
  auto old = on_b.client().call_body<proto::LookupReply>(RequestId{20}, proto::LookupRequest{false, {6000, 6001}});
  ASSERT_TRUE(old);
  EXPECT_EQ(old->prefix_blocks, 0U);

  TestEngine on_a(a->socket_path(), 8, /*salt=*/3);
  ASSERT_TRUE(on_a.attach());
  auto holds_4 = [](std::string_view line) { return line.find("A holds 4 blocks") != std::string_view::npos; };
  const std::string before = b.log();
  std::size_t seen = 0;
  for (auto at = before.find("A holds 4 blocks"); at != std::string::npos; at = before.find("A holds 4 blocks", at + 1))
    ++seen;
  ASSERT_TRUE(offload_blocks(on_a, 10, 4, 4, 6000));  // hashes 6004..6007
  ASSERT_TRUE(b.wait_for_log_lines(holds_4, seen + 1, 20s)) << b.log();
  ASSERT_TRUE(onboard_blocks(on_b, 21, 4, 4, 6000)) << b.log();
  const auto json = stats_of(on_b.client(), 22);
  EXPECT_EQ(member_stat(json, "A", "index_blocks"), 4) << json;
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
}

// A fetch storm: A (cluster.fetch_concurrency 2) is stopped while B sends
// it 32 fetches (32 engine onboards of one block each); resumed, it gets
// them in a burst and never runs more than 2 fetch handlers at once, yet
// serves all 32, byte-exact. The kvb.fetch handlers are what it counts, so
// B fetches by UCX over sm too (cluster.map_same_host false; the same storm
// through same-host pins: cluster_mapped_test.cpp).
TEST_P(ClusterChurn, AFetchStormNeverRunsMoreHandlersThanTheLimitAllows) {
  constexpr std::uint32_t kFetches = 32;
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {"--cluster-fetch-concurrency", "2"}));
  ASSERT_TRUE(a.ready()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH,
                  worker_args("B", tls, {"--cluster-peers", bootstrap_of(a), "--cluster-map-same-host", "false"}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  // 256 KiB blocks: over tcp they move by AM rendezvous (a round trip per
  // block), so a handler waits and the next message starts another.
  const proto::WireLayout big{4, 2, 16, 2048, 0, 256};
  TestEngine on_a(a.socket_path(), kFetches, /*salt=*/4, big);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, kFetches, 8000));
  ASSERT_TRUE(b.wait_for_log("A holds 32 blocks", 20s)) << b.log();

  TestEngine on_b(b.socket_path(), 2 * kFetches, /*salt=*/4, big);
  ASSERT_TRUE(on_b.attach());
  a.signal(SIGSTOP);
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    on_b.zero(kFetches + k);
    ASSERT_TRUE(on_b.client().send(RequestId{100 + k}, proto::OnboardRequest{{{8000 + k, BlockId{kFetches + k}}}}));
  }
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) {
        return line.find("cluster: fetch of 1 blocks from A sent") != std::string_view::npos;
      },
      kFetches, 20s))
      << b.log();
  a.signal(SIGCONT);
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    auto done = on_b.client().notification_of(RequestId{100 + k}, 30s);
    ASSERT_TRUE(done) << "onboard " << k << b.log();
    EXPECT_EQ(done->text, std::to_string(100 + k) + ":ok");
  }
  for (std::uint32_t k = 0; k < kFetches; ++k) {
    on_b.fill(k, k + 1);
    EXPECT_TRUE(on_b.same(k, kFetches + k)) << "block " << k;
  }
  const auto json = stats_of(on_a.client(), 11);
  EXPECT_EQ(stat_of(json, "cluster.fetch_handlers.limit"), 2) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch_handlers.handled"), kFetches) << json;
  const long long peak = stat_of(json, "cluster.fetch_handlers.peak_running");
  EXPECT_GE(peak, 1) << json;
  EXPECT_LE(peak, 2) << json;  // never more than the limit
  std::printf("fetch storm over %s: peak %lld fetch handlers running (limit 2)\n", tls.c_str(), peak);
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_out"), kFetches) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
}

INSTANTIATE_TEST_SUITE_P(Tls, ClusterChurn, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace kvb::test
