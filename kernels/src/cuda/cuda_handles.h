// RAII owners of CUDA handles and the CUDA error -> kvb::Error mapping.
// Internal to kernels/ (includes CUDA headers).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <stdexcept>
#include <string_view>
#include <type_traits>

#include "kvb/common/error.h"

namespace kvb::detail {

/// unavailable for a missing driver or device, out_of_capacity for memory,
/// else internal; the message names the call and carries CUDA's text.
[[nodiscard]] inline Error cuda_error(cudaError_t err, std::string_view what) {
  Errc code = Errc::internal;
  switch (err) {
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorStubLibrary:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorNotSupported:
    case cudaErrorInitializationError: code = Errc::unavailable; break;
    case cudaErrorMemoryAllocation: code = Errc::out_of_capacity; break;
    default: break;
  }
  return Error{code, fmt::format("{}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err))};
}

[[nodiscard]] inline Status cuda_check(cudaError_t err, std::string_view what) {
  if (err == cudaSuccess) return ok();
  return tl::unexpected(cuda_error(err, what));
}

/// Thrown only by the constructors below; caught inside kernels/.
struct CudaFailure : std::runtime_error {
  Error error;
  explicit CudaFailure(Error e) : std::runtime_error(e.message), error(std::move(e)) {}
};

/// A non-blocking stream on the current device. Throws CudaFailure.
class CudaStream {
 public:
  CudaStream() {
    cudaStream_t s = nullptr;
    if (auto err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); err != cudaSuccess)
      throw CudaFailure(cuda_error(err, "cudaStreamCreateWithFlags"));
    stream_.reset(s);
  }
  [[nodiscard]] cudaStream_t get() const noexcept { return stream_.get(); }

 private:
  struct Destroy {
    void operator()(cudaStream_t s) const noexcept { cudaStreamDestroy(s); }
  };
  std::unique_ptr<std::remove_pointer_t<cudaStream_t>, Destroy> stream_;
};

/// An event without timing whose synchronize sleeps (cudaEventBlockingSync)
/// instead of spinning. Throws CudaFailure.
class CudaEvent {
 public:
  CudaEvent() {
    cudaEvent_t e = nullptr;
    if (auto err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync); err != cudaSuccess)
      throw CudaFailure(cuda_error(err, "cudaEventCreateWithFlags"));
    event_.reset(e);
  }
  [[nodiscard]] cudaEvent_t get() const noexcept { return event_.get(); }

 private:
  struct Destroy {
    void operator()(cudaEvent_t e) const noexcept { cudaEventDestroy(e); }
  };
  std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, Destroy> event_;
};

}  // namespace kvb::detail
