// The CUDA side of a build without CUDA: everything is unavailable.
#include "cuda_backend.h"
#include "kvb/kernels/cuda_regions.h"
#include "kvb/kernels/device_memory.h"

#include <unistd.h>

namespace kvb {

namespace {
constexpr std::string_view kNoCuda = "built without CUDA (KVB_CUDA=OFF or no nvcc at configure time)";
}

Result<CudaDeviceInfo> probe_cuda_device(int) { return fail(Errc::unavailable, "{}", kNoCuda); }
Result<std::vector<CudaDeviceInfo>> list_cuda_devices() { return fail(Errc::unavailable, "{}", kNoCuda); }

Result<std::unique_ptr<DeviceRegion>> DeviceRegion::allocate(int, std::uint64_t) {
  return fail(Errc::unavailable, "device region: {}", kNoCuda);
}
DeviceRegion::~DeviceRegion() = default;

Result<std::unique_ptr<PinnedHostRegion>> PinnedHostRegion::allocate(std::uint64_t) {
  return fail(Errc::unavailable, "pinned host region: {}", kNoCuda);
}
Result<std::unique_ptr<PinnedHostRegion>> PinnedHostRegion::register_existing(std::byte*, std::uint64_t) {
  return fail(Errc::unavailable, "pinned host region: {}", kNoCuda);
}
PinnedHostRegion::~PinnedHostRegion() = default;

Result<std::unique_ptr<ImportedDeviceMemory>> ImportedDeviceMemory::open_ipc(int, std::span<const std::byte>) {
  return fail(Errc::unavailable, "CUDA IPC import: {}", kNoCuda);
}
Result<std::unique_ptr<ImportedDeviceMemory>> ImportedDeviceMemory::map_vmm_fd(int, int fd, std::uint64_t) {
  if (fd >= 0) ::close(fd);
  return fail(Errc::unavailable, "CUDA VMM import: {}", kNoCuda);
}
ImportedDeviceMemory::~ImportedDeviceMemory() = default;
std::uint64_t ImportedDeviceMemory::live() noexcept { return 0; }

Result<std::unique_ptr<ShareableDeviceRegion>> ShareableDeviceRegion::allocate(int, std::uint64_t) {
  return fail(Errc::unavailable, "shareable device region: {}", kNoCuda);
}
Result<int> ShareableDeviceRegion::export_fd() const { return fail(Errc::unavailable, "{}", kNoCuda); }
ShareableDeviceRegion::~ShareableDeviceRegion() = default;

Result<DeviceMemoryInfo> device_memory_info(int) { return fail(Errc::unavailable, "cudaMemGetInfo: {}", kNoCuda); }

Status cuda_copy_sync(int, void*, const void*, std::uint64_t) {
  return fail(Errc::unavailable, "cuda copy: {}", kNoCuda);
}

Result<std::unique_ptr<CudaAsyncCopier>> CudaAsyncCopier::make(int) {
  return fail(Errc::unavailable, "cuda async copy: {}", kNoCuda);
}
CudaAsyncCopier::~CudaAsyncCopier() = default;
Status CudaAsyncCopier::copy(void*, const void*, std::uint64_t) { return fail(Errc::unavailable, "{}", kNoCuda); }

namespace detail {
Result<std::unique_ptr<CopyEngine>> make_cuda_copy_engine(CopyEngineKind kind, const CudaDeviceInfo&,
                                                          const CudaEngineOptions&) {
  return fail(Errc::unavailable, "{} engine: {}", to_string(kind), kNoCuda);
}
}  // namespace detail

}  // namespace kvb
