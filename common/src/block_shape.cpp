#include "kvb/common/block_shape.h"

#include <bit>
#include <initializer_list>

namespace kvb {

std::uint32_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::u8:
    case DType::fp8_e4m3:
    case DType::fp8_e5m2: return 1;
    case DType::f16:
    case DType::bf16: return 2;
    case DType::f32: return 4;
  }
  return 0;
}

std::string_view to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::u8: return "u8";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::f32: return "f32";
    case DType::fp8_e4m3: return "fp8_e4m3";
    case DType::fp8_e5m2: return "fp8_e5m2";
  }
  return "unknown";
}

Result<DType> parse_dtype(std::string_view name) {
  if (name == "u8" || name == "uint8") return DType::u8;
  if (name == "f16" || name == "fp16" || name == "float16") return DType::f16;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f32" || name == "fp32" || name == "float32") return DType::f32;
  if (name == "fp8_e4m3" || name == "fp8") return DType::fp8_e4m3;
  if (name == "fp8_e5m2") return DType::fp8_e5m2;
  return fail(Errc::invalid_argument, "unknown dtype '{}' (expected u8, f16, bf16, f32, fp8_e4m3 or fp8_e5m2)", name);
}

std::optional<DType> dtype_from_wire(std::uint8_t value) noexcept {
  if (value > static_cast<std::uint8_t>(kLastDType)) return std::nullopt;
  return static_cast<DType>(value);
}

std::string_view to_string(LayoutKind kind) noexcept {
  switch (kind) {
    case LayoutKind::fully_contiguous: return "fully_contiguous";
    case LayoutKind::layer_separate_block_outer: return "layer_separate_block_outer";
    case LayoutKind::layer_separate_outer_block: return "layer_separate_outer_block";
  }
  return "unknown";
}

Result<LayoutKind> parse_layout_kind(std::string_view name) {
  for (std::uint8_t v = 0; v <= static_cast<std::uint8_t>(kLastLayoutKind); ++v) {
    if (name == to_string(static_cast<LayoutKind>(v))) return static_cast<LayoutKind>(v);
  }
  return fail(Errc::invalid_argument,
              "unknown layout '{}' (expected fully_contiguous, layer_separate_block_outer or "
              "layer_separate_outer_block)",
              name);
}

std::optional<LayoutKind> layout_kind_from_wire(std::uint8_t value) noexcept {
  if (value > static_cast<std::uint8_t>(kLastLayoutKind)) return std::nullopt;
  return static_cast<LayoutKind>(value);
}

namespace {

// The product of `factors` is at most `limit` (false on 64-bit overflow too).
bool product_at_most(std::initializer_list<std::uint64_t> factors, std::uint64_t limit) {
  std::uint64_t acc = 1;
  for (const auto f : factors) {
    if (__builtin_mul_overflow(acc, f, &acc)) return false;
  }
  return acc <= limit;
}

}  // namespace

Status LayoutSpec::validate() const {
  if (num_layers == 0 || num_layers > kMaxLayers) {
    return fail(Errc::invalid_argument, "layout: num_layers must be in [1, {}] (got {})", kMaxLayers, num_layers);
  }
  if (outer_dim != 1 && outer_dim != 2) {
    return fail(Errc::invalid_argument, "layout: outer_dim must be 1 (MLA) or 2 (K,V) (got {})", outer_dim);
  }
  if (page_size == 0) return fail(Errc::invalid_argument, "layout: page_size must be > 0 (got {})", page_size);
  if (inner_dim == 0) return fail(Errc::invalid_argument, "layout: inner_dim must be > 0 (got {})", inner_dim);
  if (dtype_size(dtype) == 0) {
    return fail(Errc::invalid_argument, "layout: dtype {} is not a known dtype", static_cast<int>(dtype));
  }
  if (alignment == 0 || !std::has_single_bit(alignment) || alignment > kMaxAlignment) {
    return fail(Errc::invalid_argument, "layout: alignment must be a power of two in [1, {}] (got {})", kMaxAlignment,
                alignment);
  }
  if (!product_at_most({page_size, inner_dim, dtype_size(dtype), num_layers, outer_dim}, kMaxRegionBytes)) {
    return fail(Errc::invalid_argument, "layout: one block would be larger than 64 TiB (page_size {} x inner_dim {})",
                page_size, inner_dim);
  }
  return ok();
}

std::uint64_t LayoutSpec::chunk_bytes() const noexcept {
  return static_cast<std::uint64_t>(page_size) * inner_dim * dtype_size(dtype);
}

std::uint64_t LayoutSpec::block_bytes() const noexcept {
  return static_cast<std::uint64_t>(num_layers) * outer_dim * chunk_bytes();
}

bool LayoutSpec::same_block_shape(const LayoutSpec& other) const noexcept {
  return num_layers == other.num_layers && outer_dim == other.outer_dim && page_size == other.page_size &&
         inner_dim == other.inner_dim && dtype == other.dtype;
}

Result<LayoutGeometry> make_geometry(const LayoutSpec& spec, LayoutKind kind, std::uint32_t num_blocks) {
  if (auto valid = spec.validate(); !valid) return tl::unexpected(valid.error());
  if (num_blocks == 0) return fail(Errc::invalid_argument, "layout: num_blocks must be > 0 (got {})", num_blocks);
  if (!layout_kind_from_wire(static_cast<std::uint8_t>(kind))) {
    return fail(Errc::invalid_argument, "layout: unknown layout kind {}", static_cast<int>(kind));
  }
  LayoutGeometry g;
  g.kind = kind;
  g.num_layers = spec.num_layers;
  g.outer_dim = spec.outer_dim;
  g.num_blocks = num_blocks;
  g.chunk_bytes = spec.chunk_bytes();
  const std::uint64_t align = spec.alignment;
  g.block_stride =
      kind == LayoutKind::fully_contiguous ? (spec.block_bytes() + align - 1) / align * align : spec.block_bytes();
  const std::uint64_t per_block =
      kind == LayoutKind::fully_contiguous ? g.block_stride : std::uint64_t{g.outer_dim} * g.chunk_bytes;
  if (!product_at_most({num_blocks, per_block}, kMaxRegionBytes)) {
    return fail(Errc::invalid_argument, "layout: {} blocks of {} bytes exceed 64 TiB per region", num_blocks,
                spec.block_bytes());
  }
  return g;
}

}  // namespace kvb
