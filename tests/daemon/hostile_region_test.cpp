// Hostile clients, case 1: an engine region that shrinks under the daemon's
// mapping. Shared mappings past the end of their file fault with SIGBUS, so
// kvblockd accepts only memfds sealed with F_SEAL_SHRINK.
#include <fcntl.h>
#include <stdlib.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

proto::OffloadRequest offload_of(std::uint32_t blocks, std::uint64_t first_hash) {
  proto::OffloadRequest offload;
  for (std::uint32_t b = 0; b < blocks; ++b) offload.items.push_back({BlockId{b}, first_hash + b});
  return offload;
}

// The reproduction: register, shrink the memfd to 0, ask for an offload and
// an onboard. Before the fix the daemon died of SIGBUS in the copy engine.
TEST(HostileRegion, ShrunkRegionCannotKillTheDaemon) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 16, 0, small_layout(), Seal::none);
  ASSERT_TRUE(engine.hello());
  const auto attached = usage_of(daemon.pid());  // + the engine's socket and its layout's pool
  auto registered = engine.register_kv();
  ASSERT_TRUE(registered);
  for (int fd : engine.fds()) ASSERT_EQ(::ftruncate(fd, 0), 0) << "an unsealed memfd can shrink";
  engine.client().send(RequestId{100}, offload_of(16, 1000));
  engine.client().send(RequestId{101}, proto::OnboardRequest{{{1000, BlockId{0}}}});
  auto offload = engine.client().reply_to(RequestId{100});
  (void)engine.client().reply_to(RequestId{101});
  if (offload && offload->accepted) (void)engine.client().notification_of(RequestId{100});

  EXPECT_LE(usage_of(daemon.pid()).fds, attached.fds) << "the refused fds are closed";
  EXPECT_TRUE(fresh_stats(daemon.socket_path())) << "the daemon answers other clients";
  EXPECT_TRUE(daemon.alive()) << daemon.log();
  EXPECT_EQ(registered->code, Errc::invalid_argument) << "an unsealed memfd is refused";
  EXPECT_NE(registered->message.find("region 0"), std::string::npos) << registered->message;
  EXPECT_NE(registered->message.find("F_SEAL_SHRINK"), std::string::npos) << registered->message;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << "128 + 7 is SIGBUS\n" << daemon.log();
}

TEST(HostileRegion, RegularFileIsRefused) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 4);
  ASSERT_TRUE(engine.hello());
  auto reg = engine.register_request();
  std::vector<int> files;
  char dir[] = "/tmp/kvb-hostile-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  for (std::uint32_t i = 0; i < reg.fd_count; ++i) {
    const std::string path = std::string(dir) + "/region" + std::to_string(i);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(reg.region_bytes)), 0);
    files.push_back(fd);
  }
  auto reply = engine.client().call(RequestId{50}, reg, files);
  for (int fd : files) ::close(fd);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->code, Errc::invalid_argument);
  EXPECT_NE(reply->message.find("not a sealable memfd"), std::string::npos) << reply->message;
  EXPECT_TRUE(daemon.alive());
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

// The client side of the rule: a sealed region cannot shrink, so the same
// attempt fails in the client and the daemon's copies go on.
TEST(HostileRegion, SealedRegionCannotShrinkAndIsServed) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 16);
  ASSERT_TRUE(engine.attach());
  for (int fd : engine.fds()) {
    EXPECT_NE(::ftruncate(fd, 0), 0);
    EXPECT_EQ(errno, EPERM);
  }
  engine.fill(0, 9);
  auto accepted = engine.client().call(RequestId{100}, offload_of(1, 1000));
  ASSERT_TRUE(accepted && accepted->accepted);
  auto done = engine.client().notification_of(RequestId{100});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->code, Errc::ok) << done->text;
  auto onboard = engine.client().call(RequestId{101}, proto::OnboardRequest{{{1000, BlockId{1}}}});
  ASSERT_TRUE(onboard && onboard->accepted);
  auto onboarded = engine.client().notification_of(RequestId{101});
  ASSERT_TRUE(onboarded);
  EXPECT_EQ(onboarded->code, Errc::ok) << onboarded->text;
  EXPECT_TRUE(engine.same(0, 1));
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
