// Engines' device KV caches (G1) registered with register_kv: CUDA IPC
// handles or VMM shareable fds, one per device allocation, plus where each
// layout region lies in them (docs/protocol.md, register_kv).
//
// The daemon checks the request's shape first (validate_device_registration:
// handle sizes, fd counts, offsets and sizes inside the declared
// allocations), then imports each allocation on the daemon's device with
// the request's UUID (kernels/ ImportedDeviceMemory) and checks the
// declared sizes against what CUDA says the allocation is. The EngineKv's
// regions hold the imports; the last holder (the session, or a copy still
// running after it ended) unmaps them. Event-loop thread only.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "block_service.h"
#include "kvb/blockmgr/layout.h"
#include "kvb/common/protocol.h"
#include "kvb/common/unique_fd.h"
#include "kvb/kernels/copy_engines.h"

namespace kvb::daemon {

/// Checks a device-memory register_kv against `layout` before anything is
/// imported: memory kind and handles (cuda_ipc: 64-byte handles, no fds;
/// cuda_vmm: one fd per allocation), allocation_bytes per allocation, a
/// 16-byte device_uuid, one region per layout region inside its allocation
/// (offset + region_bytes <= allocation_bytes), region_bytes enough for the
/// layout, every allocation used. invalid_argument naming the field. Pure.
[[nodiscard]] Status validate_device_registration(const Layout& layout, const proto::RegisterKvRequest& request,
                                                  std::size_t fds_received);

/// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints UUIDs.
[[nodiscard]] std::string format_uuid(std::span<const std::uint8_t, 16> uuid);

/// The whole device register_kv: unavailable when this daemon has no GPU
/// (with the reason) or does not serve the request's device; then
/// validate_device_registration; then the imports (a handle CUDA refuses or
/// an allocation smaller than allocation_bytes is invalid_argument naming
/// the allocation).
[[nodiscard]] Result<std::shared_ptr<EngineKv>> import_device_kv(CopyEngines& engines, const Layout& layout,
                                                                 const proto::RegisterKvRequest& request,
                                                                 std::vector<UniqueFd> fds);

}  // namespace kvb::daemon
