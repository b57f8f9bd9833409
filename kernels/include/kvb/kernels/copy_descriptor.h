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

#include "kvb/blockmgr/layout_math.h"  // KVB_HOST_DEVICE

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

// Copies [begin, end) of d in units of T (src and dst both T-aligned at
// begin; end - begin a multiple of sizeof(T)), lane-strided.
template <class T>
KVB_HOST_DEVICE inline void copy_units(unsigned char* dst, const unsigned char* src, std::uint64_t units,
                                       std::uint32_t lane, std::uint32_t lanes) {
  for (std::uint64_t i = lane; i < units; i += lanes) copy_unit<T>(dst + i * sizeof(T), src + i * sizeof(T));
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

}  // namespace kvb
