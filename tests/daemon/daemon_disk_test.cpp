// The real kvblockd with a disk tier (G3) on real files in a temp dir:
// offload more than G2 holds and onboard byte-exact from disk; SIGKILL in
// the middle of write-backs and restart; flipped bytes on disk; disk full,
// EIO and slow I/O through the fault-injecting backend; an unusable
// directory at start.
#include <signal.h>
#include <sys/mount.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvb/storage/slot_format.h"
#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

// 8 KiB blocks (small_layout); G2 holds 16 of them.
constexpr std::uint32_t kG2Blocks = 16;
constexpr std::uint64_t kBlockBytes = 8192;

class DiskDir {
 public:
  DiskDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvb-daemon-disk-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp";
    path_ = pattern;
  }
  ~DiskDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // The one slot file the daemon made here.
  std::string slot_file() const {
    for (const auto& e : std::filesystem::directory_iterator(path_))
      if (e.path().extension() == ".slots") return e.path().string();
    return {};
  }

 private:
  std::string path_;
};

// The host pool runs lru here: the tests name the blocks that stay in G2
// (the newest) and those written back to disk (the oldest); the disk tier,
// not the host pool's eviction order, is under test.
std::vector<std::string> disk_args(const std::string& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"--eviction-policy",
                                   "lru",
                                   "--host-pool-bytes",
                                   std::to_string(kG2Blocks * kBlockBytes),
                                   "--disk-path",
                                   dir,
                                   "--disk-bytes",
                                   std::to_string(16ULL << 20),
                                   "--disk-admit-min-frequency",
                                   "1"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

nlohmann::json stats(RawClient& client, std::uint64_t id) {
  auto s = client.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
  if (!s) return {};
  return nlohmann::json::parse(s->json, nullptr, false);
}

// Offloads engine blocks [first, first + n) as hashes 5000 + block, filled
// with seed block + 1; waits for the notification.
void offload(TestEngine& engine, std::uint32_t first, std::uint32_t n) {
  proto::OffloadRequest req;
  for (std::uint32_t b = first; b < first + n; ++b) {
    engine.fill(b, b + 1);
    req.items.push_back({BlockId{b}, 5000 + b});
  }
  const RequestId id{engine.next_id()};
  auto accepted = engine.client().call(id, req);
  ASSERT_TRUE(accepted && accepted->code == Errc::ok) << (accepted ? accepted->message : "no reply");
  auto done = engine.client().notification_of(id);
  ASSERT_TRUE(done);
  ASSERT_EQ(done->code, Errc::ok) << done->text;
}

// The tier a lone hash is found in (0 = not found).
int tier_of(TestEngine& engine, std::uint64_t hash) {
  auto r =
      engine.client().call_body<proto::LookupReply>(RequestId{engine.next_id()}, proto::LookupRequest{false, {hash}});
  if (!r || r->prefix_blocks == 0) return 0;
  for (const auto& t : r->tiers)
    if (t.blocks > 0) return static_cast<int>(t.tier);
  return 0;
}

// Onboards `hash` into engine block `into` and compares it with `seed`'s
// pattern (written into `scratch`). The notification's code.
Errc onboard_check(TestEngine& engine, std::uint64_t hash, std::uint32_t into, std::uint32_t scratch,
                   std::uint32_t seed, bool& same, std::string* text = nullptr) {
  engine.zero(into);
  const RequestId id{engine.next_id()};
  auto accepted = engine.client().call(id, proto::OnboardRequest{{{hash, BlockId{into}}}});
  if (!accepted || accepted->code != Errc::ok) return accepted ? accepted->code : Errc::internal;
  auto done = engine.client().notification_of(id);
  if (!done) return Errc::timeout;
  if (text != nullptr) *text = done->text;
  engine.fill(scratch, seed);
  same = engine.same(into, scratch);
  return done->code;
}

// Waits (bounded) until every write-back has ended: G2 evictions are all
// accounted for in G3 as written, failed, skipped or rejected.
bool writebacks_settled(RawClient& client, std::uint64_t& id) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto j = stats(client, ++id);
    if (j.is_discarded() || !j.contains("g3")) return false;
    const auto& g3 = j["g3"];
    if (g3["writes_in_flight"] == 0 && g3["partial"] == 0 &&
        j["g2"]["evictions"].get<long long>() ==
            g3["writebacks"].get<long long>() + g3["writeback_failures"].get<long long>() +
                g3["writebacks_skipped"].get<long long>() + g3["admission_rejects"].get<long long>())
      return true;
  }
  return false;
}

TEST(DaemonDisk, OffloadMoreThanHostHoldsAndOnboardFromDiskByteExact) {
  DiskDir dir;
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path()));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 160);
  ASSERT_TRUE(engine.attach()) << daemon.log();
  for (std::uint32_t b = 0; b < 64; b += 8) offload(engine, b, 8);  // 64 blocks, G2 holds 16
  std::uint64_t id = 1'000'000;
  ASSERT_TRUE(writebacks_settled(engine.client(), id)) << stats(engine.client(), ++id).dump();
  std::vector<std::uint64_t> all;
  for (std::uint32_t b = 0; b < 64; ++b) all.push_back(5000 + b);
  auto lookup =
      engine.client().call_body<proto::LookupReply>(RequestId{engine.next_id()}, proto::LookupRequest{false, all});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 64U);
  std::uint32_t on_disk = 0;
  for (const auto& t : lookup->tiers)
    if (t.tier == proto::WireTier::g3) on_disk = t.blocks;
  EXPECT_EQ(on_disk, 48U);
  // Every block comes back byte-exact, the 48 on disk through G2.
  proto::OnboardRequest onboard;
  for (std::uint32_t b = 0; b < 16; ++b) onboard.items.push_back({5000 + b, BlockId{64 + b}});  // on disk
  const RequestId req{engine.next_id()};
  auto accepted = engine.client().call(req, onboard);
  ASSERT_TRUE(accepted && accepted->code == Errc::ok);
  auto done = engine.client().notification_of(req);
  ASSERT_TRUE(done);
  ASSERT_EQ(done->code, Errc::ok) << done->text;
  for (std::uint32_t b = 0; b < 16; ++b) {
    engine.fill(150, b + 1);
    EXPECT_TRUE(engine.same(64 + b, 150)) << "block " << b;
  }
  // Reading them into G2 evicted blocks 48..63 to disk: a block is findable
  // again once its write-back is durable.
  ASSERT_TRUE(writebacks_settled(engine.client(), id)) << stats(engine.client(), ++id).dump();
  for (std::uint32_t b = 16; b < 64; b += 7) {
    bool same = false;
    EXPECT_EQ(onboard_check(engine, 5000 + b, 100, 151, b + 1, same), Errc::ok) << b;
    EXPECT_TRUE(same) << "block " << b;
  }
  const auto j = stats(engine.client(), ++id);
  EXPECT_GE(j["g3"]["hits"].get<long long>(), 16);
  EXPECT_GE(j["g3"]["promotes"].get<long long>(), 16);
  EXPECT_EQ(j["g3"]["checksum_failures"], 0);
  EXPECT_EQ(j["g3"]["capacity"].get<long long>() > 0, true);
  EXPECT_TRUE(j["g3"]["enabled"].get<bool>());
}

// Hostile case 5 with a disk tier: a reclaimed layout's slot file is closed
// with its blocks; a later session of that shape gets a new pool that
// reopens the file and serves them byte-exact. Blocks that were only in the
// reclaimed host pool are gone.
TEST(DaemonDisk, AReclaimedLayoutsDiskBlocksServeItsNextSession) {
  DiskDir dir;
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path(), {"--max-layouts", "2"}));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  std::uint64_t id = 1'000'000;
  {
    TestEngine engine(daemon.socket_path(), 40);
    ASSERT_TRUE(engine.attach()) << daemon.log();
    for (std::uint32_t b = 0; b < 32; b += 8) offload(engine, b, 8);  // G2 holds 16: 16 go to disk
    ASSERT_TRUE(writebacks_settled(engine.client(), id)) << stats(engine.client(), ++id).dump();
    ASSERT_TRUE(engine.client().call(RequestId{engine.next_id()}, proto::ByeRequest{}));
  }
  for (const proto::WireLayout shape :
       {proto::WireLayout{4, 2, 16, 32, 0, 256}, proto::WireLayout{4, 2, 16, 128, 0, 256}}) {
    TestEngine other(daemon.socket_path(), 4, 0, shape);  // the second fills the last slot, the third reclaims
    ASSERT_TRUE(other.hello()) << daemon.log();
    ASSERT_TRUE(other.client().call(RequestId{other.next_id()}, proto::ByeRequest{}));
  }
  TestEngine again(daemon.socket_path(), 40);
  ASSERT_TRUE(again.attach()) << daemon.log();
  const auto j = stats(again.client(), ++id);
  EXPECT_EQ(j["layouts_reclaimed"], 2) << j.dump();
  EXPECT_EQ(j["layouts"], 2) << j.dump();
  for (std::uint32_t b = 0; b < 16; b += 5) {
    EXPECT_EQ(tier_of(again, 5000 + b), static_cast<int>(proto::WireTier::g3)) << "block " << b;
    bool same = false;
    EXPECT_EQ(onboard_check(again, 5000 + b, 32, 33, b + 1, same), Errc::ok) << b;
    EXPECT_TRUE(same) << "block " << b;
  }
  for (std::uint32_t b = 16; b < 32; b += 5) EXPECT_EQ(tier_of(again, 5000 + b), 0) << "block " << b;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonDisk, SigkillDuringWriteBacksLosesNoBlockReportedOnDisk) {
  DiskDir dir;
  std::set<std::uint64_t> on_disk;  // hashes a lookup reported in G3 before the kill
  std::uint32_t offloaded = 0;
  {
    // Slow I/O keeps write-backs in flight when the kill lands.
    DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path(), {"--disk-inject-faults", "delay_ms=20"}));
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    TestEngine engine(daemon.socket_path(), 256);
    ASSERT_TRUE(engine.attach()) << daemon.log();
    for (std::uint32_t b = 0; b < 128; b += 8) offload(engine, b, 8);
    std::uint64_t id = 1'000'000;
    ASSERT_TRUE(writebacks_settled(engine.client(), id)) << stats(engine.client(), ++id).dump();
    for (std::uint32_t b = 0; b < 128; ++b)
      if (tier_of(engine, 5000 + b) == 3) on_disk.insert(5000 + b);
    EXPECT_EQ(on_disk.size(), 112U);
    // More offloads that evict more blocks: their write-backs are on their
    // way when SIGKILL arrives.
    for (std::uint32_t b = 128; b < 192; b += 8) offload(engine, b, 8);
    offloaded = 192;
    const auto j = stats(engine.client(), 999);
    EXPECT_GT(j["g3"]["writes_in_flight"].get<long long>() + j["g3"]["partial"].get<long long>(), 0)
        << "no write-back was in flight at the kill: " << j.dump();
    daemon.kill();
  }
  ASSERT_GT(on_disk.size(), 0U);
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path()));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  EXPECT_NE(daemon.log().find("reopened"), std::string::npos) << daemon.log();
  TestEngine engine(daemon.socket_path(), 256);
  ASSERT_TRUE(engine.attach()) << daemon.log();
  std::uint32_t found_beyond = 0;
  for (std::uint32_t b = 0; b < offloaded; ++b) {
    const std::uint64_t hash = 5000 + b;
    const int tier = tier_of(engine, hash);
    if (on_disk.contains(hash)) {
      EXPECT_EQ(tier, 3) << "hash " << hash << " was on disk before the kill";
    }
    if (tier == 0) continue;
    if (!on_disk.contains(hash)) ++found_beyond;
    bool same = false;
    std::string text;
    EXPECT_EQ(onboard_check(engine, hash, 250, 251, b + 1, same, &text), Errc::ok) << hash << ": " << text;
    EXPECT_TRUE(same) << "hash " << hash << " came back with other bytes";
  }
  const auto j = stats(engine.client(), 999);
  EXPECT_EQ(j["g3"]["checksum_failures"], 0) << j.dump();
  std::printf("[ sigkill ] %zu blocks on disk before the kill, %u more found after the restart\n", on_disk.size(),
              found_beyond);
}

// Stops a daemon with 16 blocks on disk, damages slot 3 (a payload byte, or
// a byte of its header), restarts: exactly that block is a miss.
void damage_one_and_restart(bool header, const std::string& expect_in_log) {
  DiskDir dir;
  {
    DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path()));
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    TestEngine engine(daemon.socket_path(), 64);
    ASSERT_TRUE(engine.attach());
    for (std::uint32_t b = 0; b < 32; b += 8) offload(engine, b, 8);
    std::uint64_t id = 1'000'000;
    ASSERT_TRUE(writebacks_settled(engine.client(), id));
    ASSERT_EQ(daemon.stop(SIGTERM), 0);
  }
  // Damage slot 3: a payload byte, or a byte of its header's hash.
  const std::string file = dir.slot_file();
  ASSERT_FALSE(file.empty());
  const auto spec = LayoutSpec{4, 2, 16, 64, DType::u8, 4096};
  const auto n = storage::FileHeader::slots_for_bytes(spec, 16ULL << 20);
  const auto g = storage::FileHeader::plan(spec, n);
  const std::uint64_t at = header ? g.header_offset(3) + 20 : g.payload_offset(3) + 4321;
  {
    FILE* f = std::fopen(file.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, static_cast<long>(at), SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, static_cast<long>(at), SEEK_SET);
    std::fputc(c ^ 0x40, f);
    std::fclose(f);
  }
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path()));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64);
  ASSERT_TRUE(engine.attach());
  int served = 0, missed = 0;
  for (std::uint32_t b = 0; b < 16; ++b) {  // the 16 written to disk
    bool same = false;
    std::string text;
    const Errc code = onboard_check(engine, 5000 + b, 40, 41, b + 1, same, &text);
    if (code == Errc::ok) {
      EXPECT_TRUE(same) << "block " << b << " served with other bytes";
      ++served;
    } else {
      EXPECT_EQ(code, Errc::not_found) << text;
      ++missed;
    }
  }
  EXPECT_EQ(missed, 1);
  EXPECT_EQ(served, 15);
  EXPECT_NE(daemon.log().find(expect_in_log), std::string::npos) << daemon.log();
  const auto j = stats(engine.client(), 999);
  EXPECT_EQ(j["g3"]["checksum_failures"], header ? 0 : 1) << j.dump();
}

TEST(DaemonDisk, FlippedPayloadByteIsAMissAndItsNeighboursAreServed) {
  damage_one_and_restart(false, "failed its payload checksum check");
}

TEST(DaemonDisk, FlippedHeaderByteDropsThatBlockAtRestart) { damage_one_and_restart(true, "1 torn"); }

TEST(DaemonDisk, DiskFullKeepsServingFromHostMemory) {
  DiskDir dir;
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path(), {"--disk-inject-faults", "write_errno=ENOSPC"}));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64);
  ASSERT_TRUE(engine.attach());
  for (std::uint32_t b = 0; b < 32; b += 8) offload(engine, b, 8);
  std::uint64_t id = 1'000'000;
  ASSERT_TRUE(writebacks_settled(engine.client(), id));
  const auto j = stats(engine.client(), ++id);
  EXPECT_EQ(j["g3"]["writeback_failures"], 16) << j.dump();
  EXPECT_GE(j["g3"]["io_errors"].get<long long>(), 16);
  EXPECT_EQ(j["g3"]["registered"], 0);
  for (std::uint32_t b = 16; b < 32; ++b) {  // still in G2
    bool same = false;
    EXPECT_EQ(onboard_check(engine, 5000 + b, 40, 41, b + 1, same), Errc::ok);
    EXPECT_TRUE(same);
  }
  EXPECT_EQ(tier_of(engine, 5000), 0);
  EXPECT_NE(daemon.log().find("No space left on device"), std::string::npos) << daemon.log();
}

TEST(DaemonDisk, ReadErrorsAreMissesWithAClearError) {
  DiskDir dir;
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path(), {"--disk-inject-faults", "read_errno=EIO"}));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64);
  ASSERT_TRUE(engine.attach());
  for (std::uint32_t b = 0; b < 24; b += 8) offload(engine, b, 8);
  std::uint64_t id = 1'000'000;
  ASSERT_TRUE(writebacks_settled(engine.client(), id));
  ASSERT_EQ(tier_of(engine, 5000), 3);
  bool same = false;
  std::string text;
  EXPECT_EQ(onboard_check(engine, 5000, 40, 41, 1, same, &text), Errc::not_found);
  EXPECT_NE(text.find("Input/output error"), std::string::npos) << text;
  EXPECT_EQ(tier_of(engine, 5000), 0) << "a block that failed to read is dropped";
  const auto j = stats(engine.client(), ++id);
  EXPECT_GE(j["g3"]["io_errors"].get<long long>(), 1);
  EXPECT_EQ(j["g3"]["promote_failures"], 1);
}

TEST(DaemonDisk, SlowDiskQueuesWriteBacksAndKeepsAnswering) {
  DiskDir dir;
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path(), {"--disk-inject-faults", "delay_ms=300"}));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64);
  ASSERT_TRUE(engine.attach());
  for (std::uint32_t b = 0; b < 32; b += 8) offload(engine, b, 8);  // 16 write-backs, each > 0.6 s
  const auto j = stats(engine.client(), 77);
  EXPECT_GT(j["g3"]["writes_in_flight"].get<long long>(), 0) << j.dump();
  EXPECT_GT(j["g3"]["queue_depth"].get<long long>(), 0) << j.dump();
  // The loop still serves: a lookup and an onboard from G2 complete meanwhile.
  bool same = false;
  EXPECT_EQ(onboard_check(engine, 5031, 40, 41, 32, same), Errc::ok);
  EXPECT_TRUE(same);
  std::uint64_t id = 1'000'000;
  EXPECT_TRUE(writebacks_settled(engine.client(), id));
}

TEST(DaemonDisk, MissingDirectoryIsAStartErrorOrALoggedDowngrade) {
  DiskDir dir;
  const std::string missing = dir.path() + "/nope";
  {
    DaemonProcess daemon(KVBLOCKD_PATH, disk_args(missing), 20s);
    EXPECT_FALSE(daemon.ready());
    EXPECT_EQ(daemon.wait_exit(20s), 1);
    EXPECT_NE(daemon.log().find(missing), std::string::npos) << daemon.log();
    EXPECT_NE(daemon.log().find("No such file or directory"), std::string::npos) << daemon.log();
  }
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(missing, {"--disk-required", "false"}));
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  EXPECT_NE(daemon.log().find("disk tier disabled"), std::string::npos) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64);
  ASSERT_TRUE(engine.attach());
  offload(engine, 0, 8);
  bool same = false;
  EXPECT_EQ(onboard_check(engine, 5003, 40, 41, 4, same), Errc::ok);
  EXPECT_TRUE(same);
  const auto j = stats(engine.client(), 5);
  EXPECT_FALSE(j["g3"]["enabled"].get<bool>()) << j.dump();
}

TEST(DaemonDisk, UnknownPolicyIsRefusedWithExitCode2) {
  DiskDir dir;
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(dir.path(), {"--disk-policy", "fifo"}), 20s);
  EXPECT_FALSE(daemon.ready());
  EXPECT_EQ(daemon.wait_exit(20s), 2);
  EXPECT_NE(daemon.log().find("config key 'disk.policy' = 'fifo' is not one of: "), std::string::npos) << daemon.log();
  EXPECT_NE(daemon.log().find("lru"), std::string::npos) << "names the valid policies: " << daemon.log();
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "nothing is created before the config is checked";
}

TEST(DaemonDisk, ReadOnlyDirectoryIsAStartError) {
  DiskDir dir;
  std::string ro = dir.path() + "/ro";
  std::filesystem::create_directory(ro);
  bool mounted = ::mount(ro.c_str(), ro.c_str(), nullptr, MS_BIND, nullptr) == 0;
  if (mounted && ::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    ::umount(ro.c_str());
    mounted = false;
  }
  if (!mounted) ro = "/sys/kernel";  // no mounts allowed here: a directory that refuses files (EACCES)
  DaemonProcess daemon(KVBLOCKD_PATH, disk_args(ro), 20s);
  EXPECT_FALSE(daemon.ready());
  EXPECT_EQ(daemon.wait_exit(20s), 1);
  if (mounted) ::umount(ro.c_str());
  EXPECT_NE(daemon.log().find("does not take files"), std::string::npos) << daemon.log();
}

TEST(DaemonDisk, ASecondDaemonOnTheSameDirectoryIsRefused) {
  DiskDir dir;
  DaemonProcess first(KVBLOCKD_PATH, disk_args(dir.path()));
  ASSERT_TRUE(first.ready()) << first.log();
  {
    TestEngine engine(first.socket_path(), 8);
    ASSERT_TRUE(engine.attach());  // creates the slot file
  }
  DaemonProcess second(KVBLOCKD_PATH, disk_args(dir.path()), 20s);
  EXPECT_FALSE(second.ready());
  EXPECT_EQ(second.wait_exit(20s), 1);
  EXPECT_NE(second.log().find("in use by another process"), std::string::npos) << second.log();
}

}  // namespace
}  // namespace kvb::test
