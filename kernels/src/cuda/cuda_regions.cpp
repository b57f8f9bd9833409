// DeviceRegion, PinnedHostRegion and cuda_copy_sync (CUDA builds).
#include "kvb/kernels/cuda_regions.h"

#include "cuda_handles.h"

namespace kvb {

Result<std::unique_ptr<DeviceRegion>> DeviceRegion::allocate(int ordinal, std::uint64_t bytes) {
  if (bytes == 0) return fail(Errc::invalid_argument, "device region: bytes must be > 0 (got 0)");
  if (auto st = detail::cuda_check(cudaSetDevice(ordinal), fmt::format("cudaSetDevice({})", ordinal)); !st)
    return tl::unexpected(st.error());
  void* p = nullptr;
  if (auto err = cudaMalloc(&p, bytes); err != cudaSuccess)
    return tl::unexpected(detail::cuda_error(err, fmt::format("cudaMalloc({} bytes) on device {}", bytes, ordinal)));
  return std::unique_ptr<DeviceRegion>(new DeviceRegion(static_cast<std::byte*>(p), bytes, ordinal));
}

DeviceRegion::~DeviceRegion() {
  cudaSetDevice(ordinal_);
  cudaFree(data_);
}

Result<std::unique_ptr<PinnedHostRegion>> PinnedHostRegion::allocate(std::uint64_t bytes) {
  if (bytes == 0) return fail(Errc::invalid_argument, "pinned host region: bytes must be > 0 (got 0)");
  void* p = nullptr;
  if (auto err = cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped); err != cudaSuccess)
    return tl::unexpected(detail::cuda_error(err, fmt::format("cudaHostAlloc({} bytes)", bytes)));
  return std::unique_ptr<PinnedHostRegion>(new PinnedHostRegion(static_cast<std::byte*>(p), bytes, true));
}

Result<std::unique_ptr<PinnedHostRegion>> PinnedHostRegion::register_existing(std::byte* base, std::uint64_t bytes) {
  if (base == nullptr || bytes == 0)
    return fail(Errc::invalid_argument, "pinned host region: nothing to register (base {}, {} bytes)",
                static_cast<void*>(base), bytes);
  if (auto err = cudaHostRegister(base, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped); err != cudaSuccess)
    return tl::unexpected(detail::cuda_error(err, fmt::format("cudaHostRegister({} bytes)", bytes)));
  return std::unique_ptr<PinnedHostRegion>(new PinnedHostRegion(base, bytes, false));
}

PinnedHostRegion::~PinnedHostRegion() {
  if (owned_) {
    cudaFreeHost(data_);
  } else {
    cudaHostUnregister(data_);
  }
}

Status cuda_copy_sync(int ordinal, void* dst, const void* src, std::uint64_t bytes) {
  if (auto st = detail::cuda_check(cudaSetDevice(ordinal), fmt::format("cudaSetDevice({})", ordinal)); !st) return st;
  if (auto st = detail::cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault),
                                   fmt::format("cudaMemcpy({} bytes)", bytes));
      !st)
    return st;
  // cudaMemcpy returns before a device-to-device copy (and before the DMA of
  // a pageable host-to-device copy) has finished; "sync" means done.
  return detail::cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize after cudaMemcpy");
}

Result<std::unique_ptr<CudaAsyncCopier>> CudaAsyncCopier::make(int ordinal) {
  if (auto st = detail::cuda_check(cudaSetDevice(ordinal), fmt::format("cudaSetDevice({})", ordinal)); !st)
    return tl::unexpected(st.error());
  cudaStream_t stream = nullptr;
  if (auto st = detail::cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"); !st)
    return tl::unexpected(st.error());
  cudaEvent_t event = nullptr;
  if (auto st = detail::cuda_check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate"); !st) {
    cudaStreamDestroy(stream);
    return tl::unexpected(st.error());
  }
  return std::unique_ptr<CudaAsyncCopier>(new CudaAsyncCopier(ordinal, stream, event));
}

CudaAsyncCopier::~CudaAsyncCopier() {
  cudaSetDevice(ordinal_);
  cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

Status CudaAsyncCopier::copy(void* dst, const void* src, std::uint64_t bytes) {
  auto stream = static_cast<cudaStream_t>(stream_);
  auto event = static_cast<cudaEvent_t>(event_);
  if (auto st = detail::cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream), "cudaMemcpyAsync"); !st)
    return st;
  if (auto st = detail::cuda_check(cudaEventRecord(event, stream), "cudaEventRecord"); !st) return st;
  return detail::cuda_check(cudaEventSynchronize(event), "cudaEventSynchronize");
}

}  // namespace kvb
