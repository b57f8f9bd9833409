// Two hosts in network namespaces (docs/cluster.md, "Tested"): the test
// (as root) makes namespaces A and B joined by a veth pair (10.213.N.1/24
// and .2/24, loopback up in each), and runs one kvblockd worker in each
// (`ip netns exec NS kvblockd ...`, UCX_TLS=tcp: shared memory cannot cross
// hosts). The test's engines reach the daemons through their Unix sockets,
// which are paths and work across network namespaces. A offloads, B's
// lookup sees tier 4 and B's onboard is byte-exact over the veth. The link
// is then taken down under B's onboards (one sent after the link went
// down, one racing it): each gets exactly one notification within its
// deadline (ok, err(peer lost: A) or err(timeout ...)). With the link up
// again B fetches from A byte-exact. Over the whole test every onboard got
// exactly one notification (counted per request id). Skipped with the
// reason when not root or when `ip netns` fails; the namespaces are
// removed whatever happens (and stale ones of killed runs first).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "cluster_support.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kIp = "/usr/sbin/ip";
constexpr int kOnboardTimeoutMs = 3000;  // B's request_timeout_ms

/// `ip ARGS...`, bounded; "" on success, else what it said.
std::string ip(std::vector<std::string> args) {
  args.insert(args.begin(), kIp);
  auto result = run_program(args, 10s);
  if (!result) return "ip did not finish";
  if (WIFEXITED(result->status) && WEXITSTATUS(result->status) == 0) return {};
  std::string cmd;
  for (const auto& a : args) cmd += a + " ";
  return cmd + "failed: " + result->out;
}

/// Two network namespaces joined by a veth pair; both removed (with the
/// pair) by the destructor. Names carry the test's pid: "kvt<pid>n<k>a".
class NamespacePair {
 public:
  NamespacePair() {
    remove_stale();
    static int instances = 0;
    const std::string tag = "kvt" + std::to_string(::getpid()) + "n" + std::to_string(instances++ % 100);
    ns_a = tag + "a";
    ns_b = tag + "b";
    veth_a = tag + "A";  // at most 15 characters: kvt + 7 digits + n + 2 + 1
    veth_b = tag + "B";
    const std::string net = "10.213." + std::to_string(::getpid() % 250);
    addr_a = net + ".1";
    addr_b = net + ".2";
    for (auto step :
         std::vector<std::vector<std::string>>{{"netns", "add", ns_a},
                                               {"netns", "add", ns_b},
                                               {"link", "add", veth_a, "type", "veth", "peer", "name", veth_b},
                                               {"link", "set", veth_a, "netns", ns_a},
                                               {"link", "set", veth_b, "netns", ns_b},
                                               {"-n", ns_a, "addr", "add", addr_a + "/24", "dev", veth_a},
                                               {"-n", ns_b, "addr", "add", addr_b + "/24", "dev", veth_b},
                                               {"-n", ns_a, "link", "set", "lo", "up"},
                                               {"-n", ns_b, "link", "set", "lo", "up"},
                                               {"-n", ns_a, "link", "set", veth_a, "up"},
                                               {"-n", ns_b, "link", "set", veth_b, "up"}}) {
      error = ip(step);
      if (!error.empty()) return;
    }
  }
  ~NamespacePair() {
    (void)ip({"netns", "del", ns_a});  // takes veth_a, and so its peer, with it
    (void)ip({"netns", "del", ns_b});
    (void)ip({"link", "del", veth_a});  // when a step failed before the move
  }
  NamespacePair(const NamespacePair&) = delete;
  NamespacePair& operator=(const NamespacePair&) = delete;

  /// Takes A's end of the link down or up.
  std::string link_a(bool up) { return ip({"-n", ns_a, "link", "set", veth_a, up ? "up" : "down"}); }

  std::string error;  // empty: ready
  std::string ns_a, ns_b, veth_a, veth_b, addr_a, addr_b;

 private:
  // Namespaces of runs that were killed before their destructor ran.
  static void remove_stale() {
    auto listed = run_program({kIp, "netns", "list"}, 10s);
    if (!listed) return;
    std::size_t start = 0;
    for (std::size_t nl; (nl = listed->out.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string name = listed->out.substr(start, listed->out.find_first_of(" \n", start) - start);
      if (!name.starts_with("kvt")) continue;
      const int pid = std::atoi(name.c_str() + 3);
      if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) (void)ip({"netns", "del", name});
    }
  }
};

bool ended_once_acceptably(const std::string& text, std::uint64_t id) {
  const std::string p = std::to_string(id) + ":";
  return text == p + "ok" || text == p + "err(peer lost: A)" || text.starts_with(p + "err(timeout");
}

TEST(ClusterNetns, WorkersOnTwoHostsShareBlocksAndALinkDownEndsEachOnboardExactlyOnce) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces and a veth pair";
  NamespacePair net;
  if (!net.error.empty()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error;

  DaemonProcess a(DaemonProcess::Launcher{{kIp, "netns", "exec", net.ns_a}}, KVBLOCKD_PATH,
                  worker_args_on("A", "tcp", net.addr_a + ":0", {}));
  ASSERT_TRUE(a.ready()) << a.log();
  const std::string a_addr = bootstrap_of(a);
  ASSERT_TRUE(a_addr.starts_with(net.addr_a + ":")) << a.log();
  DaemonProcess b(
      DaemonProcess::Launcher{{kIp, "netns", "exec", net.ns_b}}, KVBLOCKD_PATH,
      worker_args_on("B", "tcp", net.addr_b + ":0",
                     {"--cluster-peers", a_addr, "--request-timeout-ms", std::to_string(kOnboardTimeoutMs)}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  ASSERT_TRUE(a.wait_for_log("cluster: worker B joined", 20s)) << a.log();

  TestEngine on_a(a.socket_path(), 8, /*salt=*/13);
  ASSERT_TRUE(on_a.attach()) << a.log();
  ASSERT_TRUE(offload_blocks(on_a, 10, 0, 8, 9000));  // hashes 9000..9007
  ASSERT_TRUE(b.wait_for_log("A holds 8 blocks", 20s)) << b.log();

  TestEngine on_b(b.socket_path(), 64, /*salt=*/13);
  ASSERT_TRUE(on_b.attach()) << b.log();
  auto lookup = on_b.client().call_body<proto::LookupReply>(
      RequestId{20}, proto::LookupRequest{false, {9000, 9001, 9002, 9003, 9004, 9005, 9006, 9007}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 8U);
  bool g4 = false;
  for (const auto& t : lookup->tiers) g4 = g4 || (t.tier == proto::WireTier::g4 && t.blocks == 8);
  EXPECT_TRUE(g4) << "tier 4 not reported";

  NotificationLedger ledger(on_b.client());
  std::vector<std::uint64_t> onboards;
  std::uint32_t next_dst = 16;  // B's engine blocks 16.. receive
  // Onboards hashes [first, first + n) into fresh engine blocks; their ids.
  auto onboard = [&](std::uint64_t id, std::uint32_t first, std::uint32_t n) {
    proto::OnboardRequest request;
    for (std::uint32_t blk = first; blk < first + n; ++blk) {
      on_b.zero(next_dst);
      request.items.push_back({9000 + blk, BlockId{next_dst++}});
    }
    onboards.push_back(id);
    return on_b.client().send(RequestId{id}, request);
  };
  auto byte_exact = [&](std::uint32_t first, std::uint32_t n) {
    for (std::uint32_t k = 0; k < n; ++k) {
      on_b.fill(first + k, first + k + 1);
      if (!on_b.same(first + k, next_dst - n + k)) return false;
    }
    return true;
  };
  const auto within_deadline = std::chrono::milliseconds(kOnboardTimeoutMs) + 10s;

  // Across the veth, byte-exact.
  ASSERT_TRUE(onboard(40, 0, 4));
  auto first = ledger.wait(40, within_deadline);
  ASSERT_TRUE(first) << b.log();
  ASSERT_EQ(first->text, "40:ok") << b.log();
  EXPECT_TRUE(byte_exact(0, 4));

  // The link goes down, then B onboards: one notification, in time.
  ASSERT_EQ(net.link_a(false), "");
  ASSERT_TRUE(onboard(41, 4, 2));
  auto down = ledger.wait(41, within_deadline);
  ASSERT_TRUE(down) << "no notification within the deadline\n" << b.log();
  EXPECT_TRUE(ended_once_acceptably(down->text, 41)) << down->text;
  ASSERT_EQ(net.link_a(true), "");

  // The link goes down while an onboard is on its way: ok or an error, once.
  ASSERT_TRUE(onboard(42, 4, 2));
  ASSERT_EQ(net.link_a(false), "");
  auto raced = ledger.wait(42, within_deadline);
  ASSERT_TRUE(raced) << "no notification within the deadline\n" << b.log();
  EXPECT_TRUE(ended_once_acceptably(raced->text, 42)) << raced->text;
  ASSERT_EQ(net.link_a(true), "");

  // With the link up, B fetches from A again. TCP retransmits on its own
  // backoff (up to seconds after a few seconds down) and a peer UCX gave up
  // on is rejoined by B's retries: a bounded number of attempts, each
  // ending exactly once.
  std::string last;
  bool fetched = false;
  for (std::uint64_t id = 50; id < 70 && !fetched; ++id) {
    const std::size_t snapshots = log_lines_with(b, "A holds 8 blocks");
    ASSERT_TRUE(onboard(id, 6, 2));
    auto n = ledger.wait(id, within_deadline);
    ASSERT_TRUE(n) << "no notification within the deadline\n" << b.log();
    last = n->text;
    EXPECT_TRUE(ended_once_acceptably(last, id) || last.find("not_found") != std::string::npos) << last;
    fetched = last == std::to_string(id) + ":ok";
    if (!fetched && last.find("not_found") != std::string::npos) {
      // A was dropped and is rejoining: its snapshot comes with the join.
      (void)b.wait_for_log_lines(
          [](std::string_view line) { return line.find("A holds 8 blocks") != std::string_view::npos; }, snapshots + 1,
          20s);
    }
  }
  ASSERT_TRUE(fetched) << last << "\n" << b.log();
  EXPECT_TRUE(byte_exact(6, 2));

  ASSERT_TRUE(ledger.settle(99));
  EXPECT_EQ(ledger.not_exactly_once(onboards), "");
  const auto json = stats_of(on_b.client(), 100);
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;
  std::printf(
      "link down: onboard 41 -> %s, racing onboard 42 -> %s; B lost A %lld times; %zu onboards, each "
      "notified once\n",
      down->text.c_str(), raced->text.c_str(), member_stat(json, "A", "losses"), onboards.size());
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

// A dies behind a down link (its kernel's resets never reach B, so B still
// holds a stale endpoint to it and shows it joined), then a new A starts on
// the same address once the link is up again. B must not keep the stale
// member: its next packets on the old connection meet the new host's
// kernel, which resets it; B drops the old A and its retries of the static
// peer join the new one, whose blocks it then fetches byte-exact.
TEST(ClusterNetns, AWorkerRestartedBehindADownLinkReplacesItsStaleEndpointOnThePeer) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces and a veth pair";
  NamespacePair net;
  if (!net.error.empty()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error;
  const std::string a_addr = net.addr_a + ":7400";  // the namespace is ours: the port is free
  const DaemonProcess::Launcher in_a{{kIp, "netns", "exec", net.ns_a}};
  auto a = std::make_unique<DaemonProcess>(in_a, KVBLOCKD_PATH, worker_args_on("A", "tcp", a_addr, {}));
  ASSERT_TRUE(a->ready()) << a->log();
  DaemonProcess b(DaemonProcess::Launcher{{kIp, "netns", "exec", net.ns_b}}, KVBLOCKD_PATH,
                  worker_args_on("B", "tcp", net.addr_b + ":0", {"--cluster-peers", a_addr}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();
  {
    TestEngine on_a(a->socket_path(), 8, /*salt=*/17);
    ASSERT_TRUE(on_a.attach()) << a->log();
    ASSERT_TRUE(offload_blocks(on_a, 10, 0, 4, 9100));  // hashes 9100..9103
    ASSERT_TRUE(b.wait_for_log("A holds 4 blocks", 20s)) << b.log();
  }
  TestEngine on_b(b.socket_path(), 16, /*salt=*/17);
  ASSERT_TRUE(on_b.attach()) << b.log();

  ASSERT_EQ(net.link_a(false), "");
  a->kill();
  auto json = stats_of(on_b.client(), 20);
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;  // B cannot know yet
  ASSERT_EQ(net.link_a(true), "");
  // UCX lists its tcp devices when it starts: the new A starts with the link up.
  a = std::make_unique<DaemonProcess>(in_a, KVBLOCKD_PATH, worker_args_on("A", "tcp", a_addr, {}));
  ASSERT_TRUE(a->ready()) << a->log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A lost", 60s)) << b.log();
  {
    const std::string log = b.log();
    const auto at = log.find("cluster: worker A lost");
    std::printf("B: %s\n", log.substr(at, log.find('\n', at) - at).c_str());
  }
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) { return line.find("cluster: worker A joined") != std::string_view::npos; }, 2, 20s))
      << b.log();
  ASSERT_TRUE(a->wait_for_log("cluster: worker B joined", 20s)) << a->log();

  TestEngine on_a(a->socket_path(), 8, /*salt=*/17);
  ASSERT_TRUE(on_a.attach()) << a->log();
  const std::size_t seen = log_lines_with(b, "A holds 4 blocks");
  ASSERT_TRUE(offload_blocks(on_a, 10, 4, 4, 9100));  // hashes 9104..9107
  ASSERT_TRUE(b.wait_for_log_lines(
      [](std::string_view line) { return line.find("A holds 4 blocks") != std::string_view::npos; }, seen + 1, 20s))
      << b.log();
  auto old = on_b.client().call_body<proto::LookupReply>(RequestId{21}, proto::LookupRequest{false, {9100, 9101}});
  ASSERT_TRUE(old);
  EXPECT_EQ(old->prefix_blocks, 0U);  // the old A's blocks went with it
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 4; blk < 8; ++blk) {
    on_b.zero(8 + blk);
    onboard.items.push_back({9100 + blk, BlockId{8 + blk}});
  }
  NotificationLedger ledger(on_b.client());
  ASSERT_TRUE(on_b.client().send(RequestId{22}, onboard));
  auto onboarded = ledger.wait(22, 20s);
  ASSERT_TRUE(onboarded) << b.log();
  ASSERT_EQ(onboarded->text, "22:ok") << b.log();
  for (std::uint32_t blk = 4; blk < 8; ++blk) {
    on_b.fill(blk, blk + 1);
    EXPECT_TRUE(on_b.same(blk, 8 + blk)) << "block " << blk;
  }
  ASSERT_TRUE(ledger.settle(23));
  EXPECT_EQ(ledger.not_exactly_once({22}), "");
  json = stats_of(on_b.client(), 24);
  EXPECT_EQ(member_text(json, "A", "state"), "joined") << json;
  EXPECT_EQ(member_stat(json, "A", "losses"), 1) << json;
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
}

}  // namespace
}  // namespace kvb::test
