// Hostile clients, cases 4 and 7: passed file descriptors.
// 7: a frame's fds belong to that frame: a refused register_kv closes its
//    fds, so the next register_kv can never map them.
// 4: fds that no frame claims are closed at once; a daemon-wide budget keeps
//    fds for accept and for engines that register.
// 6: partial frames are bounded daemon-wide too (max_buffered_bytes).
#include <algorithm>
#include <memory>
#include <vector>

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

// Connections that each send part of a register_kv frame with ~200 fds and
// then stop: before the fix they could fill the daemon's fd table (the last
// hog sized to leave 3 fds free), after which a new engine's register_kv
// lost its fds (MSG_CTRUNC) and it was disconnected. Now passed fds are a
// daemon-wide budget (the open file limit less 256 kept for the daemon and
// one per connection): a read that needs room closes the connection holding
// the most passed fds first, so engines always attach and register.
TEST(HostileFds, PartialFramesWithFdsCannotFillTheFdTable) {
  constexpr rlim_t kLimit = 1024;
  auto daemon = daemon_with_fd_limit(kLimit, {});
  ASSERT_TRUE(daemon->ready()) << daemon->log();
  const std::string& socket = daemon->socket_path();
  EngineMemory memory(small_layout(), 8);
  auto frame = proto::encode_message(RequestId{1}, memory.register_request());
  ASSERT_TRUE(frame);
  const std::span<const std::byte> part(frame->data(), 30);  // the header and a few payload bytes
  std::vector<std::unique_ptr<RawClient>> hogs;
  int peak = 0;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(fresh_stats(socket)) << "the daemon answers while hog " << i << " holds its fds";
    const int used = usage_of(daemon->pid()).fds;
    peak = std::max(peak, used);
    const int room = static_cast<int>(kLimit) - 3 - used;  // leave 3 fds: one connection and two of a register_kv
    if (room <= 0) break;
    auto hog = std::make_unique<RawClient>(socket);
    if (!hog->connected()) break;
    const std::vector<int> fds(static_cast<std::size_t>(std::min(200, room - 1)), memory.fds()[0]);
    ASSERT_TRUE(hog->send_bytes(part, fds));
    hogs.push_back(std::move(hog));
  }
  auto stats = fresh_stats(socket);
  ASSERT_TRUE(stats) << "the daemon answers after " << hogs.size() << " hogs";
  peak = std::max(peak, usage_of(daemon->pid()).fds);
  EXPECT_LE(peak, static_cast<int>(kLimit));

  // An engine attaches, registers its 4 memfds and offloads.
  TestEngine engine(socket, 8);
  ASSERT_TRUE(engine.attach()) << daemon->log();
  engine.fill(0, 5);
  ASSERT_TRUE(engine.client().call(RequestId{50}, proto::OffloadRequest{{{BlockId{0}, 500}}}));
  auto done = engine.client().notification_of(RequestId{50});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->code, Errc::ok) << done->text;
  stats = fresh_stats(socket);
  ASSERT_TRUE(stats);
  EXPECT_GE(stat_of(*stats, "budgets.evicted_for_fds"), 1) << *stats;
  EXPECT_LE(stat_of(*stats, "budgets.passed_fds_held"),
            static_cast<long long>(kLimit) - 256 - stat_of(*stats, "connections"))
      << *stats;
  EXPECT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
}

// Connections that send most of a large frame and stop, each under
// max_frame_bytes: past the daemon-wide max_buffered_bytes the one holding
// the most is closed, the others and new clients are served.
TEST(HostileFds, PartialFramesAreBoundedDaemonWide) {
  DaemonProcess daemon(kvblockd_under_test(), {"--max-buffered-bytes", "8MiB", "--max-frame-bytes", "4MiB"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const std::string& socket = daemon.socket_path();
  std::vector<std::unique_ptr<RawClient>> hogs;
  for (int i = 0; i < 4; ++i) {
    // A lookup frame declaring 3 MiB of hashes, of which 3 MiB - 1 byte arrive.
    proto::LookupRequest big;
    big.hashes.resize((3U << 20) / 8 - 1);
    auto bytes = proto::encode_message(RequestId{1}, big);
    ASSERT_TRUE(bytes);
    auto hog = std::make_unique<RawClient>(socket);
    ASSERT_TRUE(hog->connected());
    ASSERT_TRUE(hog->send_bytes(std::span<const std::byte>(bytes->data(), bytes->size() - 1)));
    ASSERT_TRUE(await_all_read(*hog, socket)) << "hog " << i;
    hogs.push_back(std::move(hog));
  }
  auto stats = fresh_stats(socket);
  ASSERT_TRUE(stats);
  EXPECT_LE(stat_of(*stats, "budgets.buffered_bytes"), 8LL << 20) << *stats;
  EXPECT_GE(stat_of(*stats, "budgets.evicted_for_bytes"), 1) << *stats;
  TestEngine engine(socket, 8);
  EXPECT_TRUE(engine.attach()) << daemon.log();
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
