// CUDA memory as MemoryRegions: device memory (cudaMalloc) and pinned host
// memory (cudaHostAlloc, or cudaHostRegister of memory someone else owns,
// such as the memfd host pool). Mapped and portable, so the gather kernel
// reaches pinned memory directly (unified virtual addressing: the device
// address equals the host pointer).
//
// No CUDA types appear here. In a build without CUDA every factory returns
// Errc::unavailable ("built without CUDA").
#pragma once

#include <cstdint>
#include <memory>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/common/error.h"

namespace kvb {

class DeviceRegion final : public MemoryRegion {
 public:
  /// cudaMalloc of `bytes` on device `ordinal`. unavailable / out_of_capacity
  /// errors carry the CUDA error text.
  [[nodiscard]] static Result<std::unique_ptr<DeviceRegion>> allocate(int ordinal, std::uint64_t bytes);
  /// cudaFree.
  ~DeviceRegion() override;

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::device; }
  [[nodiscard]] std::byte* data() const noexcept override { return data_; }
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }
  [[nodiscard]] int device_ordinal() const noexcept override { return ordinal_; }

 private:
  DeviceRegion(std::byte* data, std::uint64_t size, int ordinal) : data_(data), size_(size), ordinal_(ordinal) {}
  std::byte* data_;
  std::uint64_t size_;
  int ordinal_;
};

class PinnedHostRegion final : public MemoryRegion {
 public:
  /// cudaHostAlloc(portable | mapped) of `bytes`; owned.
  [[nodiscard]] static Result<std::unique_ptr<PinnedHostRegion>> allocate(std::uint64_t bytes);
  /// cudaHostRegister(portable | mapped) of [base, base + bytes), which the
  /// caller owns and keeps alive longer than this object.
  [[nodiscard]] static Result<std::unique_ptr<PinnedHostRegion>> register_existing(std::byte* base,
                                                                                   std::uint64_t bytes);
  /// cudaFreeHost (owned) or cudaHostUnregister (registered).
  ~PinnedHostRegion() override;

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::host_pinned; }
  [[nodiscard]] std::byte* data() const noexcept override { return data_; }
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

 private:
  PinnedHostRegion(std::byte* data, std::uint64_t size, bool owned) : data_(data), size_(size), owned_(owned) {}
  std::byte* data_;
  std::uint64_t size_;
  bool owned_;
};

/// cudaMemcpy(cudaMemcpyDefault) on device `ordinal`, then
/// cudaDeviceSynchronize (cudaMemcpy alone returns before a device-to-device
/// copy is done): filling and reading back device memory in tests, and the
/// baseline of kvblockd-bench.
[[nodiscard]] Status cuda_copy_sync(int ordinal, void* dst, const void* src, std::uint64_t bytes);

/// One cudaMemcpyAsync on a stream of its own, then an event recorded and
/// synchronized: the latency baseline of kvblockd-bench gpu-request.
class CudaAsyncCopier {
 public:
  [[nodiscard]] static Result<std::unique_ptr<CudaAsyncCopier>> make(int ordinal);
  ~CudaAsyncCopier();
  CudaAsyncCopier(const CudaAsyncCopier&) = delete;
  CudaAsyncCopier& operator=(const CudaAsyncCopier&) = delete;
  /// Copies and returns once the event after the copy completed.
  [[nodiscard]] Status copy(void* dst, const void* src, std::uint64_t bytes);

 private:
  CudaAsyncCopier(int ordinal, void* stream, void* event) : ordinal_(ordinal), stream_(stream), event_(event) {}
  int ordinal_;
  void* stream_;  // cudaStream_t
  void* event_;   // cudaEvent_t
};

}  // namespace kvb
