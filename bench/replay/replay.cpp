#include "replay.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "belady_policy.h"
#include "kvb/blockmgr/block_manager.h"
#include "kvb/blockmgr/host_region.h"
#include "replay_disk.h"

namespace kvb::bench {
namespace {

// Distinct blocks and the infinite-capacity hit count (the baseline).
void scan_unbounded(std::span<const TraceRequest> trace, ReplayResult& r) {
  std::unordered_set<std::uint64_t> seen;
  for (const auto& req : trace) {
    std::size_t m = 0;
    while (m < req.hash_ids.size() && seen.contains(req.hash_ids[m])) ++m;
    r.unbounded_hit_blocks += m;
    seen.insert(req.hash_ids.begin(), req.hash_ids.end());
  }
  r.distinct_blocks = seen.size();
}

Result<std::unique_ptr<Pool>> make_pool(PoolId id, std::uint32_t blocks, std::uint32_t block_tokens) {
  // One byte per token: the replay measures bookkeeping, not bandwidth, but
  // the pools and the write-back / onboard copies are real.
  LayoutSpec spec;
  spec.num_layers = 1;
  spec.outer_dim = 1;
  spec.page_size = block_tokens;
  spec.inner_dim = 1;
  spec.dtype = DType::u8;
  spec.alignment = 64;
  auto layout = Layout::make(spec, LayoutKind::fully_contiguous, blocks);
  if (!layout) return tl::unexpected(layout.error());
  auto region = HostRegion::create(layout->region_bytes(), fmt::format("kvb-replay-pool-{}", id));
  if (!region) return tl::unexpected(region.error());
  return Pool::make(id, *layout, std::move(*region));
}

// Blocks for a capacity in tokens; never more than the trace can fill.
Result<std::uint32_t> capacity_blocks(std::uint64_t tokens, std::uint32_t block_tokens, std::uint64_t distinct,
                                      std::string_view flag) {
  const std::uint64_t want = tokens == 0 ? distinct : tokens / block_tokens;
  if (want == 0)
    return fail(Errc::invalid_argument, "{} {} is smaller than one block of {} tokens", flag, tokens, block_tokens);
  return static_cast<std::uint32_t>(std::min<std::uint64_t>({want, std::max<std::uint64_t>(distinct, 1), 1U << 30}));
}

// Promotes the G3 leases among by_position[0, m) into G2 (waiting on the
// disk's completions); a block that fails its read stays a G3 lease.
Status promote_from_disk(BlockManager& bm, ReplayDisk& disk, std::vector<BlockLease>& by_position, std::size_t m) {
  std::vector<std::size_t> positions;
  std::vector<BlockLease> g3;
  for (std::size_t i = 0; i < m; ++i) {
    if (by_position[i].tier() != Tier::g3) continue;
    positions.push_back(i);
    g3.push_back(std::move(by_position[i]));
  }
  std::optional<std::vector<Result<BlockLease>>> promoted;
  auto started = bm.promote(g3, [&](std::vector<Result<BlockLease>> r) { promoted = std::move(r); });
  if (started) {
    if (auto s = disk.pump_until([&] { return promoted.has_value(); }); !s) return s;
  }
  for (std::size_t j = 0; j < positions.size(); ++j) {
    if (started && (*promoted)[j])
      by_position[positions[j]] = std::move(*(*promoted)[j]);
    else
      by_position[positions[j]] = std::move(g3[j]);  // no room in G2: counted as a hit, served from disk
  }
  return ok();
}

// The tier config for `policy`: a named policy, or Belady reading `future`.
TierConfig tier_config(std::unique_ptr<Pool> pool, const std::string& policy, const TraceFuture* future) {
  TierConfig tc{std::move(pool), policy, {}};
  if (policy == "belady") {
    tc.make_policy = [future](std::uint32_t capacity, const Clock& clock) {
      return make_belady_policy(capacity, *future, clock);
    };
  }
  return tc;
}

}  // namespace

std::string replay_policy_names() { return fmt::format("{}, belady", eviction_policy_names()); }

Result<ReplayResult> replay_trace(std::span<const TraceRequest> trace, const ReplayConfig& config) {
  if (config.block_tokens == 0)
    return fail(Errc::invalid_argument, "block-tokens must be > 0 (got {})", config.block_tokens);
  if (config.policy != "belady") {
    const ManualClock probe;
    if (!make_eviction_policy(config.policy, 1, probe))
      return fail(Errc::invalid_argument, "unknown policy '{}' (valid: {})", config.policy, replay_policy_names());
  }
  ReplayResult r;
  scan_unbounded(trace, r);
  auto g1_blocks = capacity_blocks(config.capacity_tokens, config.block_tokens, r.distinct_blocks, "capacity-tokens");
  if (!g1_blocks) return tl::unexpected(g1_blocks.error());
  r.g1_blocks = *g1_blocks;

  std::unique_ptr<TraceFuture> future;  // only Belady reads it
  if (config.policy == "belady") future = std::make_unique<TraceFuture>(trace);
  ManualClock clock;  // the trace's time: policies see the gaps between requests
  SyncHostCopyEngine engine;
  BlockManagerConfig bmc;
  bmc.clock = &clock;
  auto g1 = make_pool(PoolId{1}, r.g1_blocks, config.block_tokens);
  if (!g1) return tl::unexpected(g1.error());
  bmc.g1 = tier_config(std::move(*g1), config.policy, future.get());
  if (config.host_capacity_tokens != 0) {
    auto g2_blocks =
        capacity_blocks(config.host_capacity_tokens, config.block_tokens, r.distinct_blocks, "host-capacity-tokens");
    if (!g2_blocks) return tl::unexpected(g2_blocks.error());
    r.g2_blocks = *g2_blocks;
    auto g2 = make_pool(PoolId{2}, r.g2_blocks, config.block_tokens);
    if (!g2) return tl::unexpected(g2.error());
    bmc.g2 = tier_config(std::move(*g2), config.policy, future.get());
    bmc.engine = &engine;
  }
  std::unique_ptr<ReplayDisk> disk;  // declared before the manager: outlives it
  if (config.disk_capacity_tokens != 0) {
    if (config.host_capacity_tokens == 0)
      return fail(Errc::invalid_argument, "disk-capacity-tokens needs a G2 tier (host-capacity-tokens)");
    if (config.policy == "belady")
      return fail(Errc::invalid_argument, "policy belady has no disk tier: run disk-capacity-tokens with {}",
                  eviction_policy_names());
    auto g3_blocks =
        capacity_blocks(config.disk_capacity_tokens, config.block_tokens, r.distinct_blocks, "disk-capacity-tokens");
    if (!g3_blocks) return tl::unexpected(g3_blocks.error());
    r.g3_blocks = *g3_blocks;
    auto made_disk = ReplayDisk::make(bmc.g2.pool->layout().spec(), r.g3_blocks, config.disk_dir);
    if (!made_disk) return tl::unexpected(made_disk.error());
    disk = std::move(*made_disk);
    bmc.g3.store = &disk->store();
    bmc.g3.policy = config.policy;
    bmc.g3.admit_min_frequency = config.disk_admit_min_frequency;
    bmc.post = disk->poster();
  }
  auto made = BlockManager::make(std::move(bmc));
  if (!made) return tl::unexpected(made.error());
  BlockManager& bm = **made;

  const auto start = std::chrono::steady_clock::now();
  std::vector<SequenceHash> hashes;
  std::vector<BlockLease> by_position;   // the request's leases, indexed by block position
  std::vector<std::size_t> to_allocate;  // positions that need a fresh block
  for (const TraceRequest& req : trace) {
    const auto at_ns = static_cast<std::uint64_t>(std::max(0.0, req.timestamp_ms) * 1e6);
    if (at_ns > clock.now_ns()) clock.advance(at_ns - clock.now_ns());
    if (future) future->set_now(r.requests);
    const std::size_t n = req.hash_ids.size();
    hashes.clear();
    for (std::uint64_t id : req.hash_ids) hashes.emplace_back(id);  // ids already chain their prefix
    by_position.clear();
    by_position.resize(n);

    PrefixMatch match = bm.lookup(hashes);
    const std::size_t m = match.matched();
    r.hit_blocks += m;
    r.g1_hit_blocks += match.g1_blocks;
    r.g2_hit_blocks += match.g2_blocks;
    r.g3_hit_blocks += match.g3_blocks;
    for (std::size_t i = 0; i < m; ++i) by_position[i] = std::move(match.leases[i]);

    // Read the G3 part of the prefix into G2 (then it is onboarded as G2 hits).
    if (match.g3_blocks > 0) {
      if (auto s = promote_from_disk(bm, *disk, by_position, m); !s) return tl::unexpected(s.error());
    }

    // Bring the G2 part of the prefix into G1 (an explicit onboard request).
    if (match.g2_blocks + match.g3_blocks > 0) {
      std::vector<std::size_t> positions;
      BlockLeases g2_leases;
      for (std::size_t i = 0; i < m; ++i) {
        if (by_position[i].tier() == Tier::g2) {
          positions.push_back(i);
          g2_leases.push_back(std::move(by_position[i]));
        }
      }
      std::optional<Result<BlockLeases>> onboarded;
      auto started = bm.onboard(g2_leases.view(), [&](Result<BlockLeases> res) { onboarded = std::move(res); });
      if (started && disk) {  // completions are posted when a disk tier runs
        if (auto s = disk->pump_until([&] { return onboarded.has_value(); }); !s) return tl::unexpected(s.error());
      }
      if (started && onboarded && onboarded->has_value()) {
        for (std::size_t j = 0; j < positions.size(); ++j) by_position[positions[j]] = std::move((**onboarded)[j]);
      } else {  // no room in G1 (or a copy error): serve from G2
        for (std::size_t j = 0; j < positions.size(); ++j) by_position[positions[j]] = std::move(g2_leases[j]);
      }
    }

    // The rest: lease what G1 already holds, allocate the others.
    to_allocate.clear();
    for (std::size_t i = m; i < n; ++i) {
      by_position[i] = bm.find(Tier::g1, hashes[i]);
      if (!by_position[i]) to_allocate.push_back(i);
    }
    const std::size_t room = std::size_t{bm.pool(Tier::g1).free_count()} + bm.policy(Tier::g1).size();
    const std::size_t k = std::min(to_allocate.size(), room);
    r.uncached_blocks += to_allocate.size() - k;
    if (k > 0) {
      auto fresh = bm.allocate(Tier::g1, static_cast<std::uint32_t>(k));
      if (!fresh)
        return fail(fresh.error().code, "request {}: allocate {} blocks: {}", r.requests, k, fresh.error().message);
      for (std::size_t j = 0; j < k; ++j) {
        const std::size_t pos = to_allocate[j];
        // (no data to copy: the block is "written" as soon as it is allocated)
        const auto parent = pos > 0 ? std::optional(hashes[pos - 1]) : std::nullopt;
        if (auto s = bm.commit((*fresh)[j], hashes[pos], parent); s) by_position[pos] = std::move((*fresh)[j]);
      }
    }
    // End the request: tail first, so LRU evicts a sequence's tail first.
    while (!by_position.empty()) by_position.pop_back();
    // Let this request's write-backs land before the next lookup.
    if (disk) {
      if (auto s = disk->pump_until([&] { return bm.transfers_in_flight() == 0; }); !s)
        return tl::unexpected(s.error());
    }

    ++r.requests;
    r.blocks += n;
    if (config.progress && config.progress_every != 0 && r.requests % config.progress_every == 0)
      config.progress(r.requests, trace.size(), r.hit_ratio());
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto c = bm.counters();
  r.evictions = c.evictions;
  r.g1_evictions = c.tier(Tier::g1).evictions;
  r.offloads = c.offloads;
  r.onboards = c.onboards;
  r.g3_writes = c.g3_writes;
  r.g3_admission_rejects = c.g3_admission_rejects;
  if (config.progress) config.progress(r.requests, trace.size(), r.hit_ratio());
  return r;
}

std::string to_json(const ReplayResult& r, const ReplayConfig& config) {
  const double rate = r.seconds > 0 ? static_cast<double>(r.requests) / r.seconds : 0.0;
  const double of_max = r.unbounded_hit_blocks == 0
                            ? 0.0
                            : static_cast<double>(r.hit_blocks) / static_cast<double>(r.unbounded_hit_blocks);
  nlohmann::ordered_json j;
  j["hit_ratio"] = r.hit_ratio();
  j["requests"] = r.requests;
  j["blocks"] = r.blocks;
  j["hit_blocks"] = r.hit_blocks;
  j["g1_hit_blocks"] = r.g1_hit_blocks;
  j["g2_hit_blocks"] = r.g2_hit_blocks;
  j["g3_hit_blocks"] = r.g3_hit_blocks;
  j["g3_blocks"] = r.g3_blocks;
  j["disk_capacity_tokens"] = config.disk_capacity_tokens;
  j["disk_admit_min_frequency"] = config.disk_admit_min_frequency;
  j["g3_writes"] = r.g3_writes;
  j["g3_admission_rejects"] = r.g3_admission_rejects;
  j["evictions"] = r.evictions;
  j["g1_evictions"] = r.g1_evictions;
  j["offloads"] = r.offloads;
  j["onboards"] = r.onboards;
  j["uncached_blocks"] = r.uncached_blocks;
  j["policy"] = config.policy;
  j["block_tokens"] = config.block_tokens;
  if (config.capacity_tokens == 0)
    j["capacity_tokens"] = "unbounded";
  else
    j["capacity_tokens"] = config.capacity_tokens;
  j["g1_blocks"] = r.g1_blocks;
  j["host_capacity_tokens"] = config.host_capacity_tokens;
  j["g2_blocks"] = r.g2_blocks;
  j["distinct_blocks"] = r.distinct_blocks;
  j["baseline_unbounded_hit_ratio"] = r.unbounded_hit_ratio();
  j["ratio_to_baseline"] = of_max;
  j["seconds"] = r.seconds;
  j["requests_per_second"] = rate;
  return j.dump();
}

}  // namespace kvb::bench
