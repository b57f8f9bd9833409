#include "kvb/client/device_kv.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "cuda_driver.h"

namespace kvb::client {
namespace {

using detail::CudaDriver;

/// The primary context of the pointer's device, current for this scope.
class DeviceScope {
 public:
  static Result<DeviceScope> enter(const CudaDriver& d, int ordinal) {
    DeviceScope s;
    s.driver_ = &d;
    if (auto r = d.device_get(&s.device_, ordinal); r != 0) return tl::unexpected(d.error(r, "cuDeviceGet"));
    if (auto r = d.device_primary_ctx_retain(&s.context_, s.device_); r != 0)
      return tl::unexpected(d.error(r, "cuDevicePrimaryCtxRetain"));
    if (auto r = d.ctx_push_current(s.context_); r != 0) {
      d.device_primary_ctx_release(s.device_);
      return tl::unexpected(d.error(r, "cuCtxPushCurrent"));
    }
    s.active_ = true;
    return s;
  }
  DeviceScope(DeviceScope&& o) noexcept
      : driver_(o.driver_), device_(o.device_), context_(o.context_), active_(std::exchange(o.active_, false)) {}
  DeviceScope& operator=(DeviceScope&&) = delete;
  ~DeviceScope() {
    if (!active_) return;
    detail::CuContext popped = nullptr;
    driver_->ctx_pop_current(&popped);
    driver_->device_primary_ctx_release(device_);
  }
  [[nodiscard]] detail::CuDevice device() const noexcept { return device_; }

 private:
  DeviceScope() = default;
  const CudaDriver* driver_ = nullptr;
  detail::CuDevice device_ = 0;
  detail::CuContext context_ = nullptr;
  bool active_ = false;
};

/// What the driver says about the allocation `ptr` points into.
Result<DeviceAllocation> query(const CudaDriver& d, std::size_t region, std::uint64_t ptr) {
  unsigned memory_type = 0;
  if (auto r = d.pointer_get_attribute(&memory_type, detail::kAttrMemoryType, ptr);
      r != 0 || memory_type != detail::kMemoryTypeDevice)
    return fail(Errc::invalid_argument, "region {} ({:#x}) is not CUDA device memory", region, ptr);
  int ordinal = -1;
  if (auto r = d.pointer_get_attribute(&ordinal, detail::kAttrDeviceOrdinal, ptr); r != 0)
    return tl::unexpected(d.error(r, fmt::format("region {}: device of {:#x}", region, ptr)));
  auto scope = DeviceScope::enter(d, ordinal);
  if (!scope) return tl::unexpected(scope.error());
  DeviceAllocation a;
  detail::CuDevicePtr base = 0;
  std::size_t size = 0;
  if (auto r = d.mem_get_address_range(&base, &size, ptr); r != 0)
    return tl::unexpected(d.error(r, fmt::format("region {}: cuMemGetAddressRange({:#x})", region, ptr)));
  a.base = base;
  a.bytes = size;
  std::uint64_t legacy = 0;  // a boolean; zero-extended in an 8-byte buffer
  if (auto r = d.pointer_get_attribute(&legacy, detail::kAttrIsLegacyIpcCapable, ptr); r != 0)
    return tl::unexpected(d.error(r, fmt::format("region {}: IPC capability of {:#x}", region, ptr)));
  a.vmm = legacy == 0;
  detail::CuUuid uuid{};
  if (auto r = d.device_get_uuid(&uuid, scope->device()); r != 0) return tl::unexpected(d.error(r, "cuDeviceGetUuid"));
  a.device_uuid.resize(16);
  std::memcpy(a.device_uuid.data(), uuid.bytes, 16);
  return a;
}

}  // namespace

Status plan_device_request(const DeviceKvSpec& spec, std::span<const DeviceAllocation> found,
                           proto::RegisterKvRequest& out, std::vector<std::uint64_t>& allocation_bases) {
  const std::uint32_t regions = spec.kind == WireLayoutKind::fully_contiguous ? 1U : spec.shape.num_layers;
  if (spec.region_ptrs.size() != regions || found.size() != regions)
    return fail(Errc::invalid_argument, "device kv: layout needs {} region pointers, got {}", regions,
                spec.region_ptrs.size());
  auto layout_bytes = KvRegion::region_bytes_for(spec.shape, spec.kind, spec.num_blocks);
  if (!layout_bytes) return fail(Errc::invalid_argument, "device kv: {}", layout_bytes.error().message);
  const std::uint64_t needed = *layout_bytes;
  const std::uint64_t region_bytes = spec.region_bytes == 0 ? needed : spec.region_bytes;
  if (region_bytes < needed)
    return fail(Errc::invalid_argument, "device kv: region_bytes {} is under the {} bytes the layout needs",
                region_bytes, needed);
  out = proto::RegisterKvRequest{};
  out.layout_kind = spec.kind;
  out.num_blocks = spec.num_blocks;
  out.region_bytes = region_bytes;
  allocation_bases.clear();
  bool vmm = false;
  for (std::size_t i = 0; i < regions; ++i) {
    const DeviceAllocation& a = found[i];
    const std::uint64_t ptr = spec.region_ptrs[i];
    if (i == 0) {
      out.device_uuid = a.device_uuid;
      vmm = a.vmm;
    } else if (a.device_uuid != out.device_uuid) {
      return fail(Errc::invalid_argument, "device kv: region {} is on another GPU than region 0", i);
    } else if (a.vmm != vmm) {
      return fail(Errc::invalid_argument,
                  "device kv: region {} is in a {} allocation, region 0 in a {} one: one registration uses one kind", i,
                  a.vmm ? "cuMemCreate" : "cudaMalloc", vmm ? "cuMemCreate" : "cudaMalloc");
    }
    if (ptr < a.base || ptr - a.base > a.bytes || region_bytes > a.bytes - (ptr - a.base))
      return fail(Errc::invalid_argument,
                  "device kv: region {} ({:#x}, {} bytes) ends past its allocation ({:#x}, {} bytes)", i, ptr,
                  region_bytes, a.base, a.bytes);
    auto at = std::find(allocation_bases.begin(), allocation_bases.end(), a.base);
    if (at == allocation_bases.end()) {
      allocation_bases.push_back(a.base);
      out.allocation_bytes.push_back(a.bytes);
      at = allocation_bases.end() - 1;
    }
    out.regions.push_back({static_cast<std::uint32_t>(at - allocation_bases.begin()), ptr - a.base});
  }
  if (spec.handles == DeviceHandles::cuda_ipc && vmm)
    return fail(Errc::invalid_argument,
                "device kv: cuda_ipc asked for, but the regions are cuMemCreate allocations "
                "(CUDA IPC handles are for cudaMalloc memory: use cuda_vmm)");
  if (spec.handles == DeviceHandles::cuda_vmm && !vmm)
    return fail(Errc::invalid_argument,
                "device kv: cuda_vmm asked for, but the regions are cudaMalloc allocations "
                "(VMM fds are for cuMemCreate memory: use cuda_ipc)");
  out.memory = vmm ? proto::MemoryHandle::cuda_vmm : proto::MemoryHandle::cuda_ipc;
  return ok();
}

Result<DeviceKv> DeviceKv::export_regions(const DeviceKvSpec& spec) {
  auto driver = detail::cuda_driver();
  if (!driver) return tl::unexpected(driver.error());
  const CudaDriver& d = **driver;
  std::vector<DeviceAllocation> found;
  found.reserve(spec.region_ptrs.size());
  for (std::size_t i = 0; i < spec.region_ptrs.size(); ++i) {
    auto a = query(d, i, spec.region_ptrs[i]);
    if (!a) return tl::unexpected(a.error());
    found.push_back(std::move(*a));
  }
  DeviceKv kv;
  std::vector<std::uint64_t> bases;
  if (auto st = plan_device_request(spec, found, kv.request_, bases); !st) return tl::unexpected(st.error());
  int ordinal = -1;
  if (auto r = d.pointer_get_attribute(&ordinal, detail::kAttrDeviceOrdinal, spec.region_ptrs[0]); r != 0)
    return tl::unexpected(d.error(r, "device of region 0"));
  auto scope = DeviceScope::enter(d, ordinal);
  if (!scope) return tl::unexpected(scope.error());
  for (std::size_t i = 0; i < bases.size(); ++i) {
    if (kv.request_.memory == proto::MemoryHandle::cuda_ipc) {
      detail::CuIpcMemHandle handle{};
      if (auto r = d.ipc_get_mem_handle(&handle, bases[i]); r != 0)
        return tl::unexpected(d.error(r, fmt::format("cuIpcGetMemHandle of allocation {} ({:#x})", i, bases[i])));
      const auto* bytes = reinterpret_cast<const std::byte*>(handle.reserved);
      kv.request_.cuda_ipc_handles.emplace_back(bytes, bytes + sizeof(handle.reserved));
      continue;
    }
    detail::CuAllocationHandle handle = 0;
    if (auto r = d.mem_retain_allocation_handle(&handle, reinterpret_cast<void*>(bases[i])); r != 0)
      return tl::unexpected(
          d.error(r, fmt::format("cuMemRetainAllocationHandle of allocation {} ({:#x})", i, bases[i])));
    int fd = -1;
    const auto exported = d.mem_export_to_shareable_handle(&fd, handle, detail::kHandleTypePosixFd, 0);
    d.mem_release(handle);  // the retain's reference; the fd holds its own
    if (exported != 0)
      return tl::unexpected(d.error(exported,
                                    fmt::format("cuMemExportToShareableHandle of allocation {} (was it created with "
                                                "CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR?)",
                                                i),
                                    Errc::invalid_argument));
    kv.fds_.push_back(fd);
  }
  kv.request_.fd_count = static_cast<std::uint32_t>(kv.fds_.size());
  return kv;
}

DeviceKv::DeviceKv(DeviceKv&& other) noexcept
    : request_(std::move(other.request_)), fds_(std::exchange(other.fds_, {})) {}

DeviceKv& DeviceKv::operator=(DeviceKv&& other) noexcept {
  if (this != &other) {
    for (int fd : fds_) ::close(fd);
    request_ = std::move(other.request_);
    fds_ = std::exchange(other.fds_, {});
  }
  return *this;
}

DeviceKv::~DeviceKv() {
  for (int fd : fds_) ::close(fd);
}

}  // namespace kvb::client
