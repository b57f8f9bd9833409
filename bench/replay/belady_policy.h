// The offline optimum for the replay (`--policy belady`): Belady's MIN, which
// evicts the block whose next use lies furthest in the future. It reads the
// future from the trace, so it exists only here, as the reference every
// online policy's hit ratio is measured against. It goes through the same
// EvictionPolicy interface and BlockManager as the real policies.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvb/blockmgr/eviction_policy.h"
#include "trace_reader.h"

namespace kvb::bench {

/// When each hash id is used next: the requests that name it, in order.
class TraceFuture {
 public:
  static constexpr std::uint64_t kNever = ~std::uint64_t{0};

  explicit TraceFuture(std::span<const TraceRequest> trace);

  /// The request being replayed now. Only moves forward.
  void set_now(std::uint64_t request) noexcept { now_ = request; }
  [[nodiscard]] std::uint64_t now() const noexcept { return now_; }
  /// The first request after now() that names `hash`; kNever if none.
  /// Amortized O(1) while now() moves forward.
  [[nodiscard]] std::uint64_t next_use(SequenceHash hash) const;

 private:
  struct Uses {
    std::vector<std::uint32_t> requests;  // ascending
    std::uint32_t cursor = 0;             // first entry that may be > now
  };
  mutable std::unordered_map<std::uint64_t, Uses> uses_;
  std::uint64_t now_ = 0;
};

/// Belady's MIN over a tier of `capacity` blocks. `future` and `clock` (read
/// only for oldest_inactive_since_ns) must outlive it.
/// A block whose next use passed while it sat in the tier unused (it was
/// beyond a request's matched prefix) is re-timed to its following use
/// before a victim is chosen.
[[nodiscard]] std::unique_ptr<EvictionPolicy> make_belady_policy(std::uint32_t capacity, const TraceFuture& future,
                                                                 const Clock& clock);

}  // namespace kvb::bench
