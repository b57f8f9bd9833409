#include "landing_window.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include <spdlog/spdlog.h>

namespace kvb::daemon {

namespace {

std::uint64_t page_bytes() noexcept { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

/// mremap by system call. UCX (UCM) interposes mremap to watch memory
/// events, with a four-argument hook (UCX 1.13) that drops new_address:
/// MREMAP_FIXED through it maps the pages somewhere else and leaves the
/// target as it was (found by the SIGSTOP test: a re-attached range kept
/// its anonymous pages, and the next fetch wrote there, not in the engine).
void* raw_mremap(void* old_address, std::size_t old_size, std::size_t new_size, int flags, void* new_address) {
  return reinterpret_cast<void*>(::syscall(SYS_mremap, old_address, old_size, new_size, flags, new_address));
}

}  // namespace

Result<std::unique_ptr<LandingWindow>> LandingWindow::create(std::byte* region, std::uint64_t bytes) {
  const std::uint64_t page = page_bytes();
  if (bytes == 0 || reinterpret_cast<std::uintptr_t>(region) % page != 0) {
    return fail(Errc::invalid_argument, "a landing window needs a page-aligned region, not {} bytes at {}", bytes,
                static_cast<const void*>(region));
  }
  const std::uint64_t span = (bytes + page - 1) / page * page;
  // old_size 0: a new mapping of the same pages (the region is MAP_SHARED).
  void* window = raw_mremap(region, 0, span, MREMAP_MAYMOVE, nullptr);
  if (window == MAP_FAILED) {
    return fail(Errc::io_error, "mremap of an engine region ({} bytes) for its landing window: {}", span,
                std::strerror(errno));
  }
  return std::unique_ptr<LandingWindow>(new LandingWindow(region, static_cast<std::byte*>(window), span));
}

LandingWindow::~LandingWindow() {
  std::erase_if(detached_, [](const Detached& d) { return !d.landing(); });
  // Unmap everything but the detached ranges still landing: the gaps between them.
  std::sort(detached_.begin(), detached_.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  std::uint64_t from = 0;
  for (const Detached& d : detached_) {
    if (d.offset > from) ::munmap(window_ + from, d.offset - from);
    from = std::max(from, d.offset + d.bytes);
    spdlog::warn("landing window: {} bytes stay mapped (anonymous) while a late write may land in them", d.bytes);
  }
  if (bytes_ > from) ::munmap(window_ + from, bytes_ - from);
}

bool LandingWindow::usable(std::uint64_t offset, std::uint64_t bytes) {
  if (offset > bytes_ || bytes > bytes_ - offset) return false;
  if (detached_.empty()) return true;
  reattach();
  return std::none_of(detached_.begin(), detached_.end(),
                      [&](const Detached& d) { return offset < d.offset + d.bytes && d.offset < offset + bytes; });
}

Status LandingWindow::detach(std::uint64_t offset, std::uint64_t bytes, std::function<bool()> landing) {
  const std::uint64_t page = page_bytes();
  if (offset % page != 0 || bytes % page != 0 || offset > bytes_ || bytes > bytes_ - offset) {
    return fail(Errc::invalid_argument, "landing window: cannot detach {} bytes at {:#x} of {}", bytes, offset, bytes_);
  }
  void* p = ::mmap(window_ + offset, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p != MAP_FAILED && p != window_ + offset) {
    ::munmap(p, bytes);
    errno = EFAULT;
    p = MAP_FAILED;
  }
  if (p == MAP_FAILED) {
    return fail(Errc::io_error, "landing window: mapping anonymous memory over {} bytes: {}", bytes,
                std::strerror(errno));
  }
  detached_.push_back({offset, bytes, std::move(landing)});
  ++detached_count_;
  return kvb::ok();
}

bool LandingWindow::claim(std::uint64_t offset, std::uint64_t bytes) {
  auto next = claimed_.lower_bound(offset);
  if (next != claimed_.end() && next->first < offset + bytes) return false;
  if (next != claimed_.begin() && std::prev(next)->first + std::prev(next)->second > offset) return false;
  claimed_.emplace_hint(next, offset, bytes);
  return true;
}

void LandingWindow::release(std::uint64_t offset, std::uint64_t bytes) {
  if (auto it = claimed_.find(offset); it != claimed_.end() && it->second == bytes) claimed_.erase(it);
}

void LandingWindow::reattach() {
  std::erase_if(detached_, [this](const Detached& d) {
    if (d.landing()) return false;
    // The engine's pages again, over the anonymous ones.
    void* p = raw_mremap(region_ + d.offset, 0, d.bytes, MREMAP_MAYMOVE | MREMAP_FIXED, window_ + d.offset);
    if (p != MAP_FAILED && p != window_ + d.offset) {
      ::munmap(p, d.bytes);  // elsewhere: not where it must be
      errno = EFAULT;
      p = MAP_FAILED;
    }
    if (p == MAP_FAILED) {
      // Left detached (and mapped): a later fetch into it copies through G2.
      spdlog::warn("landing window: mapping {} bytes back failed: {}", d.bytes, std::strerror(errno));
      return false;
    }
    return true;
  });
}

}  // namespace kvb::daemon
