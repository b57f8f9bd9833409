#include "daemon_core.h"

#include <nlohmann/json.hpp>

namespace kvb::daemon {

nlohmann::ordered_json tier_json(const TierCounters& tier) {
  nlohmann::ordered_json out;
  for (const auto& field : kTierBlockStates) out[std::string(field.name)] = tier.*field.member;
  for (const auto& field : kTierEvents) out[std::string(field.name)] = tier.*field.member;
  return out;
}

std::string DaemonCore::stats_json() const {
  nlohmann::ordered_json out;
  out["sessions"] = sessions.size();
  out["inflight_requests"] = inflight_requests;
  const auto g2 = blocks.g2_counters();
  out["leased_blocks"] = g2.leased;
  out["pinned_blocks"] = pinned_blocks;
  out["copies_running"] = admission.running();
  out["copies_queued"] = admission.queued();
  out["copy_engine"] = admission.engine_name();
  out["layouts"] = blocks.pools().size();
  out["draining"] = draining;
  out["shutting_down"] = shutting_down;
  out["bytes_offloaded"] = blocks.moved().offload;
  out["bytes_onboarded"] = blocks.moved().onboard;
  out["g2"] = tier_json(g2);
  return out.dump();
}

}  // namespace kvb::daemon
