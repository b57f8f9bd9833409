#include "kvb/kernels/copy_descriptor.h"

#include <algorithm>
#include <bit>

#include "kvb/blockmgr/transfer_plan.h"

namespace kvb {

std::vector<CopyDescriptor> make_descriptors(const TransferPlan& plan, std::uint64_t max_bytes) {
  if (max_bytes == 0) max_bytes = kMaxDescriptorBytes;
  std::vector<CopyDescriptor> out;
  out.reserve(plan.runs().size());
  for (const auto& run : plan.runs()) {
    const auto src = std::bit_cast<std::uintptr_t>(plan.src_address(run));
    const auto dst = std::bit_cast<std::uintptr_t>(plan.dst_address(run));
    for (std::uint64_t off = 0; off < run.bytes; off += max_bytes)
      out.push_back({src + off, dst + off, std::min(max_bytes, run.bytes - off)});
  }
  return out;
}

}  // namespace kvb
