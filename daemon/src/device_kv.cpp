#include "device_kv.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "kvb/kernels/device_memory.h"

namespace kvb::daemon {
namespace {

using proto::MemoryHandle;

std::string_view memory_name(MemoryHandle memory) {
  switch (memory) {
    case MemoryHandle::memfd: return "memfd";
    case MemoryHandle::cuda_ipc: return "cuda_ipc";
    case MemoryHandle::cuda_vmm: return "cuda_vmm";
  }
  return "unknown";
}

/// One layout region: a window of an imported allocation, which it keeps mapped.
class DeviceRegionView final : public MemoryRegion {
 public:
  DeviceRegionView(std::shared_ptr<ImportedDeviceMemory> allocation, std::uint64_t offset, std::uint64_t bytes)
      : allocation_(std::move(allocation)), data_(allocation_->data() + offset), size_(bytes) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::device; }
  [[nodiscard]] std::byte* data() const noexcept override { return data_; }
  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }
  [[nodiscard]] int device_ordinal() const noexcept override { return allocation_->device_ordinal(); }

 private:
  std::shared_ptr<ImportedDeviceMemory> allocation_;
  std::byte* data_;
  std::uint64_t size_;
};

std::string device_names(const CopyEngines& engines) {
  std::string out;
  for (const auto& d : engines.devices()) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {}", d.ordinal, format_uuid(d.uuid));
  }
  return out;
}

}  // namespace

std::string format_uuid(std::span<const std::uint8_t, 16> u) {
  return fmt::format(
      "GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", u[0],
      u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

Status validate_device_registration(const Layout& layout, const proto::RegisterKvRequest& r, std::size_t fds_received) {
  const auto name = memory_name(r.memory);
  if (r.memory == MemoryHandle::memfd)
    return fail(Errc::invalid_argument, "register_kv: memory memfd is not device memory");
  std::size_t allocations = 0;
  if (r.memory == MemoryHandle::cuda_ipc) {
    if (r.fd_count != 0 || fds_received != 0)
      return fail(Errc::invalid_argument, "register_kv: memory cuda_ipc carries no fds (fd_count {}, {} arrived)",
                  r.fd_count, fds_received);
    allocations = r.cuda_ipc_handles.size();
    if (allocations == 0)
      return fail(Errc::invalid_argument, "register_kv: memory cuda_ipc needs cuda_ipc_handles (got none)");
    for (std::size_t i = 0; i < allocations; ++i) {
      if (r.cuda_ipc_handles[i].size() != kCudaIpcHandleBytes)
        return fail(Errc::invalid_argument, "register_kv: cuda_ipc_handles[{}] has {} bytes, a CUDA IPC handle has {}",
                    i, r.cuda_ipc_handles[i].size(), kCudaIpcHandleBytes);
    }
  } else {
    if (!r.cuda_ipc_handles.empty())
      return fail(Errc::invalid_argument, "register_kv: memory cuda_vmm takes fds, not cuda_ipc_handles ({} given)",
                  r.cuda_ipc_handles.size());
    allocations = r.fd_count;
    if (allocations == 0 || fds_received != r.fd_count)
      return fail(Errc::invalid_argument,
                  "register_kv: memory cuda_vmm needs one fd per allocation (fd_count {}, {} arrived)", r.fd_count,
                  fds_received);
  }
  if (r.device_uuid.size() != proto::kDeviceUuidBytes)
    return fail(Errc::invalid_argument, "register_kv: device_uuid has {} bytes (expected {})", r.device_uuid.size(),
                proto::kDeviceUuidBytes);
  if (r.allocation_bytes.size() != allocations)
    return fail(Errc::invalid_argument, "register_kv: allocation_bytes has {} entries for {} allocations ({})",
                r.allocation_bytes.size(), allocations, name);
  for (std::size_t i = 0; i < allocations; ++i) {
    if (r.allocation_bytes[i] == 0) return fail(Errc::invalid_argument, "register_kv: allocation_bytes[{}] is 0", i);
  }
  if (r.regions.size() != layout.num_regions())
    return fail(Errc::invalid_argument, "register_kv: layout {} needs {} regions; regions has {}",
                to_string(layout.kind()), layout.num_regions(), r.regions.size());
  if (r.region_bytes < layout.region_bytes())
    return fail(Errc::invalid_argument, "register_kv: region_bytes {} is under the {} bytes the layout needs",
                r.region_bytes, layout.region_bytes());
  std::vector<bool> used(allocations, false);
  for (std::size_t i = 0; i < r.regions.size(); ++i) {
    const auto& region = r.regions[i];
    if (region.allocation >= allocations)
      return fail(Errc::invalid_argument, "register_kv: regions[{}].allocation {} is out of range ({} allocations)", i,
                  region.allocation, allocations);
    const std::uint64_t size = r.allocation_bytes[region.allocation];
    if (region.offset > size || r.region_bytes > size - region.offset)
      return fail(Errc::invalid_argument,
                  "register_kv: regions[{}] (offset {}, region_bytes {}) ends past allocation {} ({} bytes)", i,
                  region.offset, r.region_bytes, region.allocation, size);
    used[region.allocation] = true;
  }
  if (auto unused = std::find(used.begin(), used.end(), false); unused != used.end())
    return fail(Errc::invalid_argument, "register_kv: allocation {} is used by no region",
                static_cast<std::size_t>(unused - used.begin()));
  return ok();
}

Result<std::shared_ptr<EngineKv>> import_device_kv(CopyEngines& engines, const Layout& layout,
                                                   const proto::RegisterKvRequest& r, std::vector<UniqueFd> fds) {
  const auto name = memory_name(r.memory);
  if (!engines.has_cuda())
    return fail(Errc::unavailable, "register_kv: memory {} needs a GPU; this daemon has none ({})", name,
                engines.cuda_unavailable());
  if (auto valid = validate_device_registration(layout, r, fds.size()); !valid) return tl::unexpected(valid.error());
  std::array<std::uint8_t, 16> uuid{};
  std::memcpy(uuid.data(), r.device_uuid.data(), uuid.size());
  const CudaDeviceInfo* device = engines.device_by_uuid(uuid);
  if (device == nullptr)
    return fail(Errc::unavailable, "register_kv: device_uuid {} is not a device of this daemon (devices: {})",
                format_uuid(uuid), device_names(engines));
  const std::size_t count = r.memory == MemoryHandle::cuda_ipc ? r.cuda_ipc_handles.size() : fds.size();
  std::vector<std::shared_ptr<ImportedDeviceMemory>> allocations;
  allocations.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto imported = r.memory == MemoryHandle::cuda_ipc
                        ? ImportedDeviceMemory::open_ipc(device->ordinal, r.cuda_ipc_handles[i])
                        : ImportedDeviceMemory::map_vmm_fd(device->ordinal, fds[i].release(), r.allocation_bytes[i]);
    if (!imported)
      return fail(imported.error().code, "register_kv: allocation {} ({}): {}", i, name, imported.error().message);
    // The regions must lie inside memory that exists: the declared size
    // was checked against the offsets, CUDA's size is checked against it.
    if ((*imported)->size() < r.allocation_bytes[i])
      return fail(Errc::invalid_argument, "register_kv: allocation {} holds {} bytes, fewer than allocation_bytes {}",
                  i, (*imported)->size(), r.allocation_bytes[i]);
    allocations.push_back(std::move(*imported));
  }
  auto kv = std::make_shared<EngineKv>(EngineKv{layout, {}, device->ordinal});
  for (const auto& region : r.regions)
    kv->regions.push_back(
        std::make_unique<DeviceRegionView>(allocations[region.allocation], region.offset, r.region_bytes));
  spdlog::debug("register_kv: {} allocation(s) of {} on device {} ({} regions)", count, name, device->ordinal,
                kv->regions.size());
  return kv;
}

}  // namespace kvb::daemon
