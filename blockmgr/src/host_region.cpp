#include "kvb/blockmgr/host_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kvb {
namespace {

std::string errno_text(int err) { return fmt::format("{} (errno {})", std::strerror(err), err); }

// Maps `bytes` of `fd` shared and read-write at a 2 MiB aligned address:
// reserve bytes + 2 MiB of address space, map the fd over the aligned part,
// give back the slack on both sides.
Result<std::byte*> map_aligned(int fd, std::uint64_t bytes) {
  const std::uint64_t reserve = round_up_to_huge_page(bytes) + kHugePageBytes;
  void* res = ::mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (res == MAP_FAILED) {
    const int err = errno;
    return fail(Errc::io_error, "host region: reserving {} bytes of address space failed: {}", reserve,
                errno_text(err));
  }
  const auto res_addr = reinterpret_cast<std::uintptr_t>(res);
  const std::uintptr_t aligned = (res_addr + kHugePageBytes - 1) & ~(std::uintptr_t{kHugePageBytes} - 1);
  void* mapped = ::mmap(reinterpret_cast<void*>(aligned), bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
  if (mapped == MAP_FAILED) {
    const int err = errno;
    ::munmap(res, reserve);
    return fail(Errc::io_error, "host region: mmap of {} bytes of fd {} failed: {}", bytes, fd, errno_text(err));
  }
  // The slack: [res, aligned) and [aligned + round_up(bytes, page), res + reserve).
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t mapped_end = aligned + (bytes + page - 1) / page * page;
  if (aligned > res_addr) ::munmap(res, aligned - res_addr);
  if (res_addr + reserve > mapped_end) ::munmap(reinterpret_cast<void*>(mapped_end), res_addr + reserve - mapped_end);
  return static_cast<std::byte*>(mapped);
}

bool advise_huge_pages(std::byte* base, std::uint64_t bytes) {
#ifdef MADV_HUGEPAGE
  return ::madvise(base, bytes, MADV_HUGEPAGE) == 0;
#else
  (void)base;
  (void)bytes;
  return false;
#endif
}

}  // namespace

Result<std::unique_ptr<HostRegion>> HostRegion::create(std::uint64_t bytes, const std::string& name) {
  if (bytes == 0) return fail(Errc::invalid_argument, "host region: bytes must be > 0 (got {})", bytes);
  const std::uint64_t size = round_up_to_huge_page(bytes);
  const int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return fail(Errc::io_error, "host region: memfd_create('{}') failed: {}", name, errno_text(err));
  }
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(Errc::io_error, "host region: ftruncate of memfd '{}' to {} bytes failed: {}", name, size,
                errno_text(err));
  }
  auto base = map_aligned(fd, size);
  if (!base) {
    ::close(fd);
    return tl::unexpected(base.error());
  }
  const bool huge = advise_huge_pages(*base, size);
  return std::unique_ptr<HostRegion>(new HostRegion(fd, *base, size, huge));
}

Result<std::unique_ptr<HostRegion>> HostRegion::map_fd(int fd, std::uint64_t bytes) {
  if (fd < 0) return fail(Errc::invalid_argument, "host region: fd must be >= 0 (got {})", fd);
  if (bytes == 0) {
    ::close(fd);
    return fail(Errc::invalid_argument, "host region: bytes must be > 0 (got {})", bytes);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(Errc::io_error, "host region: fstat of fd {} failed: {}", fd, errno_text(err));
  }
  if (static_cast<std::uint64_t>(st.st_size) < bytes) {
    ::close(fd);
    return fail(Errc::invalid_argument, "host region: fd {} holds {} bytes, fewer than the {} asked for", fd,
                static_cast<std::uint64_t>(st.st_size), bytes);
  }
  auto base = map_aligned(fd, bytes);
  if (!base) {
    ::close(fd);
    return tl::unexpected(base.error());
  }
  const bool huge = advise_huge_pages(*base, bytes);
  return std::unique_ptr<HostRegion>(new HostRegion(fd, *base, bytes, huge));
}

HostRegion::~HostRegion() {
  // In pieces: munmap holds the process's mmap lock while it tears down
  // the page tables of the whole range (tens of ms for a populated pool of
  // hundreds of MiB), and every other thread's mmap waits on that lock.
  // A region is torn down off the daemon's event loop (PoolReaper), so
  // pieces keep the loop's own mmaps (a new pool) from waiting on it.
  constexpr std::uint64_t kUnmapPiece = std::uint64_t{8} << 20;
  if (base_ != nullptr) {
    for (std::uint64_t off = 0; off < size_; off += kUnmapPiece)
      ::munmap(base_ + off, std::min(kUnmapPiece, size_ - off));
  }
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace kvb
