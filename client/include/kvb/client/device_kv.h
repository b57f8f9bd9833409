// DeviceKv: an engine's KV cache in GPU memory, registered with kvblockd
// from device pointers (what a torch tensor's data_ptr() gives).
//
// DeviceKv::export_regions() finds the allocation of each region pointer
// and its offset, and exports each allocation once: a cudaMalloc
// allocation as a CUDA IPC handle, a cuMemCreate allocation (made
// exportable as CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) as a VMM fd
// (docs/protocol.md, "Device KV caches"). The client library links no CUDA
// library and includes no CUDA header: it loads the CUDA driver
// (libcuda.so.1) at run time, only when device memory is exported, so
// engines without a GPU never need it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvb/client/kv_region.h"
#include "kvb/common/error.h"
#include "kvb/common/protocol_messages.h"

namespace kvb::client {

/// How the allocations are shared: CUDA IPC handles, VMM fds, or whichever
/// each allocation supports (automatic: cudaMalloc -> IPC, cuMemCreate -> VMM;
/// all allocations of one registration must agree).
enum class DeviceHandles : std::uint8_t { automatic = 0, cuda_ipc = 1, cuda_vmm = 2 };

/// The KV cache to register: its layout and each layout region's device
/// address (1 region for fully_contiguous, num_layers otherwise).
struct DeviceKvSpec {
  BlockShape shape{};
  WireLayoutKind kind = WireLayoutKind::layer_separate_block_outer;
  std::uint32_t num_blocks = 0;
  std::vector<std::uint64_t> region_ptrs;
  /// Bytes of each region; 0 = what the layout needs (KvRegion::region_bytes_for).
  std::uint64_t region_bytes = 0;
  DeviceHandles handles = DeviceHandles::automatic;
};

/// One device allocation as the driver reports it, for the region that
/// points into it.
struct DeviceAllocation {
  std::uint64_t base = 0;
  std::uint64_t bytes = 0;
  bool vmm = false;  // cuMemCreate (else cudaMalloc / cuMemAlloc)
  std::vector<std::byte> device_uuid;
};

/// The pure part of an export: each region's allocation (as `found`
/// reports it, one per region) deduplicated by base, the region offsets,
/// the handle kind. invalid_argument naming the region when regions lie on
/// two devices, a region ends past its allocation, the kinds differ, or the
/// forced kind does not fit. Fills every field of `out` but the handles.
[[nodiscard]] Status plan_device_request(const DeviceKvSpec& spec, std::span<const DeviceAllocation> found,
                                         proto::RegisterKvRequest& out, std::vector<std::uint64_t>& allocation_bases);

/// What register_kv sends for a device KV cache: the request (with its
/// IPC handles) and, for VMM, one exported fd per allocation (owned).
class DeviceKv {
 public:
  /// Queries the driver for every region pointer and exports the
  /// allocations. Errors: unavailable (no CUDA driver, with dlopen's
  /// reason), invalid_argument (not device memory, plan_device_request),
  /// the driver's error naming the call.
  [[nodiscard]] static Result<DeviceKv> export_regions(const DeviceKvSpec& spec);

  DeviceKv(DeviceKv&& other) noexcept;
  DeviceKv& operator=(DeviceKv&& other) noexcept;
  DeviceKv(const DeviceKv&) = delete;
  DeviceKv& operator=(const DeviceKv&) = delete;
  ~DeviceKv();

  [[nodiscard]] const proto::RegisterKvRequest& request() const noexcept { return request_; }
  /// cuda_vmm: one fd per allocation, in allocation order (sent as SCM_RIGHTS).
  [[nodiscard]] std::span<const int> fds() const noexcept { return fds_; }

 private:
  DeviceKv() = default;
  proto::RegisterKvRequest request_;
  std::vector<int> fds_;
};

}  // namespace kvb::client
