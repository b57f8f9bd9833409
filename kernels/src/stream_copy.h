// Byte copies for the host engine: memcpy, or non-temporal stores for large
// copies whose destination will not be read back by this core soon.
#pragma once

#include <cstddef>

namespace kvb::detail {

/// memcpy with non-temporal stores for the cache-line aligned body (x86-64:
/// AVX-512F, AVX2 or SSE2 picked at start-up; plain memcpy elsewhere). The
/// caller must call stream_fence() before publishing the bytes.
void stream_copy(std::byte* dst, const std::byte* src, std::size_t bytes) noexcept;
/// Orders earlier streaming stores before later stores (sfence).
void stream_fence() noexcept;

}  // namespace kvb::detail
