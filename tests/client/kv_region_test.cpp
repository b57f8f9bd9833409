// KvRegion (the client's memfd KV cache) against blockmgr's Layout: both
// place chunks with common's layout math, so they must agree exactly.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "kvb/blockmgr/layout.h"
#include "kvb/client/kv_region.h"

namespace {

using kvb::client::BlockShape;
using kvb::client::KvRegion;
using kvb::client::WireLayoutKind;

BlockShape shape(std::uint32_t layers, std::uint32_t outer, std::uint32_t page, std::uint32_t inner, std::uint8_t dtype,
                 std::uint32_t alignment) {
  BlockShape s;
  s.num_layers = layers;
  s.outer_dim = outer;
  s.page_size = page;
  s.inner_dim = inner;
  s.dtype = dtype;
  s.alignment = alignment;
  return s;
}

TEST(KvRegion, MatchesBlockmgrLayoutForEveryKind) {
  const BlockShape shapes[] = {shape(3, 2, 16, 24, 2, 256), shape(2, 1, 7, 5, 3, 64), shape(1, 2, 3, 3, 0, 512)};
  for (const auto& s : shapes) {
    for (auto kind : {WireLayoutKind::fully_contiguous, WireLayoutKind::layer_separate_block_outer,
                      WireLayoutKind::layer_separate_outer_block}) {
      const std::uint32_t blocks = 5;
      auto region = KvRegion::create(s, kind, blocks);
      ASSERT_TRUE(region) << region.error().to_string();
      auto layout = kvb::Layout::make(kvb::proto::to_spec(s).value(), kind, blocks);
      ASSERT_TRUE(layout) << layout.error().to_string();
      EXPECT_EQ(region->num_regions(), layout->num_regions());
      EXPECT_EQ(region->region_bytes(), layout->region_bytes());
      EXPECT_EQ(kvb::client::chunk_bytes(s), layout->chunk_bytes());
      EXPECT_EQ(kvb::client::block_bytes(s), layout->block_bytes());
      for (std::uint32_t b = 0; b < blocks; ++b)
        for (std::uint32_t l = 0; l < s.num_layers; ++l)
          for (std::uint32_t o = 0; o < s.outer_dim; ++o) {
            const auto mine = region->place(b, l, o);
            const auto theirs = layout->chunk(kvb::BlockId{b}, l, o);
            ASSERT_EQ(mine.region, theirs.region) << b << "/" << l << "/" << o;
            ASSERT_EQ(mine.offset, theirs.offset) << b << "/" << l << "/" << o;
          }
    }
  }
}

TEST(KvRegion, MemfdIsSharedWithAnotherMapping) {
  auto region = KvRegion::create(shape(2, 2, 4, 8, 1, 256), WireLayoutKind::layer_separate_block_outer, 4);
  ASSERT_TRUE(region) << region.error().to_string();
  ASSERT_EQ(region->fds().size(), 2U);
  auto chunk = region->chunk(3, 1, 1);
  std::memset(chunk.data(), 0x5A, chunk.size());
  // What the daemon would do with the fd it receives: map it and read.
  void* other = ::mmap(nullptr, region->region_bytes(), PROT_READ, MAP_SHARED, region->fds()[1], 0);
  ASSERT_NE(other, MAP_FAILED);
  const auto place = region->place(3, 1, 1);
  EXPECT_EQ(std::memcmp(static_cast<std::byte*>(other) + place.offset, chunk.data(), chunk.size()), 0);
  ::munmap(other, region->region_bytes());
}

TEST(KvRegion, CloseFdsKeepsTheMapping) {
  auto region = KvRegion::create(shape(1, 2, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 2);
  ASSERT_TRUE(region);
  region->close_fds();
  EXPECT_TRUE(region->fds().empty());
  EXPECT_EQ(region->num_regions(), 1U);
  auto chunk = region->chunk(1, 0, 1);
  std::memset(chunk.data(), 1, chunk.size());  // still mapped
  region->close_fds();                         // idempotent
}

TEST(KvRegion, InvalidShapesNameTheField) {
  auto bad_outer = KvRegion::create(shape(1, 3, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 2);
  ASSERT_FALSE(bad_outer);
  EXPECT_EQ(bad_outer.error().code, kvb::Errc::invalid_argument);
  EXPECT_NE(bad_outer.error().message.find("outer_dim"), std::string::npos);
  auto bad_align = KvRegion::create(shape(1, 2, 4, 8, 1, 100), WireLayoutKind::fully_contiguous, 2);
  ASSERT_FALSE(bad_align);
  EXPECT_NE(bad_align.error().message.find("alignment"), std::string::npos);
  auto no_blocks = KvRegion::create(shape(1, 2, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 0);
  ASSERT_FALSE(no_blocks);
  EXPECT_NE(no_blocks.error().message.find("num_blocks"), std::string::npos);
}

TEST(KvRegion, MoveTransfersOwnership) {
  auto region = KvRegion::create(shape(1, 2, 4, 8, 1, 256), WireLayoutKind::fully_contiguous, 2);
  ASSERT_TRUE(region);
  KvRegion moved = std::move(*region);
  EXPECT_EQ(moved.num_regions(), 1U);
  EXPECT_EQ(region->num_regions(), 0U);  // NOLINT(bugprone-use-after-move): checking the moved-from state
}

TEST(KvRegion, AdoptMemfdsMapsTheirBytesAndOwnsThem) {
  const auto sh = shape(2, 2, 4, 8, 1, 256);
  const auto bytes = KvRegion::region_bytes_for(sh, WireLayoutKind::layer_separate_outer_block, 3);
  ASSERT_TRUE(bytes) << bytes.error().to_string();
  std::vector<int> fds;
  for (int i = 0; i < 2; ++i) {
    const int fd = ::memfd_create("adopt-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(*bytes)), 0);
    const unsigned char mark = static_cast<unsigned char>(0x40 + i);
    ASSERT_EQ(::pwrite(fd, &mark, 1, 0), 1);
    fds.push_back(fd);
  }
  const int probe = ::dup(fds[1]);
  auto region = KvRegion::adopt_memfds(sh, WireLayoutKind::layer_separate_outer_block, 3, fds);
  ASSERT_TRUE(region) << region.error().to_string();
  EXPECT_EQ(region->region_bytes(), *bytes);
  EXPECT_EQ(std::to_integer<int>(region->chunk(0, 1, 0)[0]), 0x41);  // layer 1's region is the second fd
  std::memset(region->chunk(2, 1, 1).data(), 0x7E, region->chunk(2, 1, 1).size());
  unsigned char seen = 0;
  ASSERT_EQ(::pread(probe, &seen, 1, static_cast<off_t>(region->place(2, 1, 1).offset)), 1);
  EXPECT_EQ(seen, 0x7E);                                               // the same memory as the fd's
  region = KvRegion::create(sh, WireLayoutKind::fully_contiguous, 1);  // drops the adopted one: its fds close
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1);
  ::close(probe);
}

TEST(KvRegion, AdoptMemfdsRefusesShortOrMiscountedFds) {
  const auto sh = shape(2, 2, 4, 8, 1, 256);
  const int small = ::memfd_create("adopt-small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(::ftruncate(small, 64), 0);
  const int other = ::memfd_create("adopt-other", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(::ftruncate(other, 1 << 20), 0);
  auto short_fd = KvRegion::adopt_memfds(sh, WireLayoutKind::layer_separate_block_outer, 3, {small, other});
  ASSERT_FALSE(short_fd);
  EXPECT_EQ(short_fd.error().code, kvb::Errc::invalid_argument);
  EXPECT_NE(short_fd.error().message.find("holds 64 bytes"), std::string::npos) << short_fd.error().message;
  EXPECT_EQ(::fcntl(small, F_GETFD), -1);  // owned and closed on error too
  const int one = ::memfd_create("adopt-one", MFD_CLOEXEC);
  auto miscount = KvRegion::adopt_memfds(sh, WireLayoutKind::layer_separate_block_outer, 3, {one});
  ASSERT_FALSE(miscount);
  EXPECT_NE(miscount.error().message.find("1 fds for 2 layout regions"), std::string::npos);
}

// kvblockd maps only regions that cannot shrink under its copies (a shrunk
// shared mapping turns its next memcpy into SIGBUS): every region is a
// memfd sealed with F_SEAL_SHRINK, and shrinking it fails.
TEST(KvRegion, RegionsAreSealedAgainstShrinking) {
  auto region = KvRegion::create(shape(2, 2, 4, 8, 0, 256), WireLayoutKind::layer_separate_block_outer, 3);
  ASSERT_TRUE(region) << region.error().to_string();
  for (int fd : region->fds()) {
    const int seals = ::fcntl(fd, F_GET_SEALS);
    ASSERT_GE(seals, 0) << "created with MFD_ALLOW_SEALING";
    EXPECT_NE(seals & F_SEAL_SHRINK, 0);
    EXPECT_EQ(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE), 0) << "the daemon writes onboarded blocks into it";
    EXPECT_NE(::ftruncate(fd, 0), 0);
    EXPECT_EQ(errno, EPERM);
  }
}

// Adopted memfds are sealed against shrinking too; one that cannot be (made
// without MFD_ALLOW_SEALING) is refused, since kvblockd would refuse it.
TEST(KvRegion, AdoptedMemfdsAreSealedOrRefused) {
  const auto sh = shape(1, 2, 4, 8, 1, 256);
  const auto bytes = KvRegion::region_bytes_for(sh, WireLayoutKind::fully_contiguous, 2);
  ASSERT_TRUE(bytes);
  const int sealable = ::memfd_create("adopt-sealable", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(::ftruncate(sealable, static_cast<off_t>(*bytes)), 0);
  auto adopted = KvRegion::adopt_memfds(sh, WireLayoutKind::fully_contiguous, 2, {sealable});
  ASSERT_TRUE(adopted) << adopted.error().to_string();
  EXPECT_NE(::fcntl(adopted->fds()[0], F_GET_SEALS) & F_SEAL_SHRINK, 0);
  const int plain = ::memfd_create("adopt-plain", MFD_CLOEXEC);
  ASSERT_EQ(::ftruncate(plain, static_cast<off_t>(*bytes)), 0);
  auto refused = KvRegion::adopt_memfds(sh, WireLayoutKind::fully_contiguous, 2, {plain});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, kvb::Errc::invalid_argument);
  EXPECT_NE(refused.error().message.find("sealed"), std::string::npos) << refused.error().message;
}

}  // namespace
