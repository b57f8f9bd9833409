// probe_cuda_device and the CUDA engine factory (CUDA builds).
#include <cstring>

#include <spdlog/spdlog.h>

#include "../cuda_backend.h"
#include "cuda_copy_engine.h"
#include "cuda_handles.h"

namespace kvb {

namespace {

CudaDeviceInfo info_of(int ordinal, const cudaDeviceProp& prop) {
  CudaDeviceInfo info;
  info.ordinal = ordinal;
  info.name = prop.name;
  info.sm_count = prop.multiProcessorCount;
  info.runtime_version = CUDART_VERSION;
  cudaDriverGetVersion(&info.driver_version);
  static_assert(sizeof(prop.uuid.bytes) == 16);
  std::memcpy(info.uuid.data(), prop.uuid.bytes, 16);
  info.total_memory = prop.totalGlobalMem;
  return info;
}

}  // namespace

Result<std::vector<CudaDeviceInfo>> list_cuda_devices() {
  int count = 0;
  if (auto err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    cudaGetLastError();  // clear the non-sticky error
    return tl::unexpected(detail::cuda_error(err, "cudaGetDeviceCount"));
  }
  if (count == 0) return fail(Errc::unavailable, "cudaGetDeviceCount: no CUDA device");
  std::vector<CudaDeviceInfo> out;
  std::string skipped;
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    cudaDeviceProp prop{};
    if (auto err = cudaGetDeviceProperties(&prop, ordinal); err != cudaSuccess) {
      skipped += fmt::format("; device {}: {}", ordinal, detail::cuda_error(err, "cudaGetDeviceProperties").message);
      continue;
    }
    if (!prop.unifiedAddressing) {
      skipped += fmt::format("; device {} ({}) has no unified addressing", ordinal, prop.name);
      continue;
    }
    out.push_back(info_of(ordinal, prop));
  }
  if (out.empty()) return fail(Errc::unavailable, "no usable CUDA device among {}{}", count, skipped);
  return out;
}

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
  return info_of(ordinal, prop);
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
