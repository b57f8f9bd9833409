// The batched gather/scatter kernel: one launch per plan (per staging slab
// for staged copies), the copy loop shared with the host (copy_descriptor.h).
// Work items come from a descriptor table or, in the direct form, from the
// block pairs and both layouts (chunk_descriptor, layout_math.h).
#include <cstring>

#include "gather_kernel.h"

namespace kvb::detail {
namespace {

struct InlineTable {
  CopyDescriptor d[kInlineDescriptors];
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const { return d[i]; }
};

struct PointerTable {
  const CopyDescriptor* d;
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const { return d[i]; }
};

// Chunk i of the direct form: pair i / per_pair, chunk i % per_pair of it.
struct InlineChunks {
  ChunkPlan plan;
  PairIds pairs[kInlinePairs];
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const {
    const std::uint64_t per_pair = std::uint64_t{plan.layers} * plan.outer;
    return chunk_descriptor(plan, pairs[i / per_pair], i % per_pair);
  }
};

struct PointerChunks {
  ChunkPlan plan;
  const PairIds* pairs;
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const {
    const std::uint64_t per_pair = std::uint64_t{plan.layers} * plan.outer;
    return chunk_descriptor(plan, pairs[i / per_pair], i % per_pair);
  }
};

// Item i of a staged slab: chunk first + i between the device side and
// slot i of the slab's staging buffer.
struct InlineStagedChunks {
  ChunkPlan plan;
  PairIds pairs[kInlinePairs];
  std::uint64_t first;
  std::uint64_t staging;
  bool to_host;
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const {
    const std::uint64_t per_pair = std::uint64_t{plan.layers} * plan.outer;
    const std::uint64_t c = first + i;
    return staged_chunk_descriptor(plan, pairs[c / per_pair], c % per_pair, staging + i * plan.chunk_bytes, to_host);
  }
};

struct PointerStagedChunks {
  ChunkPlan plan;
  const PairIds* pairs;
  std::uint64_t first;
  std::uint64_t staging;
  bool to_host;
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const {
    const std::uint64_t per_pair = std::uint64_t{plan.layers} * plan.outer;
    const std::uint64_t c = first + i;
    return staged_chunk_descriptor(plan, pairs[c / per_pair], c % per_pair, staging + i * plan.chunk_bytes, to_host);
  }
};

// Work item w = slice w % slices of item source.at(w / slices), copied by one
// group of `lanes` threads (the block, or a warp); group g of the grid takes
// items g, g + groups, ... The next item's descriptor is fetched before the
// current one is copied, so its latency overlaps the copy.
//
// __launch_bounds__(256) without a minimum block count: 48-56 registers, 4
// blocks (1024 threads) per SM, 85 % of DRAM bandwidth on an H100 (ncu).
// Forcing 8 blocks per SM (32 registers) spilled to local memory and ran
// 15 % slower.
template <class Source>
__global__ void __launch_bounds__(kGatherThreads)
    gather_kernel(const __grid_constant__ Source source, std::uint64_t count, std::uint32_t slices,
                  std::uint64_t slice_bytes, std::uint32_t lanes) {
  const std::uint64_t items = count * slices;
  const std::uint32_t groups_per_block = blockDim.x / lanes;
  const std::uint32_t lane = threadIdx.x % lanes;
  const std::uint64_t groups = std::uint64_t{gridDim.x} * groups_per_block;
  std::uint64_t w = std::uint64_t{blockIdx.x} * groups_per_block + threadIdx.x / lanes;
  if (w >= items) return;
  CopyDescriptor next = source.at(w / slices);
  for (; w < items; w += groups) {
    const CopyDescriptor current = next;
    const std::uint64_t following = w + groups;
    if (following < items) next = source.at(following / slices);
    copy_descriptor_part(descriptor_slice(current, static_cast<std::uint32_t>(w % slices), slice_bytes), lane, lanes);
  }
}

template <class Source>
cudaError_t launch(const Source& source, std::uint64_t count, const LaunchShape& shape, cudaStream_t stream) {
  const unsigned grid = shape.grid == 0 ? 1 : shape.grid;
  gather_kernel<Source>
      <<<grid, kGatherThreads, 0, stream>>>(source, count, shape.slices, shape.slice_bytes, shape.lanes);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gather(const CopyDescriptor* descriptors, std::uint32_t count, const LaunchShape& shape,
                          cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (count <= kInlineDescriptors) {
    InlineTable table;
    std::memcpy(table.d, descriptors, count * sizeof(CopyDescriptor));
    return launch(table, count, shape, stream);
  }
  return launch(PointerTable{descriptors}, count, shape, stream);
}

cudaError_t launch_chunks(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count,
                          const LaunchShape& shape, cudaStream_t stream) {
  if (plan.chunks == 0 || pair_count == 0) return cudaSuccess;
  if (pair_count <= kInlinePairs) {
    InlineChunks source;
    source.plan = plan;
    std::memcpy(source.pairs, pairs, pair_count * sizeof(PairIds));
    return launch(source, plan.chunks, shape, stream);
  }
  return launch(PointerChunks{plan, pairs}, plan.chunks, shape, stream);
}

cudaError_t launch_staged_chunks(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count,
                                 const StagedChunkSlab& slab, bool to_host, const LaunchShape& shape,
                                 cudaStream_t stream) {
  if (slab.chunk_count == 0 || pair_count == 0) return cudaSuccess;
  if (pair_count <= kInlinePairs) {
    InlineStagedChunks source;
    source.plan = plan;
    std::memcpy(source.pairs, pairs, pair_count * sizeof(PairIds));
    source.first = slab.first_chunk;
    source.staging = slab.staging;
    source.to_host = to_host;
    return launch(source, slab.chunk_count, shape, stream);
  }
  return launch(PointerStagedChunks{plan, pairs, slab.first_chunk, slab.staging, to_host}, slab.chunk_count, shape,
                stream);
}

}  // namespace kvb::detail
