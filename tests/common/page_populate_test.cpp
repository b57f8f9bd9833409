// populate_for_write on a fresh memfd mapping (pages resident afterwards,
// bytes unchanged), and the shmem_enabled reading.
#include "kvb/common/page_populate.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

namespace kvb {
namespace {

std::uint64_t page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

std::uint64_t resident_pages(std::byte* base, std::uint64_t bytes) {
  std::vector<unsigned char> vec(bytes / page_size());
  if (::mincore(base, bytes, vec.data()) != 0) return ~std::uint64_t{0};
  std::uint64_t n = 0;
  for (unsigned char v : vec) n += v & 1U;
  return n;
}

class FreshMemfd : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = ::memfd_create("populate-test", MFD_CLOEXEC);
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, static_cast<off_t>(bytes_)), 0);
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    ASSERT_NE(p, MAP_FAILED);
    base_ = static_cast<std::byte*>(p);
  }
  void TearDown() override {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    if (fd_ >= 0) ::close(fd_);
  }

  const std::uint64_t bytes_ = 256 * page_size();
  int fd_ = -1;
  std::byte* base_ = nullptr;
};

TEST_F(FreshMemfd, PopulateForWriteMakesEveryPageResidentAndKeepsTheBytes) {
  ASSERT_EQ(resident_pages(base_, bytes_), 0U);
  // Two pages written before: the rest are holes of the file.
  std::memset(base_ + 3 * page_size(), 0x3c, page_size());
  std::memset(base_ + 200 * page_size() + 17, 0xc3, 100);
  ASSERT_EQ(resident_pages(base_, bytes_), 2U);

  auto method = populate_for_write(base_, bytes_);
  ASSERT_TRUE(method) << method.error().to_string();
  EXPECT_EQ(resident_pages(base_, bytes_), bytes_ / page_size()) << to_string(*method);

  for (std::uint64_t i = 0; i < bytes_; ++i) {
    const auto off = i;
    std::byte want{0};
    if (off >= 3 * page_size() && off < 4 * page_size()) want = std::byte{0x3c};
    if (off >= 200 * page_size() + 17 && off < 200 * page_size() + 117) want = std::byte{0xc3};
    ASSERT_EQ(base_[off], want) << off;
  }
}

TEST_F(FreshMemfd, PopulateForWriteRefusesAnUnalignedAddress) {
  auto unaligned = populate_for_write(base_ + 1, page_size());
  ASSERT_FALSE(unaligned);
  EXPECT_EQ(unaligned.error().code, Errc::invalid_argument);
  EXPECT_EQ(resident_pages(base_, bytes_), 0U);
}

TEST(ShmemHugePages, ReadsTheBracketedChoice) {
  EXPECT_EQ(shmem_huge_pages_from("always within_size advise [never] deny force\n", {}).page_bytes, 0U);
  EXPECT_EQ(shmem_huge_pages_from("always within_size [advise] never deny force\n", {}).page_bytes, 2ULL << 20);
  EXPECT_EQ(shmem_huge_pages_from("always within_size advise never [deny] force\n", {}).page_bytes, 0U);
  // Per-size files (kernels >= 6.11): inherit takes the top-level choice.
  const auto per_size = shmem_huge_pages_from("always within_size advise [never] deny force\n",
                                              {{64ULL << 10, "always inherit within_size advise [never]\n"},
                                               {2ULL << 20, "always [inherit] within_size advise never\n"}});
  EXPECT_EQ(per_size.page_bytes, 0U);
  const auto mixed = shmem_huge_pages_from("always within_size [advise] never deny force\n",
                                           {{64ULL << 10, "always inherit within_size advise [never]\n"},
                                            {2ULL << 20, "always [inherit] within_size advise never\n"}});
  EXPECT_EQ(mixed.page_bytes, 2ULL << 20);
  EXPECT_NE(mixed.settings.find("shmem_enabled=advise"), std::string::npos) << mixed.settings;
}

}  // namespace
}  // namespace kvb
