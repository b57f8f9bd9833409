// probe_cuda_device and the CUDA engine factory (CUDA builds).
#include <spdlog/spdlog.h>

#include "../cuda_backend.h"
#include "cuda_copy_engine.h"
#include "cuda_handles.h"

namespace kvb {

Result<CudaDeviceInfo> probe_cuda_device(int ordinal) {
  int count = 0;
  // On a machine without a driver (or with an old one) this returns
  // cudaErrorInsufficientDriver / cudaErrorNoDevice; it does not crash.
  if (auto err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error
    return tl::unexpected(detail::cuda_error(err, "cudaGetDeviceCount"));
  }
  if (count == 0) return fail(Errc::unavailable, "cudaGetDeviceCount: no CUDA device");
  if (ordinal < 0 || ordinal >= count)
    return fail(Errc::unavailable, "CUDA device ordinal {} out of range ({} devices)", ordinal, count);
  cudaDeviceProp prop{};
  if (auto err = cudaGetDeviceProperties(&prop, ordinal); err != cudaSuccess)
    return tl::unexpected(detail::cuda_error(err, fmt::format("cudaGetDeviceProperties({})", ordinal)));
  if (auto err = cudaSetDevice(ordinal); err != cudaSuccess)
    return tl::unexpected(detail::cuda_error(err, fmt::format("cudaSetDevice({})", ordinal)));
  if (auto err = cudaFree(nullptr); err != cudaSuccess)  // creates the context
    return tl::unexpected(detail::cuda_error(err, fmt::format("context creation on device {}", ordinal)));
  if (!prop.unifiedAddressing)
    return fail(Errc::unavailable, "CUDA device {} ({}) has no unified addressing", ordinal, prop.name);
  CudaDeviceInfo info;
  info.ordinal = ordinal;
  info.name = prop.name;
  info.sm_count = prop.multiProcessorCount;
  info.runtime_version = CUDART_VERSION;
  cudaDriverGetVersion(&info.driver_version);
  return info;
}

namespace detail {

Result<std::unique_ptr<CopyEngine>> make_cuda_copy_engine(CopyEngineKind kind, const CudaDeviceInfo& device,
                                                          const CudaEngineOptions& options) {
  if (kind == CopyEngineKind::host) return fail(Errc::invalid_argument, "make_cuda_copy_engine: kind is host");
#if CUDART_VERSION < 12080
  if (kind == CopyEngineKind::cuda_batch)
    return fail(Errc::unavailable, "cuda-batch needs CUDA >= 12.8 (built with {})", CUDART_VERSION);
#endif
  try {
    return std::unique_ptr<CopyEngine>(std::make_unique<CudaCopyEngine>(kind, device, options));
  } catch (const CudaFailure& e) {
    return tl::unexpected(e.error);
  }
}

}  // namespace detail
}  // namespace kvb
