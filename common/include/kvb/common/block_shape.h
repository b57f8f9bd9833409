// Block shapes, defined once for the daemon, the block manager, the kernels
// and the client library: element types, layout kinds, the LayoutSpec of a
// block and the geometry a layout kind gives it (docs/architecture.md,
// "Layouts"). The enum values are the wire values of docs/protocol.md
// (protocol_messages.cpp ties them with static_asserts).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "kvb/common/error.h"
#include "kvb/common/layout_math.h"

namespace kvb {

/// Element type of the KV cache. Values are the wire values of LayoutSpec.dtype.
enum class DType : std::uint8_t { u8 = 0, f16 = 1, bf16 = 2, f32 = 3, fp8_e4m3 = 4, fp8_e5m2 = 5 };
inline constexpr DType kLastDType = DType::fp8_e5m2;
inline constexpr LayoutKind kLastLayoutKind = LayoutKind::layer_separate_outer_block;

/// Bytes of one element; 0 for a value outside the enum.
[[nodiscard]] std::uint32_t dtype_size(DType dtype) noexcept;
[[nodiscard]] std::string_view to_string(DType dtype) noexcept;
/// "u8", "f16"/"fp16", "bf16", "f32"/"fp32", "fp8_e4m3", "fp8_e5m2".
[[nodiscard]] Result<DType> parse_dtype(std::string_view name);
/// The DType of a wire byte, nullopt when it names none.
[[nodiscard]] std::optional<DType> dtype_from_wire(std::uint8_t value) noexcept;

[[nodiscard]] std::string_view to_string(LayoutKind kind) noexcept;
/// "fully_contiguous", "layer_separate_block_outer", "layer_separate_outer_block".
[[nodiscard]] Result<LayoutKind> parse_layout_kind(std::string_view name);
/// The LayoutKind of a wire byte, nullopt when it names none.
[[nodiscard]] std::optional<LayoutKind> layout_kind_from_wire(std::uint8_t value) noexcept;

/// Largest region any layout may need (64 TiB: far beyond any real pool).
inline constexpr std::uint64_t kMaxRegionBytes = std::uint64_t{1} << 46;
/// Most layers a block may have.
inline constexpr std::uint32_t kMaxLayers = 4096;
/// Largest alignment of region bases and fully contiguous blocks.
inline constexpr std::uint32_t kMaxAlignment = 2U << 20;

/// What a block is made of: num_layers x outer_dim chunks of page_size x
/// inner_dim elements of one dtype.
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

/// The geometry of num_blocks blocks of `spec` arranged as `kind`: validates
/// the spec, the kind, num_blocks and the region size (errors name the field).
[[nodiscard]] Result<LayoutGeometry> make_geometry(const LayoutSpec& spec, LayoutKind kind, std::uint32_t num_blocks);

}  // namespace kvb
