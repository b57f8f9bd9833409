// A worker restarted on the address a static peer names (docs/cluster.md,
// "A worker restarts"), real kvblockd processes on 127.0.0.1 over
// UCX_TLS=tcp and sm. A listens on a fixed port and names nobody; B names
// A with --cluster-peers. A is killed while B's onboard waits on it and
// started again on the same address: only B's retries of its static peer
// can join them again. B must end the waiting onboard with
// err(peer lost: A), drop the old A's entries, reconnect to the new A (a
// new UCX address behind the same bootstrap address) and fetch what the
// new A offloads, byte-exact; B's stats show A joined again, one loss.
#include <signal.h>

#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "cluster_support.h"
#include "support/loopback_http.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

class ClusterRestart : public ::testing::TestWithParam<std::string> {};

TEST_P(ClusterRestart, AWorkerRestartedOnTheAddressAStaticPeerNamesIsRejoinedByThePeersRetries) {
  const std::string tls = GetParam();
  const std::uint16_t port = free_port();
  ASSERT_NE(port, 0);
  const std::string a_addr = "127.0.0.1:" + std::to_string(port);
  auto a = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args_on("A", tls, a_addr, {}));
  ASSERT_TRUE(a->ready()) << a->log();
  ASSERT_EQ(bootstrap_of(*a), a_addr) << a->log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", a_addr}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();

  TestEngine on_b(b.socket_path(), 16, /*salt=*/5);
  ASSERT_TRUE(on_b.attach());
  {
    TestEngine on_a(a->socket_path(), 8, /*salt=*/5);
    ASSERT_TRUE(on_a.attach());
    ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 6100));  // hashes 6100..6103
    ASSERT_TRUE(b.wait_for_log("A holds 4 blocks", 20s)) << b.log();

    // A hangs, B's onboard of its blocks waits on it, then A dies.
    a->signal(SIGSTOP);
    proto::OnboardRequest onboard;
    onboard.items.push_back({6100, BlockId{8}});
    onboard.items.push_back({6101, BlockId{9}});
    ASSERT_TRUE(on_b.client().call(RequestId{20}, onboard));
    ASSERT_TRUE(b.wait_for_log("cluster: fetch of 2 blocks from A sent", 20s)) << b.log();
    a->kill();
  }
  auto lost = on_b.client().notification_of(RequestId{20}, 20s);
  ASSERT_TRUE(lost) << b.log();
  EXPECT_EQ(lost->text, "20:err(peer lost: A)") << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A lost", 20s)) << b.log();
  auto json = stats_of(on_b.client(), 21);
  EXPECT_EQ(member_stat(json, "A", "index_blocks"), 0) << json;
  EXPECT_EQ(member_text(json, "A", "state"), "lost") << json;

  // The same address, a new process (a new UCX worker address behind it).
  // It names nobody: B's retries of its static peer are the only way back.
  a = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args_on("A", tls, a_addr, {}));
  ASSERT_TRUE(a->ready()) << a->log();
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) { return line.find("cluster: worker A joined") != std::string_view::npos; }, 2, 20s))
      << b.log();
  ASSERT_TRUE(a->wait_for_log("cluster: worker B joined", 20s)) << a->log();

  // The old A's blocks went with it.
  auto old = on_b.client().call_body<proto::LookupReply>(RequestId{22}, proto::LookupRequest{false, {6100, 6101}});
  ASSERT_TRUE(old);
  EXPECT_EQ(old->prefix_blocks, 0U);

  TestEngine on_a(a->socket_path(), 8, /*salt=*/5);
  ASSERT_TRUE(on_a.attach());
  const std::size_t seen = log_lines_with(b, "A holds 4 blocks");
  ASSERT_TRUE(offload_blocks(on_a, 10, 4, 4, 6100));  // hashes 6104..6107
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) { return line.find("A holds 4 blocks") != std::string_view::npos; }, seen + 1, 20s))
      << b.log();
  ASSERT_TRUE(onboard_blocks(on_b, 23, 4, 4, 6100)) << b.log();
  json = stats_of(on_b.client(), 24);
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;
  EXPECT_EQ(member_text(json, "A", "bootstrap"), a_addr) << json;
  EXPECT_EQ(member_stat(json, "A", "losses"), 1) << json;
  EXPECT_EQ(member_stat(json, "A", "index_blocks"), 4) << json;
  EXPECT_EQ(member_stat(json, "A", "fetches_requested"), 2) << json;
  // Into B's G2 over tcp; over sm from the new A's mapped pool straight into the engine.
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in") + stat_of(json, "cluster.fetch.direct_blocks"), 4) << json;
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
}

INSTANTIATE_TEST_SUITE_P(Tls, ClusterRestart, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace kvb::test
