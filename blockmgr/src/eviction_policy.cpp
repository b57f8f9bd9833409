#include "kvb/blockmgr/eviction_policy.h"

#include <string>

#include "eviction_policies.h"

namespace kvb {

namespace {
constexpr std::string_view kPolicies[] = {"prefix", "lru", "s3fifo"};
}  // namespace

std::span<const std::string_view> eviction_policies() noexcept { return kPolicies; }

std::string_view eviction_policy_names() noexcept {
  static const std::string names = [] {
    std::string joined;
    for (std::string_view p : kPolicies) joined += (joined.empty() ? "" : ", ") + std::string(p);
    return joined;
  }();
  return names;
}

Result<std::unique_ptr<EvictionPolicy>> make_eviction_policy(std::string_view name, std::uint32_t capacity,
                                                             const Clock& clock) {
  if (name == "lru") return detail::make_lru_policy(capacity, clock);
  if (name == "s3fifo") return detail::make_s3fifo_policy(capacity, clock);
  if (name == "prefix") return detail::make_prefix_policy(capacity, clock);
  return fail(Errc::invalid_argument, "unknown eviction policy '{}' (valid: {})", name, eviction_policy_names());
}

}  // namespace kvb
