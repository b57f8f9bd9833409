// What copy_engines.cpp needs from the CUDA side; implemented by
// cuda/cuda_backend.cpp (KVB_HAVE_CUDA) or no_cuda_backend.cpp.
#pragma once

#include <memory>

#include "kvb/kernels/copy_engines.h"

namespace kvb::detail {

/// A CUDA engine of `kind` (not host) on a device that probe_cuda_device()
/// accepted. unavailable when this build cannot make that kind.
[[nodiscard]] Result<std::unique_ptr<CopyEngine>> make_cuda_copy_engine(CopyEngineKind kind,
                                                                        const CudaDeviceInfo& device,
                                                                        const CudaEngineOptions& options = {});

}  // namespace kvb::detail
