#include "block_service.h"

#include <unordered_set>

#include <spdlog/spdlog.h>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

#include "device_kv.h"
#include "kvb/common/mix64.h"
#include "kvb/kernels/async_copy.h"
#include "layer_groups.h"

namespace kvb::daemon {

// Host pools start at a kHugePageBytes boundary, so every alignment a layout
// may ask for holds for their blocks.
static_assert(kMaxAlignment <= kHugePageBytes);

namespace {
/// "kvblockd" in ASCII: keeps the tenant key stream apart from other uses of mix64.
constexpr std::uint64_t kTenantKeyDomain = 0x6b76626c6f636b64ULL;
}  // namespace

SequenceHash salted_key(std::uint64_t client_hash, std::uint64_t tenant_salt) noexcept {
  // The hash xor a key derived from the salt: a bijection of the hash for a
  // given salt, so two hashes of one tenant never collide with each other.
  return SequenceHash{client_hash ^ mix64(tenant_salt ^ kTenantKeyDomain)};
}

BlockSpace EngineKv::space() const {
  BlockSpace out{layout, {}};
  out.regions.reserve(regions.size());
  for (const auto& region : regions) out.regions.push_back(RegionSpan::of(*region));
  return out;
}

BlockService::BlockService(boost::asio::io_context& io, CopyEngines& engines, BlockServiceOptions options)
    : io_(io), engines_(engines), options_(std::move(options)) {}

BlockService::~BlockService() = default;

Result<LayoutPool*> BlockService::attach_layout(const proto::WireLayout& wire) {
  auto valid = proto::to_spec(wire);
  if (!valid) return tl::unexpected(valid.error());
  const LayoutSpec spec = *valid;
  for (auto& pool : pools_) {
    if (pool->spec.same_block_shape(spec)) return pool.get();
  }
  if (pools_.size() >= options_.max_layouts) {
    return fail(Errc::out_of_capacity, "{} distinct block layouts are served already (max_layouts {})", pools_.size(),
                options_.max_layouts);
  }
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
  auto layout = Layout::make(spec, LayoutKind::fully_contiguous,
                             static_cast<std::uint32_t>(std::min<std::uint64_t>(blocks, 0xFFFFFFFFULL)));
  if (!layout) return tl::unexpected(layout.error());
  auto region = HostRegion::create(layout->region_bytes(), "kvblockd-g2");
  if (!region) return tl::unexpected(region.error());
  std::unique_ptr<MemoryRegion> pin;
  if (options_.pin) {
    auto pinned = options_.pin((*region)->data(), (*region)->size());
    if (pinned) {
      pin = std::move(*pinned);
      ++pinned_pools_;
    } else {
      if (pin_failures_++ == 0)
        spdlog::warn(
            "G2 host pool of {} bytes could not be pinned ({}); copies between it and device memory go "
            "through the staged engine's pinned bounce buffer (slower). Logged once.",
            (*region)->size(), pinned.error().message);
    }
  }
  auto pool = Pool::make(PoolId{static_cast<std::uint32_t>(pools_.size() + 1)}, *layout,
                         std::make_unique<HostPoolRegion>(std::move(*region), std::move(pin)));
  if (!pool) return tl::unexpected(pool.error());
  BlockManagerConfig config;
  config.g2.pool = std::move(*pool);
  auto manager = BlockManager::make(std::move(config));
  if (!manager) return tl::unexpected(manager.error());
  auto entry = std::make_unique<LayoutPool>();
  entry->spec = spec;
  entry->manager = std::move(*manager);
  pools_.push_back(std::move(entry));
  return pools_.back().get();
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
  out.leases = std::move(match.leases);
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
                                 std::vector<proto::OffloadItem> items, std::shared_ptr<OpControl> control, Done done) {
  auto finish_later = [this, &done](Status status) {
    boost::asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  BlockManager& manager = *pool.manager;
  std::vector<SequenceHash> keys;
  std::vector<BlockId> sources;
  std::unordered_set<SequenceHash> seen;
  for (const auto& item : items) {
    const SequenceHash key = salted_key(item.hash, salt);
    if (!seen.insert(key).second) continue;
    if (manager.peek(std::span(&key, 1)) > 0) continue;  // already held: nothing to copy
    keys.push_back(key);
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
         [this, &manager, held, keys = std::move(keys), kv = std::move(kv), control = std::move(control),
          done = std::move(done), bytes](Status status) {
           if (!status) return done(fail(status.error().code, "offload copy failed: {}", status.error().message));
           if (control->cancelled) {
             spdlog::debug("offload copy of a request that already ended finished: {} blocks discarded", keys.size());
             return done(fail(Errc::cancelled, "offload cancelled"));
           }
           for (std::size_t i = 0; i < keys.size(); ++i) {
             auto committed = manager.commit((*held)[i], keys[i]);
             if (!committed && committed.error().code != Errc::already_exists) return done(committed);
           }
           moved_.offload += bytes;
           held->release();  // registered blocks become inactive (matchable, evictable)
           done(kvb::ok());
         });
}

void BlockService::start_onboard(LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
                                 std::vector<proto::OnboardItem> items, OnboardProgress progress,
                                 std::shared_ptr<OpControl> control, Done done) {
  auto finish_later = [this, &done](Status status) {
    boost::asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  BlockManager& manager = *pool.manager;
  auto held = std::make_shared<BlockLeases>();
  held->reserve(items.size());
  std::vector<BlockPair> pairs;
  pairs.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const SequenceHash key = salted_key(items[i].hash, salt);
    auto match = manager.lookup(std::span(&key, 1));
    if (match.matched() == 0) {
      return finish_later(
          fail(Errc::not_found, "onboard: items[{}].hash {:#018x} is not held by the daemon", i, items[i].hash));
    }
    pairs.push_back(BlockPair{match.leases[0].block(), items[i].engine_block});
    held->push_back(std::move(match.leases[0]));
  }
  // One plan per layer group, all submitted now: the engine runs them in
  // order on one stream (CUDA) or side by side (host workers); LayerGroups
  // announces the groups in layer order whatever order they finish in.
  auto groups = std::make_shared<LayerGroups>(kv->layout.spec().num_layers, progress.layers_per_group);
  std::vector<TransferPlan> plans;
  plans.reserve(groups->size());
  std::uint64_t bytes = 0;
  for (std::size_t g = 0; g < groups->size(); ++g) {
    auto plan = TransferPlan::build(manager.pool(Tier::g2).space(), kv->space(), pairs, groups->range(g));
    if (!plan) return finish_later(tl::unexpected(plan.error()));
    bytes += plan->total_bytes();
    plans.push_back(std::move(*plan));
  }
  auto announce = std::make_shared<std::function<void(LayerRange)>>(std::move(progress.announce));
  auto shared_done = std::make_shared<Done>(std::move(done));
  const int device = kv->device;
  for (std::size_t g = 0; g < plans.size(); ++g) {
    submit(std::move(plans[g]), device,
           [this, g, groups, announce, held, kv, control, shared_done, bytes](Status status) {
             const bool all_ended = groups->finish(g, status, [&](LayerRange range) {
               if (!control->cancelled && *announce) (*announce)(range);
             });
             if (!all_ended) return;
             const std::size_t sources = held->size();
             held->release();  // no copy reads the G2 blocks any more
             if (const auto& error = groups->error())
               return (*shared_done)(fail(error->code, "onboard copy failed: {}", error->message));
             if (control->cancelled) {
               spdlog::debug("onboard copy of a request that already ended finished: {} source leases ended", sources);
               return (*shared_done)(fail(Errc::cancelled, "onboard cancelled"));
             }
             moved_.onboard += bytes;
             (*shared_done)(kvb::ok());
           });
  }
}

TierCounters BlockService::g2_counters() const {
  TierCounters sum;
  for (const auto& pool : pools_) sum += pool->manager->counters().tier(Tier::g2);
  return sum;
}

}  // namespace kvb::daemon
