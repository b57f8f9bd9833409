// Host-side launcher of the batched gather/scatter kernel (gather_kernel.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kvb/kernels/copy_descriptor.h"

namespace kvb::detail {

inline constexpr unsigned kGatherThreads = 256;

/// One launch that copies every descriptor of `descriptors` (device memory,
/// `count` entries) on `stream`: thread block b takes descriptors b,
/// b + grid, ...; its threads share each with copy_descriptor_part().
[[nodiscard]] cudaError_t launch_gather(const CopyDescriptor* descriptors, std::uint32_t count, unsigned grid,
                                        cudaStream_t stream);

}  // namespace kvb::detail
