// HostPoolRegion: the memory of one G2 host pool: a memfd HostRegion, pinned
// for CUDA (cudaHostRegister, portable + mapped: every device's DMA engines
// and the mapped kernel reach it) when the daemon has a GPU and pinning
// worked. kind() says which: host_pinned, or host (pageable) when pinning
// was not asked for or failed, in which case copies with device memory go
// through cuda-staged's own pinned bounce buffer (docs/copy-engines.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "kvb/blockmgr/host_region.h"
#include "kvb/blockmgr/memory_region.h"

namespace kvb::daemon {

/// Pins [base, base + bytes) for CUDA and returns the registration (which
/// unpins in its destructor): kernels/' PinnedHostRegion::register_existing
/// in the daemon, a failing stand-in in tests.
using HostPinning = std::function<Result<std::unique_ptr<MemoryRegion>>(std::byte* base, std::uint64_t bytes)>;

class HostPoolRegion final : public MemoryRegion {
 public:
  /// `pin` may be null (pageable).
  HostPoolRegion(std::unique_ptr<HostRegion> memory, std::unique_ptr<MemoryRegion> pin) noexcept
      : memory_(std::move(memory)), pin_(std::move(pin)) {}
  /// Unpins before the memory is unmapped.
  ~HostPoolRegion() override { pin_.reset(); }

  [[nodiscard]] MemoryKind kind() const noexcept override { return pin_ ? MemoryKind::host_pinned : MemoryKind::host; }
  [[nodiscard]] std::byte* data() const noexcept override { return memory_->data(); }
  [[nodiscard]] std::uint64_t size() const noexcept override { return memory_->size(); }
  [[nodiscard]] int shareable_fd() const noexcept override { return memory_->shareable_fd(); }

 private:
  std::unique_ptr<HostRegion> memory_;
  std::unique_ptr<MemoryRegion> pin_;
};

}  // namespace kvb::daemon
