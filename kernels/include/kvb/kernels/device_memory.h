// Device memory shared between processes, as MemoryRegions:
//  - ImportedDeviceMemory: an allocation another process (an engine)
//    exported, mapped into this one: a CUDA IPC handle (cudaIpcGetMemHandle
//    of a cudaMalloc allocation) or a CUDA VMM shareable handle
//    (cuMemExportToShareableHandle as a POSIX fd). Unmapped in the
//    destructor. docs/copy-engines.md ("Engines' device memory") says what
//    CUDA guarantees when the exporting process dies.
//  - ShareableDeviceRegion: a VMM allocation this process makes and can
//    export as a POSIX fd (engines, tests and tools).
//  - device_memory_info(): free / total device memory (cudaMemGetInfo).
//
// No CUDA types appear here. In a build without CUDA every factory returns
// Errc::unavailable ("built without CUDA").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/common/error.h"

namespace kvb {

/// Bytes of a CUDA IPC memory handle (CU_IPC_HANDLE_SIZE).
inline constexpr std::size_t kCudaIpcHandleBytes = 64;

class ImportedDeviceMemory final : public MemoryRegion {
 public:
  enum class Source : std::uint8_t { cuda_ipc, cuda_vmm };

  /// cudaIpcOpenMemHandle of `handle` (kCudaIpcHandleBytes) on device
  /// `ordinal`; size() is the whole allocation's size (cuMemGetAddressRange).
  /// Errors: a handle of the wrong length or one CUDA refuses
  /// (invalid_argument with CUDA's text), unavailable (no device).
  [[nodiscard]] static Result<std::unique_ptr<ImportedDeviceMemory>> open_ipc(int ordinal,
                                                                              std::span<const std::byte> handle);
  /// Imports the VMM shareable handle `fd` (always closed, also on error),
  /// checks that it is device memory, reserves `bytes` of address space and
  /// maps the allocation's first `bytes` read-write for device `ordinal`
  /// (the caller found it by the engine's device UUID). `bytes` must be a multiple of the allocation granularity;
  /// CUDA refuses a mapping larger than the allocation. Errors:
  /// invalid_argument naming the check or CUDA's text.
  [[nodiscard]] static Result<std::unique_ptr<ImportedDeviceMemory>> map_vmm_fd(int ordinal, int fd,
                                                                                std::uint64_t bytes);
  /// cudaIpcCloseMemHandle, or cuMemUnmap + cuMemAddressFree + cuMemRelease.
  ~ImportedDeviceMemory() override;

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::device; }
  [[nodiscard]] std::byte* data() const noexcept override { return data_; }
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }
  [[nodiscard]] int device_ordinal() const noexcept override { return ordinal_; }
  [[nodiscard]] Source source() const noexcept { return source_; }

  /// Imports alive in this process. Safe from any thread.
  [[nodiscard]] static std::uint64_t live() noexcept;

 private:
  ImportedDeviceMemory(std::byte* data, std::uint64_t size, int ordinal, Source source,
                       std::uint64_t vmm_handle) noexcept;
  std::byte* data_;
  std::uint64_t size_;
  int ordinal_;
  Source source_;
  std::uint64_t vmm_handle_;  // CUmemGenericAllocationHandle (cuda_vmm)
};

class ShareableDeviceRegion final : public MemoryRegion {
 public:
  /// cuMemCreate of `bytes` rounded up to the allocation granularity on
  /// device `ordinal`, exportable as a POSIX fd, mapped read-write.
  [[nodiscard]] static Result<std::unique_ptr<ShareableDeviceRegion>> allocate(int ordinal, std::uint64_t bytes);
  ~ShareableDeviceRegion() override;

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::device; }
  [[nodiscard]] std::byte* data() const noexcept override { return data_; }
  /// The mapped size (a multiple of the granularity).
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }
  [[nodiscard]] int device_ordinal() const noexcept override { return ordinal_; }
  /// A new POSIX fd for the allocation (cuMemExportToShareableHandle); the
  /// caller owns it.
  [[nodiscard]] Result<int> export_fd() const;

 private:
  ShareableDeviceRegion(std::byte* data, std::uint64_t size, int ordinal, std::uint64_t handle) noexcept
      : data_(data), size_(size), ordinal_(ordinal), handle_(handle) {}
  std::byte* data_;
  std::uint64_t size_;
  int ordinal_;
  std::uint64_t handle_;
};

struct DeviceMemoryInfo {
  std::uint64_t free = 0;
  std::uint64_t total = 0;
};
/// cudaMemGetInfo on device `ordinal`.
[[nodiscard]] Result<DeviceMemoryInfo> device_memory_info(int ordinal);

}  // namespace kvb
