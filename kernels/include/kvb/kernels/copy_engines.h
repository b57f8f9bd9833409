// The copy engines of one process and the rule that picks one for a plan
// (docs/copy-engines.md, "Selection").
//
// CopyEngines always starts the host engine. It lists the usable CUDA
// devices (without creating a context) and builds a CUDA engine only when a
// plan first needs it: per device and kind, on first use (get()), so a
// process that never copies device memory runs no CUDA thread and holds no
// device memory. Without a usable device (no driver, "driver version is
// insufficient", no device, a build without CUDA) it logs ONE line saying
// why and the process runs on the host engine. It never throws for a
// missing GPU.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

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
  std::array<std::uint8_t, 16> uuid{};  // the same in every process, whatever CUDA_VISIBLE_DEVICES says
  std::uint64_t total_memory = 0;       // bytes of device memory
};

/// The usable CUDA devices (unified addressing), by ordinal, without
/// creating a context. Error `unavailable` with the reason when there is
/// none (or this build has no CUDA). Safe from any thread.
[[nodiscard]] Result<std::vector<CudaDeviceInfo>> list_cuda_devices();

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
  /// The device get() uses when none is named.
  int cuda_device = 0;
  /// CUDA ordinals this process may use; empty = every usable device.
  std::vector<int> devices;
  /// false: never touch CUDA (host engine only, no log line).
  bool use_cuda = true;
};

class CopyEngines {
 public:
  /// Starts the host engine and lists the devices (see the header comment).
  /// Throws only what HostCopyEngine's constructor throws.
  explicit CopyEngines(const CopyEngineOptions& options = {});
  /// Destroys the CUDA engines (each finishes its plans), then the host one.
  ~CopyEngines();
  CopyEngines(const CopyEngines&) = delete;
  CopyEngines& operator=(const CopyEngines&) = delete;

  [[nodiscard]] HostCopyEngine& host() const noexcept { return *host_; }
  /// At least one usable CUDA device.
  [[nodiscard]] bool has_cuda() const noexcept { return !devices_.empty(); }
  /// Why there is no CUDA engine; empty when has_cuda().
  [[nodiscard]] const std::string& cuda_unavailable() const noexcept { return cuda_unavailable_; }
  /// The usable devices this process may use, by ordinal.
  [[nodiscard]] const std::vector<CudaDeviceInfo>& devices() const noexcept { return devices_; }
  /// The device of `ordinal`, or null when it is not usable / not allowed.
  [[nodiscard]] const CudaDeviceInfo* device(int ordinal) const noexcept;
  /// The device with this UUID, or null.
  [[nodiscard]] const CudaDeviceInfo* device_by_uuid(std::span<const std::uint8_t, 16> uuid) const noexcept;
  [[nodiscard]] const CopyEngineOptions& options() const noexcept { return options_; }

  /// The engine of `kind` on `device` (-1: options().cuda_device), built on
  /// first use. Errors: unavailable with the reason (no such device, no
  /// CUDA, this kind cannot be built here). Safe from any thread; the
  /// engine lives as long as this object.
  [[nodiscard]] Result<CopyEngine*> get(CopyEngineKind kind, int device = -1);
  /// "host" and every CUDA engine built so far as "<kind>@<ordinal>", for
  /// stats and tests. Safe from any thread.
  [[nodiscard]] std::vector<std::string> built() const;

 private:
  CopyEngineOptions options_;
  std::unique_ptr<HostCopyEngine> host_;
  std::vector<CudaDeviceInfo> devices_;
  std::string cuda_unavailable_;
  mutable std::mutex mutex_;
  std::map<std::pair<int, CopyEngineKind>, Result<std::unique_ptr<CopyEngine>>> cuda_;  // guarded by mutex_
};

/// The selection rule (docs/copy-engines.md, "Selection", measured on an
/// H100), as the engine kinds to try in order for a plan from `src` to
/// `dst` memory when CUDA engines exist:
///  - no device memory on either side: host;
///  - device <-> pinned host: cuda-staged (DMA at PCIe rate, SMs busy only
///    for the HBM-side gather/scatter), else cuda-batch, else cuda-kernel;
///  - device <-> pageable host (pinning failed): cuda-staged only, which
///    bounces the host side through its own pinned buffer;
///  - device <-> device: cuda-kernel (batch DMA reached 1-8 % of the
///    kernel's bandwidth for 4 KiB-1 MiB chunks).
/// Pure; CPU-tested.
[[nodiscard]] std::span<const CopyEngineKind> engine_preference(MemoryKind src, MemoryKind dst) noexcept;

/// The engine for a plan from `src` to `dst` memory on `device` (the
/// device-memory side's ordinal; -1 = the default): the first kind of
/// engine_preference() that can be built. Error `unavailable` (with the
/// reason) when device memory is involved and no CUDA engine is.
[[nodiscard]] Result<CopyEngine*> select_engine(CopyEngines& engines, MemoryKind src, MemoryKind dst, int device = -1);

}  // namespace kvb
