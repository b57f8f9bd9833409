// EngineRegion: one region of an engine's KV cache, mapped from the memfd the
// engine sent (SCM_RIGHTS). Only memory that cannot shrink under the mapping
// is accepted: a memfd sealed with F_SEAL_SHRINK (a file that shrinks under a
// shared mapping turns the daemon's next copy into SIGBUS). Every future
// region kind must keep that rule. The fd is closed as soon as the mapping exists,
// so a registered engine costs the daemon no file descriptor: with 10,000
// sessions the fds go to the sockets. The mapping is shared (the engine sees
// every byte the daemon writes) and aligned to 2 MiB.
#pragma once

#include <cstdint>
#include <memory>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/common/error.h"
#include "kvb/common/unique_fd.h"

namespace kvb::daemon {

/// ok when `fd` is a memfd sealed against shrinking (F_SEAL_SHRINK) and not
/// against writes; invalid_argument saying what is missing otherwise (a
/// regular file, an unsealed memfd, ...).
[[nodiscard]] Status check_cannot_shrink(int fd);

class EngineRegion final : public MemoryRegion {
 public:
  /// Maps `bytes` of `fd` read-write and shared, then closes the fd. Errors
  /// (invalid_argument): bytes == 0, an fd that is not a memfd sealed with
  /// F_SEAL_SHRINK (see check_cannot_shrink), a file smaller than `bytes`
  /// (naming both sizes); fstat/mmap failures are io_error with the errno text.
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
