// DiskTier: the daemon's side of the disk tier (G3, docs/disk.md): its
// settings, the start-up check of disk.path, one SlotStore per block layout
// (created, or reopened with its index rebuilt), and the G3 counters summed
// over layouts for stats and metrics. Event-loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kvb/blockmgr/block_manager.h"
#include "kvb/daemon/config.h"
#include "kvb/storage/slot_store.h"

namespace kvb::daemon {

struct DiskSettings {
  std::string path;  // empty = no disk tier
  std::uint64_t bytes = 0;
  bool required = true;  // an unusable tier at start: error (true) or a logged downgrade
  storage::IoBackend backend = storage::IoBackend::automatic;
  std::uint32_t queue_depth = 64;
  std::uint32_t sync_batch = 32;
  std::uint64_t write_queue_bytes = 128ULL << 20;
  std::uint32_t admit_min_frequency = 1;
  std::string policy = "lru";
  std::optional<storage::FaultPlan> faults;
};

/// The disk settings of a daemon configuration (invalid_argument names a
/// bad io backend or fault plan).
[[nodiscard]] Result<DiskSettings> disk_settings(const DaemonConfig& config);

/// G3 over every layout, for stats and metrics.
struct DiskTotals {
  bool enabled = false;
  std::string backend;            // "slot-store/io_uring", ...
  TierCounters tier;              // blocks by state, hits, evictions
  storage::SlotStoreCounters io;  // bytes, checksum failures, I/O errors, queue depth
  std::uint64_t writebacks = 0, writeback_failures = 0, writebacks_skipped = 0, admission_rejects = 0;
  std::uint64_t promotes = 0, promote_failures = 0;
  std::uint64_t bytes_capacity = 0;  // payload bytes of every slot

  /// Sums another pool's (or a reclaimed pool's) disk tier into this one.
  DiskTotals& operator+=(const DiskTotals& o) {
    if (o.enabled) {
      enabled = true;
      if (backend.empty()) backend = o.backend;
    }
    tier += o.tier;
    io += o.io;
    writebacks += o.writebacks;
    writeback_failures += o.writeback_failures;
    writebacks_skipped += o.writebacks_skipped;
    admission_rejects += o.admission_rejects;
    promotes += o.promotes;
    promote_failures += o.promote_failures;
    bytes_capacity += o.bytes_capacity;
    return *this;
  }
};

/// The "g3" object of the stats reply (docs/operations.md).
[[nodiscard]] nlohmann::ordered_json disk_stats_json(const DiskTotals& totals);
/// The kvblockd_disk_* metric families (Prometheus text).
void render_disk_metrics(fmt::memory_buffer& out, const DiskTotals& totals);

class DiskTier {
 public:
  explicit DiskTier(DiskSettings settings) : settings_(std::move(settings)) {}

  [[nodiscard]] bool enabled() const noexcept { return enabled_; }
  [[nodiscard]] const DiskSettings& settings() const noexcept { return settings_; }

  /// At start: checks that disk.path exists and takes files (a probe file,
  /// O_DIRECT when the file system has it) and lists the block shapes of the
  /// slot files it holds, to be reopened at once. A failure is returned when
  /// disk.required, else logged as a downgrade (the daemon runs without G3).
  [[nodiscard]] Result<std::vector<LayoutSpec>> start();

  /// The store of `spec`'s block shape (created or reopened; what the
  /// restart found is logged). Errors are the caller's to report.
  [[nodiscard]] Result<std::unique_ptr<storage::SlotStore>> open_store(const LayoutSpec& spec) const;

  /// The block manager's G3 settings over `store`.
  [[nodiscard]] DiskTierConfig tier_config(storage::SlotStore& store, PoolId pool_id) const;

 private:
  DiskSettings settings_;
  bool enabled_ = false;
};

}  // namespace kvb::daemon
