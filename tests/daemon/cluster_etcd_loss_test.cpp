// etcd's own loss (docs/cluster.md, "etcd is lost"): a real one-member etcd
// started by the test (skipped with the reason when it is not installed),
// workers that know only etcd, over UCX_TLS=tcp and sm. etcd is SIGKILLed
// while they run, twice:
//  1. the workers log the outage once, report it in stats
//     (cluster.etcd.state "unreachable", unreachable_since), keep their
//     members and serve on (an onboard fetched from another worker is
//     byte-exact); a worker killed meanwhile is dropped by UCX alone.
//     etcd comes back with its data: the live workers' leases go on, the
//     dead worker's lease expires and its key is deleted; a new worker joins
//     them all through etcd.
//  2. etcd comes back empty (a fresh data dir): every worker sees its lease
//     unknown, takes a new one and puts its key again; a worker killed
//     during this outage is neither listed nor reachable and is forgotten;
//     a worker started afterwards finds the others through the fresh etcd.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "cluster_support.h"
#include "support/etcd_process.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

constexpr int kTtlS = 2;  // cluster.lease_ttl_s of every worker here

std::vector<std::string> etcd_worker(const std::string& name, const std::string& tls, const EtcdProcess& etcd) {
  return worker_args(name, tls, {"--cluster-etcd", etcd.endpoint(), "--cluster-lease-ttl-s", std::to_string(kTtlS)});
}

std::string etcd_state(const std::string& json) {
  const auto stats = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (stats.is_discarded() || !stats.contains("cluster") || !stats["cluster"].contains("etcd")) return "none";
  return stats["cluster"]["etcd"].value("state", std::string("none"));
}

std::string etcd_field(const std::string& json, const std::string& field) {
  const auto stats = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (stats.is_discarded() || !stats.contains("cluster") || !stats["cluster"].contains("etcd")) return {};
  const auto& e = stats["cluster"]["etcd"];
  return e.contains(field) ? (e[field].is_string() ? e[field].get<std::string>() : e[field].dump()) : std::string();
}

auto has(std::string_view text) {
  return [text](std::string_view line) { return line.find(text) != std::string_view::npos; };
}

class ClusterEtcdLoss : public ::testing::TestWithParam<std::string> {};

TEST_P(ClusterEtcdLoss, WorkersServeOnKeepTheirMembersAndRegisterAgainWhenEtcdComesBack) {
  if (!EtcdProcess::installed()) {
    GTEST_SKIP() << "etcd is not installed (" << EtcdProcess::kBinary
                 << ", Debian package etcd-server; scripts/install-deps.sh installs it)";
  }
  const std::string tls = GetParam();
  EtcdProcess etcd;
  ASSERT_TRUE(etcd.ready()) << etcd.log();
  DaemonProcess a(KVBLOCKD_PATH, etcd_worker("A", tls, etcd));
  ASSERT_TRUE(a.ready()) << a.log();
  auto b = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, etcd_worker("B", tls, etcd));
  ASSERT_TRUE(b->ready()) << b->log();
  DaemonProcess c(KVBLOCKD_PATH, etcd_worker("C", tls, etcd));
  ASSERT_TRUE(c.ready()) << c.log();
  for (const char* w : {"cluster: worker B joined", "cluster: worker C joined"})
    ASSERT_TRUE(a.wait_for_log(w, 20s)) << a.log();
  for (const char* w : {"cluster: worker A joined", "cluster: worker B joined"})
    ASSERT_TRUE(c.wait_for_log(w, 20s)) << c.log();

  TestEngine on_a(a.socket_path(), 8, /*salt=*/11);
  ASSERT_TRUE(on_a.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 4100));  // hashes 4100..4103
  ASSERT_TRUE(c.wait_for_log("A holds 4 blocks", 20s)) << c.log();
  TestEngine on_c(c.socket_path(), 16, /*salt=*/11);
  ASSERT_TRUE(on_c.attach());

  // 1. etcd is lost: one warning each, stats say so, nobody is dropped.
  etcd.kill();
  for (auto* w : {&a, b.get(), &c}) ASSERT_TRUE(w->wait_for_log(" unreachable (", 20s)) << w->log();
  auto json = stats_of(on_c.client(), 20);
  ASSERT_TRUE(c.alive()) << c.log();
  EXPECT_EQ(etcd_state(json), "unreachable") << json << c.log();
  EXPECT_FALSE(etcd_field(json, "unreachable_since").empty()) << json;
  EXPECT_EQ(etcd_field(json, "outages"), "1") << json;
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;
  EXPECT_EQ(member_text(json, "B", "state"), "joined") << json;

  // A worker dies during the outage: UCX tells the others, etcd cannot.
  b->kill();
  ASSERT_TRUE(c.wait_for_log("cluster: worker B lost", 20s)) << c.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B lost", 20s)) << a.log();

  // C serves on: a block of A's, fetched while etcd is away, byte-exact.
  ASSERT_TRUE(onboard_blocks(on_c, 21, 0, 4, 4100)) << c.log();
  json = stats_of(on_c.client(), 22);
  EXPECT_EQ(etcd_state(json), "unreachable") << json;
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;

  // etcd comes back with its data: A's and C's leases go on (etcd renews
  // every lease when it starts), B's expires within its TTL and its key is
  // deleted, which the others see.
  ASSERT_TRUE(etcd.restart(EtcdProcess::Data::kept)) << etcd.log();
  for (auto* w : {&a, &c}) ASSERT_TRUE(w->wait_for_log("answers again after", 20s)) << w->log();
  ASSERT_TRUE(c.wait_for_log("cluster: worker B's etcd key is gone", std::chrono::seconds(4 * kTtlS + 10))) << c.log();
  json = stats_of(on_c.client(), 23);
  EXPECT_EQ(etcd_state(json), "reachable") << json;
  EXPECT_EQ(etcd_field(json, "registered"), "true") << json;
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;
  // Still registered under the first lease: no "registering again".
  EXPECT_EQ(log_lines_with(c, "registered as /kvblockd/kvblockd/workers/C"), 1U) << c.log();
  // The membership converges: D, knowing only etcd, joins A and C.
  auto d = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, etcd_worker("D", tls, etcd));
  ASSERT_TRUE(d->ready()) << d->log();
  for (const char* w : {"cluster: worker A joined", "cluster: worker C joined"})
    ASSERT_TRUE(d->wait_for_log(w, 20s)) << d->log();
  ASSERT_TRUE(c.wait_for_log("cluster: worker D joined", 20s)) << c.log();
  // C knows D's address from etcd too (not only from D's own join).
  ASSERT_TRUE(c.wait_for_log("cluster: etcd names worker D at", 20s)) << c.log();

  // 2. etcd is lost again, D dies meanwhile, and etcd comes back empty.
  etcd.kill();
  for (auto* w : {&a, &c}) {
    ASSERT_TRUE(w->wait_for_log_lines(has(" unreachable ("), 2, 20s)) << w->log();
  }
  d->kill();
  ASSERT_TRUE(c.wait_for_log("cluster: worker D lost", 20s)) << c.log();
  ASSERT_TRUE(etcd.restart(EtcdProcess::Data::wiped)) << etcd.log();
  // Each live worker finds its lease unknown and registers again.
  for (auto* w : {&a, &c}) {
    ASSERT_TRUE(w->wait_for_log_lines(has("registered as /kvblockd/kvblockd/workers/"), 2, 20s)) << w->log();
  }
  // D is neither in the fresh etcd nor reachable: forgotten.
  ASSERT_TRUE(c.wait_for_log("cluster: worker D (", 20s)) << c.log();
  EXPECT_NE(c.log().find("is gone from etcd and unreachable: forgotten"), std::string::npos) << c.log();
  json = stats_of(on_c.client(), 24);
  EXPECT_EQ(etcd_state(json), "reachable") << json;
  EXPECT_EQ(etcd_field(json, "outages"), "2") << json;
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;  // A and C never dropped each other
  EXPECT_EQ(member_stat(json, "A", "losses"), 0) << json;
  // A worker started now finds A and C through the fresh etcd alone.
  DaemonProcess e(KVBLOCKD_PATH, etcd_worker("E", tls, etcd));
  ASSERT_TRUE(e.ready()) << e.log();
  for (const char* w : {"cluster: worker A joined", "cluster: worker C joined"})
    ASSERT_TRUE(e.wait_for_log(w, 20s)) << e.log();
  ASSERT_TRUE(e.wait_for_log("A holds 4 blocks", 20s)) << e.log();
  TestEngine on_e(e.socket_path(), 8, /*salt=*/11);
  ASSERT_TRUE(on_e.attach());
  auto lookup =
      on_e.client().call_body<proto::LookupReply>(RequestId{30}, proto::LookupRequest{false, {4100, 4101, 4102, 4103}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 4U);
  EXPECT_EQ(c.stop(SIGTERM), 0) << c.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

INSTANTIATE_TEST_SUITE_P(Tls, ClusterEtcdLoss, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace kvb::test
