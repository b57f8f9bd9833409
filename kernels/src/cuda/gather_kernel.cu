// The batched gather/scatter kernel: one launch per plan (per staging slab
// for staged copies), the copy loop shared with the host (copy_descriptor.h).
// Work items come from a descriptor table or, in the direct form, from the
// block pairs and both layouts (chunk_descriptor, layout_math.h).
#include <cstring>

#include "gather_kernel.h"

namespace kvb::detail {
namespace {

// Where a launch's descriptors or pairs live: in its parameters (copied at
// launch), or in memory the device reads.
template <class T, std::uint32_t N>
struct InlineArray {
  T v[N];
  __device__ __forceinline__ const T& operator[](std::uint64_t i) const { return v[i]; }
};

template <class T>
struct DeviceArray {
  const T* v;
  __device__ __forceinline__ const T& operator[](std::uint64_t i) const { return v[i]; }
};

template <class Table>
struct Descriptors {
  Table table;
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const { return table[i]; }
};

// The direct form: item i is chunk c = first + i, chunk c % per_pair of pair
// c / per_pair. Plain: between its two places. Staged: between its place on
// the device side and slot i of the slab's staging buffer.
template <class Pairs>
struct Chunks {
  ChunkPlan plan;
  Pairs pairs;
  std::uint64_t first = 0;
  std::uint64_t staging = 0;
  bool staged = false;
  bool to_host = false;
  __device__ __forceinline__ CopyDescriptor at(std::uint64_t i) const {
    const std::uint64_t per_pair = std::uint64_t{plan.layers} * plan.outer;
    const std::uint64_t c = first + i;
    if (!staged) return chunk_descriptor(plan, pairs[c / per_pair], c % per_pair);
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

// The direct form with the pairs inline (up to kInlinePairs) or read from
// device memory.
cudaError_t launch_direct(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count, std::uint64_t first,
                          std::uint64_t count, std::uint64_t staging, bool staged, bool to_host,
                          const LaunchShape& shape, cudaStream_t stream) {
  if (count == 0 || pair_count == 0) return cudaSuccess;
  if (pair_count <= kInlinePairs) {
    Chunks<InlineArray<PairIds, kInlinePairs>> source{plan, {}, first, staging, staged, to_host};
    std::memcpy(source.pairs.v, pairs, pair_count * sizeof(PairIds));
    return launch(source, count, shape, stream);
  }
  return launch(Chunks<DeviceArray<PairIds>>{plan, {pairs}, first, staging, staged, to_host}, count, shape, stream);
}

}  // namespace

cudaError_t launch_gather(const CopyDescriptor* descriptors, std::uint32_t count, const LaunchShape& shape,
                          cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (count <= kInlineDescriptors) {
    Descriptors<InlineArray<CopyDescriptor, kInlineDescriptors>> source;
    std::memcpy(source.table.v, descriptors, count * sizeof(CopyDescriptor));
    return launch(source, count, shape, stream);
  }
  return launch(Descriptors<DeviceArray<CopyDescriptor>>{{descriptors}}, count, shape, stream);
}

cudaError_t launch_chunks(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count,
                          const LaunchShape& shape, cudaStream_t stream) {
  return launch_direct(plan, pairs, pair_count, 0, plan.chunks, 0, false, false, shape, stream);
}

cudaError_t launch_staged_chunks(const ChunkPlan& plan, const PairIds* pairs, std::uint32_t pair_count,
                                 const StagedChunkSlab& slab, bool to_host, const LaunchShape& shape,
                                 cudaStream_t stream) {
  return launch_direct(plan, pairs, pair_count, slab.first_chunk, slab.chunk_count, slab.staging, true, to_host, shape,
                       stream);
}

}  // namespace kvb::detail
