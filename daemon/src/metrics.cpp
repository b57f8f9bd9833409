#include "metrics.h"

#include <algorithm>

#include <fmt/format.h>

#include "daemon_core.h"

namespace kvb::daemon {

std::string_view to_string(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::ok: return "ok";
    case Outcome::error: return "error";
    case Outcome::busy: return "busy";
    case Outcome::timeout: return "timeout";
    case Outcome::cancelled: return "cancelled";
  }
  return "unknown";
}

void Metrics::record(std::string_view op, Outcome outcome, double seconds) {
  auto it = std::find_if(ops_.begin(), ops_.end(), [op](const OpStats& s) { return s.op == op; });
  if (it == ops_.end()) {
    ops_.push_back(OpStats{std::string(op)});
    it = ops_.end() - 1;
  }
  ++it->outcomes[static_cast<std::size_t>(outcome)];
  ++it->count;
  it->sum += seconds;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++it->buckets[i];
  }
}

std::string Metrics::render(const DaemonCore& core) const {
  const DaemonCore::Totals totals = core.totals();
  fmt::memory_buffer out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, "# HELP kvblockd_requests_total Requests answered, by operation and outcome.\n");
  fmt::format_to(it, "# TYPE kvblockd_requests_total counter\n");
  for (const auto& stats : ops_) {
    for (std::size_t o = 0; o < kOutcomes; ++o) {
      if (stats.outcomes[o] == 0) continue;
      fmt::format_to(it, "kvblockd_requests_total{{op=\"{}\",outcome=\"{}\"}} {}\n", stats.op,
                     to_string(static_cast<Outcome>(o)), stats.outcomes[o]);
    }
  }
  fmt::format_to(
      it, "# HELP kvblockd_request_duration_seconds Time from receipt to answer (async: to the notification).\n");
  fmt::format_to(it, "# TYPE kvblockd_request_duration_seconds histogram\n");
  for (const auto& h : ops_) {
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
      fmt::format_to(it, "kvblockd_request_duration_seconds_bucket{{op=\"{}\",le=\"{}\"}} {}\n", h.op, kBuckets[i],
                     h.buckets[i]);
    }
    fmt::format_to(it, "kvblockd_request_duration_seconds_bucket{{op=\"{}\",le=\"+Inf\"}} {}\n", h.op, h.count);
    fmt::format_to(it, "kvblockd_request_duration_seconds_sum{{op=\"{}\"}} {}\n", h.op, h.sum);
    fmt::format_to(it, "kvblockd_request_duration_seconds_count{{op=\"{}\"}} {}\n", h.op, h.count);
  }
  fmt::format_to(it, "# HELP kvblockd_sessions Sessions connected now.\n# TYPE kvblockd_sessions gauge\n");
  fmt::format_to(it, "kvblockd_sessions {}\n", totals.sessions);
  fmt::format_to(
      it, "# HELP kvblockd_sessions_total Sessions accepted since start.\n# TYPE kvblockd_sessions_total counter\n");
  fmt::format_to(it, "kvblockd_sessions_total {}\n", sessions_total_);
  fmt::format_to(it, "# HELP kvblockd_connections_refused_total Connections refused at accept, by reason.\n");
  fmt::format_to(it, "# TYPE kvblockd_connections_refused_total counter\n");
  for (const auto& [reason, count] : refused_) {
    fmt::format_to(it, "kvblockd_connections_refused_total{{reason=\"{}\"}} {}\n", reason, count);
  }
  fmt::format_to(it, "# HELP kvblockd_protocol_errors_total Connections closed for a malformed frame.\n");
  fmt::format_to(it, "# TYPE kvblockd_protocol_errors_total counter\nkvblockd_protocol_errors_total {}\n",
                 protocol_errors_);
  fmt::format_to(it, "# HELP kvblockd_inflight_requests Async requests and waits not yet answered.\n");
  fmt::format_to(it, "# TYPE kvblockd_inflight_requests gauge\nkvblockd_inflight_requests {}\n",
                 totals.inflight_requests);
  fmt::format_to(it, "# HELP kvblockd_copies Copies on the host copy engine, running or queued for a slot.\n");
  fmt::format_to(it, "# TYPE kvblockd_copies gauge\n");
  fmt::format_to(it, "kvblockd_copies{{engine=\"{}\",state=\"running\"}} {}\n", core.admission.engine_name(),
                 core.admission.running());
  fmt::format_to(it, "kvblockd_copies{{engine=\"{}\",state=\"queued\"}} {}\n", core.admission.engine_name(),
                 core.admission.queued());
  const auto g2 = core.blocks.g2_counters();
  fmt::format_to(it, "# HELP kvblockd_blocks Blocks per tier and state.\n# TYPE kvblockd_blocks gauge\n");
  for (const auto& field : kTierBlockStates) {
    fmt::format_to(it, "kvblockd_blocks{{tier=\"g2\",state=\"{}\"}} {}\n", field.name, g2.*field.member);
  }
  const auto disk = core.blocks.disk_totals();
  if (disk.enabled) {
    for (const auto& field : kTierBlockStates) {
      fmt::format_to(it, "kvblockd_blocks{{tier=\"g3\",state=\"{}\"}} {}\n", field.name, disk.tier.*field.member);
    }
  }
  fmt::format_to(it, "# HELP kvblockd_pinned_blocks Leases held by sessions through lookup(pin=1).\n");
  fmt::format_to(it, "# TYPE kvblockd_pinned_blocks gauge\nkvblockd_pinned_blocks {}\n", totals.pinned_blocks);
  for (const auto& field : kTierEvents) {
    fmt::format_to(it, "# HELP kvblockd_block_{0}_total Blocks counted as {0}, by tier.\n", field.name);
    fmt::format_to(it, "# TYPE kvblockd_block_{0}_total counter\nkvblockd_block_{0}_total{{tier=\"g2\"}} {1}\n",
                   field.name, g2.*field.member);
    if (disk.enabled)
      fmt::format_to(it, "kvblockd_block_{}_total{{tier=\"g3\"}} {}\n", field.name, disk.tier.*field.member);
  }
  fmt::format_to(it, "# HELP kvblockd_bytes_moved_total Bytes copied by completed requests, by direction.\n");
  fmt::format_to(it, "# TYPE kvblockd_bytes_moved_total counter\n");
  fmt::format_to(it, "kvblockd_bytes_moved_total{{direction=\"offload\"}} {}\n", core.blocks.moved().offload);
  fmt::format_to(it, "kvblockd_bytes_moved_total{{direction=\"onboard\"}} {}\n", core.blocks.moved().onboard);
  render_disk_metrics(out, disk);
  return fmt::to_string(out);
}

}  // namespace kvb::daemon
