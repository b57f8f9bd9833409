// EngineRegion: one region of an engine's KV cache, mapped from the memfd the
// engine sent (SCM_RIGHTS). The fd is closed as soon as the mapping exists,
// so a registered engine costs the daemon no file descriptor: with 10,000
// sessions the fds go to the sockets. The mapping is shared (the engine sees
// every byte the daemon writes) and aligned to 2 MiB.
#pragma once

#include <cstdint>
#include <memory>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/common/error.h"
#include "unique_fd.h"

namespace kvb::daemon {

class EngineRegion final : public MemoryRegion {
 public:
  /// Maps `bytes` of `fd` read-write and shared, then closes the fd. Errors:
  /// bytes == 0 or a file smaller than `bytes` (invalid_argument naming both
  /// sizes), fstat/mmap failures (io_error with the errno text).
  [[nodiscard]] static Result<std::unique_ptr<EngineRegion>> map(UniqueFd fd, std::uint64_t bytes);
  ~EngineRegion() override;

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::host; }
  [[nodiscard]] std::byte* data() const noexcept override { return base_; }
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

 private:
  EngineRegion(std::byte* base, std::uint64_t size) noexcept : base_(base), size_(size) {}
  std::byte* base_;
  std::uint64_t size_;
};

}  // namespace kvb::daemon
