// EnginePrefault (config key `prefault_engine_regions`): the pages an engine
// wrote are mapped into the daemon's own mapping of its memfd (present in
// /proc/self/pagemap) without changing a byte, the pages it never wrote stay
// unallocated, and a region whose owner is gone is skipped.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine_prefault.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kBytes = 16ULL << 20;  // four of EnginePrefault's 4 MiB calls

std::uint64_t page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

/// Pages of [base, base + bytes) present in this process's page table.
std::uint64_t present_pages(const std::byte* base, std::uint64_t bytes) {
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ~std::uint64_t{0};
  const std::uint64_t page = page_size();
  std::vector<std::uint64_t> entries(bytes / page);
  const auto offset = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(base) / page * 8);
  const auto want = static_cast<ssize_t>(entries.size() * 8);
  const ssize_t got = ::pread(fd, entries.data(), static_cast<std::size_t>(want), offset);
  ::close(fd);
  if (got != want) return ~std::uint64_t{0};
  std::uint64_t n = 0;
  for (const std::uint64_t e : entries) n += (e >> 63) & 1U;
  return n;
}

/// A memfd mapped twice: the engine's view and the daemon's.
struct TwoMappings {
  int fd = -1;
  std::byte* engine = nullptr;
  std::byte* daemon = nullptr;
  TwoMappings() {
    fd = ::memfd_create("engine-prefault-test", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(kBytes)), 0);
    engine = static_cast<std::byte*>(::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    daemon = static_cast<std::byte*>(::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  }
  ~TwoMappings() {
    ::munmap(engine, kBytes);
    ::munmap(daemon, kBytes);
    ::close(fd);
  }
  TwoMappings(const TwoMappings&) = delete;
  TwoMappings& operator=(const TwoMappings&) = delete;
};

bool wait_done(const EnginePrefault& prefault) {
  for (int i = 0; i < 6000; ++i) {
    const auto t = prefault.totals();
    if (t.done_bytes == t.queued_bytes) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST(EnginePrefault, MapsTheWrittenPagesOnlyAndKeepsTheirBytes) {
  TwoMappings m;
  ASSERT_NE(m.engine, MAP_FAILED);
  ASSERT_NE(m.daemon, MAP_FAILED);
  // The engine writes the first half, one recognizable byte per page.
  const std::uint64_t page = page_size();
  for (std::uint64_t at = 0; at < kBytes / 2; at += page) m.engine[at] = static_cast<std::byte>(at / page + 1);
  ASSERT_EQ(present_pages(m.daemon, kBytes), 0U) << "the daemon's mapping starts empty";

  EnginePrefault prefault;
  auto owner = std::make_shared<int>(0);
  prefault.add(std::weak_ptr<const void>(owner), {{m.daemon, kBytes}});
  ASSERT_TRUE(wait_done(prefault));
  const auto totals = prefault.totals();
  EXPECT_EQ(totals.queued_bytes, kBytes);
  EXPECT_EQ(totals.done_bytes, kBytes);
  EXPECT_EQ(totals.mapped_bytes, kBytes / 2);
  EXPECT_EQ(present_pages(m.daemon, kBytes / 2), kBytes / 2 / page) << "every written page mapped";
  EXPECT_EQ(present_pages(m.daemon + kBytes / 2, kBytes / 2), 0U) << "no unwritten page mapped";
  struct stat st {};
  ASSERT_EQ(::fstat(m.fd, &st), 0);
  EXPECT_LE(static_cast<std::uint64_t>(st.st_blocks) * 512, kBytes / 2) << "nothing allocated beyond the engine's";
  for (std::uint64_t at = 0; at < kBytes / 2; at += page)
    ASSERT_EQ(m.daemon[at], static_cast<std::byte>(at / page + 1)) << "page " << at / page;
}

TEST(EnginePrefault, SkipsARegionWhoseOwnerIsGone) {
  TwoMappings m;
  ASSERT_NE(m.daemon, MAP_FAILED);
  std::memset(m.engine, 1, kBytes);
  EnginePrefault prefault;
  {
    auto owner = std::make_shared<int>(0);
    prefault.add(std::weak_ptr<const void>(owner), {});  // an empty job first: the thread is busy or idle
  }
  std::weak_ptr<const void> gone;
  {
    auto owner = std::make_shared<int>(0);
    gone = owner;
  }
  prefault.add(gone, {{m.daemon, kBytes}});
  ASSERT_TRUE(wait_done(prefault));
  EXPECT_EQ(prefault.totals().done_bytes, kBytes);
  EXPECT_EQ(prefault.totals().mapped_bytes, 0U);
  EXPECT_EQ(present_pages(m.daemon, kBytes), 0U);
}

TEST(EnginePrefault, StopsWithWorkQueued) {
  TwoMappings m;
  ASSERT_NE(m.daemon, MAP_FAILED);
  std::memset(m.engine, 1, kBytes);
  auto owner = std::make_shared<int>(0);
  auto prefault = std::make_unique<EnginePrefault>();
  for (int i = 0; i < 8; ++i) prefault->add(std::weak_ptr<const void>(owner), {{m.daemon, kBytes}});
  prefault->stop();
  prefault->add(std::weak_ptr<const void>(owner), {{m.daemon, kBytes}});  // after stop: ignored
  EXPECT_LE(prefault->totals().queued_bytes, 8 * kBytes);
  prefault.reset();
}

}  // namespace
}  // namespace kvb::daemon
