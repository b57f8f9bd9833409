// BlockManager::Impl: the tiers' state and the moves between them. Private
// to blockmgr/src: block_manager.cpp holds the public calls and the G1 <->
// G2 moves, disk_tier.cpp the G2 <-> G3 ones. The one locking rule applies.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "frequency_sketch.h"
#include "hash_registry.h"
#include "kvb/blockmgr/block_manager.h"

namespace kvb {
namespace detail {

struct BlockMeta {
  SequenceHash hash{};       // valid while registered or while a transfer writes it
  SequenceHash parent{};     // the hash before it in its sequence, if has_parent
  std::uint32_t leases = 0;  // BlockLeases alive on the block
  std::uint16_t pins = 0;    // transfers using the block (as source or destination)
  std::uint8_t uses = 0;     // while registered: BlockOrigin::uses, plus one per hit here
  bool in_policy = false;    // inactive: held by the eviction policy
  bool has_parent = false;
  bool extended = false;  // BlockOrigin::extended

  // What another tier learns when this block is copied there.
  [[nodiscard]] BlockOrigin origin() const noexcept {
    return BlockOrigin{has_parent ? std::optional(parent) : std::nullopt, uses, extended};
  }
};

struct TierState {
  TierState(Tier t, std::unique_ptr<Pool> p, std::unique_ptr<EvictionPolicy> pol)
      : tier(t), pool(std::move(p)), policy(std::move(pol)), meta(pool->capacity()), registry(pool->capacity()) {}

  Tier tier;
  std::unique_ptr<Pool> pool;
  std::unique_ptr<EvictionPolicy> policy;
  std::vector<BlockMeta> meta;
  detail::HashRegistry registry;
  std::unordered_set<SequenceHash> incoming;  // hashes a write-back is copying into this tier
  std::uint32_t leased_blocks = 0;
  std::uint32_t pinned_blocks = 0;
  std::uint64_t hits = 0;
  std::uint64_t evictions = 0;

  [[nodiscard]] BlockRef ref(BlockId b) const noexcept { return {pool->id(), b}; }
};

struct Transfer {
  // offload: G1 -> G2 write-back; onboard: G2 -> G1; write_back: G2 -> G3
  // (the source is already free: the store copied it); promote: G3 -> G2.
  enum class Kind : std::uint8_t { offload, onboard, write_back, promote } kind = Kind::offload;
  std::vector<BlockId> src;
  std::vector<BlockId> dst;
  std::vector<SequenceHash> hashes;
  OnboardDone done;
  PromoteDone promote_done;
  std::vector<Status> results;       // promote: one per block, filled as reads end
  std::uint32_t remaining = 0;       // promote: reads not yet ended
  std::vector<BlockOrigin> origins;  // of each hash, for the destination tier's policy
};

}  // namespace detail

using detail::BlockMeta;
using detail::TierState;
using detail::Transfer;

struct BlockManager::Impl {
  BlockManager* self = nullptr;
  std::array<std::unique_ptr<TierState>, kNumTiers> tiers;
  CopyEngine* engine = nullptr;
  BlockStore* store = nullptr;  // G3's bytes (null = no G3)
  std::uint32_t admit_min_frequency = 0;
  std::unique_ptr<detail::FrequencySketch> sketch;  // uses per hash, when G3 exists
  const Clock* clock = nullptr;
  PostToOwner post;
  bool offload_on_evict = true;
  RegistryObserver on_registry_change;
  BlockManagerCounters counters;  // the global fields; tier fields are filled in counters()
  std::uint64_t live_leases = 0;
  std::unordered_map<std::uint64_t, Transfer> transfers;
  std::uint64_t next_ticket = 1;
  std::shared_ptr<char> alive = std::make_shared<char>(0);  // copy completions check it before touching *this

  TierState* tier(Tier t) noexcept { return tiers[static_cast<std::size_t>(t)].get(); }
  const TierState* tier(Tier t) const noexcept { return tiers[static_cast<std::size_t>(t)].get(); }

  // --- leases -------------------------------------------------------------
  // `use`: the lease is a new use of the block (a hit), not the same
  // request leasing it again (LookupUse::same_request).
  BlockLease acquire(TierState& ts, BlockId b, bool use = true) {
    BlockMeta& m = ts.meta[b.value()];
    if (m.leases++ == 0) {
      ++ts.leased_blocks;
      if (m.in_policy) {
        if (use) {
          ts.policy->on_reactivated(b);
          if (m.uses < 255) ++m.uses;
        } else {
          ts.policy->on_leased_again(b);
        }
        m.in_policy = false;
      }
    }
    ++live_leases;
    return BlockLease(self, ts.tier, ts.ref(b));
  }

  void release(TierState& ts, BlockId b) noexcept {
    BlockMeta& m = ts.meta[b.value()];
    --live_leases;
    if (--m.leases == 0) {
      --ts.leased_blocks;
      settle(ts, b);
    }
  }

  // A block nobody uses any more: a registered one becomes inactive (policy),
  // an unregistered one (partial or complete) is discarded to free.
  void settle(TierState& ts, BlockId b) noexcept {
    BlockMeta& m = ts.meta[b.value()];
    if (m.leases > 0 || m.pins > 0) return;
    if (ts.pool->state_of(b) == BlockState::registered) {
      ts.policy->on_inactive(b, m.hash);
      m.in_policy = true;
    } else {
      free_block(ts, b);
      ++counters.discards;
    }
  }

  void free_block(TierState& ts, BlockId b) noexcept {
    ts.meta[b.value()] = BlockMeta{};
    (void)ts.pool->free(ts.ref(b));  // b is in range and not free: cannot fail
  }

  void pin(TierState& ts, BlockId b) noexcept {
    if (ts.meta[b.value()].pins++ == 0) ++ts.pinned_blocks;
  }
  void unpin(TierState& ts, BlockId b) noexcept {
    if (--ts.meta[b.value()].pins == 0) --ts.pinned_blocks;
  }

  // A use of `hash` (stored or hit), for the G3 admission filter.
  void count_use(SequenceHash hash) noexcept {
    if (sketch) sketch->add(hash);
  }

  // --- eviction and room --------------------------------------------------
  // `victim` came out of ts.policy: unregister it, then write it back to the
  // next tier (G1 -> G2 with offload_on_evict, G2 -> G3 when G3 exists) or
  // free it now.
  void evict_block(TierState& ts, BlockId victim) {
    BlockMeta& m = ts.meta[victim.value()];
    m.in_policy = false;
    ts.registry.erase(m.hash);
    if (on_registry_change) on_registry_change(ts.tier, m.hash, false);
    ++ts.evictions;
    ++counters.evictions;
    if (ts.tier == Tier::g1 && offload_on_evict && tier(Tier::g2) != nullptr) {
      start_offload(victim, m.hash, m.origin());
    } else if (ts.tier == Tier::g2 && tier(Tier::g3) != nullptr) {
      write_back_to_g3(victim, m.hash, m.origin());
    } else {
      free_block(ts, victim);
    }
  }

  // Makes `n` blocks free in `ts` (evicting), then takes them (partial).
  Result<std::vector<BlockId>> take_blocks(TierState& ts, std::uint32_t n);

  // --- transfers ----------------------------------------------------------
  // A completion for `ticket` (block `part` of it) that reaches the owning
  // thread through `post` and is dropped once the manager is gone.
  CopyDone make_done(std::uint64_t ticket, std::uint32_t part = 0) {
    return [weak = std::weak_ptr<char>(alive), post = post, impl = this, ticket, part](Status status) {
      auto finish = [weak, impl, ticket, part, status = std::move(status)]() mutable {
        if (weak.expired()) return;  // the manager is gone: drop the completion
        impl->finish(ticket, part, std::move(status));
      };
      if (post)
        post(std::move(finish));
      else
        finish();
    };
  }

  void submit(std::uint64_t ticket, Result<TransferPlan> plan) {
    if (!plan) {
      finish(ticket, 0, tl::unexpected(plan.error()));
      return;
    }
    engine->submit(std::move(*plan), make_done(ticket));
  }

  void start_offload(BlockId g1_block, SequenceHash hash, const BlockOrigin& origin);
  void finish(std::uint64_t ticket, std::uint32_t part, Status status);
  void finish_offload(const Transfer& t, const Status& status);
  void finish_onboard(Transfer& t, const Status& status);
  // disk_tier.cpp
  void write_back_to_g3(BlockId g2_block, SequenceHash hash, const BlockOrigin& origin);
  void finish_write_back(const Transfer& t, const Status& status);
  void finish_promote_part(Transfer& t, std::uint32_t part, Status status);
  void finish_promote(Transfer& t);
  Status recover_g3();

  // A registered block whose bytes failed a check leaves the registry now;
  // settle() frees it once nobody uses it.
  void unregister_bad(TierState& ts, BlockId b) noexcept {
    if (ts.pool->state_of(b) != BlockState::registered) return;
    ts.registry.erase(ts.meta[b.value()].hash);
    if (on_registry_change) on_registry_change(ts.tier, ts.meta[b.value()].hash, false);
    (void)ts.pool->mark_unregistered(ts.ref(b));
    ts.policy->on_dropped(b);  // it left without evict(): the policy forgets it too
    ++counters.dropped;
  }

  // Registers `b` as `hash` and tells the tier's policy, with the parent
  // resolved to its block when it is registered in this tier.
  void register_unchecked(TierState& ts, BlockId b, SequenceHash hash, const BlockOrigin& origin) {
    (void)ts.pool->mark_registered(ts.ref(b));
    BlockMeta& m = ts.meta[b.value()];
    m.hash = hash;
    m.parent = origin.parent.value_or(SequenceHash{});
    m.has_parent = origin.parent.has_value();
    m.uses = origin.uses;
    m.extended = origin.extended;
    std::optional<BlockId> parent_block;
    if (origin.parent && *origin.parent != hash) {
      if (const std::uint32_t p = ts.registry.find(*origin.parent); p != detail::kNil) {
        parent_block = BlockId{p};
        ts.meta[p].extended = true;  // no longer the end of its sequence
      }
    }
    ts.registry.insert(hash, b.value());
    ts.policy->on_registered(b, hash, origin, parent_block);
    if (on_registry_change) on_registry_change(ts.tier, hash, true);
  }

  // --- checks -------------------------------------------------------------
  Result<TierState*> lease_tier(const BlockLease& lease) {
    if (!lease) return fail(Errc::invalid_argument, "block manager: the lease is empty");
    if (lease.owner() != self)
      return fail(Errc::invalid_argument, "block manager: the lease on {} belongs to another block manager",
                  lease.ref());
    TierState* ts = tier(lease.tier());
    if (auto s = ts->pool->check(lease.ref()); !s) return tl::unexpected(s.error());
    return ts;
  }
};

}  // namespace kvb
