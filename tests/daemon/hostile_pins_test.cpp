// Hostile clients, case 6 (pins): one session's lookup(pin=1) leases are
// bounded by max_session_pins; a pinning lookup past it is refused whole,
// and other sessions keep their own quota.
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

// Before the fix: each pinning lookup added leases without bound (one lookup
// of a million matched hashes made a million leases).
TEST(HostilePins, PinningPastTheSessionQuotaIsRefused) {
  DaemonProcess daemon(kvblockd_under_test(), {"--max-session-pins", "20"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.attach());
  proto::OffloadRequest offload;
  std::vector<std::uint64_t> hashes;
  for (std::uint32_t b = 0; b < 8; ++b) {
    offload.items.push_back({BlockId{b}, 100 + b});
    hashes.push_back(100 + b);
  }
  auto accepted = engine.client().call(RequestId{1}, offload);
  ASSERT_TRUE(accepted && accepted->code == Errc::ok);
  auto done = engine.client().notification_of(RequestId{1});
  ASSERT_TRUE(done && done->code == Errc::ok);

  // 8 + 8 leases fit in 20; the third lookup would make 24.
  for (std::uint64_t id = 2; id <= 3; ++id) {
    auto pinned = engine.client().call_body<proto::LookupReply>(RequestId{id}, proto::LookupRequest{true, hashes});
    ASSERT_TRUE(pinned);
    EXPECT_EQ(pinned->prefix_blocks, 8U);
  }
  auto over = engine.client().call(RequestId{4}, proto::LookupRequest{true, hashes});
  ASSERT_TRUE(over);
  EXPECT_EQ(over->code, Errc::out_of_capacity) << over->message;
  EXPECT_NE(over->message.find("max_session_pins"), std::string::npos) << over->message;
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(*stats, "pinned_blocks"), 16) << *stats;

  // A lookup without pin still answers; another session has its own quota.
  auto plain = engine.client().call_body<proto::LookupReply>(RequestId{5}, proto::LookupRequest{false, hashes});
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->prefix_blocks, 8U);
  TestEngine other(daemon.socket_path(), 8);
  ASSERT_TRUE(other.hello());
  auto theirs =
      other.client().call_body<proto::LookupReply>(RequestId{other.next_id()}, proto::LookupRequest{true, hashes});
  ASSERT_TRUE(theirs);
  EXPECT_EQ(theirs->prefix_blocks, 8U);

  auto released = engine.client().call_body<proto::ReleaseReply>(RequestId{6}, proto::ReleaseRequest{});
  ASSERT_TRUE(released);
  EXPECT_EQ(released->released, 16U);
  auto after = engine.client().call_body<proto::LookupReply>(RequestId{7}, proto::LookupRequest{true, hashes});
  ASSERT_TRUE(after) << "pinning works again once leases are released";
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
