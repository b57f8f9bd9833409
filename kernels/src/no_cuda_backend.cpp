// The CUDA side of a build without CUDA: everything is unavailable.
#include "cuda_backend.h"
#include "kvb/kernels/cuda_regions.h"

namespace kvb {

namespace {
constexpr std::string_view kNoCuda = "built without CUDA (KVB_CUDA=OFF or no nvcc at configure time)";
}

Result<CudaDeviceInfo> probe_cuda_device(int) { return fail(Errc::unavailable, "{}", kNoCuda); }

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

Status cuda_copy_sync(int, void*, const void*, std::uint64_t) {
  return fail(Errc::unavailable, "cuda copy: {}", kNoCuda);
}

namespace detail {
Result<std::unique_ptr<CopyEngine>> make_cuda_copy_engine(CopyEngineKind kind, const CudaDeviceInfo&,
                                                          const CudaEngineOptions&) {
  return fail(Errc::unavailable, "{} engine: {}", to_string(kind), kNoCuda);
}
}  // namespace detail

}  // namespace kvb
