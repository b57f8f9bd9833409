// Block layouts: what a block is made of and where each of its chunks lives.
//
// A block holds the KV of page_size tokens for every layer:
// num_layers x outer_dim (2 = K,V; 1 = MLA) chunks of page_size x inner_dim
// elements of one dtype.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvb/blockmgr/layout_math.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb {

enum class DType : std::uint8_t { u8 = 0, f16 = 1, bf16 = 2, f32 = 3, fp8_e4m3 = 4, fp8_e5m2 = 5 };

[[nodiscard]] std::uint32_t dtype_size(DType dtype) noexcept;
[[nodiscard]] std::string_view to_string(DType dtype) noexcept;
/// "u8", "f16"/"fp16", "bf16", "f32"/"fp32", "fp8_e4m3", "fp8_e5m2".
[[nodiscard]] Result<DType> parse_dtype(std::string_view name);

[[nodiscard]] std::string_view to_string(LayoutKind kind) noexcept;
/// "fully_contiguous", "layer_separate_block_outer", "layer_separate_outer_block".
[[nodiscard]] Result<LayoutKind> parse_layout_kind(std::string_view name);

struct LayoutSpec {
  std::uint32_t num_layers = 0;
  std::uint32_t outer_dim = 2;  // 2 = K and V; 1 = MLA
  std::uint32_t page_size = 0;  // tokens per block
  std::uint32_t inner_dim = 0;  // num_kv_heads * head_dim
  DType dtype = DType::bf16;
  std::uint32_t alignment = 256;  // bytes, power of two: region bases and fully contiguous block starts

  /// invalid_argument naming the bad field and its value, else ok.
  [[nodiscard]] Status validate() const;
  /// page_size * inner_dim * dtype size: one (block, layer, outer) chunk.
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept;
  /// num_layers * outer_dim * chunk_bytes: the payload of one block.
  [[nodiscard]] std::uint64_t block_bytes() const noexcept;
  /// Two specs describe the same block contents (all but alignment equal).
  [[nodiscard]] bool same_block_shape(const LayoutSpec& other) const noexcept;

  friend bool operator==(const LayoutSpec&, const LayoutSpec&) = default;
};

/// Where one chunk lives: region index (0 for fully contiguous, the layer for
/// layer separate) and byte offset inside that region.
struct ChunkLocation {
  std::uint32_t region = 0;
  std::uint64_t offset = 0;
};

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
    return {chunk_region(geometry_, layer), chunk_offset(geometry_, block.value(), layer, outer)};
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
