// The real kvblockd process: Prometheus metrics over HTTP, uid checks,
// the session limit, drain and busy refusals.

#include <gtest/gtest.h>

#include "support/daemon_process.h"
#include "support/loopback_http.h"
#include "test_engine.h"

namespace kvb::test {
namespace {

TEST(DaemonAdmin, MetricsEndpointServesPrometheusText) {
  const auto port = free_port();
  DaemonProcess daemon(KVBLOCKD_PATH, {"--metrics-port", std::to_string(port)});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 16);
  ASSERT_TRUE(engine.attach());
  engine.fill(0, 1);
  ASSERT_TRUE(engine.client().call(RequestId{40}, proto::OffloadRequest{{{BlockId{0}, 77}}}));
  ASSERT_TRUE(engine.client().notification_of(RequestId{40}));
  ASSERT_TRUE(engine.client().call(RequestId{41}, proto::LookupRequest{false, {77}}));

  const auto text = http_get(port, "/metrics");
  ASSERT_NE(text.find("200 OK"), std::string::npos) << text;
  EXPECT_NE(text.find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(text.find("kvblockd_sessions 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kvblockd_requests_total{op=\"offload\",outcome=\"ok\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kvblockd_requests_total{op=\"lookup\",outcome=\"ok\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kvblockd_request_duration_seconds_count{op=\"offload\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kvblockd_blocks{tier=\"g2\",state=\"registered\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kvblockd_bytes_moved_total{direction=\"offload\"} 8192\n"), std::string::npos) << text;
  EXPECT_NE(http_get(port, "/other").find("404"), std::string::npos);
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonAdmin, UidsNotAllowedAreRefused) {
  const auto me = ::getuid();
  DaemonProcess daemon(KVBLOCKD_PATH, {"--allowed-uid", std::to_string(me + 12345)});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient client(daemon.socket_path());
  auto frame = client.read_frame();
  ASSERT_TRUE(frame);
  ASSERT_EQ(frame->header.type, proto::MsgType::error);
  auto error = proto::decode_payload<proto::ErrorFrame>(frame->payload);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, Errc::permission_denied);
  EXPECT_NE(error->message.find(std::to_string(me)), std::string::npos) << error->message;
  EXPECT_TRUE(client.wait_closed());
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(DaemonAdmin, SessionsOverTheLimitAreRefused) {
  DaemonProcess daemon(KVBLOCKD_PATH, {"--max-sessions", "2"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient a(daemon.socket_path());
  RawClient b(daemon.socket_path());
  ASSERT_TRUE(a.call_body<proto::StatsReply>(RequestId{1}, proto::StatsRequest{}));
  ASSERT_TRUE(b.call_body<proto::StatsReply>(RequestId{1}, proto::StatsRequest{}));
  RawClient c(daemon.socket_path());
  auto frame = c.read_frame();
  ASSERT_TRUE(frame);
  ASSERT_EQ(frame->header.type, proto::MsgType::error);
  auto error = proto::decode_payload<proto::ErrorFrame>(frame->payload);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, Errc::out_of_capacity);
  EXPECT_TRUE(c.wait_closed());
  EXPECT_TRUE(a.call_body<proto::StatsReply>(RequestId{2}, proto::StatsRequest{}));
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(DaemonAdmin, InflightLimitAndDrainRefuseClearly) {
  // One copy slot, no queue: a second copy while the first runs is busy;
  // max_inflight 1: a second request of the same session is busy.
  DaemonProcess daemon(KVBLOCKD_PATH, {"--max-inflight", "1", "--copy-slots", "1", "--copy-queue", "0"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  constexpr std::uint32_t kBlocks = 4096;
  TestEngine engine(daemon.socket_path(), kBlocks);
  ASSERT_TRUE(engine.attach());
  proto::OffloadRequest big;
  for (std::uint32_t b = 0; b < kBlocks; ++b) big.items.push_back({BlockId{b}, 1 + std::uint64_t{b}});
  // Both frames go out in one write, so the daemon reads them together and
  // the second arrives while the first is in flight.
  auto first = proto::encode_message(RequestId{1}, big);
  auto second = proto::encode_message(RequestId{2}, proto::OffloadRequest{{{BlockId{0}, 999'999}}});
  ASSERT_TRUE(first && second);
  std::vector<std::byte> both = *first;
  both.insert(both.end(), second->begin(), second->end());
  ASSERT_TRUE(engine.client().send_bytes(both));
  auto r1 = engine.client().reply_to(RequestId{1});
  auto r2 = engine.client().reply_to(RequestId{2});
  ASSERT_TRUE(r1 && r2);
  EXPECT_TRUE(r1->accepted);
  EXPECT_EQ(r2->code, Errc::busy);
  EXPECT_NE(r2->message.find("max_inflight"), std::string::npos) << r2->message;
  // A duplicate id of a request in flight is refused, unless it already ended.
  auto dup = engine.client().call(RequestId{1}, proto::LookupRequest{false, {1}});
  ASSERT_TRUE(dup);
  EXPECT_TRUE(dup->code == Errc::already_exists || dup->code == Errc::ok) << dup->message;
  ASSERT_TRUE(engine.client().notification_of(RequestId{1}, std::chrono::seconds(60)));

  RawClient op(daemon.socket_path());
  ASSERT_TRUE(op.call(RequestId{1}, proto::DrainRequest{}));
  auto refused = engine.client().call(RequestId{3}, proto::OffloadRequest{{{BlockId{0}, 5}}});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, Errc::unavailable);
  auto still = engine.client().call_body<proto::LookupReply>(RequestId{4}, proto::LookupRequest{false, {1, 2}});
  ASSERT_TRUE(still) << "lookups go on while draining";
  EXPECT_EQ(still->prefix_blocks, 2U);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace kvb::test
