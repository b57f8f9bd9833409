#include "block_service.h"
#include "block_service_remote.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <unordered_set>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

#include "device_kv.h"
#include "kvb/common/page_populate.h"
#include "kvb/kernels/async_copy.h"
#include "layer_groups.h"

namespace kvb::daemon {

// Host pools start at a kHugePageBytes boundary, so every alignment a layout
// may ask for holds for their blocks.
static_assert(kMaxAlignment <= kHugePageBytes);

SequenceHash salted_key(std::uint64_t client_hash, std::uint64_t tenant_key) noexcept {
  // A bijection of the hash for a given tenant, so two hashes of one tenant
  // never collide with each other; the tenant key is secret (tenant_keys.h),
  // so no client can pick hashes that land on another tenant's keys.
  return SequenceHash{client_hash ^ tenant_key};
}

BlockSpace EngineKv::space() const {
  BlockSpace out{layout, {}};
  out.regions.reserve(regions.size());
  for (const auto& region : regions) out.regions.push_back(RegionSpan::of(*region));
  return out;
}

BlockService::BlockService(boost::asio::io_context& io, CopyEngines& engines, BlockServiceOptions options)
    : io_(io), engines_(engines), options_(std::move(options)), disk_(std::move(options_.disk)) {
  integrity_.enabled = options_.check_host_blocks;
}

BlockService::~BlockService() {
  alive_.reset();  // a pool build that finishes from now on is dropped
  if (engine_prefault_) engine_prefault_->stop();
  // A prefault thread writes into its pool's memory: stop it first.
  for (const auto& pool : pools_) {
    if (pool->prefault) pool->prefault->stop();
  }
  // Disk write-backs and reads complete through the loop (post): run it
  // until none is left, so that no store writes into a freed host pool and
  // every write-back that was on its way becomes durable. Nothing may
  // escape a destructor: a failure here (the log) is swallowed.
  try {
    drain_disk_transfers();
  } catch (...) {  // NOLINT(bugprone-empty-catch): nothing to do in a destructor
  }
}

void BlockService::drain_disk_transfers() {
  auto in_flight = [&] {
    std::uint32_t n = 0;
    for (const auto& pool : pools_) n += pool->manager->transfers_in_flight();
    return n;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    io_.restart();
    io_.run_one_for(std::chrono::milliseconds(100));
  }
  if (const auto left = in_flight(); left > 0)
    spdlog::warn("disk tier: {} transfers still in flight after 30 s at shutdown; dropping them", left);
}

Status BlockService::start_disk() {
  auto shapes = disk_.start();
  if (!shapes) return tl::unexpected(shapes.error());
  for (const LayoutSpec& spec : *shapes) {
    if (pools_.size() >= options_.max_layouts) {
      spdlog::warn("disk tier: more slot files than max_layouts ({}); the others stay closed", options_.max_layouts);
      break;
    }
    LayoutSpec with_alignment = spec;
    with_alignment.alignment = 4096;
    auto shape = pool_shape(with_alignment);
    if (!shape) return fail(shape.error().code, "disk tier: {}", shape.error().message);
    auto pool = add_pool(with_alignment, *shape);
    if (!pool) return fail(pool.error().code, "disk tier: {}", pool.error().message);
    if (!(*pool)->store)
      return fail(Errc::unavailable, "disk tier: a slot file of {} could not be reopened", disk_.settings().path);
  }
  return kvb::ok();
}

PrefaultTotals BlockService::prefault_totals() const {
  PrefaultTotals out;
  out.enabled = options_.prefault;
  for (const auto& pool : pools_) {
    out.pool_bytes += pool->manager->pool(Tier::g2).region().size();
    if (!pool->prefault) continue;
    out.populated_bytes += pool->prefault->populated();
    if (pool->prefault->populated() == pool->prefault->bytes()) ++out.pools_ready;
  }
  if (engine_prefault_) {
    const auto engines = engine_prefault_->totals();
    out.engine_bytes = engines.queued_bytes;
    out.engine_done_bytes = engines.done_bytes;
    out.engine_mapped_bytes = engines.mapped_bytes;
  }
  return out;
}

Result<std::shared_ptr<EngineKv>> BlockService::register_kv(const LayoutPool& pool,
                                                            const proto::RegisterKvRequest& request,
                                                            std::vector<UniqueFd> fds) {
  auto layout = Layout::make(pool.spec, request.layout_kind, request.num_blocks);
  if (!layout) return fail(Errc::invalid_argument, "register_kv: {}", layout.error().message);
  if (request.memory != proto::MemoryHandle::memfd) return import_device_kv(engines_, *layout, request, std::move(fds));
  if (request.fd_count != layout->num_regions() || fds.size() != layout->num_regions()) {
    return fail(Errc::invalid_argument, "register_kv: layout {} needs {} fds; fd_count is {} and {} arrived",
                to_string(layout->kind()), layout->num_regions(), request.fd_count, fds.size());
  }
  if (request.region_bytes < layout->region_bytes()) {
    return fail(Errc::invalid_argument, "register_kv: region_bytes {} is under the {} bytes the layout needs",
                request.region_bytes, layout->region_bytes());
  }
  auto kv = std::make_shared<EngineKv>(EngineKv{*layout, {}, -1});
  for (std::size_t i = 0; i < fds.size(); ++i) {
    auto region = EngineRegion::map(std::move(fds[i]), request.region_bytes);
    if (!region) return fail(region.error().code, "register_kv: region {}: {}", i, region.error().message);
    kv->regions.push_back(std::move(*region));
  }
  if (options_.prefault_engine_regions) {
    // The pages the engine wrote are mapped into the daemon's mapping in the
    // background, so that its first offload and onboard copy at memory speed.
    if (!engine_prefault_) engine_prefault_ = std::make_unique<EnginePrefault>();
    std::vector<std::pair<std::byte*, std::uint64_t>> ranges;
    ranges.reserve(kv->regions.size());
    for (const auto& region : kv->regions) ranges.emplace_back(region->data(), region->size());
    engine_prefault_->add(std::weak_ptr<const void>(kv), std::move(ranges));
  }
  return kv;
}

LookupResult BlockService::lookup(LayoutPool& pool, std::uint64_t salt, std::span<const std::uint64_t> hashes) {
  std::vector<SequenceHash> keys;
  keys.reserve(hashes.size());
  for (auto hash : hashes) keys.push_back(salted_key(hash, salt));
  auto match = pool.manager->lookup(keys);
  LookupResult out;
  out.matched = match.matched();
  out.g1_blocks = match.g1_blocks;
  out.g2_blocks = match.g2_blocks;
  out.g3_blocks = match.g3_blocks;
  out.leases = std::move(match.leases);
  if (remote_ != nullptr && out.matched < keys.size()) {
    // The prefix goes on through blocks other workers hold and, after them,
    // blocks held here again (a conversation whose turns were served by
    // different workers: its blocks alternate between them). It ends at the
    // first block held nowhere.
    const std::span<const SequenceHash> rest = std::span(keys).subspan(out.matched);
    std::size_t at = 0;
    while (at < rest.size()) {
      const std::uint32_t remote = remote_->remote_prefix(pool, rest.subspan(at));
      out.g4_blocks += remote;
      at += remote;
      if (remote == 0 || at == rest.size()) break;
      const std::uint32_t here = pool.manager->peek(rest.subspan(at));
      out.local_after_remote += here;
      at += here;
      if (here == 0) break;
    }
  }
  return out;
}

std::vector<proto::WorkerPrefix> BlockService::locate(const LayoutPool& pool, std::uint64_t salt,
                                                      std::span<const std::uint64_t> hashes) const {
  std::vector<SequenceHash> keys;
  keys.reserve(hashes.size());
  for (auto hash : hashes) keys.push_back(salted_key(hash, salt));
  std::vector<proto::WorkerPrefix> out;
  out.push_back({remote_ != nullptr ? remote_->worker_name() : std::string(), pool.manager->peek(keys)});
  if (remote_ != nullptr) {
    auto members = remote_->member_prefixes(pool, keys);
    out.insert(out.end(), std::make_move_iterator(members.begin()), std::make_move_iterator(members.end()));
  }
  return out;
}

Status BlockService::check_items(const EngineKv& kv, std::span<const proto::OffloadItem> items) const {
  if (items.empty()) return fail(Errc::invalid_argument, "offload: items is empty");
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].engine_block.value() >= kv.layout.num_blocks()) {
      return fail(Errc::invalid_argument, "offload: items[{}].engine_block {} is out of range (num_blocks {})", i,
                  items[i].engine_block, kv.layout.num_blocks());
    }
  }
  return kvb::ok();
}

Status BlockService::check_fits(const LayoutPool& pool, std::uint64_t salt, std::span<const proto::OffloadItem> items,
                                bool starts_now) const {
  const TierCounters g2 = pool.manager->counters().tier(Tier::g2);
  // Free and evictable blocks are there now: the common case stops here.
  if (items.size() <= std::uint64_t{g2.free} + g2.inactive) return kvb::ok();
  // The new blocks: hashes not held yet, each once (as start_offload counts them).
  std::unordered_set<SequenceHash> fresh;
  for (const auto& item : items) {
    const SequenceHash key = salted_key(item.hash, salt);
    if (pool.manager->peek(std::span(&key, 1)) == 0) fresh.insert(key);
  }
  if (fresh.size() > g2.capacity) {
    return fail(Errc::out_of_capacity, "offload: {} new blocks can never fit a host pool of {} blocks", fresh.size(),
                g2.capacity);
  }
  // Started now, the offload allocates now: it fits iff free + evictable
  // blocks cover it (blocks leased by other requests are not evictable).
  if (starts_now && fresh.size() > std::uint64_t{g2.free} + g2.inactive) {
    return fail(Errc::out_of_capacity,
                "offload: {} new blocks do not fit: the host pool has {} free and {} evictable blocks now ({} of {} "
                "leased by lookups' pins and requests in flight)",
                fresh.size(), g2.free, g2.inactive, g2.leased, g2.capacity);
  }
  return kvb::ok();
}

Status BlockService::check_items(const EngineKv& kv, std::span<const proto::OnboardItem> items) const {
  if (items.empty()) return fail(Errc::invalid_argument, "onboard: items is empty");
  std::unordered_set<std::uint32_t> targets;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto block = items[i].engine_block.value();
    if (block >= kv.layout.num_blocks()) {
      return fail(Errc::invalid_argument, "onboard: items[{}].engine_block {} is out of range (num_blocks {})", i,
                  block, kv.layout.num_blocks());
    }
    if (!targets.insert(block).second) {
      return fail(Errc::invalid_argument, "onboard: items[{}].engine_block {} appears twice", i, block);
    }
  }
  return kvb::ok();
}

void BlockService::submit(TransferPlan plan, int device, std::function<void(Status)> on_loop) {
  auto engine = options_.select ? options_.select(plan.src().kind(), plan.dst().kind(), device)
                                : select_engine(engines_, plan.src().kind(), plan.dst().kind(), device);
  if (!engine) {
    boost::asio::post(io_, [on_loop = std::move(on_loop), error = engine.error()] { on_loop(tl::unexpected(error)); });
    return;
  }
  ++copies_in_flight_;
  async_copy(**engine, std::move(plan),
             boost::asio::bind_executor(io_, [this, on_loop = std::move(on_loop)](Status status) {
               --copies_in_flight_;
               on_loop(std::move(status));
             }));
}

void BlockService::start_offload(LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
                                 const std::vector<proto::OffloadItem>& items, std::shared_ptr<OpControl> control,
                                 Done done, std::optional<std::uint64_t> first_parent) {
  auto finish_later = [this, &done](Status status) {
    boost::asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  BlockManager& manager = *pool.manager;
  std::vector<SequenceHash> keys;
  std::vector<std::optional<SequenceHash>> parents;  // items are a chain: each extends the one before
  std::vector<BlockId> sources;
  std::unordered_set<SequenceHash> seen;
  std::optional<SequenceHash> previous;
  if (first_parent) previous = salted_key(*first_parent, salt);
  for (const auto& item : items) {
    const SequenceHash key = salted_key(item.hash, salt);
    const auto parent = std::exchange(previous, key);
    if (!seen.insert(key).second) continue;
    if (manager.peek(std::span(&key, 1)) > 0) continue;  // already held: nothing to copy
    keys.push_back(key);
    parents.push_back(parent);
    sources.push_back(item.engine_block);
  }
  if (keys.empty()) return finish_later(kvb::ok());
  auto leases = manager.allocate(Tier::g2, static_cast<std::uint32_t>(keys.size()));
  if (!leases) return finish_later(tl::unexpected(leases.error()));
  std::vector<BlockPair> pairs;
  pairs.reserve(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) pairs.push_back(BlockPair{sources[i], (*leases)[i].block()});
  auto plan = TransferPlan::build(kv->space(), manager.pool(Tier::g2).space(), pairs);
  if (!plan) return finish_later(tl::unexpected(plan.error()));
  const std::uint64_t bytes = plan->total_bytes();
  auto held = std::make_shared<BlockLeases>(std::move(*leases));
  const int device = kv->device;
  submit(std::move(*plan), device,
         [this, &pool, &manager, held, keys = std::move(keys), parents = std::move(parents), kv = std::move(kv),
          control = std::move(control), done = std::move(done), bytes](Status status) {
           if (!status) return done(fail(status.error().code, "offload copy failed: {}", status.error().message));
           if (control->cancelled) {
             spdlog::debug("offload copy of a request that already ended finished: {} blocks discarded", keys.size());
             return done(fail(Errc::cancelled, "offload cancelled"));
           }
           for (std::size_t i = 0; i < keys.size(); ++i) {
             auto committed = manager.commit((*held)[i], keys[i], parents[i]);
             if (!committed && committed.error().code != Errc::already_exists) return done(committed);
             if (committed && integrity_.enabled) sum_host_block(pool, (*held)[i]);
           }
           moved_.offload += bytes;
           held->release();  // registered blocks become inactive (matchable, evictable)
           done(kvb::ok());
         });
}

void BlockService::start_onboard(LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
                                 std::vector<proto::OnboardItem> items, OnboardProgress progress,
                                 std::shared_ptr<OpControl> control, Done done, std::vector<std::uint8_t> looked_up) {
  auto finish_later = [this, &done](Status status) {
    boost::asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  BlockManager& manager = *pool.manager;
  auto held = std::make_shared<BlockLeases>();
  held->reserve(items.size());
  std::vector<BlockPair> pairs;
  pairs.reserve(items.size());
  std::vector<std::size_t> on_disk;  // items whose block is only in G3
  // Hashes this daemon does not hold: fetched from other workers first.
  std::vector<std::size_t> missing;
  std::vector<SequenceHash> missing_keys;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const SequenceHash key = salted_key(items[i].hash, salt);
    // An item the session's lookup counted is no new use: the lookup
    // (unpinned) released it, this leases it again for the same request.
    const bool counted = i < looked_up.size() && looked_up[i] != 0;
    auto match = manager.lookup(std::span(&key, 1), counted ? LookupUse::same_request : LookupUse::new_request);
    if (match.matched() == 0) {
      if (remote_ == nullptr) {
        return finish_later(
            fail(Errc::not_found, "onboard: items[{}].hash {:#018x} is not held by the daemon", i, items[i].hash));
      }
      missing.push_back(i);
      missing_keys.push_back(key);
      pairs.push_back(BlockPair{BlockId{0}, items[i].engine_block});  // source set by the fetch
      held->push_back(BlockLease{});                                  // filled by the fetch
      continue;
    }
    if (match.leases[0].tier() == Tier::g3) on_disk.push_back(i);
    pairs.push_back(BlockPair{match.leases[0].block(), items[i].engine_block});
    held->push_back(std::move(match.leases[0]));
  }
  if (missing.empty()) {
    return read_disk_then_copy(pool, std::move(kv), std::move(held), std::move(pairs), std::move(items),
                               std::move(on_disk), std::move(progress), std::move(control), std::move(done));
  }
  auto op = std::make_shared<RemoteOnboard>(RemoteOnboard{
      std::move(kv), std::move(held), std::move(pairs), std::move(items), std::move(on_disk), std::move(missing),
      std::move(missing_keys), std::move(progress), std::move(control), std::move(done)});
  // Not kept here and on this host: read in place by the copy into the
  // engine (one copy instead of two; host engine memory only).
  if (op->kv->device < 0 && remote_->can_borrow(pool, op->missing_keys)) return borrow_then_copy(pool, std::move(op));
  // Not kept here: straight into the engine where it can be.
  if (fetch_into_engine(pool, op)) return;
  fetch_then_copy(pool, std::move(op));
}

void BlockService::read_disk_then_copy(LayoutPool& pool, std::shared_ptr<EngineKv> kv,
                                       std::shared_ptr<BlockLeases> held, std::vector<BlockPair> pairs,
                                       std::vector<proto::OnboardItem> items, std::vector<std::size_t> on_disk,
                                       OnboardProgress progress, std::shared_ptr<OpControl> control, Done done,
                                       std::shared_ptr<Borrowed> borrowed) {
  if (on_disk.empty()) {
    return copy_to_engine(pool, kv, std::move(held), std::move(pairs), std::move(progress), std::move(control),
                          std::move(done), std::move(borrowed));
  }
  // Read the disk blocks into G2 first (each checked), then copy from G2.
  std::vector<BlockLease> g3;
  g3.reserve(on_disk.size());
  for (std::size_t i : on_disk) g3.push_back(std::move((*held)[i]));
  auto promoted =
      pool.manager->promote(g3, [this, &pool, kv = std::move(kv), held, pairs = std::move(pairs), on_disk,
                                 items = std::move(items), progress = std::move(progress), control = std::move(control),
                                 done, borrowed](std::vector<Result<BlockLease>> results) mutable {
        for (std::size_t k = 0; k < results.size(); ++k) {
          const std::size_t i = on_disk[k];
          if (!results[k]) {
            held->release();
            return done(fail(Errc::not_found,
                             "onboard: items[{}].hash {:#018x}: its disk copy is unusable ({}); "
                             "it was dropped",
                             i, items[i].hash, results[k].error().message));
          }
          pairs[i].src = results[k]->block();
          if (integrity_.enabled) sum_host_block(pool, *results[k]);  // checked against the disk sums just now
          (*held)[i] = std::move(*results[k]);
        }
        if (control->cancelled) {
          held->release();
          return done(fail(Errc::cancelled, "onboard cancelled"));
        }
        copy_to_engine(pool, kv, std::move(held), std::move(pairs), std::move(progress), std::move(control),
                       std::move(done), std::move(borrowed));
      });
  // The G3 leases are pinned by the promote now (or it failed).
  g3.clear();
  if (!promoted) {
    held->release();
    boost::asio::post(io_, [done = std::move(done), error = promoted.error()] {
      done(fail(error.code, "onboard: reading from disk: {}", error.message));
    });
  }
}

void BlockService::sum_host_block(LayoutPool& pool, const BlockLease& lease) {
  const Pool& g2 = pool.manager->pool(Tier::g2);
  auto hash = pool.manager->hash_of(lease);
  if (!hash) return;
  pool.host_sums[lease.block().value()] = LayoutPool::HostSum{
      *hash, storage::payload_checksum({g2.block_data(lease.block()), g2.layout().block_bytes()}), true};
  ++integrity_.summed;
}

bool BlockService::verify_host_block(LayoutPool& pool, const BlockLease& lease) {
  const Pool& g2 = pool.manager->pool(Tier::g2);
  const auto hash = pool.manager->hash_of(lease);
  const LayoutPool::HostSum& entry = pool.host_sums[lease.block().value()];
  if (!hash || !entry.set || entry.hash != *hash) {
    ++integrity_.unchecked;
    return true;
  }
  ++integrity_.checked;
  if (storage::payload_checksum({g2.block_data(lease.block()), g2.layout().block_bytes()}) == entry.sum) return true;
  ++integrity_.failures;
  spdlog::warn("host block {} (G2 block {}) no longer matches the checksum taken when it was stored: dropped", *hash,
               lease.block());
  (void)pool.manager->drop(lease);
  return false;
}

void BlockService::copy_to_engine(LayoutPool& pool, const std::shared_ptr<EngineKv>& kv,
                                  std::shared_ptr<BlockLeases> held, std::vector<BlockPair> pairs,
                                  OnboardProgress progress, std::shared_ptr<OpControl> control, Done done,
                                  std::shared_ptr<Borrowed> borrowed) {
  auto finish_later = [this, &done, &held](Status status) {
    held->release();
    boost::asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  if (integrity_.enabled) {
    for (std::size_t i = 0; i < held->size(); ++i) {
      if (!(*held)[i] || verify_host_block(pool, (*held)[i])) continue;  // empty: borrowed
      held->release();
      return boost::asio::post(io_, [done = std::move(done), i] {
        done(fail(Errc::not_found, "onboard: items[{}]: its host copy failed its checksum; it was dropped", i));
      });
    }
  }
  // The G2 plan copies the items held here: not the borrowed ones (each
  // source's plan copies those) nor a fetched part already copied while the
  // next was fetched (fetch_part: its lease ended with that copy).
  if (std::any_of(held->begin(), held->end(), [](const BlockLease& l) { return !l; })) {
    std::vector<BlockPair> local;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      if ((*held)[i]) local.push_back(pairs[i]);
    }
    pairs = std::move(local);
  }
  // One plan per layer group and source (G2, and each borrowed holder's
  // mapping), all submitted now: the engine runs them in order on one
  // stream (CUDA) or side by side (host workers); LayerGroups announces
  // the groups in layer order whatever order they finish in.
  auto groups = std::make_shared<LayerGroups>(kv->layout.spec().num_layers, progress.layers_per_group);
  std::vector<std::vector<TransferPlan>> plans(groups->size());
  std::uint64_t bytes = 0;
  auto add = [&](std::size_t g, const BlockSpace& src, std::span<const BlockPair> with) -> Status {
    if (with.empty() && borrowed) return kvb::ok();  // (without, an empty onboard still runs its one plan)
    auto plan = TransferPlan::build(src, kv->space(), with, groups->range(g));
    if (!plan) return tl::unexpected(plan.error());
    bytes += plan->total_bytes();
    plans[g].push_back(std::move(*plan));
    return kvb::ok();
  };
  for (std::size_t g = 0; g < groups->size(); ++g) {
    if (auto st = add(g, pool.manager->pool(Tier::g2).space(), pairs); !st) return finish_later(st);
    for (std::size_t s = 0; borrowed && s < borrowed->pairs.size(); ++s) {
      if (auto st = add(g, borrowed->blocks->sources[s].space, borrowed->pairs[s]); !st) return finish_later(st);
    }
  }
  // A group ends when its last plan ends; a group read from borrowed
  // blocks counts only if it ended while their pins held.
  struct Group {
    std::size_t left = 0;
    Status status = kvb::ok();
  };
  auto parts = std::make_shared<std::vector<Group>>(groups->size());
  for (std::size_t g = 0; g < plans.size(); ++g) (*parts)[g].left = plans[g].size();
  auto announce = std::make_shared<std::function<void(LayerRange)>>(std::move(progress.announce));
  auto shared_done = std::make_shared<Done>(std::move(done));
  const int device = kv->device;
  auto group_ended = [this, groups, parts, announce, held, kv, control, shared_done, bytes, borrowed](
                         std::size_t g, const Status& status) {
    Group& part = (*parts)[g];
    if (!status && part.status) part.status = status;
    if (--part.left > 0) return;
    if (part.status && borrowed && std::chrono::steady_clock::now() >= borrowed->blocks->valid_until) {
      part.status = fail(Errc::timeout, "the remote blocks' pins expired before the copy ended");
    }
    const bool all_ended = groups->finish(g, part.status, [&](LayerRange range) {
      if (!control->cancelled && *announce) (*announce)(range);
    });
    if (!all_ended) return;
    const std::size_t sources = held->size();
    held->release();                        // no copy reads the G2 blocks any more
    if (borrowed) borrowed->blocks->end();  // nor the borrowed ones
    if (const auto& error = groups->error())
      return (*shared_done)(fail(error->code, "onboard copy failed: {}", error->message));
    if (control->cancelled) {
      spdlog::debug("onboard copy of a request that already ended finished: {} source leases ended", sources);
      return (*shared_done)(fail(Errc::cancelled, "onboard cancelled"));
    }
    moved_.onboard += bytes;
    (*shared_done)(kvb::ok());
  };
  for (std::size_t g = 0; g < plans.size(); ++g) {
    for (auto& plan : plans[g]) {
      submit(std::move(plan), device, [group_ended, g](const Status& status) { group_ended(g, status); });
    }
  }
}

TierCounters BlockService::g2_counters() const {
  TierCounters sum = reclaimed_g2_;  // hits and evictions only
  for (const auto& pool : pools_) sum += pool->manager->counters().tier(Tier::g2);
  return sum;
}

nlohmann::ordered_json integrity_json(const HostIntegrity& i) {
  nlohmann::ordered_json j;
  j["check_host_blocks"] = i.enabled;
  j["host_blocks_summed"] = i.summed;
  j["host_blocks_checked"] = i.checked;
  j["host_blocks_unchecked"] = i.unchecked;
  j["host_checksum_failures"] = i.failures;
  return j;
}

namespace {

/// `pool`'s disk tier (not enabled when it has none).
DiskTotals disk_of(const LayoutPool& pool) {
  DiskTotals t;
  if (!pool.store) return t;
  t.enabled = true;
  t.backend = std::string(pool.store->name());
  const auto c = pool.manager->counters();
  t.tier = c.tier(Tier::g3);
  t.writebacks = c.g3_writes;
  t.writeback_failures = c.g3_write_failures;
  t.writebacks_skipped = c.g3_writes_skipped;
  t.admission_rejects = c.g3_admission_rejects;
  t.promotes = c.promotes;
  t.promote_failures = c.promote_failures;
  t.io = pool.store->counters();
  t.bytes_capacity = std::uint64_t{pool.store->slot_count()} * pool.store->block_bytes();
  return t;
}

}  // namespace

DiskTotals BlockService::disk_totals() const {
  DiskTotals t = reclaimed_disk_;  // event counters only
  for (const auto& pool : pools_) t += disk_of(*pool);
  return t;
}

void BlockService::retire_counters(const LayoutPool& pool) {
  const TierCounters g2 = pool.manager->counters().tier(Tier::g2);
  reclaimed_g2_.hits += g2.hits;
  reclaimed_g2_.evictions += g2.evictions;  // its registered blocks are dropped, not counted as evictions
  DiskTotals disk = disk_of(pool);
  if (!disk.enabled) return;
  // The slot file keeps its blocks (a later pool of the shape reopens it):
  // only the event counters carry over, the gauges leave with the store.
  TierCounters events;
  events.hits = disk.tier.hits;
  events.evictions = disk.tier.evictions;
  disk.tier = events;
  disk.io.writes_in_flight = 0;
  disk.io.reads_in_flight = 0;
  disk.io.io_queue_depth = 0;
  disk.bytes_capacity = 0;
  reclaimed_disk_ += disk;
}

}  // namespace kvb::daemon
