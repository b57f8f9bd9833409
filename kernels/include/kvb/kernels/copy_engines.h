// The copy engines of one process, built once at start-up, and the rule that
// picks one for a plan (docs/copy-engines.md, "Selection").
//
// make_copy_engines() always returns a host engine. It adds the CUDA engines
// (cuda-kernel, cuda-batch, cuda-memcpy) only when this build has CUDA and a
// usable device answers; otherwise (no driver, "driver version is
// insufficient", no device, a build without CUDA) it logs ONE line saying why
// and the process runs on the host engine. It never throws for a missing GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvb/blockmgr/copy_engine.h"
#include "kvb/kernels/host_copy_engine.h"

namespace kvb {

/// What a usable CUDA device reported.
struct CudaDeviceInfo {
  int ordinal = -1;
  std::string name;
  int sm_count = 0;
  int runtime_version = 0;  // CUDART_VERSION of this build, e.g. 13000
  int driver_version = 0;
};

/// Whether CUDA device `ordinal` is usable. Error `unavailable` with the
/// reason (the CUDA error text, or "built without CUDA") when not. Never
/// throws, never aborts. Safe from any thread.
[[nodiscard]] Result<CudaDeviceInfo> probe_cuda_device(int ordinal = 0);

/// Names of the engines: "host", "cuda-kernel", "cuda-batch", "cuda-memcpy".
enum class CopyEngineKind : std::uint8_t { host = 0, cuda_kernel = 1, cuda_batch = 2, cuda_memcpy = 3 };
[[nodiscard]] std::string_view to_string(CopyEngineKind kind) noexcept;
/// "host", "cuda-kernel", "cuda-batch", "cuda-memcpy".
[[nodiscard]] Result<CopyEngineKind> parse_copy_engine_kind(std::string_view name);

struct CopyEngineOptions {
  HostCopyEngineOptions host;
  int cuda_device = 0;
  /// false: never touch CUDA (host engine only, no log line).
  bool use_cuda = true;
};

struct CopyEngines {
  std::unique_ptr<HostCopyEngine> host;
  std::unique_ptr<CopyEngine> cuda_kernel;  // null without a usable GPU
  std::unique_ptr<CopyEngine> cuda_batch;   // null without a GPU or before CUDA 12.8
  std::unique_ptr<CopyEngine> cuda_memcpy;  // null without a usable GPU
  CudaDeviceInfo device;                    // ordinal -1 without a usable GPU
  std::string cuda_unavailable;             // why the CUDA engines are absent; empty when present

  [[nodiscard]] bool has_cuda() const noexcept { return cuda_memcpy != nullptr; }
  /// The engine of that kind, or null when it was not built.
  [[nodiscard]] CopyEngine* get(CopyEngineKind kind) const noexcept;
};

/// Builds the engines; see the header comment. Throws only what
/// HostCopyEngine's constructor throws (no thread could start).
[[nodiscard]] CopyEngines make_copy_engines(const CopyEngineOptions& options = {});

/// The engine for a plan from `src` to `dst` memory whose chunks are
/// `chunk_bytes` long (docs/copy-engines.md, "Selection"):
///  - no device memory on either side: host;
///  - device <-> pinned host: cuda-batch (DMA: no SMs taken from the model,
///    PCIe at full rate), else cuda-kernel through mapped memory when the
///    batch API is missing;
///  - device <-> device: cuda-kernel below kKernelMaxChunkBytes (one launch
///    beats one DMA descriptor per small chunk), cuda-batch at or above it;
///  - device with pageable host memory: unsupported (register it first).
/// Error `unavailable` when device memory is involved and no CUDA engine is.
inline constexpr std::uint64_t kKernelMaxChunkBytes = std::uint64_t{256} << 10;
[[nodiscard]] Result<CopyEngine*> select_engine(const CopyEngines& engines, MemoryKind src, MemoryKind dst,
                                                std::uint64_t chunk_bytes);

}  // namespace kvb
