// Hostile clients, case 6 (time bounds) and 4 (parked fds): a connection
// cannot hold a partial frame (and the fds sent with it) or sit without a
// hello forever. frame_timeout_ms and hello_timeout_ms close it with an
// error frame (code timeout); a session that said hello may idle.
#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

/// The first frame `client` gets, decoded as an error frame.
std::optional<proto::ErrorFrame> error_of(RawClient& client) {
  auto frame = client.read_frame(std::chrono::seconds(30));
  if (!frame || frame->header.type != proto::MsgType::error) return std::nullopt;
  auto error = proto::decode_payload<proto::ErrorFrame>(frame->payload);
  if (!error) return std::nullopt;
  return *error;
}

// Before the fix: half a frame (with fds) stayed parked for as long as the
// client kept the connection open.
TEST(HostileIdle, APartialFrameAndItsFdsAreDroppedAfterTheFrameTimeout) {
  DaemonProcess daemon(kvblockd_under_test(), {"--frame-timeout-ms", "300"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.hello()) << "a session that said hello is not subject to hello_timeout_ms";
  auto frame = proto::encode_message(RequestId{9}, engine.register_request());
  ASSERT_TRUE(frame);
  // Everything but the last byte, with the region fds: the frame never completes.
  ASSERT_TRUE(engine.client().send_bytes(std::span(frame->data(), frame->size() - 1), engine.fds()));
  ASSERT_TRUE(await_all_read(engine.client(), daemon.socket_path()));
  const auto parked = usage_of(daemon.pid());  // the socket and the 4 region fds
  auto error = error_of(engine.client());
  ASSERT_TRUE(error) << "an error frame before the close";
  EXPECT_EQ(error->code, Errc::timeout) << error->message;
  EXPECT_NE(error->message.find("frame_timeout_ms"), std::string::npos) << error->message;
  EXPECT_TRUE(engine.client().wait_closed(std::chrono::seconds(10)));
  ASSERT_TRUE(fresh_stats(daemon.socket_path()));
  // The 4 region fds and the engine's socket are closed (the stats
  // connection's socket may not be closed yet: at most one more).
  EXPECT_LE(usage_of(daemon.pid()).fds, parked.fds - 4) << "parked: " << parked.fds;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// Before the fix: a connection that never sent a byte was kept forever.
TEST(HostileIdle, AConnectionWithoutHelloIsClosedWhenIdle) {
  DaemonProcess daemon(kvblockd_under_test(), {"--hello-timeout-ms", "300"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.attach());
  RawClient silent(daemon.socket_path());
  ASSERT_TRUE(silent.connected());
  auto error = error_of(silent);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, Errc::timeout) << error->message;
  EXPECT_NE(error->message.find("hello_timeout_ms"), std::string::npos) << error->message;
  EXPECT_TRUE(silent.wait_closed(std::chrono::seconds(10)));
  // The engine, idle as long as the silent one, still has its session.
  auto lookup = engine.client().call(RequestId{engine.next_id()}, proto::LookupRequest{false, {1}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->code, Errc::ok) << lookup->message;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
