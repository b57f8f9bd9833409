// Hostile clients, case 3: a client that does not read its answers cannot
// keep the daemon from stopping. SIGTERM closes such a connection after the
// shutdown grace (docs/protocol.md: 5 s) and the daemon exits 0.
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

/// Sends `count` stats requests on `client` without reading any answer.
void flood_stats(RawClient& client, std::uint64_t count) {
  std::vector<std::byte> batch;
  for (std::uint64_t id = 1; id <= count; ++id) {
    auto frame = proto::encode_message(RequestId{id}, proto::StatsRequest{});
    ASSERT_TRUE(frame);
    batch.insert(batch.end(), frame->begin(), frame->end());
  }
  ASSERT_TRUE(client.send_bytes(batch));
}

// Before the fix: with megabytes of answers unread on one connection the
// daemon was still running 20 s after SIGTERM (the connection had left the
// session registry, so the grace timer was cancelled as if every connection
// were closed); it exited only when that client closed.
TEST(HostileShutdown, SigtermClosesAConnectionThatDoesNotReadItsAnswers) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient hostile(daemon.socket_path());
  ASSERT_TRUE(hostile.connected());
  // ~8,000 stats answers (several MB) against a socket buffer of a few
  // hundred KB: most of them stay queued in the daemon.
  flood_stats(hostile, 8000);
  ASSERT_TRUE(await_all_read(hostile, daemon.socket_path())) << "the daemon read every request";
  ASSERT_TRUE(fresh_stats(daemon.socket_path())) << "the daemon still answers others";

  // Bounded by far more than the 5 s grace: the exit is the event waited on.
  const auto code = daemon.stop(SIGTERM, std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "kvblockd did not exit after SIGTERM while a client kept its answers unread\n"
                                << daemon.log();
  EXPECT_EQ(*code, 0) << daemon.log();
  EXPECT_TRUE(hostile.wait_closed(std::chrono::seconds(10))) << "the daemon closed the connection";
}

}  // namespace
}  // namespace kvb::test
