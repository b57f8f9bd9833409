// Byte copies for the host engine: memcpy, or non-temporal stores for large
// copies whose destination will not be read back by this core soon.
#pragma once

#include <cstddef>

namespace kvb::detail {

/// memcpy with non-temporal 16-byte stores for the aligned body (SSE2; plain
/// memcpy elsewhere). The caller must call stream_fence() before publishing.
void stream_copy(std::byte* dst, const std::byte* src, std::size_t bytes) noexcept;
/// Orders earlier streaming stores before later stores (sfence).
void stream_fence() noexcept;

}  // namespace kvb::detail
