// The disk tier (G3) inside BlockManager: write-back of G2 victims through
// the admission filter, promote (G3 -> G2 reads, checked by the store), and
// the registration of the blocks a store recovered at start.
#include "block_manager_impl.h"

namespace kvb {

void BlockManager::Impl::write_back_to_g3(BlockId g2_block, SequenceHash hash, const BlockOrigin& origin) {
  TierState& g2 = *tier(Tier::g2);
  TierState& g3 = *tier(Tier::g3);
  auto drop = [&](std::uint64_t& counter) {
    ++counter;
    free_block(g2, g2_block);
  };
  if (g3.registry.contains(hash) || g3.incoming.contains(hash)) return drop(counters.g3_writes_skipped);
  if (admit_min_frequency > 1 && sketch->estimate(hash) < admit_min_frequency)
    return drop(counters.g3_admission_rejects);
  if (g3.pool->free_count() == 0) {
    if (auto victim = g3.policy->evict()) evict_block(g3, *victim);  // G3 victims are simply dropped
  }
  if (g3.pool->free_count() == 0) return drop(counters.g3_writes_skipped);  // every slot leased or being written
  const BlockId slot = g3.pool->allocate()->block;
  const std::uint64_t ticket = next_ticket++;
  const std::span<const std::byte> bytes(g2.pool->block_data(g2_block), g2.pool->layout().block_bytes());
  // The store copies the bytes before write() returns, so the G2 block is
  // free again at once: a write-back never holds host memory.
  if (auto started = store->write(slot, hash, bytes, make_done(ticket)); !started) {
    free_block(g3, slot);
    return drop(counters.g3_writes_skipped);  // the write queue is full (busy)
  }
  transfers.emplace(ticket, Transfer{Transfer::Kind::write_back, {g2_block}, {slot}, {hash}, {}, {}, {}, 0, {origin}});
  g3.meta[slot.value()].hash = hash;
  g3.incoming.insert(hash);
  pin(g3, slot);
  free_block(g2, g2_block);
}

void BlockManager::Impl::finish_write_back(const Transfer& t, const Status& status) {
  TierState& g3 = *tier(Tier::g3);
  const BlockId slot = t.dst[0];
  const SequenceHash hash = t.hashes[0];
  unpin(g3, slot);
  g3.incoming.erase(hash);
  if (!status) {
    ++counters.g3_write_failures;
    free_block(g3, slot);
    return;
  }
  ++counters.g3_writes;
  (void)g3.pool->mark_complete(g3.ref(slot));
  register_unchecked(g3, slot, hash, t.origins[0]);  // only write-backs register in G3, one per hash (incoming)
  settle(g3, slot);                                  // inactive: into G3's policy
}

Status BlockManager::promote(std::span<const BlockLease> g3_blocks, PromoteDone done) {
  Impl& im = *impl_;
  TierState* g2 = im.tier(Tier::g2);
  TierState* g3 = im.tier(Tier::g3);
  if (g2 == nullptr || g3 == nullptr)
    return fail(Errc::unavailable, "block manager: promote needs both G2 and G3 tiers");
  Transfer t;
  t.kind = Transfer::Kind::promote;
  t.promote_done = std::move(done);
  for (const BlockLease& lease : g3_blocks) {
    auto ts = im.lease_tier(lease);
    if (!ts) return tl::unexpected(ts.error());
    if (lease.tier() != Tier::g3)
      return fail(Errc::invalid_argument, "block manager: promote takes G3 leases; {} is in {}", lease.ref(),
                  to_string(lease.tier()));
    if (g3->pool->state_of(lease.block()) != BlockState::registered)
      return fail(Errc::wrong_state, "block manager: promote: {} is not registered", lease.ref());
    t.src.push_back(lease.block());
    t.hashes.push_back(g3->meta[lease.block().value()].hash);
    t.origins.push_back(g3->meta[lease.block().value()].origin());
  }
  if (t.src.empty()) return fail(Errc::invalid_argument, "block manager: promote of no block");
  auto dst = im.take_blocks(*g2, static_cast<std::uint32_t>(t.src.size()));
  if (!dst) return tl::unexpected(dst.error());
  t.dst = std::move(*dst);
  const auto n = static_cast<std::uint32_t>(t.src.size());
  t.results.assign(n, ok());
  t.remaining = n;
  for (std::uint32_t i = 0; i < n; ++i) {
    im.pin(*g3, t.src[i]);
    im.pin(*g2, t.dst[i]);
    g2->meta[t.dst[i].value()].hash = t.hashes[i];
  }
  // The reads are started from copies: a store may complete one at once,
  // and a `post` that runs on this thread may then end the transfer.
  const std::vector<BlockId> slots = t.src;
  const std::vector<BlockId> dsts = t.dst;
  const std::vector<SequenceHash> hashes = t.hashes;
  const std::uint64_t ticket = im.next_ticket++;
  im.transfers.emplace(ticket, std::move(t));
  const std::uint64_t bytes = g2->pool->layout().block_bytes();
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::span<std::byte> into(g2->pool->block_data(dsts[i]), bytes);
    im.store->read(slots[i], hashes[i], into, im.make_done(ticket, i));
  }
  return ok();
}

void BlockManager::Impl::finish_promote_part(Transfer& t, std::uint32_t part, Status status) {
  TierState& g2 = *tier(Tier::g2);
  TierState& g3 = *tier(Tier::g3);
  const BlockId slot = t.src[part];
  const BlockId dst = t.dst[part];
  unpin(g3, slot);
  unpin(g2, dst);
  --t.remaining;
  if (!status) {
    // The bytes on disk cannot be vouched for: the block leaves G3 now (its
    // slot is freed when its last lease ends) and is a miss from then on.
    ++counters.promote_failures;
    unregister_bad(g3, slot);
    settle(g3, slot);
    free_block(g2, dst);
    t.results[part] = std::move(status);
    return;
  }
  settle(g3, slot);
  ++counters.promotes;
  (void)g2.pool->mark_complete(g2.ref(dst));
}

void BlockManager::Impl::finish_promote(Transfer& t) {
  TierState& g2 = *tier(Tier::g2);
  std::vector<Result<BlockLease>> out;
  out.reserve(t.dst.size());
  for (std::size_t i = 0; i < t.dst.size(); ++i) {
    if (!t.results[i]) {
      out.emplace_back(tl::unexpected(std::move(t.results[i].error())));
      continue;
    }
    const BlockId b = t.dst[i];
    if (const std::uint32_t existing = g2.registry.find(t.hashes[i]); existing != detail::kNil) {
      free_block(g2, b);  // stored into G2 meanwhile: serve that block
      out.emplace_back(acquire(g2, BlockId{existing}));
    } else {
      register_unchecked(g2, b, t.hashes[i], t.origins[i]);
      out.emplace_back(acquire(g2, b));
    }
  }
  t.promote_done(std::move(out));
}

Status BlockManager::Impl::recover_g3() {
  TierState& g3 = *tier(Tier::g3);
  const std::vector<StoredBlock> found = store->recovered();
  std::vector<BlockId> slots;
  slots.reserve(found.size());
  for (const StoredBlock& b : found) slots.push_back(b.slot);
  if (auto claimed = g3.pool->claim(slots); !claimed)
    return fail(claimed.error().code, "block manager: G3 recovery: {}", claimed.error().message);
  for (const StoredBlock& b : found) {  // oldest first: the policy evicts old blocks first
    if (g3.registry.contains(b.hash))
      return fail(Errc::internal, "block manager: G3 recovery: the store listed hash {} twice", b.hash);
    (void)g3.pool->mark_complete(g3.ref(b.slot));
    register_unchecked(g3, b.slot, b.hash, BlockOrigin{});  // a restart forgets parents and uses
    settle(g3, b.slot);
  }
  return ok();
}

}  // namespace kvb
