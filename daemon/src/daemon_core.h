// DaemonCore: what every session shares: configuration, the event loop, the
// block service, the copy admission, the deadline queue, metrics, the session
// registry (connections) and the daemon-wide flags. Event-loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "block_service.h"
#include "copy_admission.h"
#include "deadline_queue.h"
#include "kvb/daemon/config.h"
#include "metrics.h"
#include "tenant_keys.h"

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

  /// Every connection whose socket is open, by session id: the one registry
  /// of connection state. A session enters at start() and leaves only when
  /// its socket closes, so one that has ended (bye, shutdown) but still
  /// flushes its last answers is here until the flush or the shutdown grace
  /// closes it. Daemon-wide totals (totals()) are derived from it.
  std::unordered_map<std::uint64_t, Session*> connections;
  /// Runs when the last connection closes while shutting_down.
  std::function<void()> on_all_closed;
  std::uint64_t next_session_id = 1;
  std::vector<std::uint32_t> operator_uids;  // resolved: config's, else the daemon's own uid
  /// Tenant keys (tenant_keys.h); set before the first connection is accepted.
  std::optional<TenantKeys> tenants;
  bool draining = false;       // drain: no new offload/onboard
  bool shutting_down = false;  // SIGTERM/SIGINT received

  /// What the connections hold now, summed over them (never kept apart).
  struct Totals {
    std::uint64_t sessions = 0;           // connections whose session has not ended
    std::uint64_t inflight_requests = 0;  // async requests and waits not yet answered
    std::uint64_t pinned_blocks = 0;      // lookup(pin=1) leases
    std::uint64_t output_bytes = 0;       // answers queued, not yet taken by their clients
  };
  [[nodiscard]] Totals totals() const;

  /// What the connections hold that a daemon-wide budget bounds, kept up to
  /// date by each session (Session::account) as its own holdings change, so
  /// a budget check is O(1); totals() and the sessions' own figures agree.
  struct Held {
    std::uint64_t fds = 0;    // passed fds of frames not yet complete
    std::uint64_t bytes = 0;  // partial frames and answers not yet taken
  };
  Held held;
  /// RLIMIT_NOFILE after raising it (0: unknown, no fd budget).
  std::uint64_t fd_limit = 0;
  /// fds kept out of the passed-fd budget: accept, the daemon's own files,
  /// UCX, disk, metrics, and a margin.
  static constexpr std::uint64_t kReservedFds = 256;
  /// Connections closed because a daemon-wide budget ran out and they held the most.
  struct Evictions {
    std::uint64_t for_fds = 0;
    std::uint64_t for_bytes = 0;
  };
  Evictions evictions;
  /// Passed fds the connections may still hold now: fd_limit less the
  /// reserve, one per connection and what they hold (unbounded without a limit).
  [[nodiscard]] std::uint64_t fd_room() const noexcept;
  /// The open connection holding the most passed fds (fds) or buffered bytes
  /// (!fds), other than `except`; nullptr when none holds any.
  [[nodiscard]] Session* biggest_holder(bool fds, const Session* except) const;
  /// Closes biggest_holder(fds, except) -- but only one holding more than
  /// `more_than` -- saying it holds the most while `need` (e.g. "a new
  /// connection needs an fd"); false when there is none to close.
  bool evict_biggest(bool fds, const Session* except, std::size_t more_than, std::string_view need);

  /// Whether a client of `uid` may use the operator requests (drain, config).
  [[nodiscard]] bool is_operator(std::uint32_t uid) const;

  /// A session's socket closed: it leaves `connections`.
  void connection_closed(SessionId id);
  /// The stats reply's "cluster" object (docs/cluster.md); empty when the
  /// daemon runs alone.
  std::function<std::string()> cluster_stats;  // JSON text

  /// The stats reply: JSON counters (docs/operations.md).
  [[nodiscard]] std::string stats_json() const;
};

/// One tier's counters as a JSON object: its block states and events by name.
[[nodiscard]] nlohmann::ordered_json tier_json(const TierCounters& tier);

}  // namespace kvb::daemon
