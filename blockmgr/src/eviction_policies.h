// The concrete eviction policies behind make_eviction_policy. Private to
// blockmgr/src; users pick a policy by name.
#pragma once

#include <memory>

#include "kvb/blockmgr/eviction_policy.h"

namespace kvb::detail {

[[nodiscard]] std::unique_ptr<EvictionPolicy> make_lru_policy(std::uint32_t capacity, const Clock& clock);
[[nodiscard]] std::unique_ptr<EvictionPolicy> make_s3fifo_policy(std::uint32_t capacity, const Clock& clock);
[[nodiscard]] std::unique_ptr<EvictionPolicy> make_prefix_policy(std::uint32_t capacity, const Clock& clock);

}  // namespace kvb::detail
