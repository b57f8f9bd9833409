#include "kvb/kernels/copy_descriptor.h"

#include <algorithm>
#include <bit>

#include "kvb/blockmgr/transfer_plan.h"

namespace kvb {

std::vector<CopyDescriptor> make_descriptors(const TransferPlan& plan, std::uint64_t max_bytes) {
  if (max_bytes == 0) max_bytes = kMaxDescriptorBytes;
  std::size_t count = 0;
  for (const auto& run : plan.runs()) count += static_cast<std::size_t>((run.bytes + max_bytes - 1) / max_bytes);
  std::vector<CopyDescriptor> out;
  out.reserve(count);
  for (const auto& run : plan.runs()) {
    const auto src = std::bit_cast<std::uintptr_t>(plan.src_address(run));
    const auto dst = std::bit_cast<std::uintptr_t>(plan.dst_address(run));
    for (std::uint64_t off = 0; off < run.bytes; off += max_bytes)
      out.push_back({src + off, dst + off, std::min(max_bytes, run.bytes - off)});
  }
  return out;
}

namespace {

// Appends a staged copy's DMA leg, merged into the previous leg of the same
// slab (legs from `first_of_slab` on) when both its sides continue that one.
void append_leg(std::vector<CopyDescriptor>& legs, std::size_t first_of_slab, const CopyDescriptor& leg) {
  if (legs.size() > first_of_slab) {
    CopyDescriptor& last = legs.back();
    if (last.src + last.bytes == leg.src && last.dst + last.bytes == leg.dst) {
      last.bytes += leg.bytes;
      return;
    }
  }
  legs.push_back(leg);
}

}  // namespace

bool fits_chunk_plan(const TransferPlan& plan) noexcept {
  return plan.num_chunks() > 0 && plan.src().regions.size() <= kMaxChunkRegions &&
         plan.dst().regions.size() <= kMaxChunkRegions;
}

ChunkPlan make_chunk_plan(const TransferPlan& plan) {
  ChunkPlan out{};
  const auto side = [](const BlockSpace& space, ChunkSide& s) {
    s.geometry = space.layout.geometry();
    for (std::size_t r = 0; r < space.regions.size() && r < kMaxChunkRegions; ++r)
      s.base[r] = std::bit_cast<std::uintptr_t>(space.regions[r].base);
  };
  side(plan.src(), out.src);
  side(plan.dst(), out.dst);
  out.first_layer = plan.layers().first;
  out.layers = plan.layers().count;
  out.outer = plan.src().layout.spec().outer_dim;
  out.chunk_bytes = plan.src().layout.chunk_bytes();
  out.chunks = plan.num_chunks();
  return out;
}

std::vector<PairIds> pair_ids(const TransferPlan& plan) {
  std::vector<PairIds> out;
  out.reserve(plan.pairs().size());
  for (const auto& p : plan.pairs()) out.push_back({p.src.value(), p.dst.value()});
  return out;
}

StagedChunkPlan make_staged_chunk_plan(const ChunkPlan& plan, const std::vector<PairIds>& pairs, bool to_host,
                                       std::uint64_t staging, std::uint64_t slab_bytes, std::uint32_t buffers) {
  StagedChunkPlan out;
  out.to_host = to_host;
  if (buffers == 0) buffers = 1;
  const std::uint64_t chunk = plan.chunk_bytes;
  if (chunk == 0 || chunk > slab_bytes || plan.chunks == 0) return out;
  const std::uint64_t per_slab = slab_bytes / chunk;
  const std::uint64_t per_pair = std::uint64_t{plan.layers} * plan.outer;
  const LayoutGeometry& host = to_host ? plan.dst.geometry : plan.src.geometry;
  // Chunks of one block are contiguous on a fully contiguous host side.
  const bool host_block_contiguous = host.kind == LayoutKind::fully_contiguous;
  const auto host_address = [&](std::uint64_t c) {
    const CopyDescriptor d = chunk_descriptor(plan, pairs[c / per_pair], c % per_pair);
    return to_host ? d.dst : d.src;
  };
  for (std::uint64_t first = 0; first < plan.chunks; first += per_slab) {
    StagedChunkSlab slab;
    slab.first_chunk = first;
    slab.chunk_count = std::min(per_slab, plan.chunks - first);
    slab.first_dma = static_cast<std::uint32_t>(out.dma.size());
    slab.staging = staging + (out.slabs.size() % buffers) * slab_bytes;
    const std::uint64_t end = first + slab.chunk_count;
    for (std::uint64_t c = first; c < end;) {
      // The run of chunks from c that is contiguous on the host side: the
      // rest of this block's chunks (fully contiguous host), else one.
      const std::uint64_t n = host_block_contiguous ? std::min(end, (c / per_pair + 1) * per_pair) - c : 1;
      const std::uint64_t at = slab.staging + (c - first) * chunk;
      append_leg(
          out.dma, slab.first_dma,
          to_host ? CopyDescriptor{at, host_address(c), n * chunk} : CopyDescriptor{host_address(c), at, n * chunk});
      c += n;
    }
    slab.dma_count = static_cast<std::uint32_t>(out.dma.size()) - slab.first_dma;
    out.slabs.push_back(slab);
  }
  return out;
}

LaunchShape launch_shape(std::uint64_t count, std::uint64_t max_bytes, std::uint64_t total, std::uint32_t sm_count) {
  constexpr std::uint64_t kMinSlice = 4 << 10;
  LaunchShape shape;
  if (count == 0) return shape;
  sm_count = std::max<std::uint32_t>(sm_count, 1);
  // Aim for at least four slices per SM so every SM gets work; never cut
  // below 4 KiB (a block's 256 threads x 16 B).
  const std::uint64_t wanted = std::uint64_t{sm_count} * 4;
  std::uint64_t slice = kMaxDescriptorBytes;
  if (total / wanted < slice) slice = std::max(kMinSlice, (total / wanted + 15) / 16 * 16);
  if (max_bytes < slice) slice = std::max<std::uint64_t>(max_bytes, 1);
  shape.slice_bytes = slice;
  shape.slices = static_cast<std::uint32_t>((std::max<std::uint64_t>(max_bytes, 1) + slice - 1) / slice);
  shape.lanes = slice <= kWarpItemMaxBytes ? 32 : kGatherBlockThreads;
  const std::uint64_t items = count * shape.slices;
  const std::uint64_t groups_per_block = kGatherBlockThreads / shape.lanes;
  const std::uint64_t blocks = (items + groups_per_block - 1) / groups_per_block;
  shape.grid = static_cast<std::uint32_t>(std::min<std::uint64_t>(blocks, std::uint64_t{sm_count} * kBlocksPerSm));
  return shape;
}

StagedPlan make_staged_plan(const TransferPlan& plan, bool to_host, std::uint64_t staging, std::uint64_t staging_bytes,
                            std::uint64_t max_descriptor_bytes, std::uint32_t buffers) {
  if (max_descriptor_bytes == 0) max_descriptor_bytes = kMaxDescriptorBytes;
  if (staging_bytes == 0) staging_bytes = 1;
  if (buffers == 0) buffers = 1;
  StagedPlan out;
  out.to_host = to_host;
  StagedSlab slab;
  std::uint64_t fill = 0;
  const auto close_slab = [&] {
    slab.descriptor_count = static_cast<std::uint32_t>(out.descriptors.size()) - slab.first_descriptor;
    slab.dma_count = static_cast<std::uint32_t>(out.dma.size()) - slab.first_dma;
    if (slab.descriptor_count > 0) out.slabs.push_back(slab);
    slab.first_descriptor = static_cast<std::uint32_t>(out.descriptors.size());
    slab.first_dma = static_cast<std::uint32_t>(out.dma.size());
    fill = 0;
  };
  for (const auto& run : plan.runs()) {
    const auto src = std::bit_cast<std::uintptr_t>(plan.src_address(run));
    const auto dst = std::bit_cast<std::uintptr_t>(plan.dst_address(run));
    // The device side of this run and its host side.
    const std::uint64_t device = to_host ? src : dst;
    const std::uint64_t host = to_host ? dst : src;
    for (std::uint64_t off = 0; off < run.bytes;) {
      const std::uint64_t n = std::min(run.bytes - off, staging_bytes - fill);
      const std::uint64_t at = staging + (out.slabs.size() % buffers) * staging_bytes + fill;
      for (std::uint64_t k = 0; k < n; k += max_descriptor_bytes) {
        const std::uint64_t m = std::min(max_descriptor_bytes, n - k);
        out.descriptors.push_back(to_host ? CopyDescriptor{device + off + k, at + k, m}
                                          : CopyDescriptor{at + k, device + off + k, m});
      }
      // DMA leg: staging [at, at + n) <-> host [host + off, ...).
      append_leg(out.dma, slab.first_dma,
                 to_host ? CopyDescriptor{at, host + off, n} : CopyDescriptor{host + off, at, n});
      off += n;
      fill += n;
      if (fill == staging_bytes) close_slab();
    }
  }
  close_slab();
  return out;
}

}  // namespace kvb
