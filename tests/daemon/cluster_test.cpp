// Workers as one cache (docs/cluster.md): real kvblockd processes on
// 127.0.0.1 joined by static peers, over UCX_TLS=tcp and sm. A client of
// daemon A offloads; a client of daemon B sees the blocks as tier 4 and
// onboards them byte for byte (B fetches them from A over UCX). A worker
// killed with SIGKILL while B waits on it ends B's onboard with
// err(peer lost: <worker>) and B keeps serving. Three workers: one onboard
// on C fetches from the two workers that hold its blocks. (Restarts and
// fetch storms: cluster_churn_test.cpp; etcd: cluster_etcd_test.cpp.)
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <map>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "cluster_support.h"
#include "support/loopback_http.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

class Cluster : public ::testing::TestWithParam<std::string> {};

// Two workers, static peers: B names A. A's client offloads 8 blocks; B's
// lookup reports them as tier 4, B's onboard brings every byte. Over tcp
// the fetched blocks stay cached on B (a second lookup is local G2); over
// sm A's pool is mapped on B, so by default (cluster.cache_same_host false)
// B's onboard read them in place and keeps no second copy on the host (a
// second lookup is tier 4 again).
TEST_P(Cluster, ABlockOffloadedOnOneWorkerIsOnboardedByteExactOnAnother) {
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {}));
  ASSERT_TRUE(a.ready()) << a.log();
  const std::string a_addr = bootstrap_of(a);
  ASSERT_FALSE(a_addr.empty()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", a_addr}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();

  TestEngine on_a(a.socket_path(), 64, /*salt=*/42);
  ASSERT_TRUE(on_a.attach()) << a.log();
  proto::OffloadRequest offload;
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    on_a.fill(blk, blk + 1);
    offload.items.push_back({BlockId{blk}, 7000 + blk});
  }
  auto accepted = on_a.client().call(RequestId{10}, offload);
  ASSERT_TRUE(accepted && accepted->accepted) << a.log();
  auto stored = on_a.client().notification_of(RequestId{10});
  ASSERT_TRUE(stored);
  ASSERT_EQ(stored->text, "10:ok");

  // B learns A's blocks through index events (debug line per batch applied).
  ASSERT_TRUE(b.wait_for_log("A holds 8 blocks", 20s)) << b.log();
  if (tls == "sm") {
    ASSERT_TRUE(b.wait_for_log("mapped read-only", 20s)) << b.log();  // same host: A's pool mapped
  }

  TestEngine on_b(b.socket_path(), 64, /*salt=*/42);
  ASSERT_TRUE(on_b.attach()) << b.log();
  std::vector<std::uint64_t> hashes;
  for (std::uint32_t blk = 0; blk < 8; ++blk) hashes.push_back(7000 + blk);
  hashes.push_back(99999);  // nobody holds it: the prefix stops there
  auto lookup = on_b.client().call_body<proto::LookupReply>(RequestId{20}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(lookup) << lookup.error().to_string();
  EXPECT_EQ(lookup->prefix_blocks, 8U);
  bool g4 = false;
  for (const auto& t : lookup->tiers) g4 = g4 || (t.tier == proto::WireTier::g4 && t.blocks == 8);
  EXPECT_TRUE(g4) << "tier 4 not reported";

  // A different tenant sees nothing of it.
  TestEngine other(b.socket_path(), 8, /*salt=*/43);
  ASSERT_TRUE(other.hello("other-tenant"));
  auto foreign = other.client().call_body<proto::LookupReply>(RequestId{21}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->prefix_blocks, 0U);

  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    on_b.zero(20 + blk);
    onboard.items.push_back({7000 + blk, BlockId{20 + blk}});
  }
  auto onboard_accepted = on_b.client().call(RequestId{22}, onboard);
  ASSERT_TRUE(onboard_accepted && onboard_accepted->accepted) << b.log();
  auto onboarded = on_b.client().notification_of(RequestId{22}, 20s);
  ASSERT_TRUE(onboarded) << b.log();
  ASSERT_EQ(onboarded->text, "22:ok") << b.log();
  // B's engine blocks 20.. hold exactly what A's engine wrote into 0..
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    on_b.fill(blk, blk + 1);  // the expected bytes, made on B's side
    EXPECT_TRUE(on_b.same(blk, 20 + blk)) << "block " << blk;
  }

  // tcp: fetched blocks stay cached, the same prefix is now local; sm:
  // read in place, still A's.
  const bool same_host = tls == "sm";
  auto again = on_b.client().call_body<proto::LookupReply>(RequestId{23}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->prefix_blocks, 8U);
  std::map<proto::WireTier, std::uint32_t> where;
  for (const auto& t : again->tiers) where[t.tier] += t.blocks;
  EXPECT_EQ(where[proto::WireTier::g2], same_host ? 0U : 8U);
  EXPECT_EQ(where[proto::WireTier::g4], same_host ? 8U : 0U);

  const auto json = stats_of(on_b.client(), 24);
  // A cluster worker evicts by prefix unless told otherwise (eviction_policy
  // auto), counting idleness in its half of the two workers' traffic.
  EXPECT_NE(json.find("\"eviction_policy\":\"prefix\""), std::string::npos) << json;
  EXPECT_EQ(stat_of(json, "cluster.traffic_shared_by"), 2) << json;
  EXPECT_EQ(stat_of(json, "eviction_use_credit"), 10'000) << json;  // 20,000 alone
  EXPECT_EQ(stat_of(stats_of(on_a.client(), 13), "eviction_use_credit"), 10'000);
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in"), same_host ? 0 : 8) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.direct_blocks"), same_host ? 8 : 0) << json;
  EXPECT_EQ(stat_of(json, "g2.registered"), same_host ? 0 : 8) << json;
  const auto json_a = stats_of(on_a.client(), 11);
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.blocks_out"), 8) << json_a;
  EXPECT_EQ(stat_of(json_a, "leased_blocks"), 0) << json_a;

  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

// How endpoints open (docs/cluster.md, "Connections"). Over tcp a worker
// listens for UCX endpoints beside its bootstrap listener and peers open
// theirs by IP:PORT (by worker address, UCX 1.13 gives a tcp endpoint with
// peer error handling no zero-copy lanes); over sm there is no listener and
// every endpoint opens by address. B is told `cluster.connect address`:
// its endpoint to A opens by address whatever the transport. C connects by
// default, and its onboard of A's blocks is byte-exact either way.
TEST_P(Cluster, EndpointsOpenByIpPortOverTcpAndByWorkerAddressOverSmOrWhenTold) {
  const std::string tls = GetParam();
  const bool by_port = tls == "tcp";
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {}));
  ASSERT_TRUE(a.ready()) << a.log();
  const std::string a_addr = bootstrap_of(a);
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", a_addr, "--cluster-connect", "address"}));
  DaemonProcess c(KVBLOCKD_PATH,
                  worker_args("C", tls, {"--cluster-peers", a_addr, "--cluster-map-same-host", "false"}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(c.ready()) << c.log();
  for (auto* w : {&b, &c}) ASSERT_TRUE(w->wait_for_log("cluster: worker A joined", 20s)) << w->log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker C joined", 20s)) << a.log();
  EXPECT_NE(a.log().find(by_port ? "endpoints by IP:PORT, UCX listener on port" : "endpoints by worker address"),
            std::string::npos)
      << a.log();

  TestEngine on_a(a.socket_path(), 16, /*salt=*/3);
  TestEngine on_c(c.socket_path(), 16, /*salt=*/3);
  ASSERT_TRUE(on_a.attach() && on_c.attach());
  const auto json_a = stats_of(on_a.client(), 1);
  EXPECT_EQ(stat_of(json_a, "cluster.ucx_listen_port") > 0, by_port) << json_a;
  EXPECT_EQ(member_text(json_a, "B", "endpoint"), "address") << json_a;
  EXPECT_EQ(member_text(json_a, "C", "endpoint"), by_port ? "ip_port" : "address") << json_a;
  const auto json_c = stats_of(on_c.client(), 2);
  EXPECT_EQ(member_text(json_c, "A", "endpoint"), by_port ? "ip_port" : "address") << json_c;
  TestEngine on_b(b.socket_path(), 16, /*salt=*/3);
  ASSERT_TRUE(on_b.attach());
  const auto json_b = stats_of(on_b.client(), 3);
  EXPECT_EQ(member_text(json_b, "A", "endpoint"), "address") << json_b;

  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 800));
  ASSERT_TRUE(c.wait_for_log("A holds 4 blocks", 20s)) << c.log();
  ASSERT_TRUE(onboard_blocks(on_c, 20, 0, 4, 800)) << c.log();  // byte-exact
  const auto after = stats_of(on_c.client(), 30);
  EXPECT_EQ(stat_of(after, "cluster.fetch.blocks_in"), 4) << after;
  EXPECT_GT(member_stat(after, "A", "fetch_us"), 0) << after;
  for (auto* w : {&c, &b, &a}) EXPECT_EQ(w->stop(SIGTERM), 0) << w->log();
}

// A peer whose announced UCX port does not answer (here a fault injection:
// A announces port 1, where nothing listens) is joined by worker address at
// the next attempt, and its blocks are onboarded from it as usual.
TEST(ClusterConnect, APeerWhoseUcxPortDoesNotAnswerIsJoinedByWorkerAddress) {
  ::setenv("KVB_INJECT_UCX_PORT", "1", 1);
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", "tcp", {}));
  ::unsetenv("KVB_INJECT_UCX_PORT");
  ASSERT_TRUE(a.ready()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", "tcp", {"--cluster-peers", bootstrap_of(a)}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("the next attempt opens it by worker address", 20s)) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  TestEngine on_a(a.socket_path(), 16, /*salt=*/4);
  TestEngine on_b(b.socket_path(), 16, /*salt=*/4);
  ASSERT_TRUE(on_a.attach() && on_b.attach());
  EXPECT_EQ(member_text(stats_of(on_b.client(), 1), "A", "endpoint"), "address");
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 900));
  ASSERT_TRUE(b.wait_for_log("A holds 4 blocks", 20s)) << b.log();
  ASSERT_TRUE(onboard_blocks(on_b, 20, 0, 4, 900)) << b.log();
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

// An onboard fetches its remote blocks in parts (cluster.fetch_part_bytes:
// here one block per part) and copies each part into the engine while the
// next one travels. Every byte arrives; each part is its own fetch. An
// onboard whose last part fails (a hash nobody holds) ends err(not_found)
// only after the earlier parts' copies ended, with no lease left behind.
TEST_P(Cluster, AnOnboardFetchesInPartsEachCopiedWhileTheNextTravels) {
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {}));
  ASSERT_TRUE(a.ready()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls,
                                             {"--cluster-peers", bootstrap_of(a), "--cluster-map-same-host", "false",
                                              "--cluster-cache-fetched", "false", "--cluster-fetch-part-bytes", "1"}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  TestEngine on_a(a.socket_path(), 16, /*salt=*/9);
  TestEngine on_b(b.socket_path(), 16, /*salt=*/9);
  ASSERT_TRUE(on_a.attach() && on_b.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 8, 6000));
  ASSERT_TRUE(b.wait_for_log("A holds 8 blocks", 20s)) << b.log();

  ASSERT_TRUE(onboard_blocks(on_b, 20, 0, 8, 6000)) << b.log();  // byte-exact
  auto json = stats_of(on_b.client(), 21);
  EXPECT_EQ(stat_of(json, "cluster.fetch.requests"), 8) << json;  // one fetch per part
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in"), 8) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;

  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 6; ++blk) onboard.items.push_back({6000 + blk, BlockId{8 + blk}});
  onboard.items.push_back({424242, BlockId{14}});  // nobody holds it: the last part fails
  ASSERT_TRUE(on_b.client().call(RequestId{22}, onboard));
  auto ended = on_b.client().notification_of(RequestId{22}, 20s);
  ASSERT_TRUE(ended) << b.log();
  EXPECT_EQ(ended->code, Errc::not_found) << ended->text;
  json = stats_of(on_b.client(), 23);
  EXPECT_EQ(stat_of(json, "cluster.fetch.requests"), 8 + 7) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

// A holds the blocks and is stopped (SIGSTOP) so B's fetch waits on it;
// then A is killed. B's onboard ends err(peer lost: A) well before its
// deadline, A's blocks leave B's index, and B keeps serving.
TEST_P(Cluster, AWorkerKilledMidFetchEndsTheOnboardWithPeerLostAndTheOtherKeepsServing) {
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {}));
  ASSERT_TRUE(a.ready()) << a.log();
  const std::string a_addr = bootstrap_of(a);
  ASSERT_FALSE(a_addr.empty()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", a_addr, "--request-timeout-ms", "60000"}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();

  TestEngine on_a(a.socket_path(), 16, /*salt=*/7);
  ASSERT_TRUE(on_a.attach());
  proto::OffloadRequest offload;
  for (std::uint32_t blk = 0; blk < 4; ++blk) {
    on_a.fill(blk, blk + 11);
    offload.items.push_back({BlockId{blk}, 500 + blk});
  }
  ASSERT_TRUE(on_a.client().call(RequestId{1}, offload));
  auto stored = on_a.client().notification_of(RequestId{1});
  ASSERT_TRUE(stored && stored->text == "1:ok");
  ASSERT_TRUE(b.wait_for_log("A holds 4 blocks", 20s)) << b.log();

  TestEngine on_b(b.socket_path(), 16, /*salt=*/7);
  ASSERT_TRUE(on_b.attach());
  // Two workers share the traffic: B's host pools count idleness at 1/2 of it.
  EXPECT_EQ(stat_of(stats_of(on_b.client(), 90), "cluster.traffic_shared_by"), 2) << b.log();
  a.signal(SIGSTOP);  // A gets the fetch but cannot answer it
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 4; ++blk) onboard.items.push_back({500 + blk, BlockId{blk}});
  auto accepted = on_b.client().call(RequestId{2}, onboard);
  ASSERT_TRUE(accepted && accepted->accepted);
  ASSERT_TRUE(b.wait_for_log("cluster: fetch of 4 blocks from A sent", 20s)) << b.log();
  a.kill();
  const auto killed_at = std::chrono::steady_clock::now();
  auto ended = on_b.client().notification_of(RequestId{2}, 30s);
  ASSERT_TRUE(ended) << b.log();
  EXPECT_EQ(ended->code, Errc::peer_lost) << ended->text;
  EXPECT_EQ(ended->text, "2:err(peer lost: A)") << b.log();
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, 30s);  // long before the 60 s deadline
  ASSERT_TRUE(b.wait_for_log("cluster: worker A lost", 20s)) << b.log();

  // B serves on: A's blocks are gone from its index, its own work goes on.
  auto lookup =
      on_b.client().call_body<proto::LookupReply>(RequestId{3}, proto::LookupRequest{false, {500, 501, 502, 503}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 0U);
  proto::OffloadRequest local;
  on_b.fill(5, 99);
  local.items.push_back({BlockId{5}, 900});
  ASSERT_TRUE(on_b.client().call(RequestId{4}, local));
  auto local_done = on_b.client().notification_of(RequestId{4});
  ASSERT_TRUE(local_done);
  EXPECT_EQ(local_done->text, "4:ok");
  const auto json = stats_of(on_b.client(), 5);
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(stat_of(json, "g2.registered"), 1) << json;              // nothing of the failed fetch was registered
  EXPECT_EQ(stat_of(json, "cluster.index_blocks"), 0) << json;       // A's entries left B's index
  EXPECT_EQ(stat_of(json, "cluster.traffic_shared_by"), 1) << json;  // B alone takes all of it now
  EXPECT_EQ(stat_of(json, "eviction_use_credit"), 20'000) << json;
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
}

// Three workers, static peers (B names A; C names A and B). A holds blocks
// 0-3 of a prefix, B blocks 4-7; C's lookup sees all 8 as tier 4 and its
// one onboard fetches from both holders, byte-exact. C's per-peer counters
// (stats and `kvblockctl cluster`) show one fetch and 4 blocks' bytes from
// each; A and B each served one.
TEST_P(Cluster, AnOnboardOnAThirdWorkerFetchesFromEveryHolder) {
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {}));
  ASSERT_TRUE(a.ready()) << a.log();
  const std::string a_addr = bootstrap_of(a);
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", a_addr}));
  ASSERT_TRUE(b.ready()) << b.log();
  const std::string b_addr = bootstrap_of(b);
  const std::uint16_t metrics_port = free_port();
  // C keeps what it fetches, same host or not (the default reads a
  // same-host holder's blocks in place).
  DaemonProcess c(KVBLOCKD_PATH, worker_args("C", tls,
                                             {"--cluster-peers", a_addr, "--cluster-peers", b_addr, "--metrics-port",
                                              std::to_string(metrics_port), "--cluster-cache-same-host", "true"}));
  ASSERT_TRUE(c.ready()) << c.log();
  for (const auto* w : {"A", "B"}) {
    ASSERT_TRUE(c.wait_for_log(std::string("cluster: worker ") + w + " joined", 20s)) << c.log();
  }
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();

  TestEngine on_a(a.socket_path(), 8, /*salt=*/5);
  TestEngine on_b(b.socket_path(), 8, /*salt=*/5);
  ASSERT_TRUE(on_a.attach() && on_b.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 3000));
  ASSERT_TRUE(offload_blocks(on_b, 10, 4, 4, 3000));
  ASSERT_TRUE(c.wait_for_log("A holds 4 blocks", 20s)) << c.log();
  ASSERT_TRUE(c.wait_for_log("B holds 4 blocks", 20s)) << c.log();

  TestEngine on_c(c.socket_path(), 16, /*salt=*/5);
  ASSERT_TRUE(on_c.attach());
  std::vector<std::uint64_t> hashes;
  for (std::uint64_t blk = 0; blk < 8; ++blk) hashes.push_back(3000 + blk);

  // A router's locate on C: C holds nothing of the prefix, A its first 4
  // blocks, B none of it from the start (B's blocks 4-7 begin a prefix of
  // their own); another tenant sees nothing anywhere.
  using Prefixes = std::vector<proto::WorkerPrefix>;
  // This worker first, the members in the order it admitted them.
  auto by_name = [](Prefixes p) {
    if (p.size() > 1) {
      std::sort(p.begin() + 1, p.end(), [](const auto& x, const auto& y) { return x.worker < y.worker; });
    }
    return p;
  };
  auto located = on_c.client().call_body<proto::LocateReply>(RequestId{18}, proto::LocateRequest{hashes});
  ASSERT_TRUE(located);
  EXPECT_EQ(by_name(located->workers), (Prefixes{{"C", 0}, {"A", 4}, {"B", 0}}));
  located = on_c.client().call_body<proto::LocateReply>(
      RequestId{19}, proto::LocateRequest{std::vector<std::uint64_t>(hashes.begin() + 4, hashes.end())});
  ASSERT_TRUE(located);
  EXPECT_EQ(by_name(located->workers), (Prefixes{{"C", 0}, {"A", 0}, {"B", 4}}));
  TestEngine stranger(c.socket_path(), 4, /*salt=*/6);
  ASSERT_TRUE(stranger.attach());
  located = stranger.client().call_body<proto::LocateReply>(RequestId{17}, proto::LocateRequest{hashes});
  ASSERT_TRUE(located);
  EXPECT_EQ(by_name(located->workers), (Prefixes{{"C", 0}, {"A", 0}, {"B", 0}}));
  auto lookup = on_c.client().call_body<proto::LookupReply>(RequestId{20}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 8U);
  for (const auto& t : lookup->tiers) {  // every block is remote: nothing local, all 8 in tier 4
    EXPECT_EQ(t.blocks, t.tier == proto::WireTier::g4 ? 8U : 0U) << "tier " << static_cast<int>(t.tier);
  }

  ASSERT_TRUE(onboard_blocks(on_c, 21, 0, 8, 3000)) << c.log();  // byte-exact: what A's or B's engine wrote

  // Fetched blocks stay cached on C: it now holds the whole prefix itself.
  located = on_c.client().call_body<proto::LocateReply>(RequestId{24}, proto::LocateRequest{hashes});
  ASSERT_TRUE(located);
  EXPECT_EQ(by_name(located->workers), (Prefixes{{"C", 8}, {"A", 4}, {"B", 0}}));

  const auto json = stats_of(on_c.client(), 22);
  const proto::WireLayout l = small_layout();  // dtype u8: one byte per element
  const long long block_bytes = 1LL * l.num_layers * l.outer_dim * l.page_size * l.inner_dim;
  for (const std::string w : {"A", "B"}) {
    EXPECT_EQ(member_stat(json, w, "fetches_requested"), 1) << w << json;
    EXPECT_EQ(member_stat(json, w, "fetch_errors"), 0) << w << json;
    EXPECT_EQ(member_stat(json, w, "index_blocks"), 4) << w << json;
    EXPECT_EQ(member_stat(json, w, "bytes_in"), 4 * block_bytes) << w << json;
  }
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in"), 8) << json;
  EXPECT_EQ(stat_of(json, "cluster.traffic_shared_by"), 3) << json;  // C, A and B
  EXPECT_EQ(member_stat(stats_of(on_a.client(), 23), "C", "fetches_served"), 1);
  EXPECT_EQ(member_stat(stats_of(on_b.client(), 23), "C", "fetches_served"), 1);

  // The operator sees the same per-peer figures: Prometheus and kvblockctl.
  const std::string metrics = http_get(metrics_port, "/metrics");
  for (const std::string w : {"A", "B"}) {
    const std::string of = "{worker=\"" + w + "\"} ";
    EXPECT_NE(metrics.find("kvblockd_cluster_peer_bytes_in_total" + of + std::to_string(4 * block_bytes) + "\n"),
              std::string::npos)
        << metrics;
    EXPECT_NE(metrics.find("kvblockd_cluster_peer_fetches_total" + of + "1\n"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("kvblockd_cluster_peer_index_blocks" + of + "4\n"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("kvblockd_cluster_peer_up" + of + "1\n"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("kvblockd_cluster_peer_fetch_seconds_total" + of), std::string::npos) << metrics;
  }
  const std::vector<std::string> shape = kvblockctl_shape_args();
  std::vector<std::string> argv{KVBLOCKCTL_PATH, "--socket", c.socket_path(), "--salt", "5",    "locate", "3000",
                                "3001",          "3002",     "3003",          "3004",   "3005", "3006",   "3007"};
  argv.insert(argv.end(), shape.begin(), shape.end());
  auto where = run_program(argv, 20s);
  ASSERT_TRUE(where && WIFEXITED(where->status) && WEXITSTATUS(where->status) == 0) << (where ? where->out : "");
  for (const char* row : {"\\nC \\(this daemon\\) +8\\n", "\\nA +4\\n", "\\nB +0\\n"})
    EXPECT_TRUE(std::regex_search(where->out, std::regex(row))) << row << where->out;
  auto table = run_program({KVBLOCKCTL_PATH, "--socket", c.socket_path(), "cluster"}, 20s);
  ASSERT_TRUE(table && WIFEXITED(table->status) && WEXITSTATUS(table->status) == 0);
  EXPECT_NE(table->out.find("worker C of cluster 'kvblockd'"), std::string::npos) << table->out;
  EXPECT_NE(
      table->out.find("\neviction prefix: credit of 6667 uses per doubling of uses, traffic shared by 3 worker(s)\n"),
      std::string::npos)
      << table->out;
  for (const std::string w : {"A", "B"}) {
    const std::regex row("\\n" + w + " +\\S+ +joined +" + (tls == "tcp" ? "ip_port" : "address") + " +4 +" +
                         std::to_string(member_stat(json, w, "bytes_in")) + " +0 +1 +0 +0 +\\S+ +[0-9.]+\\n");
    EXPECT_TRUE(std::regex_search(table->out, row)) << table->out;
  }
}

// A conversation whose turns were served by different workers leaves its
// prefix alternating between them: A holds blocks 0-3 and 8-9, B blocks 4-7.
// On B the prefix is all ten blocks (it used to end at the first block B
// held itself, after A's: 4), and the onboard fetches A's six and reads
// B's own four.
TEST_P(Cluster, APrefixThatAlternatesBetweenWorkersIsMatchedAndOnboardedWhole) {
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {}));
  ASSERT_TRUE(a.ready()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", bootstrap_of(a)}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();

  TestEngine on_a(a.socket_path(), 10, /*salt=*/5);
  TestEngine on_b(b.socket_path(), 18, /*salt=*/5);
  ASSERT_TRUE(on_a.attach() && on_b.attach());
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 3000));
  ASSERT_TRUE(offload_blocks(on_b, 10, 4, 4, 3000));
  ASSERT_TRUE(offload_blocks(on_a, 11, 8, 2, 3000));
  ASSERT_TRUE(b.wait_for_log("A holds 6 blocks", 20s)) << b.log();

  std::vector<std::uint64_t> hashes;
  for (std::uint64_t blk = 0; blk < 12; ++blk) hashes.push_back(3000 + blk);  // 10 and 11: held nowhere
  auto lookup = on_b.client().call_body<proto::LookupReply>(RequestId{20}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 10U);
  std::map<proto::WireTier, std::uint32_t> tiers;
  for (const auto& t : lookup->tiers) tiers[t.tier] += t.blocks;
  EXPECT_EQ(tiers[proto::WireTier::g4], 6U);  // A's
  EXPECT_EQ(tiers[proto::WireTier::g2], 4U);  // B's own, after A's first four

  ASSERT_TRUE(onboard_blocks(on_b, 21, 0, 10, 3000)) << b.log();  // byte-exact
  const auto json = stats_of(on_b.client(), 22);
  // B's own four were not fetched (A's six: into B's G2 over tcp, read in place over sm).
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in") + stat_of(json, "cluster.fetch.direct_blocks"), 6) << json;
  EXPECT_EQ(member_stat(json, "A", "fetch_errors"), 0) << json;
}

// With a cluster on, an idle layout is reclaimed for a new shape as on a
// lone daemon, and withdrawn from the peers first: its blocks leave their
// index (B stops reporting them as tier 4) and they forget its UCX
// registration; the new shape's pool is announced and fetched from.
TEST_P(Cluster, AnIdleLayoutIsWithdrawnFromPeersAndReclaimedForANewShape) {
  const std::string tls = GetParam();
  DaemonProcess a(KVBLOCKD_PATH, worker_args("A", tls, {"--max-layouts", "1"}));
  ASSERT_TRUE(a.ready()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", bootstrap_of(a)}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();

  const std::vector<std::uint64_t> first_hashes{8000, 8001, 8002, 8003};
  TestEngine on_b(b.socket_path(), 16, /*salt=*/42);
  ASSERT_TRUE(on_b.attach()) << b.log();
  {
    TestEngine on_a(a.socket_path(), 16, /*salt=*/42);
    ASSERT_TRUE(on_a.attach()) << a.log();
    ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 8000)) << a.log();
    ASSERT_TRUE(b.wait_for_log("A holds 4 blocks", 20s)) << b.log();
    auto seen = on_b.client().call_body<proto::LookupReply>(RequestId{20}, proto::LookupRequest{false, first_hashes});
    ASSERT_TRUE(seen);
    ASSERT_EQ(seen->prefix_blocks, 4U);  // as tier 4: A holds them
    ASSERT_TRUE(on_a.client().call(RequestId{11}, proto::ByeRequest{}));
  }

  // A new shape on A: the only slot's pool is idle, so it is reclaimed
  // (before this, refused "not reclaimed while the cluster is on").
  const proto::WireLayout second_shape{2, 2, 16, 64, 0, 256};
  TestEngine on_a2(a.socket_path(), 16, /*salt=*/42, second_shape);
  ASSERT_TRUE(on_a2.attach()) << a.log();
  ASSERT_TRUE(a.wait_for_log("withdrawn from peers (4 blocks left the index)", 20s)) << a.log();
  ASSERT_TRUE(b.wait_for_log("A holds 0 blocks", 20s)) << b.log();
  auto gone = on_b.client().call_body<proto::LookupReply>(RequestId{21}, proto::LookupRequest{false, first_hashes});
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->prefix_blocks, 0U) << "B still reports blocks of A's reclaimed pool";
  auto json = stats_of(on_a2.client(), 12);
  EXPECT_EQ(stat_of(json, "layouts_reclaimed"), 1) << json;

  // The new pool reached B: its blocks are fetched byte-exact.
  const std::size_t seen = log_lines_with(b, "A holds 4 blocks");
  ASSERT_TRUE(offload_blocks(on_a2, 13, 0, 4, 8100)) << a.log();
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) { return line.find("A holds 4 blocks") != std::string_view::npos; }, seen + 1, 20s))
      << b.log();
  TestEngine on_b2(b.socket_path(), 16, /*salt=*/42, second_shape);
  ASSERT_TRUE(on_b2.attach()) << b.log();
  ASSERT_TRUE(onboard_blocks(on_b2, 22, 0, 4, 8100)) << b.log();
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

INSTANTIATE_TEST_SUITE_P(Tls, Cluster, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace kvb::test
