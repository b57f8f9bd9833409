// EvictionPolicy: which inactive registered block of one tier goes first.
//
// The policy only ever holds *inactive* blocks: registered, with no lease and
// no transfer in flight. BlockManager calls on_inactive() when a block's last
// lease ends, on_reactivated() when a lookup leases it again (a hit), and
// evict() when it needs a block. A block in the policy is never leased; a
// leased block is never in the policy, hence never evicted.
//
// Policies (make_eviction_policy by name):
//   "lru"    least recently released first. Blocks released together keep
//            release order; releasing a sequence's leases tail first (as
//            BlockLeases does) evicts a sequence's tail before its head, as
//            vLLM does.
//   "s3fifo" S3-FIFO (Yang et al., SOSP'23) over inactive blocks: new blocks
//            enter a small FIFO (10%); blocks hit again go to the main FIFO
//            with a frequency (0..3) that buys reinsertion; hashes evicted from
//            the small FIFO are remembered in a ghost FIFO and come back in main.
// Every operation is O(1) (amortized for s3fifo's reinsertions).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "kvb/blockmgr/clock.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb {

class EvictionPolicy {
 public:
  EvictionPolicy() = default;
  EvictionPolicy(const EvictionPolicy&) = delete;
  EvictionPolicy& operator=(const EvictionPolicy&) = delete;
  virtual ~EvictionPolicy() = default;

  /// The name it was made with ("lru", "s3fifo").
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// `block` (registered as `hash`) lost its last lease: it may be evicted.
  /// Precondition: block < capacity and not already held.
  virtual void on_inactive(BlockId block, SequenceHash hash) = 0;
  /// A held block was leased again (a hit): it leaves the policy.
  /// Precondition: the block is held.
  virtual void on_reactivated(BlockId block) = 0;
  /// A held block leaves without eviction (dropped by its owner).
  /// Precondition: the block is held.
  virtual void on_removed(BlockId block) = 0;
  /// Picks a victim, removes it from the policy and returns it; nullopt when
  /// nothing is held.
  [[nodiscard]] virtual std::optional<BlockId> evict() = 0;
  /// Number of blocks held (evictable).
  [[nodiscard]] virtual std::uint32_t size() const noexcept = 0;
  /// Clock time (ns) at which the longest-waiting held block entered its
  /// queue; nullopt when empty. For metrics ("oldest inactive block age").
  [[nodiscard]] virtual std::optional<std::uint64_t> oldest_inactive_ns() const = 0;
};

/// The names make_eviction_policy accepts, the default first.
[[nodiscard]] std::span<const std::string_view> eviction_policies() noexcept;

/// "lru, s3fifo": the same names as one string.
[[nodiscard]] std::string_view eviction_policy_names() noexcept;

/// A policy for a tier of `capacity` blocks (block ids 0..capacity-1), reading
/// time from `clock` (which must outlive it). Unknown name: invalid_argument
/// listing the valid names.
[[nodiscard]] Result<std::unique_ptr<EvictionPolicy>> make_eviction_policy(std::string_view name,
                                                                           std::uint32_t capacity, const Clock& clock);

}  // namespace kvb
