#include "kvb/blockmgr/transfer_plan.h"

#include <unordered_set>

namespace kvb {

std::string_view to_string(MemoryKind kind) noexcept {
  switch (kind) {
    case MemoryKind::host: return "host";
    case MemoryKind::host_pinned: return "host_pinned";
    case MemoryKind::device: return "device";
  }
  return "unknown";
}

Status BlockSpace::validate() const {
  if (regions.size() != layout.num_regions())
    return fail(Errc::invalid_argument, "block space: layout {} needs {} regions, got {}", to_string(layout.kind()),
                layout.num_regions(), regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    const auto& r = regions[i];
    if (r.base == nullptr) return fail(Errc::invalid_argument, "block space: region {} has no memory", i);
    if (r.size < layout.region_bytes())
      return fail(Errc::invalid_argument, "block space: region {} holds {} bytes, the layout needs {}", i, r.size,
                  layout.region_bytes());
    if (r.kind != regions.front().kind)
      return fail(Errc::invalid_argument, "block space: region {} is {} memory, region 0 is {}", i, to_string(r.kind),
                  to_string(regions.front().kind));
  }
  return ok();
}

Result<TransferPlan> TransferPlan::build(BlockSpace src, BlockSpace dst, std::span<const BlockPair> pairs,
                                         LayerRange layers) {
  if (auto v = src.validate(); !v) return fail(Errc::invalid_argument, "source {}", v.error().message);
  if (auto v = dst.validate(); !v) return fail(Errc::invalid_argument, "destination {}", v.error().message);
  if (!src.layout.spec().same_block_shape(dst.layout.spec()))
    return fail(Errc::invalid_argument,
                "transfer plan: block shapes differ (source {}x{}x{}x{} {}, destination {}x{}x{}x{} {})",
                src.layout.spec().num_layers, src.layout.spec().outer_dim, src.layout.spec().page_size,
                src.layout.spec().inner_dim, to_string(src.layout.spec().dtype), dst.layout.spec().num_layers,
                dst.layout.spec().outer_dim, dst.layout.spec().page_size, dst.layout.spec().inner_dim,
                to_string(dst.layout.spec().dtype));
  const std::uint32_t num_layers = src.layout.spec().num_layers;
  if (layers.count == 0 && layers.first == 0) layers.count = num_layers;
  if (layers.count == 0 || layers.first >= num_layers || layers.count > num_layers - layers.first)
    return fail(Errc::invalid_argument, "transfer plan: layers [{}, {}) are not inside the block's {} layers",
                layers.first, std::uint64_t{layers.first} + layers.count, num_layers);
  std::unordered_set<std::uint32_t> seen_dst;
  seen_dst.reserve(pairs.size());
  for (const auto& p : pairs) {
    if (p.src.value() >= src.layout.num_blocks())
      return fail(Errc::invalid_argument, "transfer plan: source block {} out of range (pool has {})", p.src,
                  src.layout.num_blocks());
    if (p.dst.value() >= dst.layout.num_blocks())
      return fail(Errc::invalid_argument, "transfer plan: destination block {} out of range (pool has {})", p.dst,
                  dst.layout.num_blocks());
    if (!seen_dst.insert(p.dst.value()).second)
      return fail(Errc::invalid_argument, "transfer plan: destination block {} appears twice", p.dst);
  }

  TransferPlan plan(std::move(src), std::move(dst));
  plan.pairs_.assign(pairs.begin(), pairs.end());
  plan.layers_ = layers;
  const auto& sl = plan.src_.layout;
  const auto& dl = plan.dst_.layout;
  const std::uint32_t layer_end = layers.first + layers.count;
  const std::uint32_t outer = sl.spec().outer_dim;
  const std::uint64_t chunk = sl.chunk_bytes();
  plan.runs_.reserve(pairs.size());
  for (const auto& p : pairs) {
    for (std::uint32_t l = layers.first; l < layer_end; ++l) {
      for (std::uint32_t o = 0; o < outer; ++o) {
        const auto s = sl.chunk(p.src, l, o);
        const auto d = dl.chunk(p.dst, l, o);
        if (!plan.runs_.empty()) {
          auto& last = plan.runs_.back();
          if (last.src_region == s.region && last.dst_region == d.region && last.src_offset + last.bytes == s.offset &&
              last.dst_offset + last.bytes == d.offset) {
            last.bytes += chunk;
            continue;
          }
        }
        plan.runs_.push_back({s.region, s.offset, d.region, d.offset, chunk});
      }
    }
  }
  plan.num_chunks_ = static_cast<std::uint64_t>(pairs.size()) * layers.count * outer;
  plan.total_bytes_ = plan.num_chunks_ * chunk;
  return plan;
}

}  // namespace kvb
