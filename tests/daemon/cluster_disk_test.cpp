// Workers as one cache with a disk tier (docs/cluster.md, "Disk tier"): a
// block worker A holds only in G3 (its host pool overflowed to disk) stays
// in every peer's index and is fetched by them: A reads it into G2, then
// writes it as any other. Real kvblockd processes over UCX_TLS=tcp and sm,
// real slot files in a temp dir.
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "cluster_support.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kG2Blocks = 16;      // A's host pool, in small_layout() blocks
constexpr std::uint64_t kBlockBytes = 8192;  // small_layout()
constexpr std::uint32_t kBlocks = 48;        // offloaded on A: 32 of them end on disk only

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvb-cluster-disk-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp";
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class ClusterDisk : public ::testing::TestWithParam<std::string> {};

// A's client offloads 48 blocks into a host pool of 16 with a disk tier:
// the oldest 32 are on A's disk only. B's index still has all 48; B's
// onboard of the first 16 (all on disk at A) is byte-exact, and A served
// them from disk. Over sm a pin cannot map a block on disk: B's onboard
// fetches it by UCX instead.
TEST_P(ClusterDisk, ABlockOnlyOnAWorkersDiskIsFetchedByAnother) {
  const std::string tls = GetParam();
  TempDir disk;
  DaemonProcess a(KVBLOCKD_PATH,
                  worker_args("A", tls,
                              {"--host-pool-bytes", std::to_string(kG2Blocks * kBlockBytes), "--disk-path", disk.path(),
                               "--disk-bytes", std::to_string(16ULL << 20), "--disk-admit-min-frequency", "1"}));
  ASSERT_TRUE(a.ready()) << a.log();
  const std::string a_addr = bootstrap_of(a);
  ASSERT_FALSE(a_addr.empty()) << a.log();
  DaemonProcess b(KVBLOCKD_PATH, worker_args("B", tls, {"--cluster-peers", a_addr}));
  ASSERT_TRUE(b.ready()) << b.log();
  ASSERT_TRUE(b.wait_for_log("cluster: worker A joined", 20s)) << b.log();

  TestEngine on_a(a.socket_path(), kBlocks, /*salt=*/42);
  ASSERT_TRUE(on_a.attach()) << a.log();
  for (std::uint32_t first = 0; first < kBlocks; first += 8) {
    ASSERT_TRUE(offload_blocks(on_a, on_a.next_id(), first, 8, 7000)) << a.log();
  }
  std::uint64_t id_a = 1'000'000, id_b = 2'000'000;
  // Every G2 victim written back: 32 on disk only, 16 in G2.
  ASSERT_EQ(wait_stat(on_a.client(), id_a, "g3.registered", kBlocks - kG2Blocks, 20s), kBlocks - kG2Blocks)
      << stats_of(on_a.client(), ++id_a);
  EXPECT_EQ(stat_of(stats_of(on_a.client(), ++id_a), "g2.registered"), kG2Blocks);

  TestEngine on_b(b.socket_path(), 64, /*salt=*/42);
  ASSERT_TRUE(on_b.attach()) << b.log();
  // B's index holds all 48: a block on A's disk is A's as much as one in its G2.
  ASSERT_EQ(wait_stat(on_b.client(), id_b, "cluster.index_blocks", kBlocks, 20s), kBlocks)
      << stats_of(on_b.client(), ++id_b);
  std::vector<std::uint64_t> hashes;
  for (std::uint32_t blk = 0; blk < kBlocks; ++blk) hashes.push_back(7000 + blk);
  auto lookup =
      on_b.client().call_body<proto::LookupReply>(RequestId{on_b.next_id()}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(lookup) << lookup.error().to_string();
  EXPECT_EQ(lookup->prefix_blocks, kBlocks);

  // The first 16 are on A's disk only: byte-exact into B's engine blocks 8..23.
  ASSERT_TRUE(onboard_blocks(on_b, on_b.next_id(), 0, 16, 7000)) << a.log();

  const auto json_a = stats_of(on_a.client(), ++id_a);
  EXPECT_EQ(stat_of(json_a, "cluster.fetch.disk_blocks_out"), 16) << json_a;
  EXPECT_GE(stat_of(json_a, "g3.promotes"), 16) << json_a;
  if (tls == "sm") {
    EXPECT_GE(stat_of(json_a, "cluster.fetch.pins_on_disk"), 1) << json_a;
  }
  EXPECT_EQ(stat_of(json_a, "leased_blocks"), 0) << json_a;
  // Reading them back into A's G2 moved other blocks to disk, not out of
  // the cluster: B still sees all 48 once the write-backs have ended.
  EXPECT_EQ(wait_stat(on_b.client(), id_b, "cluster.index_blocks", kBlocks, 20s), kBlocks)
      << stats_of(on_b.client(), ++id_b);

  EXPECT_EQ(b.stop(SIGTERM), 0) << b.log();
  EXPECT_EQ(a.stop(SIGTERM), 0) << a.log();
}

INSTANTIATE_TEST_SUITE_P(Tls, ClusterDisk, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace kvb::test
