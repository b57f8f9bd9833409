// LandingWindow: a second mapping of an engine's shared region whose
// detached ranges keep late writes out of the engine's pages.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "landing_window.h"

namespace kvb::daemon {
namespace {

/// A shared memfd mapping, as an engine's region is mapped in the daemon.
class SharedRegion {
 public:
  explicit SharedRegion(std::uint64_t bytes) : bytes_(bytes) {
    fd_ = ::memfd_create("landing-window-test", MFD_CLOEXEC);
    if (fd_ < 0 || ::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) return;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p != MAP_FAILED) base_ = static_cast<std::byte*>(p);
  }
  ~SharedRegion() {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    if (fd_ >= 0) ::close(fd_);
  }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  [[nodiscard]] std::byte* base() const { return base_; }

 private:
  std::uint64_t bytes_;
  int fd_ = -1;
  std::byte* base_ = nullptr;
};

const std::uint64_t kPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));

TEST(LandingWindow, WritesThroughTheWindowReachTheRegionUntilTheirRangeIsDetached) {
  SharedRegion region(16 * kPage);
  ASSERT_NE(region.base(), nullptr);
  auto window = LandingWindow::create(region.base(), 16 * kPage);
  ASSERT_TRUE(window.has_value()) << window.error().to_string();
  LandingWindow& w = **window;
  ASSERT_NE(w.at(0), region.base());  // another mapping ...
  std::memset(w.at(0), 0x11, 16 * kPage);
  EXPECT_EQ(region.base()[0], std::byte{0x11});  // ... of the same pages
  EXPECT_EQ(region.base()[16 * kPage - 1], std::byte{0x11});
  EXPECT_EQ(w.offset_of(w.at(5 * kPage)), 5 * kPage);

  // Pages 4-7 detached while something may land there: writes through the
  // window there no longer reach the region; the rest still does.
  bool landing = true;
  ASSERT_TRUE(w.detach(4 * kPage, 4 * kPage, [&landing] { return landing; }).has_value());
  EXPECT_EQ(w.detached(), 1U);
  EXPECT_FALSE(w.usable(4 * kPage, kPage));
  EXPECT_FALSE(w.usable(2 * kPage, 4 * kPage));  // overlaps
  EXPECT_TRUE(w.usable(0, 4 * kPage));
  EXPECT_TRUE(w.usable(8 * kPage, 8 * kPage));
  std::memset(w.at(0), 0x22, 16 * kPage);  // a late write over everything
  EXPECT_EQ(region.base()[4 * kPage], std::byte{0x11});
  EXPECT_EQ(region.base()[8 * kPage - 1], std::byte{0x11});
  EXPECT_EQ(region.base()[4 * kPage - 1], std::byte{0x22});
  EXPECT_EQ(region.base()[8 * kPage], std::byte{0x22});

  // Nothing lands any more: the range is the region's again.
  landing = false;
  EXPECT_TRUE(w.usable(4 * kPage, 4 * kPage));
  EXPECT_EQ(*w.at(4 * kPage), std::byte{0x11});  // the region's bytes, not the late ones
  std::memset(w.at(4 * kPage), 0x33, kPage);
  EXPECT_EQ(region.base()[4 * kPage], std::byte{0x33});
}

TEST(LandingWindow, OutOfRangeUnalignedAndPartialPagesAreRefused) {
  SharedRegion region(8 * kPage);
  ASSERT_NE(region.base(), nullptr);
  EXPECT_FALSE(LandingWindow::create(region.base() + 1, kPage).has_value());
  EXPECT_FALSE(LandingWindow::create(region.base(), 0).has_value());
  auto window = LandingWindow::create(region.base(), 8 * kPage);
  ASSERT_TRUE(window.has_value());
  LandingWindow& w = **window;
  EXPECT_FALSE(w.usable(8 * kPage, 1));
  EXPECT_FALSE(w.usable(7 * kPage, 2 * kPage));
  EXPECT_FALSE(w.usable(~std::uint64_t{0}, 2));
  EXPECT_FALSE(w.detach(kPage / 2, kPage, [] { return true; }).has_value());
  EXPECT_FALSE(w.detach(0, kPage + 1, [] { return true; }).has_value());
  EXPECT_FALSE(w.detach(4 * kPage, 8 * kPage, [] { return true; }).has_value());
  EXPECT_EQ(w.detached(), 0U);
}

// A range is written by one fetch at a time: a second claim of any of its
// bytes is refused until the first is released.
TEST(LandingWindow, ARangeIsClaimedByOneFetchAtATime) {
  SharedRegion region(8 * kPage);
  ASSERT_NE(region.base(), nullptr);
  auto window = LandingWindow::create(region.base(), 8 * kPage);
  ASSERT_TRUE(window.has_value());
  LandingWindow& w = **window;
  EXPECT_TRUE(w.claim(2 * kPage, 2 * kPage));
  EXPECT_FALSE(w.claim(2 * kPage, 2 * kPage));  // the same
  EXPECT_FALSE(w.claim(3 * kPage, 2 * kPage));  // overlaps its end
  EXPECT_FALSE(w.claim(kPage, 2 * kPage));      // overlaps its start
  EXPECT_TRUE(w.claim(4 * kPage, kPage));       // right after it
  EXPECT_TRUE(w.claim(kPage, kPage));           // right before it
  w.release(2 * kPage, 2 * kPage);
  EXPECT_TRUE(w.claim(3 * kPage, kPage));
  EXPECT_FALSE(w.claim(4 * kPage, kPage));
}

// A range something may still land in when the window goes stays mapped
// (anonymous): the late write neither faults nor reaches the region.
TEST(LandingWindow, ARangeStillLandingOutlivesTheWindowDetached) {
  SharedRegion region(8 * kPage);
  ASSERT_NE(region.base(), nullptr);
  std::memset(region.base(), 0x11, 8 * kPage);
  std::byte* late = nullptr;
  {
    auto window = LandingWindow::create(region.base(), 8 * kPage);
    ASSERT_TRUE(window.has_value());
    late = (*window)->at(2 * kPage);
    ASSERT_TRUE((*window)->detach(2 * kPage, kPage, [] { return true; }).has_value());
  }
  std::memset(late, 0x44, kPage);  // would fault if it had been unmapped
  EXPECT_EQ(region.base()[2 * kPage], std::byte{0x11});
  ::munmap(late, kPage);  // the test's own cleanup
}

}  // namespace
}  // namespace kvb::daemon
