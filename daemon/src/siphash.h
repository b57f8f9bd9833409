// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed pseudo-random function
// of a byte string with a 128-bit key. kvblockd keys each tenant's registry
// keys with it (daemon/src/tenant_keys.h), so that a client who knows the
// derivation but not the daemon's secret cannot compute another tenant's
// keys. Written from the paper's specification; the test checks it against
// the paper's reference vectors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace kvb {

using SipKey = std::array<std::uint8_t, 16>;

/// SipHash-2-4 of `message` under `key` (the paper's little-endian k0 || k1).
[[nodiscard]] std::uint64_t siphash24(const SipKey& key, std::span<const std::byte> message) noexcept;

}  // namespace kvb
