// DaemonCore: what every session shares: configuration, the event loop, the
// block service, the copy admission, the deadline queue, metrics, the session
// registry and the daemon-wide flags. Event-loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "block_service.h"
#include "copy_admission.h"
#include "deadline_queue.h"
#include "kvb/daemon/config.h"
#include "metrics.h"

namespace kvb::daemon {

class Session;

struct DaemonCore {
  DaemonConfig config;
  boost::asio::io_context& io;
  BlockService& blocks;
  CopyAdmission& admission;
  DeadlineQueue& deadlines;
  Metrics& metrics;
  bool gpu_present = false;

  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions;
  std::uint64_t next_session_id = 1;
  std::uint64_t inflight_requests = 0;  // async requests and waits not yet answered, all sessions
  std::uint64_t pinned_blocks = 0;      // lookup(pin=1) leases held by sessions
  bool draining = false;                // drain: no new offload/onboard
  bool shutting_down = false;           // SIGTERM/SIGINT received

  /// The stats reply: JSON counters (docs/operations.md).
  [[nodiscard]] std::string stats_json() const;
};

/// One tier's counters as a JSON object: its block states and events by name.
[[nodiscard]] nlohmann::ordered_json tier_json(const TierCounters& tier);

}  // namespace kvb::daemon
