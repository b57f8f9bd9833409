// ImportedDeviceMemory, ShareableDeviceRegion and device_memory_info (CUDA
// builds): CUDA IPC through the runtime, VMM through the driver entry
// points (driver_api.h).
#include "kvb/kernels/device_memory.h"

#include <unistd.h>

#include <atomic>
#include <cstring>

#include <spdlog/spdlog.h>

#include "cuda_handles.h"
#include "driver_api.h"

namespace kvb {
namespace {

std::atomic<std::uint64_t> g_live_imports{0};

/// Makes `ordinal` current (and its primary context, which the driver calls need).
Status use_device(int ordinal) {
  if (auto st = detail::cuda_check(cudaSetDevice(ordinal), fmt::format("cudaSetDevice({})", ordinal)); !st) return st;
  return detail::cuda_check(cudaFree(nullptr), fmt::format("context of device {}", ordinal));
}

/// A refused handle is the caller's fault: invalid_argument with CUDA's text.
Error refused(cudaError_t err, std::string_view what) {
  Error e = detail::cuda_error(err, what);
  if (e.code == Errc::internal) e.code = Errc::invalid_argument;
  return e;
}

CUmemAllocationProp device_prop(int ordinal) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = ordinal;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  return prop;
}

/// Reserves `bytes` of address space, maps `handle` there read-write for
/// `ordinal`; undoes what it did on failure.
Result<CUdeviceptr> map_handle(const detail::DriverApi& api, CUmemGenericAllocationHandle handle, std::uint64_t bytes,
                               std::uint64_t alignment, int ordinal) {
  CUdeviceptr ptr = 0;
  if (auto st = detail::driver_check(api, api.mem_address_reserve(&ptr, bytes, alignment, 0, 0),
                                     fmt::format("cuMemAddressReserve({} bytes)", bytes));
      !st)
    return tl::unexpected(st.error());
  if (auto st =
          detail::driver_check(api, api.mem_map(ptr, bytes, 0, handle, 0), fmt::format("cuMemMap({} bytes)", bytes));
      !st) {
    api.mem_address_free(ptr, bytes);
    return tl::unexpected(st.error());
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = ordinal;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (auto st = detail::driver_check(api, api.mem_set_access(ptr, bytes, &access, 1), "cuMemSetAccess"); !st) {
    api.mem_unmap(ptr, bytes);
    api.mem_address_free(ptr, bytes);
    return tl::unexpected(st.error());
  }
  return ptr;
}

}  // namespace

ImportedDeviceMemory::ImportedDeviceMemory(std::byte* data, std::uint64_t size, int ordinal, Source source,
                                           std::uint64_t vmm_handle) noexcept
    : data_(data), size_(size), ordinal_(ordinal), source_(source), vmm_handle_(vmm_handle) {
  g_live_imports.fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t ImportedDeviceMemory::live() noexcept { return g_live_imports.load(std::memory_order_relaxed); }

Result<std::unique_ptr<ImportedDeviceMemory>> ImportedDeviceMemory::open_ipc(int ordinal,
                                                                             std::span<const std::byte> handle) {
  if (handle.size() != kCudaIpcHandleBytes)
    return fail(Errc::invalid_argument, "a CUDA IPC handle has {} bytes, not {}", kCudaIpcHandleBytes, handle.size());
  auto api = detail::driver_api();
  if (!api) return tl::unexpected(api.error());
  if (auto st = use_device(ordinal); !st) return tl::unexpected(st.error());
  cudaIpcMemHandle_t h{};
  static_assert(sizeof(h) == kCudaIpcHandleBytes);
  std::memcpy(&h, handle.data(), sizeof(h));
  void* p = nullptr;
  if (auto err = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess); err != cudaSuccess) {
    cudaGetLastError();
    return tl::unexpected(refused(err, fmt::format("cudaIpcOpenMemHandle on device {}", ordinal)));
  }
  CUdeviceptr base = 0;
  std::size_t size = 0;
  if (auto st =
          detail::driver_check(**api, (*api)->mem_get_address_range(&base, &size, reinterpret_cast<CUdeviceptr>(p)),
                               "cuMemGetAddressRange of the imported allocation");
      !st || base != reinterpret_cast<CUdeviceptr>(p)) {
    cudaIpcCloseMemHandle(p);
    if (!st) return tl::unexpected(st.error());
    return fail(Errc::internal, "cudaIpcOpenMemHandle returned {} inside an allocation starting at {:#x}", p, base);
  }
  return std::unique_ptr<ImportedDeviceMemory>(
      new ImportedDeviceMemory(static_cast<std::byte*>(p), size, ordinal, Source::cuda_ipc, 0));
}

Result<std::unique_ptr<ImportedDeviceMemory>> ImportedDeviceMemory::map_vmm_fd(int ordinal, int fd,
                                                                               std::uint64_t bytes) {
  struct CloseFd {
    int fd;
    ~CloseFd() {
      if (fd >= 0) ::close(fd);
    }
  } close_fd{fd};
  if (fd < 0) return fail(Errc::invalid_argument, "a VMM shareable handle must be an fd (got {})", fd);
  if (bytes == 0) return fail(Errc::invalid_argument, "a VMM mapping needs bytes > 0");
  auto api = detail::driver_api();
  if (!api) return tl::unexpected(api.error());
  const detail::DriverApi& d = **api;
  if (auto st = use_device(ordinal); !st) return tl::unexpected(st.error());
  CUmemGenericAllocationHandle handle = 0;
  if (auto st = detail::driver_check(
          d,
          d.mem_import_from_shareable_handle(&handle, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)),
                                             CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
          "cuMemImportFromShareableHandle");
      !st)
    return tl::unexpected(st.error());
  // From here the imported handle holds the allocation; the fd is not needed.
  auto release = [&] { d.mem_release(handle); };
  CUmemAllocationProp prop{};
  if (auto st = detail::driver_check(d, d.mem_get_allocation_properties_from_handle(&prop, handle),
                                     "cuMemGetAllocationPropertiesFromHandle");
      !st) {
    release();
    return tl::unexpected(st.error());
  }
  // The device is the one whose UUID the engine sent (ordinals differ
  // between processes with different CUDA_VISIBLE_DEVICES); the allocation
  // must at least be device memory.
  if (prop.location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
    release();
    return fail(Errc::invalid_argument, "the VMM allocation is not device memory (location type {})",
                static_cast<int>(prop.location.type));
  }
  std::size_t granularity = 0;
  if (auto st = detail::driver_check(
          d, d.mem_get_allocation_granularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
          "cuMemGetAllocationGranularity");
      !st) {
    release();
    return tl::unexpected(st.error());
  }
  if (granularity == 0 || bytes % granularity != 0) {
    release();
    return fail(Errc::invalid_argument, "allocation_bytes {} is not a multiple of the allocation granularity {}", bytes,
                granularity);
  }
  auto ptr = map_handle(d, handle, bytes, granularity, ordinal);
  if (!ptr) {
    release();
    return tl::unexpected(ptr.error());
  }
  return std::unique_ptr<ImportedDeviceMemory>(new ImportedDeviceMemory(
      reinterpret_cast<std::byte*>(*ptr), bytes, ordinal, Source::cuda_vmm, static_cast<std::uint64_t>(handle)));
}

ImportedDeviceMemory::~ImportedDeviceMemory() {
  g_live_imports.fetch_sub(1, std::memory_order_relaxed);
  cudaSetDevice(ordinal_);
  if (source_ == Source::cuda_ipc) {
    if (auto err = cudaIpcCloseMemHandle(data_); err != cudaSuccess) {
      cudaGetLastError();
      spdlog::warn("cudaIpcCloseMemHandle on device {}: {}", ordinal_, cudaGetErrorString(err));
    }
    return;
  }
  auto api = detail::driver_api();
  if (!api) return;
  const auto ptr = reinterpret_cast<CUdeviceptr>(data_);
  (*api)->mem_unmap(ptr, size_);
  (*api)->mem_address_free(ptr, size_);
  (*api)->mem_release(static_cast<CUmemGenericAllocationHandle>(vmm_handle_));
}

Result<std::unique_ptr<ShareableDeviceRegion>> ShareableDeviceRegion::allocate(int ordinal, std::uint64_t bytes) {
  if (bytes == 0) return fail(Errc::invalid_argument, "shareable device region: bytes must be > 0 (got 0)");
  auto api = detail::driver_api();
  if (!api) return tl::unexpected(api.error());
  const detail::DriverApi& d = **api;
  if (auto st = use_device(ordinal); !st) return tl::unexpected(st.error());
  const CUmemAllocationProp prop = device_prop(ordinal);
  std::size_t granularity = 0;
  if (auto st = detail::driver_check(
          d, d.mem_get_allocation_granularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
          "cuMemGetAllocationGranularity");
      !st)
    return tl::unexpected(st.error());
  const std::uint64_t size = (bytes + granularity - 1) / granularity * granularity;
  CUmemGenericAllocationHandle handle = 0;
  if (auto st = detail::driver_check(d, d.mem_create(&handle, size, &prop, 0),
                                     fmt::format("cuMemCreate({} bytes) on device {}", size, ordinal));
      !st)
    return tl::unexpected(st.error());
  auto ptr = map_handle(d, handle, size, granularity, ordinal);
  if (!ptr) {
    d.mem_release(handle);
    return tl::unexpected(ptr.error());
  }
  return std::unique_ptr<ShareableDeviceRegion>(
      new ShareableDeviceRegion(reinterpret_cast<std::byte*>(*ptr), size, ordinal, static_cast<std::uint64_t>(handle)));
}

Result<int> ShareableDeviceRegion::export_fd() const {
  auto api = detail::driver_api();
  if (!api) return tl::unexpected(api.error());
  int fd = -1;
  if (auto st = detail::driver_check(
          **api,
          (*api)->mem_export_to_shareable_handle(&fd, static_cast<CUmemGenericAllocationHandle>(handle_),
                                                 CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
          "cuMemExportToShareableHandle");
      !st)
    return tl::unexpected(st.error());
  return fd;
}

ShareableDeviceRegion::~ShareableDeviceRegion() {
  auto api = detail::driver_api();
  if (!api) return;
  cudaSetDevice(ordinal_);
  const auto ptr = reinterpret_cast<CUdeviceptr>(data_);
  (*api)->mem_unmap(ptr, size_);
  (*api)->mem_address_free(ptr, size_);
  (*api)->mem_release(static_cast<CUmemGenericAllocationHandle>(handle_));
}

Result<DeviceMemoryInfo> device_memory_info(int ordinal) {
  if (auto st = use_device(ordinal); !st) return tl::unexpected(st.error());
  std::size_t free = 0, total = 0;
  if (auto st = detail::cuda_check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo"); !st)
    return tl::unexpected(st.error());
  return DeviceMemoryInfo{free, total};
}

}  // namespace kvb
