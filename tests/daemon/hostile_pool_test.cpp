// Hostile clients, cases 2 and 5: block shapes and the host pools they make.
// 2: a valid but tiny block shape must not make the daemon build a pool of
//    millions of blocks (its metadata) on its event loop.
// 5: a shape no session uses any more gives its slot (and its memory) to
//    the next new shape.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "hostile_support.h"

namespace kvb::test {
namespace {

constexpr long long kMiB = 1024;  // in KiB, as /proc reports RSS

// Four block shapes (u8, 4 or 2 layers, K,V, 16 tokens): 8, 4, 16 and 4 KiB blocks.
constexpr proto::WireLayout kShape1{4, 2, 16, 64, 0, 256};
constexpr proto::WireLayout kShape2{4, 2, 16, 32, 0, 256};
constexpr proto::WireLayout kShape3{4, 2, 16, 128, 0, 256};
constexpr proto::WireLayout kShape4{2, 2, 16, 64, 0, 256};
constexpr std::uint32_t kBlocks = 8;  // offloaded per engine, from engine blocks 0..7

/// Fills engine blocks 0..kBlocks-1 (pattern from `seed`) and offloads them
/// under hashes base, base+1, ...; true once the offload is done ok.
bool offload_blocks(TestEngine& engine, std::uint64_t base, std::uint32_t seed) {
  proto::OffloadRequest offload;
  for (std::uint32_t b = 0; b < kBlocks; ++b) {
    engine.fill(b, seed + b);
    offload.items.push_back({BlockId{b}, base + b});
  }
  const RequestId id{engine.next_id()};
  auto accepted = engine.client().call(id, offload);
  if (!accepted || accepted->code != Errc::ok) return false;
  auto done = engine.client().notification_of(id);
  return done && done->code == Errc::ok;
}

/// Onboards hashes base.. into engine blocks kBlocks.. (zeroed first); true
/// when each then holds the bytes of the engine block it was offloaded from.
bool onboard_is_byte_exact(TestEngine& engine, std::uint64_t base) {
  proto::OnboardRequest onboard;
  for (std::uint32_t b = 0; b < kBlocks; ++b) {
    engine.zero(kBlocks + b);
    onboard.items.push_back({base + b, BlockId{kBlocks + b}});
  }
  const RequestId id{engine.next_id()};
  auto accepted = engine.client().call(id, onboard);
  if (!accepted || accepted->code != Errc::ok) return false;
  auto done = engine.client().notification_of(id);
  if (!done || done->code != Errc::ok) return false;
  for (std::uint32_t b = 0; b < kBlocks; ++b) {
    if (!engine.same(b, kBlocks + b)) return false;
  }
  return true;
}

/// How many of hashes base.. the daemon holds for this engine's shape
/// (lookup without pin); -1 when no answer came.
long long held_prefix(TestEngine& engine, std::uint64_t base) {
  std::vector<std::uint64_t> hashes;
  for (std::uint32_t b = 0; b < kBlocks; ++b) hashes.push_back(base + b);
  auto found =
      engine.client().call_body<proto::LookupReply>(RequestId{engine.next_id()}, proto::LookupRequest{false, hashes});
  return found ? static_cast<long long>(found->prefix_blocks) : -1;
}

/// The daemon's mappings of host pool memfds ("kvblockd-g2") in /proc/<pid>/maps.
int host_pool_mappings(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) n += line.find("memfd:kvblockd-g2") != std::string::npos ? 1 : 0;
  return n;
}

/// bye, answered ok: the session has ended when the reply is read (the
/// daemon ends it right after answering, on the same pass of its loop).
bool bye(TestEngine& engine) {
  auto reply = engine.client().call(RequestId{engine.next_id()}, proto::ByeRequest{});
  return reply && reply->code == Errc::ok;
}

// Before the fix: a 1-byte block over a 16 MiB pool built 16,777,216 blocks
// of metadata (~1.1 GB of RSS, seconds of a stalled loop).
TEST(HostilePool, TinyBlockShapeIsRefusedWithoutBuildingAPool) {
  DaemonProcess daemon(kvblockd_under_test(), {"--host-pool-bytes", std::to_string(16 << 20)});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const auto before = usage_of(daemon.pid());
  RawClient hostile(daemon.socket_path());
  const proto::WireLayout tiny{1, 1, 1, 1, 0, 1};  // 1 layer, outer 1, page 1, inner 1, u8, alignment 1
  ASSERT_TRUE(hostile.send(RequestId{1}, proto::HelloRequest{1, 1, "tiny", 0, tiny}));
  auto reply = hostile.reply_to(RequestId{1}, std::chrono::seconds(60));
  ASSERT_TRUE(reply);
  const auto after = usage_of(daemon.pid());
  EXPECT_TRUE(fresh_stats(daemon.socket_path()));
  EXPECT_LT(after.rss_kib - before.rss_kib, 64 * kMiB) << "RSS grew from " << before.rss_kib << " KiB";
  EXPECT_EQ(reply->code, Errc::invalid_argument) << reply->message;
  EXPECT_NE(reply->message.find("max_pool_blocks"), std::string::npos) << reply->message;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// The largest pool the limit allows is built without holding up a session
// that only asks for stats (its answer does not wait for the pool).
TEST(HostilePool, LargestAllowedPoolIsServed) {
  DaemonProcess daemon(kvblockd_under_test(), {"--host-pool-bytes", std::to_string(256 << 20)});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient engine(daemon.socket_path());
  const proto::WireLayout small_blocks{1, 1, 1, 1, 0, 256};  // 256-byte stride: 1,048,576 blocks
  ASSERT_TRUE(engine.send(RequestId{1}, proto::HelloRequest{1, 1, "small blocks", 0, small_blocks}));
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  auto reply = engine.reply_to(RequestId{1}, std::chrono::seconds(60));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->code, Errc::ok) << reply->message;
  auto now = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(now);
  EXPECT_EQ(stat_of(*now, "layouts"), 1) << *now;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// Case 2, the event loop: a new shape's pool (registry and policy for up to
// max_pool_blocks blocks: tens of ms) is built off the loop. The build is
// slowed down here (KVB_INJECT_POOL_BUILD_DELAY_MS: a fault injection, the
// real build cannot be made slow on demand): another session is answered
// while the hello waits for its pool, the frames the new session sent after
// its hello wait in order, and a second hello of the shape shares the build.
// Before the fix the loop built the pool itself and answered nobody meanwhile.
TEST(HostilePool, ANewShapesPoolIsBuiltOffTheEventLoop) {
  ::setenv("KVB_INJECT_POOL_BUILD_DELAY_MS", "3000", 1);
  DaemonProcess daemon(kvblockd_under_test(), {"--max-layouts", "2"});
  ::unsetenv("KVB_INJECT_POOL_BUILD_DELAY_MS");
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient other(daemon.socket_path());  // a session without a block shape: no pool
  ASSERT_TRUE(other.call_body<proto::HelloReply>(RequestId{1}, proto::HelloRequest{1, 1, "other", 0, {}}));

  RawClient newcomer(daemon.socket_path());
  ASSERT_TRUE(newcomer.send(RequestId{1}, proto::HelloRequest{1, 1, "new shape", 0, kShape1}));
  ASSERT_TRUE(newcomer.send(RequestId{2}, proto::StatsRequest{}));  // pipelined behind its hello
  RawClient second(daemon.socket_path());
  ASSERT_TRUE(second.send(RequestId{1}, proto::HelloRequest{1, 1, "same shape", 0, kShape1}));
  ASSERT_TRUE(daemon.wait_for_log("building it for a new block shape", std::chrono::seconds(20))) << daemon.log();

  auto stats = other.call_body<proto::StatsReply>(RequestId{2}, proto::StatsRequest{});
  ASSERT_TRUE(stats) << "another session was not answered while a pool was built";
  auto early = newcomer.read_frame(std::chrono::milliseconds(0));
  EXPECT_FALSE(early) << "the hello was answered before another session's stats: the pool was not being built "
                         "off the loop";
  EXPECT_EQ(stat_of(stats->json, "layouts"), 0) << stats->json;  // still building

  auto hello = newcomer.reply_to(RequestId{1}, std::chrono::seconds(30));
  ASSERT_TRUE(hello) << daemon.log();
  EXPECT_EQ(hello->code, Errc::ok) << hello->message;
  auto after = newcomer.reply_to(RequestId{2}, std::chrono::seconds(10));  // then the frame that waited
  ASSERT_TRUE(after);
  EXPECT_EQ(after->code, Errc::ok);
  auto shared = second.reply_to(RequestId{1}, std::chrono::seconds(30));
  ASSERT_TRUE(shared);
  EXPECT_EQ(shared->code, Errc::ok) << shared->message;
  auto now = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(now);
  EXPECT_EQ(stat_of(*now, "layouts"), 1) << "the two hellos of one shape built one pool: " << *now;
  EXPECT_EQ(stat_of(*now, "layouts_in_use"), 1) << *now;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// Before the fix: once max_layouts shapes had come and gone, every new shape
// was refused ("2 distinct block layouts are served already") until a
// restart, and the idle pools kept their memory.
TEST(HostilePool, AnIdleLayoutGivesItsSlotAndItsMemoryToANewShape) {
  DaemonProcess daemon(kvblockd_under_test(),
                       {"--max-layouts", "2", "--host-pool-bytes", "256MiB", "--prefault", "true"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  {
    TestEngine first(daemon.socket_path(), 2 * kBlocks, 0, kShape1);
    ASSERT_TRUE(first.attach());
    ASSERT_TRUE(offload_blocks(first, 1000, 1));
    ASSERT_TRUE(bye(first));
    TestEngine second(daemon.socket_path(), 2 * kBlocks, 0, kShape2);
    ASSERT_TRUE(second.attach());
    ASSERT_TRUE(offload_blocks(second, 2000, 2));
    ASSERT_TRUE(bye(second));
  }
  // Both pools populated (prefault): 2 x 256 MiB resident.
  ASSERT_EQ(await_stat(daemon.socket_path(), "g2_prefault.pools_ready", 2, std::chrono::seconds(120)), 2)
      << daemon.log();
  const auto before = usage_of(daemon.pid());
  EXPECT_EQ(host_pool_mappings(daemon.pid()), 2);

  TestEngine third(daemon.socket_path(), 2 * kBlocks, 0, kShape3);
  ASSERT_TRUE(third.attach()) << "a new shape is refused although no session uses the 2 pools";
  ASSERT_TRUE(offload_blocks(third, 3000, 3));
  EXPECT_TRUE(onboard_is_byte_exact(third, 3000));
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(*stats, "layouts"), 2) << *stats;
  EXPECT_EQ(stat_of(*stats, "layouts_in_use"), 1) << *stats;
  EXPECT_EQ(stat_of(*stats, "layouts_reclaimed"), 1) << *stats;
  EXPECT_EQ(stat_of(*stats, "g2.registered"), 2 * kBlocks)
      << "the reclaimed pool's blocks left the registry: " << *stats;

  // The new pool populated too: the reclaimed pool's 256 MiB went back, so
  // the daemon holds two pools' worth, not three.
  ASSERT_EQ(await_stat(daemon.socket_path(), "g2_prefault.pools_ready", 2, std::chrono::seconds(120)), 2);
  // The reclaimed pool is torn down off the event loop: wait until it is.
  ASSERT_EQ(await_stat(daemon.socket_path(), "layouts_retiring", 0, std::chrono::seconds(60)), 0) << daemon.log();
  const auto after = usage_of(daemon.pid());
  EXPECT_LT(after.rss_kib - before.rss_kib, 128 * kMiB)
      << "RSS " << before.rss_kib << " KiB with 2 pools, " << after.rss_kib << " KiB after a reclaim and a new pool";
  EXPECT_EQ(host_pool_mappings(daemon.pid()), 2);

  // The first shape (idle longest) was reclaimed: its blocks are gone. A
  // session of it now takes the second shape's slot (the third is in use).
  TestEngine first_again(daemon.socket_path(), 2 * kBlocks, 0, kShape1);
  ASSERT_TRUE(first_again.attach());
  EXPECT_EQ(held_prefix(first_again, 1000), 0);
  EXPECT_EQ(held_prefix(third, 3000), kBlocks) << "a shape in use keeps its blocks";
  auto now = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(now);
  EXPECT_EQ(stat_of(*now, "layouts"), 2) << *now;
  EXPECT_EQ(stat_of(*now, "layouts_reclaimed"), 2) << *now;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// A pool with a session attached is never reclaimed, even when it is the
// oldest; with every slot attached, a new shape is refused and told why.
TEST(HostilePool, ALayoutInUseIsNeverReclaimedAndAFullDaemonRefusesNewShapes) {
  DaemonProcess daemon(kvblockd_under_test(), {"--max-layouts", "2", "--host-pool-bytes", "16MiB"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine first(daemon.socket_path(), 2 * kBlocks, 0, kShape1);  // stays attached
  ASSERT_TRUE(first.attach());
  ASSERT_TRUE(offload_blocks(first, 1000, 1));
  {
    TestEngine second(daemon.socket_path(), 2 * kBlocks, 0, kShape2);
    ASSERT_TRUE(second.attach());
    ASSERT_TRUE(offload_blocks(second, 2000, 2));
    ASSERT_TRUE(bye(second));
  }
  TestEngine third(daemon.socket_path(), 2 * kBlocks, 0, kShape3);
  ASSERT_TRUE(third.attach()) << "the idle second shape's slot was not given to the third";
  EXPECT_EQ(held_prefix(first, 1000), kBlocks) << "the attached first shape lost its blocks";
  EXPECT_TRUE(onboard_is_byte_exact(first, 1000));
  ASSERT_TRUE(offload_blocks(third, 3000, 3));
  EXPECT_TRUE(onboard_is_byte_exact(third, 3000));

  // Both slots attached: a fourth shape is refused, naming why.
  RawClient fourth(daemon.socket_path());
  ASSERT_TRUE(fourth.send(RequestId{1}, proto::HelloRequest{1, 1, "fourth shape", 0, kShape4}));
  auto refused = fourth.reply_to(RequestId{1});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, Errc::out_of_capacity) << refused->message;
  EXPECT_NE(refused->message.find("2 in use by sessions"), std::string::npos) << refused->message;
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(*stats, "layouts"), 2) << *stats;
  EXPECT_EQ(stat_of(*stats, "layouts_in_use"), 2) << *stats;
  EXPECT_EQ(stat_of(*stats, "layouts_reclaimed"), 1) << *stats;

  // Once the third session ends, the fourth shape takes its slot; the
  // second shape's blocks were reclaimed before: a session of it misses.
  ASSERT_TRUE(bye(third));
  ASSERT_TRUE(fourth.send(RequestId{2}, proto::HelloRequest{1, 1, "fourth shape", 0, kShape4}));
  auto accepted = fourth.reply_to(RequestId{2});
  ASSERT_TRUE(accepted);
  EXPECT_EQ(accepted->code, Errc::ok) << accepted->message;
  EXPECT_EQ(held_prefix(first, 1000), kBlocks);
  EXPECT_TRUE(bye(first));
  TestEngine second_again(daemon.socket_path(), 2 * kBlocks, 0, kShape2);
  ASSERT_TRUE(second_again.attach());
  EXPECT_EQ(held_prefix(second_again, 2000), 0);
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
