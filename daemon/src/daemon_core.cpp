#include "daemon_core.h"

#include <fmt/format.h>

namespace kvb::daemon {

std::string DaemonCore::stats_json() const {
  const auto g2 = blocks.g2_counters();
  return fmt::format(
      R"({{"sessions":{},"inflight_requests":{},"leased_blocks":{},"pinned_blocks":{},)"
      R"("copies_running":{},"copies_queued":{},"copy_engine":"{}","layouts":{},"draining":{},"shutting_down":{},)"
      R"("bytes_offloaded":{},"bytes_onboarded":{},)"
      R"("g2":{{"capacity":{},"free":{},"partial":{},"complete":{},"registered":{},"inactive":{},"leased":{},)"
      R"("in_transfer":{},"hits":{},"evictions":{}}}}})",
      sessions.size(), inflight_requests, g2.leased, pinned_blocks, admission.running(), admission.queued(),
      admission.engine_name(), blocks.pools().size(), draining, shutting_down, blocks.moved().offload,
      blocks.moved().onboard, g2.capacity, g2.free, g2.partial, g2.complete, g2.registered, g2.inactive, g2.leased,
      g2.in_transfer, g2.hits, g2.evictions);
}

}  // namespace kvb::daemon
