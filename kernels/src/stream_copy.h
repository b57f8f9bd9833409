// Byte copies for the host engine: memcpy, or non-temporal stores for large
// copies whose destination will not be read back by this core soon.
#pragma once

#include <cstddef>

namespace kvb::detail {

/// memcpy with non-temporal stores for the cache-line aligned body (x86-64:
/// AVX-512F, AVX2 or SSE2 picked at start-up; plain memcpy elsewhere). The
/// caller must call stream_fence() before publishing the bytes.
void stream_copy(std::byte* dst, const std::byte* src, std::size_t bytes) noexcept;
/// One copy of a batch handed to stream_copy_segments().
struct CopySegment {
  std::byte* dst;
  const std::byte* src;
  std::size_t bytes;
};

/// stream_copy() of every segment. Segments shorter than four pages are
/// copied four at a time, line pairs side by side, so that short chunks
/// (e.g. 4 KiB) keep four DRAM streams in flight like one long copy does.
/// The caller must call stream_fence() before publishing the bytes.
void stream_copy_segments(const CopySegment* segments, std::size_t count) noexcept;

/// Orders earlier streaming stores before later stores (sfence).
void stream_fence() noexcept;

}  // namespace kvb::detail
