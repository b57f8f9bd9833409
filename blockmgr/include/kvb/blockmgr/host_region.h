// HostRegion: host memory for block pools, backed by a memfd so that another
// process (an engine) can map the very same pages after receiving the fd over
// a Unix socket (SCM_RIGHTS).
//
// Sizes are rounded up to 2 MiB and the mapping is 2 MiB aligned; the region
// asks for transparent huge pages (MADV_HUGEPAGE) and carries on without them
// where the kernel refuses. Errors carry the errno text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/common/error.h"

namespace kvb {

/// 2 MiB: the size and alignment granule of every HostRegion.
inline constexpr std::uint64_t kHugePageBytes = std::uint64_t{2} << 20;

/// Rounds `bytes` up to a multiple of kHugePageBytes (0 stays 0).
[[nodiscard]] constexpr std::uint64_t round_up_to_huge_page(std::uint64_t bytes) noexcept {
  return (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
}

/// A shared, memfd-backed mapping of host memory. Owns the fd and the mapping;
/// both end with the object. Not copyable, not movable (held by unique_ptr).
class HostRegion final : public MemoryRegion {
 public:
  /// Creates a memfd named `name` of round_up_to_huge_page(bytes) bytes and
  /// maps it read-write, shared, 2 MiB aligned. bytes == 0 is invalid_argument;
  /// an OS refusal is io_error with the call and the errno text.
  [[nodiscard]] static Result<std::unique_ptr<HostRegion>> create(std::uint64_t bytes,
                                                                  const std::string& name = "kvb-host-pool");

  /// Maps an existing memfd (e.g. received from another process) of at least
  /// `bytes` bytes; takes ownership of `fd` (closed by the region, also on
  /// error). The mapping is 2 MiB aligned and shared with every other mapping
  /// of the fd. Errors: fd < 0 or bytes == 0 (invalid_argument), the file is
  /// smaller than `bytes` (invalid_argument), mmap/fstat failed (io_error).
  [[nodiscard]] static Result<std::unique_ptr<HostRegion>> map_fd(int fd, std::uint64_t bytes);

  ~HostRegion() override;

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::host; }
  [[nodiscard]] std::byte* data() const noexcept override { return base_; }
  /// The mapped size (a multiple of 2 MiB for create(); `bytes` for map_fd()).
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }
  /// The memfd. Owned by the region: dup() it to keep it longer.
  [[nodiscard]] int shareable_fd() const noexcept override { return fd_; }
  /// Whether the kernel accepted MADV_HUGEPAGE for this mapping.
  [[nodiscard]] bool huge_pages_advised() const noexcept { return huge_pages_; }

 private:
  HostRegion(int fd, std::byte* base, std::uint64_t size, bool huge_pages) noexcept
      : fd_(fd), base_(base), size_(size), huge_pages_(huge_pages) {}

  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::uint64_t size_ = 0;
  bool huge_pages_ = false;
};

}  // namespace kvb
