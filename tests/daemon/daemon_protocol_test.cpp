// The real kvblockd process: hello, stats, config, status/wait, and every
// malformed frame closing only its own connection.
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "raw_client.h"
#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {
namespace {

using proto::MsgType;

TEST(DaemonProtocol, HelloStatsConfigAndCleanExit) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  namespace fs = std::filesystem;
  EXPECT_EQ(fs::status(daemon.socket_path()).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write)
      << "socket mode 0600 by default";
  RawClient client(daemon.socket_path());
  ASSERT_TRUE(client.connected());
  auto hello = client.call_body<proto::HelloReply>(RequestId{1}, proto::HelloRequest{1, 1, "t", 7, small_layout()});
  ASSERT_TRUE(hello) << hello.error().to_string();
  EXPECT_EQ(hello->version, 1);
  EXPECT_GT(hello->session_id.value(), 0U);
  EXPECT_EQ(hello->max_frame_bytes, 16U << 20);
  auto stats = client.call_body<proto::StatsReply>(RequestId{2}, proto::StatsRequest{});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(stats->json, "sessions"), 1) << stats->json;
  EXPECT_EQ(stat_of(stats->json, "inflight_requests"), 0);
  EXPECT_EQ(stat_of(stats->json, "leased_blocks"), 0);
  auto config = client.call_body<proto::ConfigReply>(RequestId{3}, proto::ConfigRequest{});
  ASSERT_TRUE(config);
  EXPECT_NE(config->toml.find(daemon.socket_path()), std::string::npos) << config->toml;
  // A second hello is refused, the session goes on.
  auto again = client.call(RequestId{4}, proto::HelloRequest{1, 1, "t", 7, small_layout()});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->code, Errc::wrong_state);
  // Unknown request ids have state unknown; a duplicate id of a finished request is fine.
  auto status = client.call_body<proto::RequestStateReply>(RequestId{5}, proto::StatusRequest{RequestId{999}});
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, proto::RequestState::unknown);
  auto wait = client.call_body<proto::RequestStateReply>(RequestId{6}, proto::WaitRequest{RequestId{999}, 10});
  ASSERT_TRUE(wait);
  EXPECT_EQ(wait->state, proto::RequestState::unknown);
  auto bye = client.call(RequestId{7}, proto::ByeRequest{});
  ASSERT_TRUE(bye);
  EXPECT_EQ(bye->code, Errc::ok);
  EXPECT_TRUE(client.wait_closed());
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonProtocol, VersionAndLayoutRefusalsAreReplies) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient client(daemon.socket_path());
  auto old = client.call(RequestId{1}, proto::HelloRequest{2, 3, "future", 0, small_layout()});
  ASSERT_TRUE(old);
  EXPECT_EQ(old->code, Errc::unsupported);
  auto layout = small_layout();
  layout.page_size = 0;
  auto bad = client.call(RequestId{2}, proto::HelloRequest{1, 1, "bad layout", 0, layout});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->code, Errc::invalid_argument);
  EXPECT_NE(bad->message.find("page_size"), std::string::npos) << bad->message;
  auto lookup = client.call(RequestId{3}, proto::LookupRequest{false, {1}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->code, Errc::wrong_state);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

struct Malformed {
  const char* name;
  std::vector<std::byte> bytes;
  std::uint64_t echoed_id;
};

std::vector<std::byte> with_header(proto::FrameHeader header, std::vector<std::byte> payload) {
  const auto head = proto::encode_header(header);
  std::vector<std::byte> out(proto::kHeaderBytes + payload.size());
  std::memcpy(out.data(), head.data(), head.size());
  if (!payload.empty()) std::memcpy(out.data() + head.size(), payload.data(), payload.size());
  return out;
}

TEST(DaemonProtocol, MalformedFramesCloseOnlyTheirConnection) {
  DaemonProcess daemon(KVBLOCKD_PATH, {"--max-frame-bytes", "4096"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient bystander(daemon.socket_path());
  ASSERT_TRUE(bystander.call_body<proto::HelloReply>(RequestId{1}, proto::HelloRequest{1, 1, "b", 0, small_layout()}));

  std::vector<Malformed> cases;
  {
    proto::FrameHeader h;  // bad magic
    h.magic = 0x11223344;
    h.request_id = RequestId{10};
    cases.push_back({"bad magic", with_header(h, {}), 0});
  }
  {
    proto::FrameHeader h;  // wrong version
    h.version = 9;
    h.request_id = RequestId{11};
    cases.push_back({"wrong version", with_header(h, {}), 0});
  }
  {
    proto::FrameHeader h;  // unknown type
    h.type = static_cast<MsgType>(77);
    h.request_id = RequestId{12};
    cases.push_back({"unknown type", with_header(h, {}), 12});
  }
  {
    proto::FrameHeader h;  // oversize: over max_frame_bytes
    h.type = MsgType::lookup;
    h.length = 5000;
    h.request_id = RequestId{13};
    cases.push_back({"oversize", with_header(h, std::vector<std::byte>(5000)), 13});
  }
  {
    proto::FrameHeader h;  // bad length: 20 bytes for an 8-byte status payload
    h.type = MsgType::status;
    h.length = 20;
    h.request_id = RequestId{14};
    cases.push_back({"bad length", with_header(h, std::vector<std::byte>(20)), 14});
  }
  {
    proto::FrameHeader h;  // truncated: a hello whose payload stops after 3 bytes
    h.type = MsgType::hello;
    h.length = 3;
    h.request_id = RequestId{15};
    cases.push_back({"truncated", with_header(h, std::vector<std::byte>(3)), 15});
  }
  {
    proto::FrameHeader h;  // reserved flags set
    h.type = MsgType::stats;
    h.flags = 4;
    h.request_id = RequestId{16};
    cases.push_back({"flags", with_header(h, {}), 16});
  }
  {
    proto::FrameHeader h;  // a daemon -> client type sent by a client
    h.type = MsgType::reply;
    h.request_id = RequestId{17};
    cases.push_back({"reply from client", with_header(h, {}), 17});
  }
  {
    // register_kv declaring fds that never came
    proto::RegisterKvRequest reg;
    reg.fd_count = 4;
    reg.num_blocks = 1;
    cases.push_back({"missing fds", *proto::encode_message(RequestId{18}, reg), 18});
  }

  for (const auto& c : cases) {
    RawClient client(daemon.socket_path());
    ASSERT_TRUE(client.connected()) << c.name;
    if (std::string_view(c.name) == "missing fds") {
      ASSERT_TRUE(client.call_body<proto::HelloReply>(RequestId{1}, proto::HelloRequest{1, 1, "m", 0, small_layout()}));
    }
    ASSERT_TRUE(client.send_bytes(c.bytes)) << c.name;
    auto frame = client.read_frame();
    ASSERT_TRUE(frame) << c.name;
    ASSERT_EQ(frame->header.type, MsgType::error) << c.name;
    EXPECT_EQ(frame->header.request_id, RequestId{c.echoed_id}) << c.name;
    auto error = proto::decode_payload<proto::ErrorFrame>(frame->payload);
    ASSERT_TRUE(error) << c.name;
    EXPECT_EQ(error->code, Errc::protocol_error) << c.name << ": " << error->message;
    EXPECT_TRUE(client.wait_closed()) << c.name << ": the daemon closes the connection";
    // The other connection is unaffected.
    auto stats = bystander.call_body<proto::StatsReply>(RequestId{100 + c.echoed_id}, proto::StatsRequest{});
    ASSERT_TRUE(stats) << c.name;
  }
  auto stats = bystander.call_body<proto::StatsReply>(RequestId{500}, proto::StatsRequest{});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(stats->json, "sessions"), 1) << stats->json;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonProtocol, SecondDaemonOnTheSameSocketRefusesToStart) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready());
  DaemonProcess second(KVBLOCKD_PATH, {"--socket", daemon.socket_path()});
  EXPECT_EQ(second.wait_exit(std::chrono::seconds(20)), 1) << second.log();
  EXPECT_NE(second.log().find("already listening"), std::string::npos) << second.log();
  RawClient client(daemon.socket_path());
  EXPECT_TRUE(client.call_body<proto::StatsReply>(RequestId{1}, proto::StatsRequest{}));
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace kvb::test
