// Non-temporal copies for the host engine.
//
// Measured on the 2-vCPU CI machines (docs/copy-engines.md): a plain
// streaming loop reaches only ~0.8x of glibc's memcpy for a 512 MiB copy,
// while copying four pages side by side (as glibc's large_memcpy_4x does)
// with 64-byte AVX-512 streaming stores reaches 1.0-1.1x, also for 32 KiB
// chunks, where memcpy itself (rep movsb, with read-for-ownership) only gets
// ~0.6x of its large-copy rate. The body routine is picked once at start-up
// from the CPU's features: AVX-512F, else AVX2, else SSE2.
#include "stream_copy.h"

#include <atomic>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KVB_X86_STREAMING 1
#endif

namespace kvb::detail {

#if defined(KVB_X86_STREAMING)
namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kGroup = 4 * kPage;  // four pages copied side by side

inline void prefetch_ahead(const std::byte* s) {
  _mm_prefetch(reinterpret_cast<const char*>(s + 256), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(s + 320), _MM_HINT_T0);
}

// One body/group pair per instruction set, from the same loops
// (stream_copy_loops.inc), each compiled for its target.

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif
namespace avx512 {
inline void copy_line(std::byte* d, const std::byte* s) {
  _mm512_stream_si512(reinterpret_cast<__m512i*>(d), _mm512_loadu_si512(s));
}
inline void copy_line_pair(std::byte* d, const std::byte* s) {
  const __m512i a = _mm512_loadu_si512(s);
  const __m512i b = _mm512_loadu_si512(s + 64);
  _mm512_stream_si512(reinterpret_cast<__m512i*>(d), a);
  _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 64), b);
}
#include "stream_copy_loops.inc"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
namespace avx2 {
inline __m256i load32(const std::byte* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void stream32(std::byte* p, __m256i v) { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v); }
inline void copy_line(std::byte* d, const std::byte* s) {
  const __m256i a = load32(s), b = load32(s + 32);
  stream32(d, a);
  stream32(d + 32, b);
}
inline void copy_line_pair(std::byte* d, const std::byte* s) {
  const __m256i a = load32(s), b = load32(s + 32), c = load32(s + 64), e = load32(s + 96);
  stream32(d, a);
  stream32(d + 32, b);
  stream32(d + 64, c);
  stream32(d + 96, e);
}
#include "stream_copy_loops.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace sse2 {  // the x86-64 baseline: no target needed
inline __m128i load16(const std::byte* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline void stream16(std::byte* p, __m128i v) { _mm_stream_si128(reinterpret_cast<__m128i*>(p), v); }
inline void copy_line(std::byte* d, const std::byte* s) {
  const __m128i a = load16(s), b = load16(s + 16), c = load16(s + 32), e = load16(s + 48);
  stream16(d, a);
  stream16(d + 16, b);
  stream16(d + 32, c);
  stream16(d + 48, e);
}
inline void copy_line_pair(std::byte* d, const std::byte* s) {
  copy_line(d, s);
  copy_line(d + 64, s + 64);
}
#include "stream_copy_loops.inc"
}  // namespace sse2

using Body = void (*)(std::byte*, const std::byte*, std::size_t);
using Group = void (*)(const CopySegment*);

struct Routines {
  Body body;
  Group group;
};

Routines pick_routines() noexcept {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {avx512::body, avx512::group};
  if (__builtin_cpu_supports("avx2")) return {avx2::body, avx2::group};
  return {sse2::body, sse2::group};
}

const Routines kRoutines = pick_routines();

// Copies the unaligned head and the tail of `seg` and returns its body:
// 64-byte aligned destination, a multiple of 64 bytes (maybe empty).
CopySegment split_ends(CopySegment seg) noexcept {
  std::size_t head = (64 - (reinterpret_cast<std::uintptr_t>(seg.dst) & 63)) & 63;
  if (head > seg.bytes) head = seg.bytes;
  std::memcpy(seg.dst, seg.src, head);
  const std::size_t rest = seg.bytes - head;
  const std::size_t body = rest & ~std::size_t{63};
  std::memcpy(seg.dst + head + body, seg.src + head + body, rest - body);  // tail: < 64 bytes
  return {seg.dst + head, seg.src + head, body};
}

}  // namespace

void stream_copy(std::byte* dst, const std::byte* src, std::size_t bytes) noexcept {
  const CopySegment body = split_ends({dst, src, bytes});
  if (body.bytes != 0) kRoutines.body(body.dst, body.src, body.bytes);
}

void stream_copy_segments(const CopySegment* segments, std::size_t count) noexcept {
  CopySegment group[4];
  std::size_t grouped = 0;
  for (std::size_t i = 0; i < count; ++i) {
    if (segments[i].bytes >= kGroup) {
      stream_copy(segments[i].dst, segments[i].src, segments[i].bytes);
      continue;
    }
    const CopySegment body = split_ends(segments[i]);
    if (body.bytes == 0) continue;
    group[grouped++] = body;
    if (grouped == 4) {
      kRoutines.group(group);
      grouped = 0;
    }
  }
  for (std::size_t i = 0; i < grouped; ++i) kRoutines.body(group[i].dst, group[i].src, group[i].bytes);
}

void stream_fence() noexcept { _mm_sfence(); }

#else

void stream_copy(std::byte* dst, const std::byte* src, std::size_t bytes) noexcept { std::memcpy(dst, src, bytes); }
void stream_copy_segments(const CopySegment* segments, std::size_t count) noexcept {
  for (std::size_t i = 0; i < count; ++i) std::memcpy(segments[i].dst, segments[i].src, segments[i].bytes);
}
void stream_fence() noexcept { std::atomic_thread_fence(std::memory_order_seq_cst); }

#endif

}  // namespace kvb::detail
