// The batched gather/scatter kernel: one launch per plan (per staging slab
// for staged copies), the copy loop shared with the host (copy_descriptor.h).
#include <cstring>

#include "gather_kernel.h"

namespace kvb::detail {
namespace {

struct InlineTable {
  CopyDescriptor d[kInlineDescriptors];
};

struct PointerTable {
  const CopyDescriptor* d;
};

__device__ __forceinline__ CopyDescriptor at(const InlineTable& t, std::uint64_t i) { return t.d[i]; }
__device__ __forceinline__ CopyDescriptor at(const PointerTable& t, std::uint64_t i) { return t.d[i]; }

// Work item w = slice w % slices of descriptor w / slices, copied by one
// group of `lanes` threads (the block, or a warp); group g of the grid takes
// items g, g + groups, ... The next item's descriptor is loaded before the
// current one is copied, so its latency overlaps the copy.
//
// __launch_bounds__(256) without a minimum block count: 56 registers, 4
// blocks (1024 threads) per SM, 85 % of DRAM bandwidth on an H100 (ncu).
// Forcing 8 blocks per SM (32 registers) spilled to local memory and ran
// 15 % slower.
template <class Table>
__global__ void __launch_bounds__(kGatherThreads)
    gather_kernel(const __grid_constant__ Table table, std::uint32_t count, std::uint32_t slices,
                  std::uint64_t slice_bytes, std::uint32_t lanes) {
  const std::uint64_t items = std::uint64_t{count} * slices;
  const std::uint32_t groups_per_block = blockDim.x / lanes;
  const std::uint32_t lane = threadIdx.x % lanes;
  const std::uint64_t groups = std::uint64_t{gridDim.x} * groups_per_block;
  std::uint64_t w = std::uint64_t{blockIdx.x} * groups_per_block + threadIdx.x / lanes;
  if (w >= items) return;
  CopyDescriptor next = at(table, w / slices);
  for (; w < items; w += groups) {
    const CopyDescriptor current = next;
    const std::uint64_t following = w + groups;
    if (following < items) next = at(table, following / slices);
    copy_descriptor_part(descriptor_slice(current, static_cast<std::uint32_t>(w % slices), slice_bytes), lane, lanes);
  }
}

}  // namespace

cudaError_t launch_gather(const CopyDescriptor* descriptors, std::uint32_t count, const LaunchShape& shape,
                          cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned grid = shape.grid == 0 ? 1 : shape.grid;
  if (count <= kInlineDescriptors) {
    InlineTable table;
    std::memcpy(table.d, descriptors, count * sizeof(CopyDescriptor));
    gather_kernel<InlineTable>
        <<<grid, kGatherThreads, 0, stream>>>(table, count, shape.slices, shape.slice_bytes, shape.lanes);
  } else {
    gather_kernel<PointerTable><<<grid, kGatherThreads, 0, stream>>>(PointerTable{descriptors}, count, shape.slices,
                                                                     shape.slice_bytes, shape.lanes);
  }
  return cudaGetLastError();
}

}  // namespace kvb::detail
