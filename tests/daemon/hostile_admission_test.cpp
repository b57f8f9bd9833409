// Hostile clients, case 9 (admission): an offload that cannot fit is refused
// in its reply, not accepted and then failed in its notification: one whose
// new blocks exceed the whole host pool, and, when it would start at once,
// one whose new blocks exceed the free and evictable blocks (here: the rest
// are pinned by lookups).
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

proto::OffloadRequest offload_of(std::uint32_t first, std::uint32_t count, std::uint64_t hash_base) {
  proto::OffloadRequest offload;
  for (std::uint32_t b = first; b < first + count; ++b) offload.items.push_back({BlockId{b}, hash_base + b});
  return offload;
}

// Before the fix both refusals below were "accepted" replies followed by an
// err(out_of_capacity ...) notification.
TEST(HostileAdmission, AnOffloadThatCannotFitIsRefusedInItsReply) {
  DaemonProcess daemon(kvblockd_under_test(), {"--host-pool-bytes", "128KiB"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64);
  ASSERT_TRUE(engine.attach()) << daemon.log();
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  const auto capacity = static_cast<std::uint32_t>(stat_of(*stats, "g2.capacity"));
  ASSERT_GT(capacity, 2U) << *stats;
  ASSERT_LT(capacity, 60U) << *stats;

  // More new blocks than the pool has: never fits.
  auto too_many = engine.client().call(RequestId{1}, offload_of(0, capacity + 1, 1000));
  ASSERT_TRUE(too_many);
  EXPECT_EQ(too_many->code, Errc::out_of_capacity) << too_many->message;
  EXPECT_NE(too_many->message.find("can never fit"), std::string::npos) << too_many->message;

  // The pool full of this engine's blocks, every one pinned by a lookup.
  auto filled = engine.client().call(RequestId{2}, offload_of(0, capacity, 1000));
  ASSERT_TRUE(filled && filled->code == Errc::ok) << (filled ? filled->message : "no reply");
  auto stored = engine.client().notification_of(RequestId{2});
  ASSERT_TRUE(stored && stored->code == Errc::ok) << (stored ? stored->text : "no notification");
  std::vector<std::uint64_t> hashes;
  for (std::uint32_t b = 0; b < capacity; ++b) hashes.push_back(1000 + b);
  auto pinned = engine.client().call_body<proto::LookupReply>(RequestId{3}, proto::LookupRequest{true, hashes});
  ASSERT_TRUE(pinned);
  EXPECT_EQ(pinned->prefix_blocks, capacity);

  // Two new blocks while nothing is free or evictable: refused now. Blocks
  // the pool already holds are not new: offloading them again is accepted.
  auto no_room = engine.client().call(RequestId{4}, offload_of(0, 2, 5000));
  ASSERT_TRUE(no_room);
  EXPECT_EQ(no_room->code, Errc::out_of_capacity) << no_room->message;
  EXPECT_NE(no_room->message.find("0 free and 0 evictable"), std::string::npos) << no_room->message;
  auto again = engine.client().call(RequestId{5}, offload_of(0, capacity, 1000));
  ASSERT_TRUE(again && again->code == Errc::ok) << (again ? again->message : "no reply");
  auto again_done = engine.client().notification_of(RequestId{5});
  ASSERT_TRUE(again_done && again_done->code == Errc::ok);

  // Pins released: the same two blocks fit (two inactive blocks are evicted).
  auto released = engine.client().call_body<proto::ReleaseReply>(RequestId{6}, proto::ReleaseRequest{});
  ASSERT_TRUE(released);
  auto fits = engine.client().call(RequestId{7}, offload_of(0, 2, 5000));
  ASSERT_TRUE(fits && fits->code == Errc::ok) << (fits ? fits->message : "no reply");
  auto fits_done = engine.client().notification_of(RequestId{7});
  ASSERT_TRUE(fits_done && fits_done->code == Errc::ok) << (fits_done ? fits_done->text : "no notification");
  stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(*stats, "g2.leased"), 0) << *stats;
  EXPECT_EQ(stat_of(*stats, "inflight_requests"), 0) << *stats;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
