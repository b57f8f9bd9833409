// Index math of block layouts, shared by the host copy engine and the CUDA
// kernels (KVB_HOST_DEVICE), so that CPU tests check what the GPU runs.
//
// Plain data and inline functions only: this header is compiled by nvcc too
// and must not include anything that nvcc or a kernel cannot use.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KVB_HOST_DEVICE __host__ __device__
#else
#define KVB_HOST_DEVICE
#endif

namespace kvb {

/// How a pool stores blocks (docs/architecture.md, "Layouts").
enum class LayoutKind : std::uint8_t {
  /// One region; [block][layer][outer][page][inner]. The daemon's own pools.
  fully_contiguous = 0,
  /// One region per layer; [layer][block][outer][page][inner] (vLLM style).
  layer_separate_block_outer = 1,
  /// One region per layer; [layer][outer][block][page][inner].
  layer_separate_outer_block = 2,
};

/// Everything the index math needs, flattened for device code.
struct LayoutGeometry {
  LayoutKind kind = LayoutKind::fully_contiguous;
  std::uint32_t num_layers = 0;
  std::uint32_t outer_dim = 0;
  std::uint32_t num_blocks = 0;
  std::uint64_t chunk_bytes = 0;   // page_size * inner_dim * dtype size
  std::uint64_t block_stride = 0;  // fully_contiguous: bytes from one block to the next
};

/// Which region holds chunk (block, layer, outer).
KVB_HOST_DEVICE inline std::uint32_t chunk_region(const LayoutGeometry& g, std::uint32_t layer) {
  return g.kind == LayoutKind::fully_contiguous ? 0U : layer;
}

/// Byte offset of chunk (block, layer, outer) inside its region.
KVB_HOST_DEVICE inline std::uint64_t chunk_offset(const LayoutGeometry& g, std::uint32_t block, std::uint32_t layer,
                                                  std::uint32_t outer) {
  switch (g.kind) {
    case LayoutKind::fully_contiguous:
      return static_cast<std::uint64_t>(block) * g.block_stride +
             (static_cast<std::uint64_t>(layer) * g.outer_dim + outer) * g.chunk_bytes;
    case LayoutKind::layer_separate_block_outer:
      return (static_cast<std::uint64_t>(block) * g.outer_dim + outer) * g.chunk_bytes;
    case LayoutKind::layer_separate_outer_block:
      return (static_cast<std::uint64_t>(outer) * g.num_blocks + block) * g.chunk_bytes;
  }
  return 0;
}

/// Where one chunk lives: region index (0 for fully contiguous, the layer for
/// the layer-separate kinds) and byte offset inside that region.
struct ChunkLocation {
  std::uint32_t region = 0;
  std::uint64_t offset = 0;
};

/// Region and offset of chunk (block, layer, outer).
KVB_HOST_DEVICE inline ChunkLocation chunk_location(const LayoutGeometry& g, std::uint32_t block, std::uint32_t layer,
                                                    std::uint32_t outer) {
  return {chunk_region(g, layer), chunk_offset(g, block, layer, outer)};
}

/// Number of regions a layout of this geometry occupies.
KVB_HOST_DEVICE inline std::uint32_t region_count(const LayoutGeometry& g) {
  return g.kind == LayoutKind::fully_contiguous ? 1U : g.num_layers;
}

/// Bytes each region must hold.
KVB_HOST_DEVICE inline std::uint64_t region_bytes(const LayoutGeometry& g) {
  return g.kind == LayoutKind::fully_contiguous
             ? static_cast<std::uint64_t>(g.num_blocks) * g.block_stride
             : static_cast<std::uint64_t>(g.num_blocks) * g.outer_dim * g.chunk_bytes;
}

}  // namespace kvb
