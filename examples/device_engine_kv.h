// DeviceEngineKv: what an engine on a GPU holds, for engine_sim and
// kvblockd-bench: its KV cache's regions in device memory (one allocation
// holding every region, or one per region; cudaMalloc for CUDA IPC,
// cuMemCreate for VMM), a host mirror of the same layout (a memfd KvRegion:
// the chunk placement and the bytes to compare), and the DeviceKvSpec the
// client registers. Device memory comes from kvb_kernels (which alone
// includes CUDA headers).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/client/device_kv.h"
#include "kvb/client/kv_region.h"

namespace kvb::example {

struct DeviceEngineKvOptions {
  int device = 0;
  /// cuda_vmm: cuMemCreate allocations; else cudaMalloc (automatic then exports CUDA IPC).
  client::DeviceHandles handles = client::DeviceHandles::automatic;
  /// One allocation for every region (regions at 4 KiB-aligned offsets), as
  /// a caching allocator packs tensors; false: one allocation per region.
  bool one_allocation = true;
};

class DeviceEngineKv {
 public:
  [[nodiscard]] static Result<DeviceEngineKv> create(const client::BlockShape& shape, client::WireLayoutKind kind,
                                                     std::uint32_t num_blocks, const DeviceEngineKvOptions& options);

  /// The host mirror: fill it, upload(); or download() and read it.
  [[nodiscard]] client::KvRegion& mirror() noexcept { return mirror_; }
  /// What DeviceKv::export_regions needs.
  [[nodiscard]] client::DeviceKvSpec spec() const;
  /// Copies every region mirror -> device / device -> mirror (cudaMemcpy, synchronous).
  [[nodiscard]] Status upload();
  [[nodiscard]] Status download();
  [[nodiscard]] std::uint64_t device_bytes() const noexcept;

 private:
  explicit DeviceEngineKv(client::KvRegion mirror) : mirror_(std::move(mirror)) {}
  client::KvRegion mirror_;
  DeviceEngineKvOptions options_;
  std::vector<std::unique_ptr<MemoryRegion>> allocations_;
  std::vector<std::byte*> regions_;  // device address of each layout region
};

}  // namespace kvb::example
