// BlockManager: the facade over the tiers (G1 device, G2 host, G3 disk) of one
// daemon: pools, block lifecycle, the sequence-hash registry and prefix
// match, leases, eviction and tier moves. docs/architecture.md describes the
// state machine, leases and eviction, tiers and what "complete" means.
//
// THE ONE LOCKING RULE: a BlockManager (with its pools, policies and leases)
// is not thread-safe and takes no lock. It is owned by one thread (the
// daemon's event loop) and every call, every lease release and every copy
// completion runs on that thread. Copy engines may finish on their own
// threads: their completions reach the manager only through the `post`
// function given at construction, which must run the closure on the owning
// thread (e.g. asio::post to the loop).
//
// Typical use (one request):
//   auto match = bm.lookup(hashes);                       // leases the matched prefix
//   auto fresh = bm.allocate(Tier::g2, n - match.matched());  // write leases, partial
//   ... copy data into the fresh blocks ...
//   bm.commit(fresh.value()[i], hashes[match.matched() + i]);  // complete + register
//   // on a failed copy: bm.discard(std::move(lease)) (or just drop the lease)
//   match.leases.append(std::move(*fresh));  // one sequence, prefix order
//   // when the request is done: drop match.leases; it ends them tail first,
//   // so that "lru" evicts the sequence's tail before its head. (Dropping
//   // `match` before `fresh` would release the head first.)
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/blockmgr/block_lease.h"
#include "kvb/blockmgr/block_store.h"
#include "kvb/blockmgr/clock.h"
#include "kvb/blockmgr/copy_engine.h"
#include "kvb/blockmgr/eviction_policy.h"
#include "kvb/blockmgr/pool.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/error.h"

namespace kvb {

/// Makes a tier's eviction policy for `capacity` blocks.
using PolicyFactory = std::function<std::unique_ptr<EvictionPolicy>(std::uint32_t capacity, const Clock& clock)>;

/// One tier's pool and eviction policy. A null pool means "no such tier".
struct TierConfig {
  std::unique_ptr<Pool> pool;
  std::string policy = "prefix";  // make_eviction_policy name (docs/eviction.md)
  /// When set, makes the policy instead of `policy` (e.g. an offline
  /// reference that knows the future, for benchmarks).
  PolicyFactory make_policy;
};

/// The disk tier (G3): its bytes live in a BlockStore, its bookkeeping
/// (slot states, registry, policy) here. G2 victims are written back to it
/// and promote() reads its blocks back into G2.
struct DiskTierConfig {
  /// Null = no G3. Not owned; must outlive the manager. make() registers the
  /// blocks of its recovered() in G3 (inactive, oldest write first).
  BlockStore* store = nullptr;
  PoolId pool_id{3};  // G3's slot pool id: distinct from G1's and G2's
  std::string policy = "lru";
  /// A G2 victim is written back to G3 only when its hash was used (stored
  /// or hit) at least this often lately (a frequency sketch, as KVBM's
  /// filter); 0 or 1 = every victim (the default: on the shared trace the
  /// filter costs more hits than it saves writes; docs/disk.md).
  std::uint32_t admit_min_frequency = 1;
};

/// Runs a closure on the manager's owning thread (see the locking rule).
using PostToOwner = std::function<void(std::function<void()>)>;
/// Told, on the owning thread, each time a hash becomes registered in a
/// tier (`stored`) or stops being registered there (evicted, dropped).
/// It must not call back into the manager, registered() aside (the
/// registry is already changed when it runs). The cluster's index events
/// (docs/cluster.md) come from it.
using RegistryObserver = std::function<void(Tier tier, SequenceHash hash, bool stored)>;

struct BlockManagerConfig {
  TierConfig g1;
  TierConfig g2;      // at least one of g1, g2 must have a pool
  DiskTierConfig g3;  // needs G2 and a `post` (the store completes on its own threads)
  /// Copies for offload (G1 -> G2) and onboard (G2 -> G1). Not owned; must
  /// outlive the manager. Required when both tiers exist.
  CopyEngine* engine = nullptr;
  /// Time for the eviction policies. Not owned. nullptr = CoarseClock.
  const Clock* clock = nullptr;
  /// Hands copy completions to the owning thread. Empty = run them inline,
  /// which is only right for engines that complete on the submitting thread
  /// (SyncHostCopyEngine).
  PostToOwner post;
  /// Evicting a registered G1 block first writes it back to G2 (when G2 exists).
  bool offload_on_evict = true;
  /// Registry changes, for observers outside the manager. Empty = none.
  RegistryObserver on_registry_change;
};

/// The result of lookup(): the longest registered prefix, block by block in
/// G1 first, then G2, then G3.
struct PrefixMatch {
  std::uint32_t g1_blocks = 0;  // matched blocks found in G1
  std::uint32_t g2_blocks = 0;  // matched blocks found in G2, not G1
  std::uint32_t g3_blocks = 0;  // matched blocks found only in G3
  /// One lease per matched block, in prefix order; leases[i].tier() tells
  /// where block i lives.
  BlockLeases leases;
  [[nodiscard]] std::uint32_t matched() const noexcept { return g1_blocks + g2_blocks + g3_blocks; }
};

/// What a lookup() is to the blocks it matches.
enum class LookupUse : std::uint8_t {
  /// A request looking up its prefix: each matched block is used once more
  /// (eviction policies, the G3 admission filter).
  new_request,
  /// The same request leasing blocks it already looked up (and counted),
  /// e.g. the daemon's onboard after the session's unpinned lookup: the
  /// blocks are leased, their uses do not grow. Counters (lookups, hits,
  /// misses) count it as any lookup.
  same_request,
};

/// A snapshot of one tier, for stats and metrics.
struct TierCounters {
  bool present = false;
  std::uint32_t capacity = 0;
  std::uint32_t free = 0;
  std::uint32_t partial = 0;      // being written (incl. transfer destinations)
  std::uint32_t complete = 0;     // written, not yet registered
  std::uint32_t registered = 0;   // findable by hash (active + inactive)
  std::uint32_t inactive = 0;     // registered, no lease: evictable
  std::uint32_t leased = 0;       // blocks with at least one lease
  std::uint32_t in_transfer = 0;  // blocks pinned by an offload or onboard copy
  std::uint64_t hits = 0;         // matched blocks served from this tier
  std::uint64_t evictions = 0;    // registered blocks evicted from this tier
};

/// TierCounters by name, for stats and metrics: the block-state gauges and
/// the event counters. A new field gets one line here and shows up in
/// stats, metrics and sums.
template <class T>
struct TierCounterField {
  std::string_view name;
  T TierCounters::*member;
};
inline constexpr std::array<TierCounterField<std::uint32_t>, 8> kTierBlockStates{{
    {"capacity", &TierCounters::capacity},
    {"free", &TierCounters::free},
    {"partial", &TierCounters::partial},
    {"complete", &TierCounters::complete},
    {"registered", &TierCounters::registered},
    {"inactive", &TierCounters::inactive},
    {"leased", &TierCounters::leased},
    {"in_transfer", &TierCounters::in_transfer},
}};
inline constexpr std::array<TierCounterField<std::uint64_t>, 2> kTierEvents{{
    {"hits", &TierCounters::hits},
    {"evictions", &TierCounters::evictions},
}};
/// Adds every field of `other` (a tier summed over several managers).
TierCounters& operator+=(TierCounters& sum, const TierCounters& other) noexcept;

/// A plain snapshot of every counter (counters()).
struct BlockManagerCounters {
  std::array<TierCounters, kNumTiers> tiers{};  // index with static_cast<size_t>(Tier)
  std::uint64_t lookups = 0;
  std::uint64_t hits = 0;    // matched blocks, any tier
  std::uint64_t misses = 0;  // looked-up blocks after the matched prefix
  std::uint64_t evictions = 0;
  std::uint64_t offloads = 0;          // G1 -> G2 write-backs completed
  std::uint64_t offload_failures = 0;  // write-backs whose copy failed
  std::uint64_t offloads_skipped = 0;  // evicted G1 blocks not written back (G2 had it or no room)
  std::uint64_t onboards = 0;          // blocks copied G2 -> G1
  std::uint64_t onboard_failures = 0;
  std::uint64_t discards = 0;              // written blocks dropped unregistered
  std::uint64_t register_conflicts = 0;    // register_block found the hash taken
  std::uint64_t g3_writes = 0;             // G2 victims written back to G3 (durable)
  std::uint64_t g3_write_failures = 0;     // write-backs the store failed (ENOSPC, EIO, ...)
  std::uint64_t g3_writes_skipped = 0;     // G2 victims not written: G3 had them, no free slot, queue full
  std::uint64_t g3_admission_rejects = 0;  // G2 victims used less than admit_min_frequency: dropped
  std::uint64_t promotes = 0;              // G3 blocks read (and verified) into G2
  std::uint64_t promote_failures = 0;      // reads that failed (I/O or a check): the G3 block was dropped
  std::uint64_t dropped = 0;               // registered blocks dropped because their bytes failed a check
  std::uint32_t transfers_in_flight = 0;
  [[nodiscard]] const TierCounters& tier(Tier t) const noexcept { return tiers[static_cast<std::size_t>(t)]; }
};

/// Called on the owning thread when an onboard ends: the G1 leases of the
/// onboarded blocks (registered, same order as requested), or the error.
using OnboardDone = std::function<void(Result<BlockLeases>)>;
/// Called on the owning thread when a promote() ends: per block, in the
/// order asked, its registered G2 lease or the read's error.
using PromoteDone = std::function<void(std::vector<Result<BlockLease>>)>;

class BlockManager {
 public:
  /// Validates the config (at least one tier; an engine when both exist;
  /// policy names; distinct pool ids) and builds the tiers.
  [[nodiscard]] static Result<std::unique_ptr<BlockManager>> make(BlockManagerConfig config);

  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;
  /// Precondition: every lease has ended and no transfer is in flight
  /// (aborts with a message on live leases; late copy completions are dropped).
  ~BlockManager();

  [[nodiscard]] bool has_tier(Tier tier) const noexcept;
  /// The tier's pool. Precondition: has_tier(tier).
  [[nodiscard]] const Pool& pool(Tier tier) const noexcept;
  /// The tier's eviction policy. Precondition: has_tier(tier).
  [[nodiscard]] const EvictionPolicy& policy(Tier tier) const noexcept;
  /// EvictionPolicy::set_traffic_share for the tier's policy; no-op for a
  /// tier that is not configured.
  void set_traffic_share(Tier tier, double share) noexcept;

  /// The longest registered prefix of `hashes`: hash i matches when it is
  /// registered in G1, else in G2, else in G3; the match stops at the first miss. Leases
  /// every matched block (a hit takes the block out of its eviction policy)
  /// and counts hits and misses. Partial, complete or in-transfer
  /// destination blocks are never matched. O(matched + 1). `use`: whether
  /// the matched blocks are used once more (LookupUse).
  [[nodiscard]] PrefixMatch lookup(std::span<const SequenceHash> hashes, LookupUse use = LookupUse::new_request);
  /// Length of the registered prefix, as lookup() would find it, without
  /// leasing or counting anything.
  [[nodiscard]] std::uint32_t peek(std::span<const SequenceHash> hashes) const;

  /// Whether `tier` has `hash` registered. Reads only: unlike the rest of
  /// the manager it may be called from the RegistryObserver. O(1).
  [[nodiscard]] bool registered(Tier tier, SequenceHash hash) const noexcept;

  /// Leases the block registered as `hash` in `tier`; an empty lease when
  /// there is none (or no such tier). Counts no hit or miss: for "is this
  /// block already stored?" before writing it. O(1).
  [[nodiscard]] BlockLease find(Tier tier, SequenceHash hash);

  /// `n` fresh blocks of `tier`, each partial with its write lease, evicting
  /// inactive blocks as needed (a registered G1 victim is written back to G2
  /// first when offload_on_evict). All or nothing. Errors: unavailable (no
  /// such tier), out_of_capacity (names tier, n, free and evictable counts),
  /// busy (room is only held by write-backs still in flight).
  [[nodiscard]] Result<BlockLeases> allocate(Tier tier, std::uint32_t n);

  /// partial -> complete: the caller has written every byte of the block.
  [[nodiscard]] Status mark_complete(const BlockLease& lease);
  /// complete -> registered as `hash` in the lease's tier: from now on lookup
  /// finds it. `parent` is the hash of the block before it in its sequence
  /// (nullopt: the first block, or unknown); the eviction policy uses it to
  /// see the prefix tree ("prefix" evicts leaves first), and it travels with
  /// the block to other tiers. Errors: wrong_state (not complete, e.g. still
  /// partial), already_exists (the tier already holds `hash`; the block stays
  /// complete and is discarded when its lease ends), invalid_argument
  /// (foreign lease).
  [[nodiscard]] Status register_block(const BlockLease& lease, SequenceHash hash,
                                      std::optional<SequenceHash> parent = std::nullopt);
  /// mark_complete + register_block.
  [[nodiscard]] Status commit(const BlockLease& lease, SequenceHash hash,
                              std::optional<SequenceHash> parent = std::nullopt);
  /// Ends a write lease and returns its (partial or complete) block to free.
  /// wrong_state for a registered block (its lease is left untouched).
  [[nodiscard]] Status discard(BlockLease&& lease);
  /// The leased block's bytes can no longer be vouched for (a checksum
  /// failed): it stops being findable now, a miss from then on, and is freed
  /// when its last lease ends. wrong_state when it is not registered.
  [[nodiscard]] Status drop(const BlockLease& lease);
  /// The hash a leased registered block is registered under.
  [[nodiscard]] Result<SequenceHash> hash_of(const BlockLease& lease) const;

  /// Copies the G2 blocks of `g2_blocks` (leases from lookup) into fresh G1
  /// blocks and registers them in G1 under the same hashes. The G1 blocks
  /// are partial (never matchable) until the copy completes. `done` runs on
  /// the owning thread, possibly before onboard() returns (inline engines):
  /// with the G1 leases, or the copy error (the G1 blocks are then freed).
  /// A hash that became registered in G1 meanwhile is served from that
  /// block. Errors (done is then not called): unavailable (a tier is
  /// missing), invalid_argument (a lease is empty, foreign or not G2),
  /// allocate()'s errors.
  [[nodiscard]] Status onboard(std::span<const BlockLease> g2_blocks, OnboardDone done);

  /// Reads the G3 blocks of `g3_blocks` (leases from lookup) into fresh G2
  /// blocks, each checked by the store against its checksums, and registers
  /// them in G2 under the same hashes (partial, never matchable, until their
  /// read completes). `done` runs on the owning thread once every read has
  /// ended, never inside promote(). A block whose read fails is dropped from
  /// G3 (a miss from then on; counted in promote_failures) and its G2 block
  /// freed. A hash registered in G2 meanwhile is served from that block.
  /// Errors (done is then not called): unavailable (no G2 or G3),
  /// invalid_argument (a lease is empty, foreign or not G3), allocate()'s.
  [[nodiscard]] Status promote(std::span<const BlockLease> g3_blocks, PromoteDone done);

  /// Calls fn(hash) for every hash registered in `tier` (none when the
  /// tier is missing). O(capacity). fn must not call into the manager.
  void for_each_registered(Tier tier, const std::function<void(SequenceHash)>& fn) const;

  /// A snapshot of the counters. O(1).
  [[nodiscard]] BlockManagerCounters counters() const;
  /// Offload and onboard copies submitted and not yet completed.
  [[nodiscard]] std::uint32_t transfers_in_flight() const noexcept;

 private:
  friend class BlockLease;
  struct Impl;
  explicit BlockManager(std::unique_ptr<Impl> impl);
  void release(Tier tier, BlockId block) noexcept;

  std::unique_ptr<Impl> impl_;
};

}  // namespace kvb
