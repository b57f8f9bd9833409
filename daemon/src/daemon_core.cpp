#include "daemon_core.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "device_kv.h"
#include "kvb/kernels/device_memory.h"
#include "session.h"

namespace kvb::daemon {

nlohmann::ordered_json tier_json(const TierCounters& tier) {
  nlohmann::ordered_json out;
  for (const auto& field : kTierBlockStates) out[std::string(field.name)] = tier.*field.member;
  for (const auto& field : kTierEvents) out[std::string(field.name)] = tier.*field.member;
  return out;
}

DaemonCore::Totals DaemonCore::totals() const {
  Totals sum;
  for (const auto& [id, session] : connections) {
    if (!session->ended()) ++sum.sessions;
    sum.inflight_requests += session->inflight();
    sum.pinned_blocks += session->pinned();
    sum.output_bytes += session->output_bytes();
  }
  return sum;
}

std::uint64_t DaemonCore::fd_room() const noexcept {
  if (fd_limit == 0) return std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t used = kReservedFds + connections.size() + held.fds;
  return used >= fd_limit ? 0 : fd_limit - used;
}

Session* DaemonCore::biggest_holder(bool fds, const Session* except) const {
  Session* biggest = nullptr;
  std::size_t most = 0;
  for (const auto& [id, session] : connections) {
    if (session == except) continue;
    const std::size_t holds = fds ? session->held_fds() : session->held_bytes();
    if (holds > most) {
      most = holds;
      biggest = session;
    }
  }
  return biggest;
}

bool DaemonCore::evict_biggest(bool fds, const Session* except, std::size_t more_than, std::string_view need) {
  Session* hog = biggest_holder(fds, except);
  if (hog == nullptr || (fds ? hog->held_fds() : hog->held_bytes()) <= more_than) return false;
  if (fds) {
    ++evictions.for_fds;
    hog->evict(fmt::format("it holds {} passed fds of a frame not yet complete and {} (open file limit {})",
                           hog->held_fds(), need, fd_limit));
  } else {
    ++evictions.for_bytes;
    hog->evict(fmt::format("it holds {} bytes of partial frames and unread answers and {} (max_buffered_bytes {})",
                           hog->held_bytes(), need, config.max_buffered_bytes));
  }
  return true;
}

bool DaemonCore::is_operator(std::uint32_t uid) const {
  return std::find(operator_uids.begin(), operator_uids.end(), uid) != operator_uids.end();
}

void DaemonCore::connection_closed(SessionId id) {
  connections.erase(id.value());
  if (connections.empty() && shutting_down && on_all_closed) on_all_closed();
}

namespace {

// The GPU part of the stats: devices, engines started, device KV imports,
// G2 pinning.
void add_gpu_json(nlohmann::ordered_json& out, const BlockService& blocks) {
  out["gpu_present"] = blocks.engines().has_cuda();
  auto devices = nlohmann::ordered_json::array();
  for (const auto& d : blocks.engines().devices()) {
    devices.push_back({{"ordinal", d.ordinal}, {"name", d.name}, {"uuid", format_uuid(d.uuid)}});
  }
  out["devices"] = std::move(devices);
  out["copy_engines"] = blocks.engines().built();
  out["device_kv_allocations"] = ImportedDeviceMemory::live();
  out["pinned_host_pools"] = blocks.pinned_pools();
  out["host_pool_pin_failures"] = blocks.pin_failures();
}

}  // namespace

std::string DaemonCore::stats_json() const {
  const Totals now = totals();
  nlohmann::ordered_json out;
  out["sessions"] = now.sessions;
  out["inflight_requests"] = now.inflight_requests;
  const auto g2 = blocks.g2_counters();
  out["leased_blocks"] = g2.leased;
  out["pinned_blocks"] = now.pinned_blocks;
  out["connections"] = connections.size();
  out["output_bytes"] = now.output_bytes;
  // Daemon-wide budgets (docs/operations.md, "Hostile local clients").
  out["budgets"] = {{"fd_limit", fd_limit},
                    {"fds_reserved", kReservedFds},
                    {"passed_fds_held", held.fds},
                    {"buffered_bytes", held.bytes},
                    {"max_buffered_bytes", config.max_buffered_bytes},
                    {"evicted_for_fds", evictions.for_fds},
                    {"evicted_for_bytes", evictions.for_bytes}};
  out["copies_running"] = admission.running();
  out["copies_queued"] = admission.queued();
  out["copy_engine"] = admission.engine_name();
  out["eviction_policy"] = config.effective_eviction_policy();
  // prefix: the idleness one doubling of uses buys, in the pools' uses
  // (20,000 alone; / N for a worker of N sharing a cluster's traffic). Every
  // pool has the same policy and share: the first one's.
  std::optional<std::uint64_t> credit;
  if (!blocks.pools().empty()) credit = blocks.pools().front()->manager->policy(Tier::g2).use_credit();
  out["eviction_use_credit"] = credit ? nlohmann::ordered_json(*credit) : nlohmann::ordered_json(nullptr);
  out["layouts"] = blocks.pools().size();
  std::uint64_t layouts_in_use = 0;
  for (const auto& pool : blocks.pools()) layouts_in_use += pool->sessions != 0 ? 1 : 0;
  out["layouts_in_use"] = layouts_in_use;
  out["layouts_reclaimed"] = blocks.layouts_reclaimed();
  out["layouts_retiring"] = blocks.layouts_retiring();
  out["draining"] = draining;
  out["shutting_down"] = shutting_down;
  add_gpu_json(out, blocks);
  out["bytes_offloaded"] = blocks.moved().offload;
  out["bytes_onboarded"] = blocks.moved().onboard;
  out["g2"] = tier_json(g2);
  const PrefaultTotals prefault = blocks.prefault_totals();
  out["g2_prefault"] = {{"enabled", prefault.enabled},
                        {"pool_bytes", prefault.pool_bytes},
                        {"populated_bytes", prefault.populated_bytes},
                        {"pools_ready", prefault.pools_ready},
                        {"engine_bytes", prefault.engine_bytes},
                        {"engine_done_bytes", prefault.engine_done_bytes},
                        {"engine_mapped_bytes", prefault.engine_mapped_bytes}};
  out["g3"] = disk_stats_json(blocks.disk_totals());
  out["integrity"] = integrity_json(blocks.host_integrity());
  if (cluster_stats) out["cluster"] = nlohmann::ordered_json::parse(cluster_stats());
  return out.dump();
}

}  // namespace kvb::daemon
