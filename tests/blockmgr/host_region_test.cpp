#include "kvb/blockmgr/host_region.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

namespace kvb {
namespace {

TEST(HostRegion, RoundsTo2MiBAndAligns) {
  auto region = HostRegion::create(3 * 1024 * 1024 + 1, "kvb-test");
  ASSERT_TRUE(region.has_value()) << region.error().to_string();
  const auto& r = **region;
  EXPECT_EQ(r.size(), 4U * 1024 * 1024);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(r.data()) % kHugePageBytes, 0U);
  EXPECT_EQ(r.kind(), MemoryKind::host);
  EXPECT_GE(r.shareable_fd(), 0);
  std::memset(r.data(), 0xab, r.size());  // every byte is mapped and writable
  EXPECT_EQ(static_cast<unsigned char>(r.data()[r.size() - 1]), 0xab);
}

TEST(HostRegion, ZeroBytesIsAnError) {
  auto region = HostRegion::create(0);
  ASSERT_FALSE(region.has_value());
  EXPECT_EQ(region.error().code, Errc::invalid_argument);
  EXPECT_NE(region.error().message.find("bytes"), std::string::npos);
}

TEST(HostRegion, MapFdSeesTheSamePages) {
  auto a = HostRegion::create(kHugePageBytes);
  ASSERT_TRUE(a.has_value());
  std::memcpy((*a)->data() + 4096, "kvblockd", 8);
  auto b = HostRegion::map_fd(::dup((*a)->shareable_fd()), (*a)->size());
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_NE((*a)->data(), (*b)->data());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>((*b)->data()) % kHugePageBytes, 0U);
  EXPECT_EQ(std::memcmp((*b)->data() + 4096, "kvblockd", 8), 0);
  (*b)->data()[100] = std::byte{42};
  EXPECT_EQ((*a)->data()[100], std::byte{42}) << "writes through the second mapping must be visible";
}

// The real path to an engine: the fd crosses a Unix socket as SCM_RIGHTS.
TEST(HostRegion, MapsAMemfdReceivedOverAUnixSocket) {
  auto a = HostRegion::create(kHugePageBytes);
  ASSERT_TRUE(a.has_value());
  std::memcpy((*a)->data(), "shared", 6);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  {
    char byte = 'x';
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    const int fd = (*a)->shareable_fd();
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ASSERT_EQ(::sendmsg(sv[0], &msg, 0), 1);
  }
  int received = -1;
  {
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ASSERT_EQ(::recvmsg(sv[1], &msg, 0), 1);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    ASSERT_NE(c, nullptr);
    ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
    std::memcpy(&received, CMSG_DATA(c), sizeof(int));
  }
  ::close(sv[0]);
  ::close(sv[1]);
  ASSERT_GE(received, 0);
  auto b = HostRegion::map_fd(received, (*a)->size());
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_EQ(std::memcmp((*b)->data(), "shared", 6), 0);
}

TEST(HostRegion, MapFdRejectsBadFdsAndShortFiles) {
  auto neg = HostRegion::map_fd(-1, 4096);
  ASSERT_FALSE(neg.has_value());
  EXPECT_EQ(neg.error().code, Errc::invalid_argument);

  auto a = HostRegion::create(kHugePageBytes);
  ASSERT_TRUE(a.has_value());
  auto too_long = HostRegion::map_fd(::dup((*a)->shareable_fd()), 2 * kHugePageBytes);
  ASSERT_FALSE(too_long.has_value());
  EXPECT_NE(too_long.error().message.find("fewer"), std::string::npos) << too_long.error().message;

  // A closed fd: fstat fails with EBADF and the errno text is in the message.
  const int fd = ::dup((*a)->shareable_fd());
  ::close(fd);
  auto closed = HostRegion::map_fd(fd, 4096);
  ASSERT_FALSE(closed.has_value());
  EXPECT_EQ(closed.error().code, Errc::io_error);
  EXPECT_NE(closed.error().message.find("errno"), std::string::npos) << closed.error().message;
}

}  // namespace
}  // namespace kvb
