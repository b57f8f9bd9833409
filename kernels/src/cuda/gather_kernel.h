// Host-side launcher of the batched gather/scatter kernel (gather_kernel.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kvb/kernels/copy_descriptor.h"

namespace kvb::detail {

inline constexpr unsigned kGatherThreads = kGatherBlockThreads;

/// Launches with at most this many descriptors carry them in the kernel's
/// parameters (24 B each, __grid_constant__): no upload, no allocation.
inline constexpr std::uint32_t kInlineDescriptors = 128;

/// One launch that copies `count` descriptors on `stream`, split as `shape`
/// says (launch_shape()). `descriptors` is a host array when count <=
/// kInlineDescriptors (copied into the launch), else memory the device
/// reads: device memory or mapped pinned host memory that stays untouched
/// until the launch has run.
[[nodiscard]] cudaError_t launch_gather(const CopyDescriptor* descriptors, std::uint32_t count,
                                        const LaunchShape& shape, cudaStream_t stream);

/// Launches of the direct form with at most this many pairs carry them in
/// the parameters too (with the ChunkPlan: under 4 KiB of parameters).
inline constexpr std::uint32_t kInlinePairs = 96;

/// One launch that copies every chunk of `plan` (plan.chunks work items
/// before slicing) for `pair_count` pairs: a host array when pair_count <=
/// kInlinePairs, else device memory untouched until the launch has run.
[[nodiscard]] cudaError_t launch_chunks(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count,
                                        const LaunchShape& shape, cudaStream_t stream);

/// One launch for slab `slab` of a direct staged copy (make_staged_chunk_plan):
/// its chunks between the device side and the slab's staging buffer.
/// `pairs` as for launch_chunks.
[[nodiscard]] cudaError_t launch_staged_chunks(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count,
                                               const StagedChunkSlab& slab, bool to_host, const LaunchShape& shape,
                                               cudaStream_t stream);

}  // namespace kvb::detail
