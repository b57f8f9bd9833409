// Block layouts: where each chunk of a block lives. What a block is made of
// (DType, LayoutKind, LayoutSpec and the index math) is defined once in
// common/ (block_shape.h, layout_math.h), shared with the client library.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvb/common/block_shape.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb {

/// A validated LayoutSpec arranged one way over num_blocks blocks.
class Layout {
 public:
  /// Validates spec and the total size; errors name the bad field.
  [[nodiscard]] static Result<Layout> make(const LayoutSpec& spec, LayoutKind kind, std::uint32_t num_blocks);

  [[nodiscard]] const LayoutSpec& spec() const noexcept { return spec_; }
  [[nodiscard]] LayoutKind kind() const noexcept { return geometry_.kind; }
  [[nodiscard]] std::uint32_t num_blocks() const noexcept { return geometry_.num_blocks; }
  [[nodiscard]] std::uint32_t num_regions() const noexcept { return region_count(geometry_); }
  /// Bytes each region must hold.
  [[nodiscard]] std::uint64_t region_bytes() const noexcept { return kvb::region_bytes(geometry_); }
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept { return geometry_.chunk_bytes; }
  [[nodiscard]] std::uint64_t block_bytes() const noexcept { return spec_.block_bytes(); }
  [[nodiscard]] const LayoutGeometry& geometry() const noexcept { return geometry_; }

  /// Location of chunk (block, layer, outer). Arguments must be in range
  /// (checked by TransferPlan::build and by the caller; not here).
  [[nodiscard]] ChunkLocation chunk(BlockId block, std::uint32_t layer, std::uint32_t outer) const noexcept {
    return chunk_location(geometry_, block.value(), layer, outer);
  }

  friend bool operator==(const Layout& a, const Layout& b) noexcept {
    return a.spec_ == b.spec_ && a.geometry_.kind == b.geometry_.kind &&
           a.geometry_.num_blocks == b.geometry_.num_blocks;
  }

 private:
  Layout(const LayoutSpec& spec, const LayoutGeometry& geometry) : spec_(spec), geometry_(geometry) {}
  LayoutSpec spec_;
  LayoutGeometry geometry_;
};

}  // namespace kvb
