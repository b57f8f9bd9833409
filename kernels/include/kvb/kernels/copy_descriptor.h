// CopyDescriptor: one contiguous piece of a plan, as the CUDA gather/scatter
// kernel sees it, and the per-thread copy loop the kernel runs.
//
// copy_descriptor_part() is KVB_HOST_DEVICE: the kernel runs it with
// (threadIdx.x, blockDim.x); the CPU tests run it for every lane on the host,
// so the vector/word/byte paths and the unaligned heads and tails the GPU
// executes are checked on machines without a GPU.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "kvb/common/layout_math.h"  // KVB_HOST_DEVICE

namespace kvb {

class TransferPlan;

/// Addresses are integers: device addresses, or mapped pinned host addresses
/// (identical to the host pointer under unified virtual addressing).
struct CopyDescriptor {
  std::uint64_t src = 0;
  std::uint64_t dst = 0;
  std::uint64_t bytes = 0;
};

/// Largest piece the kernel gives one thread block: big runs are split so
/// every SM gets work; small runs stay whole.
inline constexpr std::uint64_t kMaxDescriptorBytes = std::uint64_t{64} << 10;

/// The plan's runs cut into pieces of at most `max_bytes`, in run order.
[[nodiscard]] std::vector<CopyDescriptor> make_descriptors(const TransferPlan& plan,
                                                           std::uint64_t max_bytes = kMaxDescriptorBytes);

namespace detail {

struct alignas(16) Vec16 {
  std::uint64_t lo;
  std::uint64_t hi;
};

template <class T>
KVB_HOST_DEVICE inline void copy_unit(unsigned char* dst, const unsigned char* src) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<T*>(dst) = *reinterpret_cast<const T*>(src);
#else
  std::memcpy(dst, src, sizeof(T));
#endif
}

template <class T>
KVB_HOST_DEVICE inline T load_unit(const unsigned char* src) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const T*>(src);
#else
  T v;
  std::memcpy(&v, src, sizeof(T));
  return v;
#endif
}

template <class T>
KVB_HOST_DEVICE inline void store_unit(unsigned char* dst, const T& v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<T*>(dst) = v;
#else
  std::memcpy(dst, &v, sizeof(T));
#endif
}

/// Units each lane has in flight at once: the loads of a group are issued
/// before its stores (the compiler may not reorder a load past a store to
/// memory that could alias), so a thread keeps kUnroll loads outstanding.
inline constexpr std::uint32_t kUnroll = 4;

// Copies `units` units of T (src and dst both T-aligned), lane-strided: in
// step u of a group, lane l copies unit base + u * lanes + l, so the lanes of
// a warp touch consecutive units (coalesced) in every step.
template <class T>
KVB_HOST_DEVICE inline void copy_units(unsigned char* dst, const unsigned char* src, std::uint64_t units,
                                       std::uint32_t lane, std::uint32_t lanes) {
  std::uint64_t i = lane;
  const std::uint64_t group = std::uint64_t{kUnroll} * lanes;
  for (; i + (kUnroll - 1) * std::uint64_t{lanes} < units; i += group) {
    T v[kUnroll];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (std::uint32_t u = 0; u < kUnroll; ++u) v[u] = load_unit<T>(src + (i + u * std::uint64_t{lanes}) * sizeof(T));
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (std::uint32_t u = 0; u < kUnroll; ++u) store_unit<T>(dst + (i + u * std::uint64_t{lanes}) * sizeof(T), v[u]);
  }
  for (; i < units; i += lanes) copy_unit<T>(dst + i * sizeof(T), src + i * sizeof(T));
}

KVB_HOST_DEVICE inline void copy_bytes(unsigned char* dst, const unsigned char* src, std::uint64_t n,
                                       std::uint32_t lane, std::uint32_t lanes) {
  for (std::uint64_t i = lane; i < n; i += lanes) dst[i] = src[i];
}

// Head bytes, then units of T, then tail bytes; src and dst must agree mod sizeof(T).
template <class T>
KVB_HOST_DEVICE inline void copy_aligned(unsigned char* dst, const unsigned char* src, std::uint64_t n,
                                         std::uint32_t lane, std::uint32_t lanes) {
  constexpr std::uint64_t kUnit = sizeof(T);
  std::uint64_t head = (kUnit - (reinterpret_cast<std::uintptr_t>(dst) & (kUnit - 1))) & (kUnit - 1);
  if (head > n) head = n;
  copy_bytes(dst, src, head, lane, lanes);
  const std::uint64_t units = (n - head) / kUnit;
  copy_units<T>(dst + head, src + head, units, lane, lanes);
  const std::uint64_t done = head + units * kUnit;
  copy_bytes(dst + done, src + done, n - done, lane, lanes);
}

}  // namespace detail

/// The share of descriptor `d` that lane `lane` of `lanes` copies: 16-byte
/// vector loads/stores when src and dst agree modulo 16, else 4-byte words
/// when they agree modulo 4, else bytes. Running every lane in [0, lanes)
/// copies d.bytes bytes exactly once each.
KVB_HOST_DEVICE inline void copy_descriptor_part(const CopyDescriptor& d, std::uint32_t lane, std::uint32_t lanes) {
  auto* dst = reinterpret_cast<unsigned char*>(static_cast<std::uintptr_t>(d.dst));
  const auto* src = reinterpret_cast<const unsigned char*>(static_cast<std::uintptr_t>(d.src));
  const std::uint64_t mismatch = d.src ^ d.dst;
  if ((mismatch & 15) == 0) {
    detail::copy_aligned<detail::Vec16>(dst, src, d.bytes, lane, lanes);
  } else if ((mismatch & 3) == 0) {
    detail::copy_aligned<std::uint32_t>(dst, src, d.bytes, lane, lanes);
  } else {
    detail::copy_bytes(dst, src, d.bytes, lane, lanes);
  }
}

/// Slice `slice` (of `slice_bytes`) of d: the kernel gives each thread block
/// one slice at a time, so a few large descriptors still spread over every
/// SM. Slices past the end are empty. Slicing at multiples of 16 keeps src
/// and dst agreeing modulo 16 exactly when d's do.
KVB_HOST_DEVICE inline CopyDescriptor descriptor_slice(const CopyDescriptor& d, std::uint32_t slice,
                                                       std::uint64_t slice_bytes) {
  const std::uint64_t begin = slice * slice_bytes;
  if (begin >= d.bytes) return CopyDescriptor{d.src, d.dst, 0};
  const std::uint64_t left = d.bytes - begin;
  return CopyDescriptor{d.src + begin, d.dst + begin, left < slice_bytes ? left : slice_bytes};
}

/// How one launch splits its descriptors: work item w copies slice
/// w % slices of descriptor w / slices with `lanes` threads (a whole
/// 256-thread block, or one 32-thread warp for small items, so that each
/// thread still has several 16-byte loads in flight); the grid's
/// grid * (256 / lanes) thread groups stride over the count * slices items.
struct LaunchShape {
  std::uint32_t slices = 1;
  std::uint64_t slice_bytes = kMaxDescriptorBytes;
  std::uint32_t grid = 1;
  std::uint32_t lanes = 256;
};

/// Threads per thread block of the gather kernel.
inline constexpr std::uint32_t kGatherBlockThreads = 256;

/// Work items of at most this many bytes are copied by one warp each.
inline constexpr std::uint64_t kWarpItemMaxBytes = std::uint64_t{16} << 10;

/// Thread blocks per SM in a launch's grid: as many as are resident at once
/// (the kernel's 56 registers x 256 threads allow 4 per SM on sm_90), so a
/// grid-stride launch runs in one wave.
inline constexpr std::uint32_t kBlocksPerSm = 4;

/// The shape for `count` descriptors of at most `max_bytes` each, `total`
/// bytes in all, on a device with `sm_count` SMs: slices of 64 KiB, smaller
/// (down to 4 KiB, multiples of 16) when that would leave SMs idle.
[[nodiscard]] LaunchShape launch_shape(std::uint64_t count, std::uint64_t max_bytes, std::uint64_t total,
                                       std::uint32_t sm_count);

/// The kernel's direct form of a plan: no descriptor per chunk, only the
/// block pairs and both layouts; each work item computes its chunk's
/// addresses with layout_math.h (on the device, and in the CPU tests). A
/// plan of P pairs costs 8 P bytes to describe instead of 24 bytes per run.
inline constexpr std::uint32_t kMaxChunkRegions = 128;

struct ChunkSide {
  LayoutGeometry geometry;
  std::uint64_t base[kMaxChunkRegions];  // region base addresses (device, or mapped pinned host)
};

struct ChunkPlan {
  ChunkSide src;
  ChunkSide dst;
  std::uint32_t first_layer = 0;  // the plan copies layers [first_layer, first_layer + layers)
  std::uint32_t layers = 0;
  std::uint32_t outer = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t chunks = 0;  // pairs x layers x outer
};

struct PairIds {
  std::uint32_t src = 0;
  std::uint32_t dst = 0;
};

/// Chunk `chunk` of pair `pair` (chunks of a pair in (layer, outer) order,
/// from the plan's first layer).
KVB_HOST_DEVICE inline CopyDescriptor chunk_descriptor(const ChunkPlan& p, PairIds pair, std::uint64_t chunk) {
  const auto layer = p.first_layer + static_cast<std::uint32_t>(chunk / p.outer);
  const auto outer = static_cast<std::uint32_t>(chunk % p.outer);
  const std::uint64_t src =
      p.src.base[chunk_region(p.src.geometry, layer)] + chunk_offset(p.src.geometry, pair.src, layer, outer);
  const std::uint64_t dst =
      p.dst.base[chunk_region(p.dst.geometry, layer)] + chunk_offset(p.dst.geometry, pair.dst, layer, outer);
  return CopyDescriptor{src, dst, p.chunk_bytes};
}

/// Whether `plan` fits the direct form (at most kMaxChunkRegions regions a
/// side, at least one chunk).
[[nodiscard]] bool fits_chunk_plan(const TransferPlan& plan) noexcept;
/// The direct form of `plan` (fits_chunk_plan must hold) and its pairs.
[[nodiscard]] ChunkPlan make_chunk_plan(const TransferPlan& plan);
[[nodiscard]] std::vector<PairIds> pair_ids(const TransferPlan& plan);

/// Chunk `chunk` of `pair` in a staged copy: between its place on the device
/// side (chunk_descriptor) and `staging` (its slot in the staging buffer).
KVB_HOST_DEVICE inline CopyDescriptor staged_chunk_descriptor(const ChunkPlan& p, PairIds pair, std::uint64_t chunk,
                                                              std::uint64_t staging, bool to_host) {
  const CopyDescriptor d = chunk_descriptor(p, pair, chunk);
  return to_host ? CopyDescriptor{d.src, staging, d.bytes} : CopyDescriptor{staging, d.dst, d.bytes};
}

/// The direct form of a staged copy: slabs of whole chunks (chunk c of the
/// plan, in pair-major (layer, outer) order, sits at slot c - first_chunk of
/// its slab's staging buffer); the host keeps only the DMA legs.
struct StagedChunkSlab {
  std::uint64_t first_chunk = 0;
  std::uint64_t chunk_count = 0;
  std::uint32_t first_dma = 0;
  std::uint32_t dma_count = 0;
  std::uint64_t staging = 0;  // address of this slab's staging buffer
};

struct StagedChunkPlan {
  bool to_host = true;
  std::vector<CopyDescriptor> dma;  // staging <-> host, merged where both sides continue
  std::vector<StagedChunkSlab> slabs;
};

/// The direct staged form of `plan` (pairs `pairs`): slabs of
/// floor(slab_bytes / chunk_bytes) chunks through `buffers` staging buffers
/// of `slab_bytes` from `staging` (slab k in buffer k % buffers). Host work
/// is one leg per pair when the host side is fully contiguous, else one per
/// chunk. Requires chunk_bytes <= slab_bytes.
[[nodiscard]] StagedChunkPlan make_staged_chunk_plan(const ChunkPlan& plan, const std::vector<PairIds>& pairs,
                                                     bool to_host, std::uint64_t staging, std::uint64_t slab_bytes,
                                                     std::uint32_t buffers);

/// A staged copy between device memory and pinned host memory: the DMA
/// engines move large contiguous pieces between the host and a device
/// staging buffer at PCIe rate, and the gather/scatter kernel moves the
/// chunks between the staging buffer and their places in device memory (HBM
/// rate, a few microseconds of SM time per MiB). Processed one staging
/// buffer ("slab") at a time, in order, on one stream.
struct StagedSlab {
  std::uint32_t first_descriptor = 0;  // into StagedPlan::descriptors
  std::uint32_t descriptor_count = 0;
  std::uint32_t first_dma = 0;  // into StagedPlan::dma
  std::uint32_t dma_count = 0;
};

struct StagedPlan {
  bool to_host = true;                      // device -> host: kernel into staging, then DMA out
  std::vector<CopyDescriptor> descriptors;  // kernel legs: device <-> staging (each <= max_bytes)
  std::vector<CopyDescriptor> dma;          // DMA legs: staging <-> host, merged where both sides continue
  std::vector<StagedSlab> slabs;
};

/// The staged form of `plan` (which must copy device -> host when `to_host`,
/// else host -> device) through `buffers` staging buffers of `slab_bytes`
/// each, back to back from device address `staging`: slab k uses buffer
/// k % buffers (two buffers let the DMA of one slab overlap the kernel of
/// the next). Every plan byte passes through exactly one staging byte; a
/// slab never holds more than `slab_bytes`.
[[nodiscard]] StagedPlan make_staged_plan(const TransferPlan& plan, bool to_host, std::uint64_t staging,
                                          std::uint64_t slab_bytes,
                                          std::uint64_t max_descriptor_bytes = kMaxDescriptorBytes,
                                          std::uint32_t buffers = 1);

}  // namespace kvb
