// The real kvblockd process on the paths issue "GPU in the daemon" adds that
// run on every machine: a device register_kv refused with the reason when
// the daemon has no GPU, and onboard_layers pushing per-layer progress in
// order and then the notification (on the host copy engine).
#include <gtest/gtest.h>

#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

TEST(DaemonGpuPaths, DeviceRegisterIsRefusedWithTheReasonWithoutAGpu) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.hello());
  auto stats = engine.client().call_body<proto::StatsReply>(RequestId{900}, proto::StatsRequest{});
  ASSERT_TRUE(stats);
  if (stats->json.find("\"gpu_present\":true") != std::string::npos)
    GTEST_SKIP() << "this daemon has a GPU (the GPU tests cover device registration)";
  EXPECT_NE(stats->json.find("\"gpu_present\":false"), std::string::npos) << stats->json;
  EXPECT_NE(stats->json.find("\"devices\":[]"), std::string::npos) << stats->json;
  EXPECT_NE(stats->json.find("\"copy_engines\":[\"host\"]"), std::string::npos) << stats->json;

  for (auto memory : {proto::MemoryHandle::cuda_ipc, proto::MemoryHandle::cuda_vmm}) {
    proto::RegisterKvRequest reg = engine.register_request();
    reg.memory = memory;
    reg.fd_count = 0;
    reg.device_uuid.assign(16, std::byte{1});
    reg.allocation_bytes = {reg.region_bytes * 4};
    for (std::uint32_t l = 0; l < 4; ++l) reg.regions.push_back({0, reg.region_bytes * l});
    if (memory == proto::MemoryHandle::cuda_ipc) reg.cuda_ipc_handles = {std::vector<std::byte>(64)};
    auto reply = engine.client().call(RequestId{engine.next_id()}, reg);
    ASSERT_TRUE(reply) << daemon.log();
    EXPECT_EQ(reply->code, Errc::unavailable) << reply->message;
    EXPECT_NE(reply->message.find("needs a GPU; this daemon has none ("), std::string::npos) << reply->message;
  }
  // The session is still usable: the memfd registration works.
  auto reg = engine.register_request();
  auto ok = engine.client().call(RequestId{engine.next_id()}, reg, engine.fds());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->code, Errc::ok) << ok->message;
}

// `devices` naming a GPU that is not there (no CUDA here, or fewer than 65
// GPUs on a GPU machine) refuses the start with the reason, exit 1.
TEST(DaemonGpuPaths, ADeviceThatIsNotUsableRefusesTheStart) {
  DaemonProcess daemon(KVBLOCKD_PATH, {"--device", "64"});
  EXPECT_FALSE(daemon.ready()) << daemon.log();
  const auto code = daemon.wait_exit(20s);
  ASSERT_TRUE(code) << "kvblockd kept running with --device 64:\n" << daemon.log();
  EXPECT_EQ(*code, 1) << daemon.log();
  EXPECT_NE(daemon.log().find("devices names CUDA device 64, which is not usable here"), std::string::npos)
      << daemon.log();
}

TEST(DaemonGpuPaths, OnboardLayersPushesProgressInLayerOrderThenTheNotification) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  // 5 layers in groups of 2: [0,2) [2,4) [4,5).
  TestEngine engine(daemon.socket_path(), 16, 7, proto::WireLayout{5, 2, 16, 64, 0, 256});
  ASSERT_TRUE(engine.attach()) << daemon.log();
  auto& client = engine.client();
  proto::OffloadRequest offload;
  for (std::uint32_t b = 0; b < 4; ++b) {
    engine.fill(b, b + 3);
    offload.items.push_back({BlockId{b}, 500 + b});
  }
  ASSERT_TRUE(client.call(RequestId{10}, offload));
  auto offloaded = client.notification_of(RequestId{10});
  ASSERT_TRUE(offloaded);
  ASSERT_EQ(offloaded->text, "10:ok");

  proto::OnboardLayersRequest onboard;
  onboard.layers_per_group = 2;
  for (std::uint32_t b = 0; b < 4; ++b) {
    engine.zero(8 + b);
    onboard.items.push_back({500 + b, BlockId{8 + b}});
  }
  ASSERT_TRUE(client.send(RequestId{11}, onboard));
  // Every frame for request 11, in arrival order: accepted, 3 progress, notification.
  std::vector<proto::Frame> frames;
  while (frames.empty() || frames.back().header.type != proto::MsgType::notification) {
    auto frame = client.read_frame(10s);
    ASSERT_TRUE(frame) << "no frame; daemon log:\n" << daemon.log();
    ASSERT_EQ(frame->header.request_id, RequestId{11});
    frames.push_back(std::move(*frame));
  }
  ASSERT_EQ(frames.size(), 5U);
  ASSERT_EQ(frames[0].header.type, proto::MsgType::reply);
  auto reply = proto::decode_payload<proto::Reply>(frames[0].payload);
  ASSERT_TRUE(reply);
  EXPECT_TRUE(reply->accepted) << reply->message;
  const std::uint32_t want[][2] = {{0, 2}, {2, 4}, {4, 5}};
  for (int g = 0; g < 3; ++g) {
    ASSERT_EQ(frames[1 + g].header.type, proto::MsgType::progress);
    auto progress = proto::decode_payload<proto::Progress>(frames[1 + g].payload);
    ASSERT_TRUE(progress);
    EXPECT_EQ(progress->layer_begin, want[g][0]) << "group " << g;
    EXPECT_EQ(progress->layer_end, want[g][1]) << "group " << g;
    EXPECT_EQ(progress->num_layers, 5U);
  }
  auto note = proto::decode_payload<proto::Notification>(frames[4].payload);
  ASSERT_TRUE(note);
  EXPECT_EQ(note->text, "11:ok");
  for (std::uint32_t b = 0; b < 4; ++b) EXPECT_TRUE(engine.same(b, 8 + b)) << "block " << b;

  // layers_per_group 0 is refused; a missing hash fails without progress.
  proto::OnboardLayersRequest zero;
  zero.layers_per_group = 0;
  zero.items = {{500, BlockId{12}}};
  auto refused = client.call(RequestId{12}, zero);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, Errc::invalid_argument);
  EXPECT_NE(refused->message.find("layers_per_group must be >= 1"), std::string::npos) << refused->message;
  proto::OnboardLayersRequest missing;
  missing.layers_per_group = 1;
  missing.items = {{999, BlockId{13}}};
  ASSERT_TRUE(client.send(RequestId{13}, missing));
  auto first = client.read_frame(10s);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->header.type, proto::MsgType::reply);
  auto second = client.read_frame(10s);
  ASSERT_TRUE(second);
  ASSERT_EQ(second->header.type, proto::MsgType::notification);
  auto failed = proto::decode_payload<proto::Notification>(second->payload);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->code, Errc::not_found) << failed->text;
}

}  // namespace
}  // namespace kvb::test
