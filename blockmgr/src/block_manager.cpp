#include "kvb/blockmgr/block_manager.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>

#include "block_manager_impl.h"

namespace kvb {

std::string_view to_string(Tier tier) noexcept {
  switch (tier) {
    case Tier::g1: return "G1";
    case Tier::g2: return "G2";
    case Tier::g3: return "G3";
  }
  return "G?";
}

Result<std::vector<BlockId>> BlockManager::Impl::take_blocks(TierState& ts, std::uint32_t n) {
  Pool& pool = *ts.pool;
  if (std::uint64_t{pool.free_count()} + ts.policy->size() < n)
    return fail(Errc::out_of_capacity,
                "{}: cannot allocate {} blocks: {} free, {} evictable, {} leased, {} in transfer (capacity {})",
                to_string(ts.tier), n, pool.free_count(), ts.policy->size(), ts.leased_blocks, ts.pinned_blocks,
                pool.capacity());
  // Victims in batches: the policy picks up to the blocks still missing,
  // then each is unregistered. A victim's metadata and registry slot are
  // random memory; fetching a batch's at once overlaps their cache misses
  // instead of waiting for each in turn. The victims and their order are
  // those of one evict() at a time: evict_block frees at most the victim, so
  // a batch is never more than the one-by-one loop would have evicted.
  constexpr std::uint32_t kBatch = 32;
  std::array<BlockId, kBatch> batch;
  while (pool.free_count() < n) {
    const std::uint32_t want = std::min(kBatch, n - pool.free_count());
    std::uint32_t got = 0;
    for (; got < want; ++got) {
      auto victim = ts.policy->evict();
      if (!victim) break;
      batch[got] = *victim;
      __builtin_prefetch(&ts.meta[victim->value()]);
    }
    for (std::uint32_t i = 0; i < got; ++i) ts.registry.prefetch(ts.meta[batch[i].value()].hash);
    for (std::uint32_t i = 0; i < got; ++i) evict_block(ts, batch[i]);
    if (got < want) break;
  }
  if (pool.free_count() < n)
    return fail(Errc::busy, "{}: cannot allocate {} blocks yet: {} free, {} blocks still being written back",
                to_string(ts.tier), n, pool.free_count(), ts.pinned_blocks);
  std::vector<BlockId> blocks;
  blocks.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) blocks.push_back(pool.allocate()->block);
  return blocks;
}

void BlockManager::Impl::start_offload(BlockId g1_block, SequenceHash hash, const BlockOrigin& origin) {
  TierState& g1 = *tier(Tier::g1);
  TierState& g2 = *tier(Tier::g2);
  if (g2.registry.contains(hash) || g2.incoming.contains(hash)) {
    ++counters.offloads_skipped;  // G2 already has (or is getting) it
    free_block(g1, g1_block);
    return;
  }
  if (g2.pool->free_count() == 0) {
    if (auto victim = g2.policy->evict()) evict_block(g2, *victim);
  }
  if (g2.pool->free_count() == 0) {
    ++counters.offloads_skipped;  // G2 is full of leased or in-flight blocks
    free_block(g1, g1_block);
    return;
  }
  const BlockId dst = g2.pool->allocate()->block;
  g2.meta[dst.value()].hash = hash;
  g2.incoming.insert(hash);
  pin(g2, dst);
  pin(g1, g1_block);
  const std::uint64_t ticket = next_ticket++;
  transfers.emplace(ticket, Transfer{Transfer::Kind::offload, {g1_block}, {dst}, {hash}, {}, {}, {}, 0, {origin}});
  const BlockPair pair{g1_block, dst};
  submit(ticket, TransferPlan::build(g1.pool->space(), g2.pool->space(), std::span(&pair, 1)));
}

void BlockManager::Impl::finish(std::uint64_t ticket, std::uint32_t part, Status status) {
  auto it = transfers.find(ticket);
  if (it == transfers.end()) return;
  if (it->second.kind == Transfer::Kind::promote) {
    finish_promote_part(it->second, part, std::move(status));
    if (it->second.remaining > 0) return;
    Transfer t = std::move(it->second);
    transfers.erase(it);
    finish_promote(t);
    return;
  }
  Transfer t = std::move(it->second);
  transfers.erase(it);
  switch (t.kind) {
    case Transfer::Kind::offload: finish_offload(t, status); break;
    case Transfer::Kind::onboard: finish_onboard(t, status); break;
    case Transfer::Kind::write_back: finish_write_back(t, status); break;
    case Transfer::Kind::promote: break;  // handled above
  }
}

void BlockManager::Impl::finish_offload(const Transfer& t, const Status& status) {
  TierState& g1 = *tier(Tier::g1);
  TierState& g2 = *tier(Tier::g2);
  unpin(g1, t.src[0]);
  free_block(g1, t.src[0]);  // already unregistered when it was evicted
  const BlockId dst = t.dst[0];
  const SequenceHash hash = t.hashes[0];
  unpin(g2, dst);
  g2.incoming.erase(hash);
  if (!status) {
    ++counters.offload_failures;
    free_block(g2, dst);
    return;
  }
  ++counters.offloads;
  (void)g2.pool->mark_complete(g2.ref(dst));
  if (g2.registry.contains(hash)) {  // registered directly meanwhile
    free_block(g2, dst);
    return;
  }
  register_unchecked(g2, dst, hash, t.origins[0]);
  settle(g2, dst);  // inactive: into G2's policy
}

void BlockManager::Impl::finish_onboard(Transfer& t, const Status& status) {
  TierState& g1 = *tier(Tier::g1);
  TierState& g2 = *tier(Tier::g2);
  for (BlockId b : t.src) {
    unpin(g2, b);
    settle(g2, b);
  }
  for (BlockId b : t.dst) unpin(g1, b);
  if (!status) {
    counters.onboard_failures += t.dst.size();
    for (BlockId b : t.dst) free_block(g1, b);
    t.done(tl::unexpected(status.error()));
    return;
  }
  BlockLeases leases;
  leases.reserve(t.dst.size());
  for (std::size_t i = 0; i < t.dst.size(); ++i) {
    const BlockId b = t.dst[i];
    (void)g1.pool->mark_complete(g1.ref(b));
    if (const std::uint32_t existing = g1.registry.find(t.hashes[i]); existing != detail::kNil) {
      free_block(g1, b);  // someone else brought it to G1 meanwhile: serve theirs
      leases.push_back(acquire(g1, BlockId{existing}));
    } else {
      register_unchecked(g1, b, t.hashes[i], t.origins[i]);
      leases.push_back(acquire(g1, b));
    }
  }
  counters.onboards += t.dst.size();
  t.done(std::move(leases));
}

// ---- BlockLease / BlockLeases ---------------------------------------------

void BlockLease::release() noexcept {
  if (owner_ == nullptr) return;
  BlockManager* owner = std::exchange(owner_, nullptr);
  owner->release(tier_, ref_.block);
}

void BlockLeases::append(BlockLeases&& other) {
  leases_.reserve(leases_.size() + other.leases_.size());
  for (auto& lease : other.leases_) leases_.push_back(std::move(lease));
  other.leases_.clear();
}

// ---- BlockManager ---------------------------------------------------------

Result<std::unique_ptr<BlockManager>> BlockManager::make(BlockManagerConfig config) {
  if (!config.g1.pool && !config.g2.pool)
    return fail(Errc::invalid_argument, "block manager: at least one tier (g1 or g2) needs a pool");
  if (config.g1.pool && config.g2.pool) {
    if (config.engine == nullptr)
      return fail(Errc::invalid_argument, "block manager: engine must be set when both G1 and G2 exist");
    if (config.g1.pool->id() == config.g2.pool->id())
      return fail(Errc::invalid_argument, "block manager: G1 and G2 pools share pool id {}", config.g1.pool->id());
    if (!config.g1.pool->layout().spec().same_block_shape(config.g2.pool->layout().spec()))
      return fail(Errc::invalid_argument, "block manager: G1 and G2 layouts hold different block shapes");
    const MemoryKind k1 = config.g1.pool->region().kind();
    const MemoryKind k2 = config.g2.pool->region().kind();
    if (!config.engine->supports(k1, k2) || !config.engine->supports(k2, k1))
      return fail(Errc::unsupported, "block manager: engine '{}' cannot copy between {} and {} memory",
                  config.engine->name(), to_string(k1), to_string(k2));
  }
  if (config.g3.store != nullptr) {
    if (!config.g2.pool)
      return fail(Errc::invalid_argument, "block manager: a disk tier (G3) needs a host tier (G2) to write back from");
    if (!config.post)
      return fail(Errc::invalid_argument,
                  "block manager: a disk tier (G3) needs a post function: its store "
                  "completes on its own threads");
    if (config.g3.store->block_bytes() != config.g2.pool->layout().block_bytes())
      return fail(Errc::invalid_argument, "block manager: G3 store blocks are {} bytes, G2 blocks {}",
                  config.g3.store->block_bytes(), config.g2.pool->layout().block_bytes());
    if (config.g3.pool_id == config.g2.pool->id() || (config.g1.pool && config.g3.pool_id == config.g1.pool->id()))
      return fail(Errc::invalid_argument, "block manager: G3 pool id {} is taken by another tier", config.g3.pool_id);
    if (config.g3.store->slot_count() == 0)
      return fail(Errc::invalid_argument, "block manager: the G3 store has no slot");
  }
  auto impl = std::make_unique<Impl>();
  impl->engine = config.engine;
  impl->clock = config.clock != nullptr ? config.clock : &CoarseClock::instance();
  impl->post = std::move(config.post);
  impl->offload_on_evict = config.offload_on_evict;
  impl->on_registry_change = std::move(config.on_registry_change);
  for (Tier t : {Tier::g1, Tier::g2}) {
    TierConfig& tc = t == Tier::g1 ? config.g1 : config.g2;
    if (!tc.pool) continue;
    auto policy = tc.make_policy
                      ? Result<std::unique_ptr<EvictionPolicy>>(tc.make_policy(tc.pool->capacity(), *impl->clock))
                      : make_eviction_policy(tc.policy, tc.pool->capacity(), *impl->clock);
    if (!policy) return fail(policy.error().code, "block manager: tier {}: {}", to_string(t), policy.error().message);
    impl->tiers[static_cast<std::size_t>(t)] = std::make_unique<TierState>(t, std::move(tc.pool), std::move(*policy));
  }
  if (BlockStore* store = config.g3.store; store != nullptr) {
    auto layout =
        Layout::make(impl->tier(Tier::g2)->pool->layout().spec(), LayoutKind::fully_contiguous, store->slot_count());
    if (!layout) return fail(layout.error().code, "block manager: tier G3: {}", layout.error().message);
    auto pool = Pool::make_without_memory(config.g3.pool_id, *layout);
    if (!pool) return tl::unexpected(pool.error());
    auto policy = make_eviction_policy(config.g3.policy, store->slot_count(), *impl->clock);
    if (!policy) return fail(policy.error().code, "block manager: tier G3: {}", policy.error().message);
    impl->tiers[static_cast<std::size_t>(Tier::g3)] =
        std::make_unique<TierState>(Tier::g3, std::move(*pool), std::move(*policy));
    impl->store = store;
    impl->admit_min_frequency = config.g3.admit_min_frequency;
    std::uint64_t items = store->slot_count();
    for (Tier t : {Tier::g1, Tier::g2})
      if (const TierState* ts = impl->tier(t)) items += ts->pool->capacity();
    impl->sketch = std::make_unique<detail::FrequencySketch>(items);
  }
  std::unique_ptr<BlockManager> bm(new BlockManager(std::move(impl)));
  bm->impl_->self = bm.get();
  if (bm->impl_->store != nullptr) {
    if (auto recovered = bm->impl_->recover_g3(); !recovered) return tl::unexpected(recovered.error());
  }
  return bm;
}

BlockManager::BlockManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BlockManager::~BlockManager() {
  if (impl_->live_leases != 0) {
    std::fprintf(stderr, "kvb::BlockManager destroyed with %llu live leases (a lease outlived its manager)\n",
                 static_cast<unsigned long long>(impl_->live_leases));
    std::abort();
  }
  impl_->alive.reset();
}

bool BlockManager::has_tier(Tier tier) const noexcept { return impl_->tier(tier) != nullptr; }
const Pool& BlockManager::pool(Tier tier) const noexcept { return *impl_->tier(tier)->pool; }
const EvictionPolicy& BlockManager::policy(Tier tier) const noexcept { return *impl_->tier(tier)->policy; }
void BlockManager::set_traffic_share(Tier tier, double share) noexcept {
  if (TierState* ts = impl_->tier(tier)) ts->policy->set_traffic_share(share);
}

void BlockManager::release(Tier tier, BlockId block) noexcept { impl_->release(*impl_->tier(tier), block); }

PrefixMatch BlockManager::lookup(std::span<const SequenceHash> hashes, LookupUse use) {
  Impl& im = *impl_;
  PrefixMatch match;
  TierState* g1 = im.tier(Tier::g1);
  TierState* g2 = im.tier(Tier::g2);
  TierState* g3 = im.tier(Tier::g3);
  match.leases.reserve(hashes.size());
  // Hash i is looked up in G1, then G2, then G3; `found` counts into the
  // tier's field of the match.
  auto hit = [&](TierState* ts, SequenceHash h, std::uint32_t& found) {
    if (ts == nullptr) return false;
    const std::uint32_t b = ts->registry.find(h);
    if (b == detail::kNil) return false;
    const bool counted = use == LookupUse::new_request;
    match.leases.push_back(im.acquire(*ts, BlockId{b}, counted));
    if (counted) im.count_use(h);
    ++found;
    return true;
  };
  for (const SequenceHash h : hashes) {
    if (!hit(g1, h, match.g1_blocks) && !hit(g2, h, match.g2_blocks) && !hit(g3, h, match.g3_blocks)) break;
  }
  ++im.counters.lookups;
  im.counters.hits += match.matched();
  im.counters.misses += hashes.size() - match.matched();
  if (g1 != nullptr) g1->hits += match.g1_blocks;
  if (g2 != nullptr) g2->hits += match.g2_blocks;
  if (g3 != nullptr) g3->hits += match.g3_blocks;
  return match;
}

std::uint32_t BlockManager::peek(std::span<const SequenceHash> hashes) const {
  auto held = [&](Tier t, SequenceHash h) {
    const TierState* ts = impl_->tier(t);
    return ts != nullptr && ts->registry.contains(h);
  };
  std::uint32_t n = 0;
  for (const SequenceHash h : hashes) {
    if (!held(Tier::g1, h) && !held(Tier::g2, h) && !held(Tier::g3, h)) break;
    ++n;
  }
  return n;
}

bool BlockManager::registered(Tier tier, SequenceHash hash) const noexcept {
  const TierState* ts = impl_->tier(tier);
  return ts != nullptr && ts->registry.contains(hash);
}

BlockLease BlockManager::find(Tier tier, SequenceHash hash) {
  TierState* ts = impl_->tier(tier);
  if (ts == nullptr) return {};
  const std::uint32_t b = ts->registry.find(hash);
  if (b == detail::kNil) return {};
  return impl_->acquire(*ts, BlockId{b});
}

Result<BlockLeases> BlockManager::allocate(Tier tier, std::uint32_t n) {
  TierState* ts = impl_->tier(tier);
  if (ts == nullptr) return fail(Errc::unavailable, "block manager: tier {} is not configured", to_string(tier));
  if (tier == Tier::g3)
    return fail(Errc::unsupported, "block manager: G3 blocks are written by write-back from G2, not allocated");
  auto blocks = impl_->take_blocks(*ts, n);
  if (!blocks) return tl::unexpected(blocks.error());
  BlockLeases leases;
  leases.reserve(n);
  for (BlockId b : *blocks) leases.push_back(impl_->acquire(*ts, b));
  return leases;
}

Status BlockManager::mark_complete(const BlockLease& lease) {
  auto ts = impl_->lease_tier(lease);
  if (!ts) return tl::unexpected(ts.error());
  return (*ts)->pool->mark_complete(lease.ref());
}

Status BlockManager::register_block(const BlockLease& lease, SequenceHash hash, std::optional<SequenceHash> parent) {
  auto tsr = impl_->lease_tier(lease);
  if (!tsr) return tl::unexpected(tsr.error());
  TierState& ts = **tsr;
  const BlockState st = ts.pool->state_of(lease.block());
  if (st != BlockState::complete)
    return fail(Errc::wrong_state, "block manager: {} is {}; only a complete block can be registered (hash {})",
                lease.ref(), to_string(st), hash);
  ts.policy->prefetch(hash);  // its miss overlaps the registry's
  if (ts.registry.contains(hash)) {
    ++impl_->counters.register_conflicts;
    return fail(Errc::already_exists, "block manager: hash {} is already registered in {}", hash, to_string(ts.tier));
  }
  impl_->register_unchecked(ts, lease.block(), hash, BlockOrigin{parent, 1, false});
  impl_->count_use(hash);
  return ok();
}

Status BlockManager::commit(const BlockLease& lease, SequenceHash hash, std::optional<SequenceHash> parent) {
  if (auto s = mark_complete(lease); !s) return s;
  return register_block(lease, hash, parent);
}

Status BlockManager::discard(BlockLease&& lease) {
  auto ts = impl_->lease_tier(lease);
  if (!ts) return tl::unexpected(ts.error());
  if ((*ts)->pool->state_of(lease.block()) == BlockState::registered)
    return fail(Errc::wrong_state, "block manager: cannot discard {}: it is registered", lease.ref());
  lease.release();  // the last lease of an unregistered block frees it
  return ok();
}

Status BlockManager::drop(const BlockLease& lease) {
  auto ts = impl_->lease_tier(lease);
  if (!ts) return tl::unexpected(ts.error());
  if ((*ts)->pool->state_of(lease.block()) != BlockState::registered)
    return fail(Errc::wrong_state, "block manager: cannot drop {}: it is not registered", lease.ref());
  impl_->unregister_bad(**ts, lease.block());
  return ok();
}

Result<SequenceHash> BlockManager::hash_of(const BlockLease& lease) const {
  auto ts = impl_->lease_tier(lease);
  if (!ts) return tl::unexpected(ts.error());
  if ((*ts)->pool->state_of(lease.block()) != BlockState::registered)
    return fail(Errc::wrong_state, "block manager: {} is not registered", lease.ref());
  return (*ts)->meta[lease.block().value()].hash;
}

Status BlockManager::onboard(std::span<const BlockLease> g2_blocks, OnboardDone done) {
  Impl& im = *impl_;
  TierState* g1 = im.tier(Tier::g1);
  TierState* g2 = im.tier(Tier::g2);
  if (g1 == nullptr || g2 == nullptr)
    return fail(Errc::unavailable, "block manager: onboard needs both G1 and G2 tiers");
  std::vector<BlockPair> pairs;
  Transfer t;
  t.kind = Transfer::Kind::onboard;
  t.done = std::move(done);
  for (const BlockLease& lease : g2_blocks) {
    auto ts = im.lease_tier(lease);
    if (!ts) return tl::unexpected(ts.error());
    if (lease.tier() != Tier::g2)
      return fail(Errc::invalid_argument, "block manager: onboard takes G2 leases; {} is in {}", lease.ref(),
                  to_string(lease.tier()));
    if (g2->pool->state_of(lease.block()) != BlockState::registered)
      return fail(Errc::wrong_state, "block manager: onboard: {} is not registered", lease.ref());
    t.src.push_back(lease.block());
    t.hashes.push_back(g2->meta[lease.block().value()].hash);
    t.origins.push_back(g2->meta[lease.block().value()].origin());
  }
  auto dst = im.take_blocks(*g1, static_cast<std::uint32_t>(t.src.size()));
  if (!dst) return tl::unexpected(dst.error());
  t.dst = std::move(*dst);
  pairs.reserve(t.src.size());
  for (std::size_t i = 0; i < t.src.size(); ++i) {
    im.pin(*g2, t.src[i]);
    im.pin(*g1, t.dst[i]);
    g1->meta[t.dst[i].value()].hash = t.hashes[i];
    pairs.push_back({t.src[i], t.dst[i]});
  }
  const std::uint64_t ticket = im.next_ticket++;
  im.transfers.emplace(ticket, std::move(t));
  im.submit(ticket, TransferPlan::build(g2->pool->space(), g1->pool->space(), pairs));
  return ok();
}

TierCounters& operator+=(TierCounters& sum, const TierCounters& other) noexcept {
  sum.present = sum.present || other.present;
  for (const auto& field : kTierBlockStates) sum.*field.member += other.*field.member;
  for (const auto& field : kTierEvents) sum.*field.member += other.*field.member;
  return sum;
}

void BlockManager::for_each_registered(Tier tier, const std::function<void(SequenceHash)>& fn) const {
  if (const auto* ts = impl_->tier(tier)) ts->registry.for_each(fn);
}

BlockManagerCounters BlockManager::counters() const {
  BlockManagerCounters c = impl_->counters;
  for (Tier t : {Tier::g1, Tier::g2, Tier::g3}) {
    const TierState* ts = impl_->tier(t);
    TierCounters& tc = c.tiers[static_cast<std::size_t>(t)];
    if (ts == nullptr) continue;
    tc.present = true;
    tc.capacity = ts->pool->capacity();
    tc.free = ts->pool->count(BlockState::free);
    tc.partial = ts->pool->count(BlockState::partial);
    tc.complete = ts->pool->count(BlockState::complete);
    tc.registered = static_cast<std::uint32_t>(ts->registry.size());
    tc.inactive = ts->policy->size();
    tc.leased = ts->leased_blocks;
    tc.in_transfer = ts->pinned_blocks;
    tc.hits = ts->hits;
    tc.evictions = ts->evictions;
  }
  c.transfers_in_flight = static_cast<std::uint32_t>(impl_->transfers.size());
  return c;
}

std::uint32_t BlockManager::transfers_in_flight() const noexcept {
  return static_cast<std::uint32_t>(impl_->transfers.size());
}

}  // namespace kvb
