// MemoryRegion: a span of memory that holds blocks, whatever its tier.
//
// blockmgr declares it; blockmgr/ implements host memory (HostRegion, memfd);
// kernels/ implements CUDA device and pinned memory. blockmgr never
// dereferences a region whose kind is device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvb {

enum class MemoryKind : std::uint8_t {
  host = 0,         // ordinary (pageable) host memory
  host_pinned = 1,  // page-locked host memory, reachable by DMA
  device = 2,       // GPU memory: the address is a device address
};

[[nodiscard]] std::string_view to_string(MemoryKind kind) noexcept;

class MemoryRegion {
 public:
  MemoryRegion() = default;
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;
  virtual ~MemoryRegion() = default;

  [[nodiscard]] virtual MemoryKind kind() const noexcept = 0;
  /// Base address. For MemoryKind::device this is a device address: never
  /// dereference it on the host.
  [[nodiscard]] virtual std::byte* data() const noexcept = 0;
  [[nodiscard]] virtual std::uint64_t size() const noexcept = 0;
  /// A file descriptor another process can map (memfd), or -1. Owned by the
  /// region: dup() it to keep it beyond the region's life.
  [[nodiscard]] virtual int shareable_fd() const noexcept { return -1; }
  /// CUDA device ordinal for device memory, else -1.
  [[nodiscard]] virtual int device_ordinal() const noexcept { return -1; }
};

/// A non-owning view of one region's memory, as plans and engines see it.
struct RegionSpan {
  std::byte* base = nullptr;
  std::uint64_t size = 0;
  MemoryKind kind = MemoryKind::host;

  [[nodiscard]] static RegionSpan of(const MemoryRegion& region) noexcept {
    return {region.data(), region.size(), region.kind()};
  }
};

}  // namespace kvb
