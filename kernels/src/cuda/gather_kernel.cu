// The batched gather/scatter kernel: one launch per plan, descriptors in
// device memory, the copy loop shared with the host (copy_descriptor.h).
#include "gather_kernel.h"

namespace kvb::detail {
namespace {

__global__ void __launch_bounds__(kGatherThreads)
    gather_kernel(const CopyDescriptor* __restrict__ descriptors, std::uint32_t count) {
  for (std::uint32_t i = blockIdx.x; i < count; i += gridDim.x) {
    const CopyDescriptor d = descriptors[i];
    copy_descriptor_part(d, threadIdx.x, blockDim.x);
  }
}

}  // namespace

cudaError_t launch_gather(const CopyDescriptor* descriptors, std::uint32_t count, unsigned grid, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (grid == 0) grid = 1;
  gather_kernel<<<grid, kGatherThreads, 0, stream>>>(descriptors, count);
  return cudaGetLastError();
}

}  // namespace kvb::detail
