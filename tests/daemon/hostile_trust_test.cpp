// Hostile clients, case 8 (b): operator requests. Any allowed client may
// connect, but only an operator uid (operator_uids, default the daemon's
// own) may drain the daemon or read its configuration.
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

// Before the fix: any connected client, even without a hello, drained the
// daemon until restart (every later offload/onboard of every session was
// refused unavailable).
TEST(HostileTrust, DrainAndConfigNeedAnOperatorUid) {
  const auto other = ::getuid() + 12345;
  DaemonProcess daemon(kvblockd_under_test(), {"--operator-uid", std::to_string(other)});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient client(daemon.socket_path());
  auto drain = client.call(RequestId{1}, proto::DrainRequest{});
  ASSERT_TRUE(drain);
  EXPECT_EQ(drain->code, Errc::permission_denied) << drain->message;
  EXPECT_NE(drain->message.find("operator_uids"), std::string::npos) << drain->message;
  auto config = client.call(RequestId{2}, proto::ConfigRequest{});
  ASSERT_TRUE(config);
  EXPECT_EQ(config->code, Errc::permission_denied) << config->message;

  // Nothing was drained: an engine's offload is still accepted and done.
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.attach());
  auto offload = engine.client().call(RequestId{50}, proto::OffloadRequest{{{BlockId{0}, 5}}});
  ASSERT_TRUE(offload);
  EXPECT_EQ(offload->code, Errc::ok) << offload->message;
  auto done = engine.client().notification_of(RequestId{50});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->code, Errc::ok);
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  EXPECT_NE(stats->find("\"draining\":false"), std::string::npos) << *stats;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// The daemon's own uid is the default operator: kvblockctl drain works.
TEST(HostileTrust, TheDaemonsUidIsTheDefaultOperator) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient client(daemon.socket_path());
  auto config = client.call(RequestId{1}, proto::ConfigRequest{});
  ASSERT_TRUE(config);
  EXPECT_EQ(config->code, Errc::ok) << config->message;
  auto drain = client.call(RequestId{2}, proto::DrainRequest{});
  ASSERT_TRUE(drain);
  EXPECT_EQ(drain->code, Errc::ok) << drain->message;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
