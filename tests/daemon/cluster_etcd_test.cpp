// Membership through a real etcd (docs/cluster.md): the test starts a
// one-member etcd on 127.0.0.1 (Debian's etcd-server; skipped with the
// reason when it is not installed) and three kvblockd workers that know
// only etcd's endpoint, no static peers. They find each other through
// their keys under /kvblockd/kvblockd/workers/; a block offloaded on A is
// onboarded byte-exact on C. A worker that stops renewing its lease
// (SIGSTOP: its process and its UCX endpoints stay up, so only etcd can
// tell) is dropped by the others once etcd expires its lease, with its
// index entries; a fetch waiting on it ends err(peer lost) and its blocks
// are held back (it may resume and write). A worker killed with SIGKILL is
// dropped too.
#include <signal.h>

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "cluster_support.h"
#include "support/etcd_process.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kTtlS = 2;  // cluster.lease_ttl_s of every worker here

std::vector<std::string> etcd_worker(const std::string& name, const EtcdProcess& etcd) {
  return worker_args(name, "tcp", {"--cluster-etcd", etcd.endpoint(), "--cluster-lease-ttl-s", std::to_string(kTtlS)});
}

TEST(ClusterEtcd, WorkersJoinThroughEtcdShareBlocksAndOneThatStopsRenewingIsDroppedWithinItsTtl) {
  if (!EtcdProcess::installed()) {
    GTEST_SKIP() << "etcd is not installed (" << EtcdProcess::kBinary
                 << ", Debian package etcd-server; scripts/install-deps.sh installs it)";
  }
  EtcdProcess etcd;
  ASSERT_TRUE(etcd.ready()) << etcd.log();

  DaemonProcess a(KVBLOCKD_PATH, etcd_worker("A", etcd));
  ASSERT_TRUE(a.ready()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, etcd_worker("B", etcd));
  ASSERT_TRUE(b.ready()) << b.log();
  DaemonProcess c(KVBLOCKD_PATH, etcd_worker("C", etcd));
  ASSERT_TRUE(c.ready()) << c.log();
  for (auto* w : {&a, &b, &c})
    ASSERT_TRUE(w->wait_for_log("registered as /kvblockd/kvblockd/workers/", 20s)) << w->log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker C joined", 20s)) << a.log();
  ASSERT_TRUE(c.wait_for_log("cluster: worker A joined", 20s)) << c.log();
  ASSERT_TRUE(c.wait_for_log("cluster: worker B joined", 20s)) << c.log();

  TestEngine on_a(a.socket_path(), 8, /*salt=*/9);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 8, 4000));
  ASSERT_TRUE(c.wait_for_log("A holds 8 blocks", 20s)) << c.log();

  TestEngine on_c(c.socket_path(), 16, /*salt=*/9);
  ASSERT_TRUE(on_c.attach());
  ASSERT_TRUE(onboard_blocks(on_c, 20, 0, 8, 4000)) << c.log();
  auto json = stats_of(on_c.client(), 21);
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in"), 8) << json;
  EXPECT_EQ(member_stat(json, "A", "fetches_requested"), 1) << json;

  // B holds blocks too, so its loss must empty index entries.
  TestEngine on_b(b.socket_path(), 8, /*salt=*/9);
  ASSERT_TRUE(on_b.attach());
  ASSERT_TRUE(offload_blocks(on_b, 10, 0, 2, 5000));
  ASSERT_TRUE(c.wait_for_log("B holds 2 blocks", 20s)) << c.log();

  // B hangs: it stops renewing; UCX sees nothing wrong (the process and its
  // sockets are up). etcd expires the lease within the TTL and the others
  // drop B when they see its key deleted.
  // C's onboard of B's blocks is in flight meanwhile: it ends
  // err(peer lost: B), and C holds the blocks B was asked to fill back
  // (quarantined: B's process may resume and write into them).
  b.signal(SIGSTOP);
  const auto stopped_at = Clock::now();
  proto::OnboardRequest from_b;
  from_b.items.push_back({5000, BlockId{0}});
  from_b.items.push_back({5001, BlockId{1}});
  ASSERT_TRUE(on_c.client().call(RequestId{30}, from_b));
  ASSERT_TRUE(c.wait_for_log("cluster: fetch of 2 blocks from B sent", 20s)) << c.log();
  ASSERT_TRUE(c.wait_for_log("cluster: worker B lost", std::chrono::seconds(4 * kTtlS + 10))) << c.log();
  const auto dropped_after = std::chrono::duration<double>(Clock::now() - stopped_at).count();
  auto lost = on_c.client().notification_of(RequestId{30}, 20s);
  ASSERT_TRUE(lost) << c.log();
  EXPECT_EQ(lost->text, "30:err(peer lost: B)") << c.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B lost", 20s)) << a.log();
  EXPECT_NE(c.log().find("worker B left the cluster: its etcd lease ended"), std::string::npos) << c.log();
  std::printf("B (SIGSTOP) dropped by C after %.2f s (lease TTL %d s)\n", dropped_after, kTtlS);
  json = stats_of(on_c.client(), 22);
  EXPECT_EQ(member_stat(json, "B", "index_blocks"), 0) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.quarantined"), 2) << json;
  auto lookup = on_c.client().call_body<proto::LookupReply>(RequestId{23}, proto::LookupRequest{false, {5000, 5001}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 0U);
  b.kill();

  // A is killed outright: C drops it (and etcd its key, within the TTL).
  a.kill();
  ASSERT_TRUE(c.wait_for_log("cluster: worker A lost", std::chrono::seconds(4 * kTtlS + 10))) << c.log();
  json = stats_of(on_c.client(), 24);
  EXPECT_EQ(stat_of(json, "cluster.index_blocks"), 0) << json;
  // C serves on: the fetched blocks stayed cached here.
  auto local =
      on_c.client().call_body<proto::LookupReply>(RequestId{25}, proto::LookupRequest{false, {4000, 4001, 4002, 4003}});
  ASSERT_TRUE(local);
  EXPECT_EQ(local->prefix_blocks, 4U);
  EXPECT_EQ(c.stop(SIGTERM), 0) << c.log();
}

}  // namespace
}  // namespace kvb::test
