// The copy engines of one process, built once at start-up, and the rule that
// picks one for a plan (docs/copy-engines.md, "Selection").
//
// make_copy_engines() always returns a host engine. It adds the CUDA engines
// (cuda-kernel, cuda-batch, cuda-memcpy, cuda-staged) only when this build has CUDA and a
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

/// Names of the engines: "host", "cuda-kernel", "cuda-batch", "cuda-memcpy",
/// "cuda-staged".
enum class CopyEngineKind : std::uint8_t {
  host = 0,
  cuda_kernel = 1,
  cuda_batch = 2,
  cuda_memcpy = 3,
  cuda_staged = 4
};
[[nodiscard]] std::string_view to_string(CopyEngineKind kind) noexcept;
/// "host", "cuda-kernel", "cuda-batch", "cuda-memcpy", "cuda-staged".
[[nodiscard]] Result<CopyEngineKind> parse_copy_engine_kind(std::string_view name);

/// Tuning of the CUDA engines (docs/copy-engines.md).
struct CudaEngineOptions {
  /// Device memory the cuda-staged engine stages through (allocated by its
  /// first host <-> device plan and kept; used as two halves so one half's
  /// DMA overlaps the other's kernel).
  std::uint64_t staging_bytes = std::uint64_t{32} << 20;
  /// cuda-staged stages a plan only when its host-side pieces average at
  /// least this many bytes (after merging contiguous ones); otherwise the
  /// kernel reaches the pinned memory through its mapping.
  std::uint64_t staged_min_run_bytes = std::uint64_t{256} << 10;
  /// The completion thread first polls a copy's event without pausing for
  /// up to this long (a copy of a few blocks is done in microseconds)...
  std::uint32_t completion_spin_us = 50;
  /// ...then polls it every this many microseconds, sleeping in between
  /// (a few % of one core while copies are in flight). 0: sleep in the
  /// driver instead (cudaEventSynchronize with blocking sync), which on the
  /// H100 measured added ~50-100 us to each completion.
  std::uint32_t completion_poll_us = 10;
  /// cuda-kernel (and cuda-staged's device-to-device and mapped plans): the
  /// kernel computes chunk addresses from the block pairs and the layouts
  /// (layout_math.h) instead of reading a descriptor per run built on the
  /// host. false: descriptors (the only form for > 128 regions a side).
  bool direct_chunks = true;
};

struct CopyEngineOptions {
  HostCopyEngineOptions host;
  CudaEngineOptions cuda;
  int cuda_device = 0;
  /// false: never touch CUDA (host engine only, no log line).
  bool use_cuda = true;
};

struct CopyEngines {
  std::unique_ptr<HostCopyEngine> host;
  std::unique_ptr<CopyEngine> cuda_kernel;  // null without a usable GPU
  std::unique_ptr<CopyEngine> cuda_batch;   // null without a GPU or before CUDA 12.8
  std::unique_ptr<CopyEngine> cuda_memcpy;  // null without a usable GPU
  std::unique_ptr<CopyEngine> cuda_staged;  // null without a GPU (or when its staging buffer could not be had)
  CudaDeviceInfo device;                    // ordinal -1 without a usable GPU
  std::string cuda_unavailable;             // why the CUDA engines are absent; empty when present

  [[nodiscard]] bool has_cuda() const noexcept { return cuda_memcpy != nullptr; }
  /// The engine of that kind, or null when it was not built.
  [[nodiscard]] CopyEngine* get(CopyEngineKind kind) const noexcept;
};

/// Builds the engines; see the header comment. Throws only what
/// HostCopyEngine's constructor throws (no thread could start).
[[nodiscard]] CopyEngines make_copy_engines(const CopyEngineOptions& options = {});

/// The engine for a plan from `src` to `dst` memory (docs/copy-engines.md,
/// "Selection", with the H100 measurements behind it):
///  - no device memory on either side: host;
///  - device <-> pinned host: cuda-staged (DMA at PCIe rate, SMs busy only
///    for the HBM-side gather/scatter), else cuda-batch, else cuda-kernel;
///  - device <-> device: cuda-kernel (batch DMA reached 1-8 % of the
///    kernel's bandwidth for 4 KiB-1 MiB chunks);
///  - device with pageable host memory: unsupported (register it first).
/// Error `unavailable` when device memory is involved and no CUDA engine is.
[[nodiscard]] Result<CopyEngine*> select_engine(const CopyEngines& engines, MemoryKind src, MemoryKind dst);

}  // namespace kvb
