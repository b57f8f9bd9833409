// TransferPlan: the chunk copies that move a list of blocks from one block
// space to another, merged into as few runs as the layouts allow. One plan
// type for every engine (host, CUDA kernel, CUDA DMA, UCX RMA).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvb/blockmgr/layout.h"
#include "kvb/blockmgr/memory_region.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb {

/// Blocks laid out one way over concrete memory: a layout plus one region
/// per layout region (1 for fully contiguous, num_layers for layer separate).
struct BlockSpace {
  Layout layout;
  std::vector<RegionSpan> regions;

  /// Regions match the layout in count and size and share one memory kind.
  [[nodiscard]] Status validate() const;
  [[nodiscard]] MemoryKind kind() const noexcept { return regions.empty() ? MemoryKind::host : regions.front().kind; }
};

struct BlockPair {
  BlockId src;
  BlockId dst;
};

/// Layers [first, first + count) of every block; count 0 = every layer.
struct LayerRange {
  std::uint32_t first = 0;
  std::uint32_t count = 0;
};

/// One contiguous copy: bytes from src region+offset to dst region+offset.
struct CopyRun {
  std::uint32_t src_region = 0;
  std::uint64_t src_offset = 0;
  std::uint32_t dst_region = 0;
  std::uint64_t dst_offset = 0;
  std::uint64_t bytes = 0;
};

class TransferPlan {
 public:
  /// Builds the plan for `pairs` (src block -> dst block), restricted to the
  /// chunks of `layers` (default: every layer; a layer-wise onboard copies
  /// one group of layers per plan). Errors: the spaces are invalid, their
  /// block shapes differ, a block id is out of range, a destination block
  /// appears twice, or the layer range is empty or past the last layer.
  /// Adjacent chunks merge into one run.
  [[nodiscard]] static Result<TransferPlan> build(BlockSpace src, BlockSpace dst, std::span<const BlockPair> pairs,
                                                  LayerRange layers = {});

  [[nodiscard]] const BlockSpace& src() const noexcept { return src_; }
  [[nodiscard]] const BlockSpace& dst() const noexcept { return dst_; }
  [[nodiscard]] std::span<const CopyRun> runs() const noexcept { return runs_; }
  [[nodiscard]] std::span<const BlockPair> pairs() const noexcept { return pairs_; }
  /// The layers this plan copies (count = num_layers when it copies all).
  [[nodiscard]] LayerRange layers() const noexcept { return layers_; }
  /// Chunks before merging: pairs x layers().count x outer_dim.
  [[nodiscard]] std::uint64_t num_chunks() const noexcept { return num_chunks_; }
  [[nodiscard]] std::uint64_t total_bytes() const noexcept { return total_bytes_; }

  /// Host-visible address of a run's source / destination (base + offset).
  [[nodiscard]] std::byte* src_address(const CopyRun& run) const noexcept {
    return src_.regions[run.src_region].base + run.src_offset;
  }
  [[nodiscard]] std::byte* dst_address(const CopyRun& run) const noexcept {
    return dst_.regions[run.dst_region].base + run.dst_offset;
  }

 private:
  TransferPlan(BlockSpace src, BlockSpace dst) : src_(std::move(src)), dst_(std::move(dst)) {}
  BlockSpace src_;
  BlockSpace dst_;
  std::vector<BlockPair> pairs_;
  LayerRange layers_;
  std::vector<CopyRun> runs_;
  std::uint64_t num_chunks_ = 0;
  std::uint64_t total_bytes_ = 0;
};

}  // namespace kvb
