#include "engine_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace kvb::daemon {
namespace {
constexpr std::uint64_t kAlign = std::uint64_t{2} << 20;
}

Status check_cannot_shrink(int fd) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    return fail(Errc::invalid_argument,
                "the fd is not a sealable memfd (F_GET_SEALS: {}); create it with MFD_ALLOW_SEALING and seal it "
                "with F_SEAL_SHRINK",
                std::strerror(errno));
  }
  if ((seals & F_SEAL_SHRINK) == 0) {
    return fail(Errc::invalid_argument,
                "the memfd is not sealed against shrinking; add F_SEAL_SHRINK (fcntl F_ADD_SEALS) before passing it");
  }
  if ((seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0) {
    return fail(Errc::invalid_argument,
                "the memfd is sealed against writes; the daemon writes onboarded blocks into it");
  }
  return kvb::ok();
}

Result<std::unique_ptr<EngineRegion>> EngineRegion::map(UniqueFd fd, std::uint64_t bytes) {
  if (bytes == 0) return fail(Errc::invalid_argument, "region_bytes must be > 0");
  // Before the size check: once F_SEAL_SHRINK is set the size read below is
  // a floor for as long as the mapping lives.
  if (auto sealed = check_cannot_shrink(fd.get()); !sealed) return tl::unexpected(sealed.error());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(Errc::io_error, "fstat of an engine fd: {}", std::strerror(errno));
  if (static_cast<std::uint64_t>(st.st_size) < bytes) {
    return fail(Errc::invalid_argument, "the fd holds {} bytes, fewer than region_bytes {}",
                static_cast<std::uint64_t>(st.st_size), bytes);
  }
  // Reserve bytes + 2 MiB, map the fd at the first 2 MiB boundary inside, trim the rest.
  const std::uint64_t span = bytes + kAlign;
  void* reserved = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) return fail(Errc::io_error, "mmap reserve of {} bytes: {}", span, std::strerror(errno));
  const auto start = reinterpret_cast<std::uintptr_t>(reserved);
  const auto aligned = (start + kAlign - 1) / kAlign * kAlign;
  void* base =
      ::mmap(reinterpret_cast<void*>(aligned), bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd.get(), 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    ::munmap(reserved, span);
    return fail(Errc::io_error, "mmap of an engine fd ({} bytes): {}", bytes, std::strerror(err));
  }
  if (aligned > start) ::munmap(reserved, aligned - start);
  const auto end = aligned + bytes;
  const auto reserved_end = start + span;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto tail = (end + page - 1) / page * page;
  if (reserved_end > tail) ::munmap(reinterpret_cast<void*>(tail), reserved_end - tail);
  fd.reset();  // the mapping keeps the memory; the fd is not needed any more
  return std::unique_ptr<EngineRegion>(new EngineRegion(static_cast<std::byte*>(base), bytes));
}

EngineRegion::~EngineRegion() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

}  // namespace kvb::daemon
