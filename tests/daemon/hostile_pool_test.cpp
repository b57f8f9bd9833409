// Hostile clients, cases 2 and 5: block shapes and the host pools they make.
// 2: a valid but tiny block shape must not make the daemon build a pool of
//    millions of blocks (its metadata) on its event loop.
// 5: a shape no session uses any more gives its slot (and its memory) to
//    the next new shape.
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

constexpr long long kMiB = 1024;  // in KiB, as /proc reports RSS

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

}  // namespace
}  // namespace kvb::test
