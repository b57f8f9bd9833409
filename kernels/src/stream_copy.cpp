#include "stream_copy.h"

#include <atomic>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace kvb::detail {

void stream_copy(std::byte* dst, const std::byte* src, std::size_t bytes) noexcept {
#if defined(__SSE2__)
  // Head: bring dst to a 16-byte boundary with an ordinary copy.
  std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(dst) & 15)) & 15;
  if (head > bytes) head = bytes;
  std::memcpy(dst, src, head);
  dst += head;
  src += head;
  bytes -= head;
  const std::size_t body = bytes & ~std::size_t{63};
  auto* d = reinterpret_cast<__m128i*>(dst);
  if ((reinterpret_cast<std::uintptr_t>(src) & 15) == 0) {
    const auto* s = reinterpret_cast<const __m128i*>(src);
    for (std::size_t i = 0; i < body / 16; i += 4) {
      const __m128i a = _mm_load_si128(s + i), b = _mm_load_si128(s + i + 1);
      const __m128i c = _mm_load_si128(s + i + 2), e = _mm_load_si128(s + i + 3);
      _mm_stream_si128(d + i, a);
      _mm_stream_si128(d + i + 1, b);
      _mm_stream_si128(d + i + 2, c);
      _mm_stream_si128(d + i + 3, e);
    }
  } else {
    const auto* s = reinterpret_cast<const __m128i_u*>(src);
    for (std::size_t i = 0; i < body / 16; i += 4) {
      const __m128i a = _mm_loadu_si128(s + i), b = _mm_loadu_si128(s + i + 1);
      const __m128i c = _mm_loadu_si128(s + i + 2), e = _mm_loadu_si128(s + i + 3);
      _mm_stream_si128(d + i, a);
      _mm_stream_si128(d + i + 1, b);
      _mm_stream_si128(d + i + 2, c);
      _mm_stream_si128(d + i + 3, e);
    }
  }
  // Tail: fewer than 64 bytes.
  std::memcpy(dst + body, src + body, bytes - body);
#else
  std::memcpy(dst, src, bytes);
#endif
}

void stream_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace kvb::detail
