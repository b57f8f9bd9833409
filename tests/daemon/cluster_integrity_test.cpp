// Workers as one cache never pass on a corrupt block (docs/cluster.md,
// "Integrity"): with integrity.check_host_blocks a holder sends, with every
// fetched or pinned block, the XXH3-64 it took when the block entered its
// G2, and the requester checks the bytes it got (or, reading in place,
// the pinned bytes) against it. Real kvblockd processes over UCX_TLS=tcp
// and sm; the holder's pool memory is corrupted through its memfd (as
// root: /proc/<pid>/fd), as a stray write or a bad DIMM would.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "cluster_support.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

// Flips one byte in every 4 KiB of worker `pid`'s host pool memfd(s);
// the pages flipped, or -1 when no pool could be opened (not root, ...).
long long corrupt_host_pools(pid_t pid) {
  long long pages = -1;
  const std::string fds = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fds, ec)) {
    const auto target = std::filesystem::read_symlink(e.path(), ec);
    if (ec || target.string().find("memfd:kvblockd-g2") == std::string::npos) continue;
    const int fd = ::open(e.path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        auto* bytes = static_cast<unsigned char*>(p);
        if (pages < 0) pages = 0;
        for (off_t at = 0; at < st.st_size; at += 4096, ++pages) bytes[at + 100] ^= 0xFF;
        ::munmap(p, static_cast<std::size_t>(st.st_size));
      }
    }
    ::close(fd);
  }
  return pages;
}

/// A (integrity.check_host_blocks, a 1 MiB pool) and B (`b_more`) joined
/// over `tls`; A's engine has offloaded 16 blocks (hashes 7000-7015) and
/// B's index knows them.
struct SumsOnA {
  std::unique_ptr<DaemonProcess> a, b;
  std::unique_ptr<TestEngine> on_a;

  ::testing::AssertionResult start(const std::string& tls, std::vector<std::string> b_more) {
    a = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("A", tls,
                                                                   {"--integrity-check-host-blocks", "true",
                                                                    "--host-pool-bytes", std::to_string(1U << 20)}));
    if (!a->ready()) return ::testing::AssertionFailure() << "A: " << a->log();
    const std::string a_addr = bootstrap_of(*a);
    if (a_addr.empty()) return ::testing::AssertionFailure() << "A's address: " << a->log();
    b_more.insert(b_more.begin(), {"--cluster-peers", a_addr});
    b = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("B", tls, std::move(b_more)));
    if (!b->ready() || !b->wait_for_log("cluster: worker A joined", 20s))
      return ::testing::AssertionFailure() << "B: " << b->log();
    on_a = std::make_unique<TestEngine>(a->socket_path(), 16, /*salt=*/42);
    if (!on_a->attach()) return ::testing::AssertionFailure() << "engine on A: " << a->log();
    if (auto offloaded = offload_blocks(*on_a, on_a->next_id(), 0, 16, 7000); !offloaded) return offloaded;
    if (!b->wait_for_log("A holds 16 blocks", 20s))
      return ::testing::AssertionFailure() << "B did not learn A's blocks: " << b->log();
    return ::testing::AssertionSuccess();
  }
};

/// After A's pool was corrupted: `engine`'s onboard of blocks 8-15 ends
/// err(not_found ... do not match their checksum), counted on B.
void expect_corrupt_onboard_refused(TestEngine& engine, std::uint64_t stats_id) {
  const auto bad = onboard_blocks(engine, engine.next_id(), 8, 8, 7000);
  ASSERT_FALSE(bad) << "an onboard of corrupt blocks ended ok";
  EXPECT_NE(std::string(bad.message()).find(":err(not_found"), std::string::npos) << bad.message();
  EXPECT_NE(std::string(bad.message()).find("do not match their checksum"), std::string::npos) << bad.message();
  const auto json = stats_of(engine.client(), stats_id);
  EXPECT_GE(stat_of(json, "cluster.fetch.sum_mismatches"), 1) << json;
}

class ClusterIntegrity : public ::testing::TestWithParam<std::string> {};

// A keeps sums. B's onboard of 8 of A's blocks checks all 8 and is
// byte-exact. Then A's pool memory is corrupted: B's onboard of 8 more of
// A's blocks ends err(not_found ... do not match their checksum) and writes
// nothing it cannot vouch for as ok; without the check it would end ok
// with the flipped bytes in the engine.
TEST_P(ClusterIntegrity, ABlockCorruptOnItsHolderIsNeverOnboardedElsewhere) {
  if (::geteuid() != 0) GTEST_SKIP() << "corrupting another process's memfd needs root";
  const std::string tls = GetParam();
  SumsOnA w;
  ASSERT_TRUE(w.start(tls, {}));
  DaemonProcess& a = *w.a;
  DaemonProcess& b = *w.b;
  TestEngine& on_a = *w.on_a;
  if (tls == "sm") {
    ASSERT_TRUE(b.wait_for_log("mapped read-only", 20s)) << b.log();
  }

  TestEngine on_b(b.socket_path(), 48, /*salt=*/42);
  ASSERT_TRUE(on_b.attach()) << b.log();
  ASSERT_TRUE(onboard_blocks(on_b, on_b.next_id(), 0, 8, 7000)) << b.log();
  auto json = stats_of(on_b.client(), 100);
  EXPECT_EQ(stat_of(json, "cluster.fetch.sums_checked"), 8) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.sum_mismatches"), 0) << json;

  ASSERT_GT(corrupt_host_pools(a.pid()), 0) << "no host pool memfd found in A's fds";
  ASSERT_NO_FATAL_FAILURE(expect_corrupt_onboard_refused(on_b, 101));
  // Nothing of the failed fetch was kept on B.
  std::vector<std::uint64_t> second;
  for (std::uint32_t k = 8; k < 16; ++k) second.push_back(7000 + k);
  auto lookup =
      on_b.client().call_body<proto::LookupReply>(RequestId{on_b.next_id()}, proto::LookupRequest{false, second});
  ASSERT_TRUE(lookup);
  for (const auto& t : lookup->tiers) {
    if (t.tier == proto::WireTier::g2) {
      EXPECT_EQ(t.blocks, 0U) << "a block B could not vouch for is in its G2";
    }
  }
  EXPECT_EQ(stat_of(stats_of(on_a.client(), 102), "leased_blocks"), 0);

  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

// The same when A writes straight into B's engine (B keeps no fetched
// block, its engine is one fully contiguous region, nothing mapped): B
// checks the sums on the engine's bytes, and the onboard of corrupt blocks
// ends err(not_found ...), never ok.
TEST_P(ClusterIntegrity, ACorruptBlockWrittenStraightIntoTheEngineEndsItsOnboardNotFound) {
  if (::geteuid() != 0) GTEST_SKIP() << "corrupting another process's memfd needs root";
  SumsOnA w;
  ASSERT_TRUE(w.start(GetParam(), {"--cluster-cache-fetched", "false", "--cluster-map-same-host", "false"}));
  DaemonProcess& a = *w.a;
  DaemonProcess& b = *w.b;

  TestEngine flat(b.socket_path(), 48, /*salt=*/42, small_layout(), Seal::shrink, LayoutKind::fully_contiguous);
  ASSERT_TRUE(flat.attach()) << b.log();
  ASSERT_TRUE(onboard_blocks(flat, flat.next_id(), 0, 8, 7000)) << b.log();
  auto json = stats_of(flat.client(), 100);
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_blocks"), 8) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.sums_checked"), 8) << json;

  ASSERT_GT(corrupt_host_pools(a.pid()), 0) << "no host pool memfd found in A's fds";
  ASSERT_NO_FATAL_FAILURE(expect_corrupt_onboard_refused(flat, 101));
  json = stats_of(flat.client(), 102);
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_blocks"), 8) << json;  // the failed fetch counts none
  EXPECT_EQ(stat_of(json, "g2.registered"), 0) << json;
  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

INSTANTIATE_TEST_SUITE_P(Tls, ClusterIntegrity, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace kvb::test
