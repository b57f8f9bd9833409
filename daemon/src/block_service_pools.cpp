// The BlockService's host pools (docs/architecture.md, "In the daemon:
// engines' KV caches, pools, engines"): one G2 pool per block shape, joined
// by every engine of that shape; a new shape's pool is built off the event
// loop (allocated, pinned when asked, its BlockManager made) and installed
// on it; an idle pool is reclaimed (retired, then freed on the reaper
// thread) when max_layouts is reached.
#include <algorithm>
#include <cstdlib>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>

#include "block_service.h"
#include "kvb/common/page_populate.h"

namespace kvb::daemon {

LayoutPool* BlockService::join_pool(const LayoutSpec& spec) {
  for (auto& pool : pools_) {
    if (pool->spec.same_block_shape(spec)) {
      ++pool->sessions;
      return pool.get();
    }
  }
  return nullptr;
}

Result<LayoutPool*> BlockService::attach_layout(const proto::WireLayout& wire) {
  auto valid = proto::to_spec(wire);
  if (!valid) return tl::unexpected(valid.error());
  const LayoutSpec spec = *valid;
  if (LayoutPool* pool = join_pool(spec)) return pool;
  auto shape = make_room(spec);
  if (!shape) return tl::unexpected(shape.error());
  auto pool = add_pool(spec, *shape);
  if (pool) ++(*pool)->sessions;
  return pool;
}

void BlockService::attach_layout_async(const proto::WireLayout& wire, Attached done) {
  auto valid = proto::to_spec(wire);
  if (!valid) return done(tl::unexpected(valid.error()));
  const LayoutSpec spec = *valid;
  if (LayoutPool* pool = join_pool(spec)) return done(pool);
  for (auto& pending : building_) {  // its pool is being built: wait for it
    if (pending.spec.same_block_shape(spec)) {
      pending.waiters.push_back(std::move(done));
      return;
    }
  }
  auto shape = make_room(spec);
  if (!shape) return done(tl::unexpected(shape.error()));
  auto build = prepare_pool(spec, *shape);
  if (!build) return done(tl::unexpected(build.error()));
  spdlog::info("host pool {}: building it for a new block shape ({} blocks of {} bytes) off the event loop",
               build->number, build->blocks, build->spec.block_bytes());
  building_.push_back(Building{spec, {}});
  building_.back().waiters.push_back(std::move(done));
  // The build runs on the pool thread; its result comes back through the
  // loop (dropped, and the pool with it, if this service is gone by then).
  auto job = std::make_shared<PoolBuild>(std::move(*build));
  builder_.post([this, job, alive = std::weak_ptr<bool>(alive_)] {
    Status built = build_pool(*job);
    boost::asio::post(io_, [this, job, built = std::move(built), alive]() mutable {
      if (alive.expired()) return;
      finish_build(std::move(*job), std::move(built));
    });
  });
}

void BlockService::finish_build(PoolBuild build, Status built) {
  auto at = std::find_if(building_.begin(), building_.end(),
                         [&](const Building& b) { return b.spec.same_block_shape(build.entry->spec); });
  std::vector<Attached> waiters;
  if (at != building_.end()) {
    waiters = std::move(at->waiters);
    building_.erase(at);
  }
  Result<LayoutPool*> pool =
      built ? install_pool(std::move(build)) : Result<LayoutPool*>(tl::unexpected(built.error()));
  for (auto& waiter : waiters) {
    if (pool) ++(*pool)->sessions;
    waiter(pool);
  }
}

Result<BlockService::PoolShape> BlockService::make_room(const LayoutSpec& spec) {
  // A shape that can never get a pool is refused before any pool is
  // reclaimed for it.
  auto shape = pool_shape(spec);
  if (!shape) return shape;
  if (pools_.size() + building_.size() >= options_.max_layouts) {
    if (auto freed = reclaim_idle_pool(); !freed) return tl::unexpected(freed.error());
  }
  return shape;
}

void BlockService::detach_layout(LayoutPool& pool) noexcept {
  if (pool.sessions == 0) return;
  if (--pool.sessions == 0) pool.idle_since = std::chrono::steady_clock::now();
}

bool BlockService::reclaimable(const LayoutPool& pool) const {
  // With a cluster on, peers hold the pool's UCX registration and index its
  // blocks: the cluster must withdraw it from them first (pool_retiring).
  if ((remote_ != nullptr || observer_.pool_created) && !observer_.pool_retiring) return false;
  if (pool.sessions != 0) return false;
  const BlockManagerCounters counters = pool.manager->counters();
  if (counters.transfers_in_flight != 0) return false;
  for (const TierCounters& tier : counters.tiers) {
    if (tier.leased != 0 || tier.partial != 0 || tier.in_transfer != 0) return false;
  }
  return true;
}

Status BlockService::reclaim_idle_pool() {
  auto victim = pools_.end();
  std::uint32_t attached = 0;
  std::uint32_t busy = 0;
  for (auto it = pools_.begin(); it != pools_.end(); ++it) {
    if ((*it)->sessions != 0) {
      ++attached;
    } else if (!reclaimable(**it)) {
      ++busy;
    } else if (victim == pools_.end() || (*it)->idle_since < (*victim)->idle_since) {
      victim = it;
    }
  }
  if (victim == pools_.end()) {
    const bool unwithdrawable = (remote_ != nullptr || observer_.pool_created) && !observer_.pool_retiring;
    const std::string idle =
        unwithdrawable ? fmt::format("{} idle, not reclaimed while the cluster is on (peers hold this worker's pools)",
                                     pools_.size() - attached)
                       : fmt::format(
                             "{} idle but still busy (leased blocks, copies or disk transfers in flight, fetches "
                             "served to peers)",
                             busy);
    return fail(Errc::out_of_capacity,
                "{} distinct block layouts are served already (max_layouts {}): {} in use by sessions, {}",
                pools_.size(), options_.max_layouts, attached, idle);
  }
  LayoutPool& pool = **victim;
  const TierCounters g2 = pool.manager->counters().tier(Tier::g2);
  retire_counters(pool);
  spdlog::info(
      "host pool {} (blocks of {} bytes, {} registered) reclaimed: no session used it for {} s and a new block shape "
      "needs its slot (max_layouts {}){}",
      pool.number, pool.spec.block_bytes(), g2.registered,
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - pool.idle_since).count(),
      options_.max_layouts, pool.store ? "; its disk slot file is closed, its blocks stay on disk" : "");
  // Peers drop its blocks from their index and forget its UCX registration
  // (released here, before the memory it covers is unmapped).
  if (observer_.pool_retiring) observer_.pool_retiring(pool);
  if (pool.manager->pool(Tier::g2).region().kind() == MemoryKind::host_pinned) --pinned_pools_;
  // Nothing of the loop refers to the pool from here on (nothing is in
  // flight: reclaimable()). Its teardown runs on the reaper's thread, since
  // it takes tens of ms (scripts/pool-stall.sh): the prefault thread is
  // stopped (it ends its chunk) and joined first (LayoutPool's member
  // order), then the manager (registry, policy) with its Pool, whose
  // HostPoolRegion unpins and unmaps the memfd (RSS returns), then the
  // disk store (its slot file closed, its lock released).
  std::shared_ptr<LayoutPool> retired(std::move(*victim));
  pools_.erase(victim);
  reaper_.post([retired = std::move(retired)]() mutable { retired.reset(); });
  ++layouts_reclaimed_;
  return kvb::ok();
}

Result<BlockService::PoolShape> BlockService::pool_shape(const LayoutSpec& wanted) const {
  LayoutSpec spec = wanted;
  // With a disk tier, host blocks start on 4 KiB so that disk reads land in
  // them directly (O_DIRECT).
  if (disk_.enabled()) spec.alignment = std::max<std::uint32_t>(spec.alignment, 4096);
  const std::uint64_t stride = (spec.block_bytes() + spec.alignment - 1) / spec.alignment * spec.alignment;
  const std::uint64_t blocks = options_.host_pool_bytes / stride;
  if (blocks == 0) {
    return fail(Errc::invalid_argument, "a block of {} bytes does not fit the host pool (host_pool_bytes {})",
                spec.block_bytes(), options_.host_pool_bytes);
  }
  if (blocks > options_.max_pool_blocks) {
    return fail(Errc::invalid_argument,
                "layout: blocks of {} bytes ({}-byte stride with alignment {}) would make a host pool of {} blocks, "
                "over max_pool_blocks {}; use larger blocks or a smaller host_pool_bytes",
                spec.block_bytes(), stride, spec.alignment, blocks, options_.max_pool_blocks);
  }
  return PoolShape{spec, blocks};
}

Result<LayoutPool*> BlockService::add_pool(const LayoutSpec& wanted, const PoolShape& shape) {
  auto build = prepare_pool(wanted, shape);
  if (!build) return tl::unexpected(build.error());
  if (auto built = build_pool(*build); !built) return tl::unexpected(built.error());
  return install_pool(std::move(*build));
}

Result<BlockService::PoolBuild> BlockService::prepare_pool(const LayoutSpec& wanted, const PoolShape& shape) {
  // A retiring pool may still hold the lock of the slot file this pool
  // would open (the same shape, reclaimed and wanted again at once).
  if (disk_.enabled() && reaper_.pending() != 0) reaper_.drain();
  PoolBuild build;
  build.spec = shape.spec;
  build.blocks = shape.blocks;
  build.number = next_pool_number_++;
  build.entry = std::make_unique<LayoutPool>();
  build.entry->spec = wanted;
  build.entry->number = build.number;
  build.entry->idle_since = std::chrono::steady_clock::now();
  if (!huge_pages_logged_) {
    huge_pages_logged_ = true;
    const ShmemHugePages huge = shmem_huge_pages();
    spdlog::info("host pools: transparent huge pages for shared memory: {}{}", huge.settings,
                 huge.page_bytes != 0 ? "; pools ask for them (MADV_HUGEPAGE)" : "; pools use 4 KiB pages");
  }
  if (disk_.enabled()) {
    auto store = disk_.open_store(build.spec);
    if (store) {
      build.entry->store = std::move(*store);
    } else {
      spdlog::error("disk tier: no G3 for block layout {}: {}", build.number, store.error().message);
    }
  }
  build.config.g2.policy = options_.eviction_policy;
  build.config.post = [&io = io_](std::function<void()> fn) { boost::asio::post(io, std::move(fn)); };
  build.config.on_registry_change = [this, at = build.entry.get()](Tier tier, SequenceHash hash, bool stored) {
    if (observer_.registry_changed) observer_.registry_changed(*at, tier, hash, stored);
  };
  if (build.entry->store) build.config.g3 = disk_.tier_config(*build.entry->store, PoolId{0x10000 + build.number});
  return build;
}

// May run on the pool thread: touches only `build` and what is read-only
// after start (options_, integrity_.enabled).
Status BlockService::build_pool(PoolBuild& build) {
  // Tests slow the build down to see the loop serve others meanwhile (a
  // fault injection: a real build cannot be made slow on demand).
  static const long inject_delay_ms = [] {
    const char* v = std::getenv("KVB_INJECT_POOL_BUILD_DELAY_MS");
    return v != nullptr ? std::strtol(v, nullptr, 10) : 0L;
  }();
  if (inject_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(inject_delay_ms));
  auto layout = Layout::make(build.spec, LayoutKind::fully_contiguous,
                             static_cast<std::uint32_t>(std::min<std::uint64_t>(build.blocks, 0xFFFFFFFFULL)));
  if (!layout) return tl::unexpected(layout.error());
  auto region = HostRegion::create(layout->region_bytes(), "kvblockd-g2");
  if (!region) return tl::unexpected(region.error());
  build.base = (*region)->data();
  build.region_bytes = (*region)->size();
  std::unique_ptr<MemoryRegion> pin;
  if (options_.pin) {
    auto pinned = options_.pin((*region)->data(), (*region)->size());
    if (pinned) {
      pin = std::move(*pinned);
    } else {
      build.pin_error = pinned.error().message;
    }
  }
  auto pool =
      Pool::make(PoolId{build.number}, *layout, std::make_unique<HostPoolRegion>(std::move(*region), std::move(pin)));
  if (!pool) return tl::unexpected(pool.error());
  build.config.g2.pool = std::move(*pool);
  auto manager = BlockManager::make(std::move(build.config));
  if (!manager) return tl::unexpected(manager.error());
  build.entry->manager = std::move(*manager);
  if (integrity_.enabled) build.entry->host_sums.resize(build.entry->manager->pool(Tier::g2).capacity());
  return kvb::ok();
}

LayoutPool* BlockService::install_pool(PoolBuild build) {
  if (build.entry->manager->pool(Tier::g2).region().kind() == MemoryKind::host_pinned) {
    ++pinned_pools_;
  } else if (options_.pin && pin_failures_++ == 0) {
    spdlog::warn(
        "G2 host pool of {} bytes could not be pinned ({}); copies between it and device memory go "
        "through the staged engine's pinned bounce buffer (slower). Logged once.",
        build.region_bytes, build.pin_error);
  }
  if (options_.prefault) {
    build.entry->prefault = std::make_unique<PoolPrefault>(io_, build.base, build.region_bytes,
                                                           fmt::format("G2 host pool {}", build.number));
  }
  pools_.push_back(std::move(build.entry));
  if (observer_.pool_created) observer_.pool_created(*pools_.back());
  return pools_.back().get();
}

}  // namespace kvb::daemon
