// Hostile clients, cases 4 and 7: passed file descriptors.
// 7: a frame's fds belong to that frame: a refused register_kv closes its
//    fds, so the next register_kv can never map them.
// 4: fds that no frame claims are closed at once; a daemon-wide budget keeps
//    fds for accept and for engines that register.
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

// Before the fix: register_kv refused with already_exists left its fds
// queued and the next register_kv mapped them (the stale region).
TEST(HostileFds, RefusedRegisterKvClosesItsFds) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.attach());
  const auto attached = usage_of(daemon.pid());
  EngineMemory stale(small_layout(), 8);
  EngineMemory fresh(small_layout(), 8);
  stale.fill(0, 1);
  fresh.fill(0, 2);

  // offload 7 and a register_kv reusing id 7 travel in one sendmsg (with the
  // stale fds), so the daemon reads both at once: 7 is still in flight when
  // the register_kv comes, which is refused as already_exists.
  auto offload = proto::encode_message(RequestId{7}, proto::OffloadRequest{{{BlockId{3}, 70}}});
  auto reuse = proto::encode_message(RequestId{7}, stale.register_request());
  ASSERT_TRUE(offload && reuse);
  std::vector<std::byte> both = *offload;
  both.insert(both.end(), reuse->begin(), reuse->end());
  ASSERT_TRUE(engine.client().send_bytes(both, stale.fds()));
  auto first = engine.client().reply_to(RequestId{7});
  auto second = engine.client().reply_to(RequestId{7});
  ASSERT_TRUE(first && second);
  EXPECT_TRUE(first->accepted);
  EXPECT_EQ(second->code, Errc::already_exists) << second->message;
  ASSERT_TRUE(engine.client().notification_of(RequestId{7}));

  // The next register_kv maps its own fds: offload block 0 and onboard it
  // into block 1 of whatever region the daemon mapped.
  auto registered = engine.client().call(RequestId{8}, fresh.register_request(), fresh.fds());
  ASSERT_TRUE(registered);
  ASSERT_EQ(registered->code, Errc::ok) << registered->message;
  ASSERT_TRUE(engine.client().call(RequestId{9}, proto::OffloadRequest{{{BlockId{0}, 90}}}));
  auto offloaded = engine.client().notification_of(RequestId{9});
  ASSERT_TRUE(offloaded && offloaded->code == Errc::ok);
  ASSERT_TRUE(engine.client().call(RequestId{10}, proto::OnboardRequest{{{90, BlockId{1}}}}));
  auto onboarded = engine.client().notification_of(RequestId{10});
  ASSERT_TRUE(onboarded && onboarded->code == Errc::ok);
  EXPECT_TRUE(fresh.same(0, 1)) << "the daemon copied from and into the region of this register_kv";
  EXPECT_FALSE(stale.same(0, 1)) << "the refused register_kv's region was never mapped";
  EXPECT_LE(usage_of(daemon.pid()).fds, attached.fds) << "no passed fd is left open in the daemon";
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// fds sent with frames that do not claim them (a lookup, a bare byte) are
// closed at once: they never pile up in the daemon.
TEST(HostileFds, UnclaimedFdsAreClosedAtOnce) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.attach());
  const auto attached = usage_of(daemon.pid());
  const std::vector<int> many(200, engine.fds()[0]);
  for (std::uint64_t id = 1; id <= 20; ++id) {
    auto lookup = engine.client().call(RequestId{100 + id}, proto::LookupRequest{false, {1, 2}}, many);
    ASSERT_TRUE(lookup);
    EXPECT_EQ(lookup->code, Errc::ok) << lookup->message;
  }
  EXPECT_LE(usage_of(daemon.pid()).fds, attached.fds) << "4,000 fds were passed with lookups";
  EXPECT_TRUE(fresh_stats(daemon.socket_path()));
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
