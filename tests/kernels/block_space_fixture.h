// Test support for kernels/: host memory for block spaces (optionally
// misaligned), random layouts from a seeded RNG, and a naive byte-by-byte
// reference copy whose chunk positions come from walking each layout in
// memory order, not from layout_math.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include "kvb/blockmgr/transfer_plan.h"

namespace kvb::test {

/// (region, offset) of every chunk, found by walking the layout in memory
/// order as docs/architecture.md describes it. Also the bytes each region spans.
struct NaiveLayout {
  std::map<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>, std::pair<std::uint32_t, std::uint64_t>> where;
  std::uint64_t region_bytes = 0;

  NaiveLayout(const LayoutSpec& spec, LayoutKind kind, std::uint32_t blocks) {
    const std::uint64_t chunk = spec.chunk_bytes();
    if (kind == LayoutKind::fully_contiguous) {
      std::uint64_t off = 0;
      for (std::uint32_t b = 0; b < blocks; ++b) {
        for (std::uint32_t l = 0; l < spec.num_layers; ++l)
          for (std::uint32_t o = 0; o < spec.outer_dim; ++o, off += chunk) where[{b, l, o}] = {0, off};
        while (off % spec.alignment != 0) ++off;  // next block starts aligned
      }
      region_bytes = off;
      return;
    }
    for (std::uint32_t l = 0; l < spec.num_layers; ++l) {
      std::uint64_t off = 0;
      if (kind == LayoutKind::layer_separate_block_outer) {
        for (std::uint32_t b = 0; b < blocks; ++b)
          for (std::uint32_t o = 0; o < spec.outer_dim; ++o, off += chunk) where[{b, l, o}] = {l, off};
      } else {
        for (std::uint32_t o = 0; o < spec.outer_dim; ++o)
          for (std::uint32_t b = 0; b < blocks; ++b, off += chunk) where[{b, l, o}] = {l, off};
      }
      region_bytes = off;
    }
  }
};

/// Host memory for one block space; region bases sit `misalign` bytes past
/// an allocation so that unaligned heads and tails get exercised.
struct HostSpace {
  std::vector<std::vector<std::byte>> storage;
  BlockSpace space;
  std::uint32_t misalign = 0;

  HostSpace(const LayoutSpec& spec, LayoutKind kind, std::uint32_t blocks, std::uint32_t misalign_bytes = 0,
            MemoryKind memory = MemoryKind::host)
      : space{*Layout::make(spec, kind, blocks), {}}, misalign(misalign_bytes) {
    storage.reserve(space.layout.num_regions());
    for (std::uint32_t r = 0; r < space.layout.num_regions(); ++r) {
      storage.emplace_back(space.layout.region_bytes() + misalign);
      space.regions.push_back({storage.back().data() + misalign, space.layout.region_bytes(), memory});
    }
  }
  void fill(std::mt19937_64& rng) {
    for (auto& s : storage)
      for (auto& b : s) b = static_cast<std::byte>(rng() & 0xFF);
  }
};

/// What `dst` must hold after copying `pairs` (layers `layers` of each
/// block; default all) from `src`: byte by byte.
inline std::vector<std::vector<std::byte>> naive_copy(const HostSpace& src, const HostSpace& dst,
                                                      const std::vector<BlockPair>& pairs, LayerRange layers = {}) {
  auto out = dst.storage;
  const auto& spec = src.space.layout.spec();
  if (layers.count == 0) layers = {0, spec.num_layers};
  const NaiveLayout sl(spec, src.space.layout.kind(), src.space.layout.num_blocks());
  const NaiveLayout dl(spec, dst.space.layout.kind(), dst.space.layout.num_blocks());
  const std::uint64_t chunk = spec.chunk_bytes();
  for (const auto& p : pairs)
    for (std::uint32_t l = layers.first; l < layers.first + layers.count; ++l)
      for (std::uint32_t o = 0; o < spec.outer_dim; ++o) {
        const auto [sr, so] = sl.where.at({p.src.value(), l, o});
        const auto [dr, d0] = dl.where.at({p.dst.value(), l, o});
        for (std::uint64_t i = 0; i < chunk; ++i)
          out[dr][dst.misalign + d0 + i] = src.storage[sr][src.misalign + so + i];
      }
  return out;
}

/// A random block shape: odd inner dims, 1-byte to 4-byte dtypes, MLA or K,V.
inline LayoutSpec random_spec(std::mt19937_64& rng) {
  static constexpr std::uint32_t kInner[] = {1, 3, 5, 7, 16, 33, 64, 129};
  static constexpr DType kTypes[] = {DType::u8, DType::f16, DType::bf16, DType::f32};
  static constexpr std::uint32_t kAlign[] = {1, 16, 64, 256};
  LayoutSpec s;
  s.num_layers = 1 + static_cast<std::uint32_t>(rng() % 5);
  s.outer_dim = 1 + static_cast<std::uint32_t>(rng() % 2);
  s.page_size = 1 + static_cast<std::uint32_t>(rng() % 4);
  s.inner_dim = kInner[rng() % std::size(kInner)];
  s.dtype = kTypes[rng() % std::size(kTypes)];
  s.alignment = kAlign[rng() % std::size(kAlign)];
  return s;
}

/// Up to min(src, dst) pairs: random sources (repeats allowed), distinct
/// destinations, sometimes consecutive so that runs merge.
inline std::vector<BlockPair> random_pairs(std::mt19937_64& rng, std::uint32_t src_blocks, std::uint32_t dst_blocks) {
  const std::uint32_t n = static_cast<std::uint32_t>(rng() % (std::min(src_blocks, dst_blocks) + 1));
  std::vector<std::uint32_t> dsts(dst_blocks);
  for (std::uint32_t i = 0; i < dst_blocks; ++i) dsts[i] = i;
  const bool consecutive = rng() % 3 == 0;
  if (!consecutive) std::shuffle(dsts.begin(), dsts.end(), rng);
  std::vector<BlockPair> pairs;
  const std::uint32_t src_start = static_cast<std::uint32_t>(rng() % (src_blocks - n + 1));
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint32_t s = consecutive ? src_start + i : static_cast<std::uint32_t>(rng() % src_blocks);
    pairs.push_back({BlockId{s}, BlockId{dsts[i]}});
  }
  return pairs;
}

/// Every layer (2 times in 3) or a random non-empty range of them, as a
/// layer-wise onboard's per-group plans copy.
inline LayerRange random_layers(std::mt19937_64& rng, std::uint32_t num_layers) {
  if (rng() % 3 != 0) return {};
  const auto first = static_cast<std::uint32_t>(rng() % num_layers);
  return {first, 1 + static_cast<std::uint32_t>(rng() % (num_layers - first))};
}

inline constexpr LayoutKind kAllKinds[] = {LayoutKind::fully_contiguous, LayoutKind::layer_separate_block_outer,
                                           LayoutKind::layer_separate_outer_block};

}  // namespace kvb::test
