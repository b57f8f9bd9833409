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

// Every body routine: dst 64-byte aligned, bytes a multiple of 64.

__attribute__((target("avx512f"))) void body_avx512(std::byte* dst, const std::byte* src, std::size_t bytes) {
  std::size_t done = 0;
  for (; done + kGroup <= bytes; done += kGroup) {
    for (std::size_t off = 0; off < kPage; off += 128) {
      for (std::size_t p = 0; p < 4; ++p) {
        const std::byte* s = src + done + p * kPage + off;
        std::byte* d = dst + done + p * kPage + off;
        _mm_prefetch(reinterpret_cast<const char*>(s + 256), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(s + 320), _MM_HINT_T0);
        const __m512i a = _mm512_loadu_si512(s);
        const __m512i b = _mm512_loadu_si512(s + 64);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(d), a);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 64), b);
      }
    }
  }
  for (; done < bytes; done += 64)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + done), _mm512_loadu_si512(src + done));
}

// Four bodies side by side, 128 bytes of each in turn.
__attribute__((target("avx512f"))) void group_avx512(const CopySegment* g) {
  std::size_t longest = 0;
  for (std::size_t p = 0; p < 4; ++p) longest = g[p].bytes > longest ? g[p].bytes : longest;
  for (std::size_t off = 0; off < longest; off += 128) {
    for (std::size_t p = 0; p < 4; ++p) {
      if (off >= g[p].bytes) continue;
      const std::byte* s = g[p].src + off;
      std::byte* d = g[p].dst + off;
      _mm_prefetch(reinterpret_cast<const char*>(s + 256), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(s + 320), _MM_HINT_T0);
      _mm512_stream_si512(reinterpret_cast<__m512i*>(d), _mm512_loadu_si512(s));
      if (g[p].bytes - off >= 128) _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 64), _mm512_loadu_si512(s + 64));
    }
  }
}

__attribute__((target("avx2"))) inline __m256i load32(const std::byte* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
__attribute__((target("avx2"))) inline void stream32(std::byte* p, __m256i v) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
}

__attribute__((target("avx2"))) void body_avx2(std::byte* dst, const std::byte* src, std::size_t bytes) {
  std::size_t done = 0;
  for (; done + kGroup <= bytes; done += kGroup) {
    for (std::size_t off = 0; off < kPage; off += 128) {
      for (std::size_t p = 0; p < 4; ++p) {
        const std::byte* s = src + done + p * kPage + off;
        std::byte* d = dst + done + p * kPage + off;
        _mm_prefetch(reinterpret_cast<const char*>(s + 256), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(s + 320), _MM_HINT_T0);
        const __m256i a = load32(s), b = load32(s + 32), c = load32(s + 64), e = load32(s + 96);
        stream32(d, a);
        stream32(d + 32, b);
        stream32(d + 64, c);
        stream32(d + 96, e);
      }
    }
  }
  for (; done < bytes; done += 64) {
    const __m256i a = load32(src + done), b = load32(src + done + 32);
    stream32(dst + done, a);
    stream32(dst + done + 32, b);
  }
}

__attribute__((target("avx2"))) void group_avx2(const CopySegment* g) {
  std::size_t longest = 0;
  for (std::size_t p = 0; p < 4; ++p) longest = g[p].bytes > longest ? g[p].bytes : longest;
  for (std::size_t off = 0; off < longest; off += 128) {
    for (std::size_t p = 0; p < 4; ++p) {
      if (off >= g[p].bytes) continue;
      const std::byte* s = g[p].src + off;
      std::byte* d = g[p].dst + off;
      _mm_prefetch(reinterpret_cast<const char*>(s + 256), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(s + 320), _MM_HINT_T0);
      const __m256i a = load32(s), b = load32(s + 32);
      stream32(d, a);
      stream32(d + 32, b);
      if (g[p].bytes - off >= 128) {
        const __m256i c = load32(s + 64), e = load32(s + 96);
        stream32(d + 64, c);
        stream32(d + 96, e);
      }
    }
  }
}

void body_sse2(std::byte* dst, const std::byte* src, std::size_t bytes) {
  const auto load = [](const std::byte* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); };
  const auto store = [](std::byte* p, __m128i v) { _mm_stream_si128(reinterpret_cast<__m128i*>(p), v); };
  for (std::size_t done = 0; done < bytes; done += 64) {
    const __m128i a = load(src + done), b = load(src + done + 16), c = load(src + done + 32), e = load(src + done + 48);
    store(dst + done, a);
    store(dst + done + 16, b);
    store(dst + done + 32, c);
    store(dst + done + 48, e);
  }
}

void group_sse2(const CopySegment* g) {
  for (std::size_t p = 0; p < 4; ++p) body_sse2(g[p].dst, g[p].src, g[p].bytes);
}

using Body = void (*)(std::byte*, const std::byte*, std::size_t);
using Group = void (*)(const CopySegment*);

struct Routines {
  Body body;
  Group group;
};

Routines pick_routines() noexcept {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {body_avx512, group_avx512};
  if (__builtin_cpu_supports("avx2")) return {body_avx2, group_avx2};
  return {body_sse2, group_sse2};
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
