// EvictionPolicy: which inactive registered block of one tier goes first.
//
// The policy only ever holds *inactive* blocks: registered, with no lease and
// no transfer in flight. BlockManager calls on_registered() when a block is
// registered (with the hash of its parent in the sequence, when known),
// on_inactive() when a block's last lease ends, on_reactivated() when a
// lookup leases it again (a hit), and evict() when it needs a block. A block
// in the policy is never leased; a leased block is never in the policy, hence
// never evicted. A registered block leaves its tier through evict(), or,
// leased, through on_dropped() when its bytes failed a check (a corrupt disk
// read, a changed host block): those are where a policy forgets it.
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
//   "prefix" the prefix tree plus frequency and recency (prefix_policy.cpp):
//            only leaves of the tree (blocks no registered block of the tier
//            extends) are evicted while a leaf is inactive, so a child never
//            outlives its parent; a sequence's last block that nothing
//            extended and nobody reused goes first; among the other leaves,
//            the lowest of (release time + bonus growing with the block's
//            use count, remembered across evictions by a ghost; the first
//            new block after a hit counts as used twice) goes first,
//            time being the number of uses the tier has seen (not the clock).
// Every operation is O(1) (amortized for s3fifo's reinsertions and for
// prefix's parked interior blocks).
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

/// What a tier learns about a block when it is registered there.
struct BlockOrigin {
  /// The hash of the block before it in its sequence; nullopt for the first
  /// block of a sequence or when the caller does not know it. The parent need
  /// not be registered in this tier (now or ever).
  std::optional<SequenceHash> parent;
  /// Requests that used the block so far, counting the one that wrote it and
  /// the hits in the tier it comes from (a write-back or an onboard carries
  /// the count along). 1 = a new block. Saturates at 255.
  std::uint8_t uses = 1;
  /// Some block was registered (in any tier) as its child while it was
  /// registered: it is not the end of its sequence.
  bool extended = false;
};

class EvictionPolicy {
 public:
  EvictionPolicy() = default;
  EvictionPolicy(const EvictionPolicy&) = delete;
  EvictionPolicy& operator=(const EvictionPolicy&) = delete;
  virtual ~EvictionPolicy() = default;

  /// The name it was made with ("lru", "s3fifo", "prefix").
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// `block` was registered as `hash` (it is leased: not yet evictable). It
  /// stays registered until evict() returns it. `parent_block` is the block
  /// registered in this tier as origin.parent, if there is one. Policies
  /// that need neither the prefix tree nor use counts ignore this call.
  virtual void on_registered(BlockId /*block*/, SequenceHash /*hash*/, const BlockOrigin& /*origin*/,
                             std::optional<BlockId> /*parent_block*/) {}
  /// `hash` is about to be registered in this tier (on_registered follows,
  /// unless the tier has it already): a policy that looks hashes up in tables
  /// of its own may start fetching the entry now, while the caller looks up
  /// its registry. A hint: it changes no state and nothing may depend on it.
  virtual void prefetch(SequenceHash /*hash*/) const noexcept {}
  /// `block` (registered as `hash`) lost its last lease: it may be evicted.
  /// Precondition: block < capacity, not already held, and (for "prefix")
  /// announced by on_registered since it was last evicted.
  virtual void on_inactive(BlockId block, SequenceHash hash) = 0;
  /// A held block was leased again (a hit): it leaves the policy.
  /// Precondition: the block is held.
  virtual void on_reactivated(BlockId block) = 0;
  /// A held block was leased again by a request that already counted its use
  /// (the daemon's onboard after the same session's lookup, which released
  /// the block in between): it leaves the policy as on_reactivated, but is
  /// not used once more. Its next on_inactive is not a new use either.
  /// Default: on_reactivated (policies that count no uses).
  virtual void on_leased_again(BlockId block) { on_reactivated(block); }
  /// The share of its cache's traffic (uses) this tier sees, in (0, 1]: 1
  /// for a tier of its own (the default); about 1/N for a worker of a
  /// cluster of N whose requests are spread over the workers (each block is
  /// used from every worker, but only about 1/N of the cluster's uses are of
  /// this tier's blocks). A policy that measures idleness in the tier's own
  /// uses ("prefix") scales its frequency credit by it; the others ignore
  /// it. May change at any time (members come and go).
  virtual void set_traffic_share(double /*share*/) noexcept {}
  /// The idleness (in the tier's uses) one doubling of a block's uses buys,
  /// for a policy that has such a credit ("prefix": 20,000 x the traffic
  /// share); nullopt for the others. For stats and tests.
  [[nodiscard]] virtual std::optional<std::uint64_t> use_credit() const noexcept { return std::nullopt; }
  /// A leased block (announced by on_registered, not held) left the tier
  /// without evict(): its bytes failed a check. Forget it as evict() would.
  virtual void on_dropped(BlockId /*block*/) {}
  /// Picks a victim, removes it from the policy and returns it; nullopt when
  /// nothing is held. The caller unregisters it.
  [[nodiscard]] virtual std::optional<BlockId> evict() = 0;
  /// Number of blocks held (evictable).
  [[nodiscard]] virtual std::uint32_t size() const noexcept = 0;
  /// The clock time (ns, a timestamp, not an age) at which the
  /// longest-waiting held block became inactive; nullopt when empty. Its age
  /// is clock.now_ns() minus this. For tests and diagnostics: no metric
  /// exports it yet.
  [[nodiscard]] virtual std::optional<std::uint64_t> oldest_inactive_since_ns() const = 0;
};

/// The names make_eviction_policy accepts, the default ("prefix") first.
[[nodiscard]] std::span<const std::string_view> eviction_policies() noexcept;

/// "prefix, lru, s3fifo": the same names as one string.
[[nodiscard]] std::string_view eviction_policy_names() noexcept;

/// A policy for a tier of `capacity` blocks (block ids 0..capacity-1), reading
/// time from `clock` (which must outlive it). Unknown name: invalid_argument
/// listing the valid names.
[[nodiscard]] Result<std::unique_ptr<EvictionPolicy>> make_eviction_policy(std::string_view name,
                                                                           std::uint32_t capacity, const Clock& clock);

}  // namespace kvb
