#include "disk_tier.h"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace kvb::daemon {
namespace {

// Creates and removes a file in `dir`: is the directory usable for slot files?
Status probe_directory(const std::string& dir) {
  const std::string probe = dir + "/.kvblockd-probe";
  int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
  if (fd < 0 && errno == EINVAL) fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::unavailable, "disk.path '{}' does not take files: {}", dir, std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
  return ok();
}

}  // namespace

Result<DiskSettings> disk_settings(const DaemonConfig& config) {
  DiskSettings s;
  s.path = config.disk_path;
  s.bytes = config.disk_bytes;
  s.required = config.disk_required;
  auto backend = storage::parse_io_backend(config.disk_io_backend);
  if (!backend) return fail(Errc::invalid_argument, "disk.io_backend: {}", backend.error().message);
  s.backend = *backend;
  s.queue_depth = config.disk_queue_depth;
  s.sync_batch = config.disk_sync_batch;
  s.write_queue_bytes = config.disk_write_queue_bytes;
  s.admit_min_frequency = config.disk_admit_min_frequency;
  s.policy = config.disk_policy;
  if (auto policy = make_eviction_policy(s.policy, 1, CoarseClock::instance()); !policy)
    return fail(Errc::invalid_argument, "disk.policy: {}", policy.error().message);
  if (!config.disk_inject_faults.empty()) {
    auto plan = storage::FaultPlan::parse(config.disk_inject_faults);
    if (!plan) return fail(Errc::invalid_argument, "disk.inject_faults: {}", plan.error().message);
    s.faults = *plan;
  }
  return s;
}

Result<std::vector<LayoutSpec>> DiskTier::start() {
  if (settings_.path.empty()) return std::vector<LayoutSpec>{};
  auto shapes = storage::SlotStore::list_shapes(settings_.path);
  Status usable = shapes ? probe_directory(settings_.path) : Status(tl::unexpected(shapes.error()));
  if (!usable) {
    if (settings_.required)
      return fail(usable.error().code, "{} (disk.required = true; set it to false to run without the disk tier)",
                  usable.error().message);
    spdlog::error("disk tier disabled: {} (disk.required = false: serving from memory tiers only)",
                  usable.error().message);
    return std::vector<LayoutSpec>{};
  }
  enabled_ = true;
  spdlog::info("disk tier: {} ({} bytes per block layout, io backend {}{}), {} slot file(s) to reopen", settings_.path,
               settings_.bytes, storage::to_string(settings_.backend),
               settings_.faults ? fmt::format(", FAULT INJECTION {}", settings_.faults->to_string()) : std::string(),
               shapes->size());
  return std::move(*shapes);
}

Result<std::unique_ptr<storage::SlotStore>> DiskTier::open_store(const LayoutSpec& spec) const {
  storage::SlotStoreOptions o;
  o.directory = settings_.path;
  o.spec = spec;
  o.bytes = settings_.bytes;
  o.backend = settings_.backend;
  o.queue_depth = settings_.queue_depth;
  o.sync_batch = settings_.sync_batch;
  o.write_queue_bytes = settings_.write_queue_bytes;
  o.faults = settings_.faults;
  auto store = storage::SlotStore::open(o);
  if (!store) return store;
  const auto& r = (*store)->recovery();
  if (r.created) {
    spdlog::info("disk tier: created {} ({} slots of {} bytes, {})", (*store)->path(), r.slots, (*store)->block_bytes(),
                 (*store)->name());
  } else {
    spdlog::info(
        "disk tier: reopened {} in {:.3f} s: {} blocks intact, {} empty, {} torn, {} foreign, {} duplicates dropped "
        "({} slots, {})",
        (*store)->path(), r.seconds, r.intact, r.empty, r.torn, r.foreign, r.duplicates, r.slots, (*store)->name());
  }
  return store;
}

DiskTierConfig DiskTier::tier_config(storage::SlotStore& store, PoolId pool_id) const {
  DiskTierConfig c;
  c.store = &store;
  c.pool_id = pool_id;
  c.policy = settings_.policy;
  c.admit_min_frequency = settings_.admit_min_frequency;
  return c;
}

}  // namespace kvb::daemon

namespace kvb::daemon {

nlohmann::ordered_json disk_stats_json(const DiskTotals& t) {
  nlohmann::ordered_json j;
  j["enabled"] = t.enabled;
  j["backend"] = t.backend;
  for (const auto& field : kTierBlockStates) j[std::string(field.name)] = t.tier.*field.member;
  for (const auto& field : kTierEvents) j[std::string(field.name)] = t.tier.*field.member;
  j["capacity_bytes"] = t.bytes_capacity;
  j["writebacks"] = t.writebacks;
  j["writeback_failures"] = t.writeback_failures;
  j["writebacks_skipped"] = t.writebacks_skipped;
  j["admission_rejects"] = t.admission_rejects;
  j["promotes"] = t.promotes;
  j["promote_failures"] = t.promote_failures;
  j["bytes_written"] = t.io.bytes_written;
  j["bytes_read"] = t.io.bytes_read;
  j["checksum_failures"] = t.io.checksum_failures;
  j["io_errors"] = t.io.io_errors;
  j["syncs"] = t.io.syncs;
  j["writes_in_flight"] = t.io.writes_in_flight;
  j["reads_in_flight"] = t.io.reads_in_flight;
  j["queue_depth"] = t.io.io_queue_depth;
  return j;
}

void render_disk_metrics(fmt::memory_buffer& out, const DiskTotals& t) {
  auto it = std::back_inserter(out);
  auto counter = [&](std::string_view name, std::string_view help, std::uint64_t value) {
    fmt::format_to(it, "# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, value);
  };
  auto gauge = [&](std::string_view name, std::string_view help, std::uint64_t value) {
    fmt::format_to(it, "# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, value);
  };
  gauge("kvblockd_disk_enabled", "1 when the disk tier (G3) is on.", t.enabled ? 1 : 0);
  fmt::format_to(it,
                 "# HELP kvblockd_disk_bytes_total Payload bytes the disk tier wrote durably / read and checked.\n");
  fmt::format_to(it, "# TYPE kvblockd_disk_bytes_total counter\n");
  fmt::format_to(it, "kvblockd_disk_bytes_total{{direction=\"write\"}} {}\n", t.io.bytes_written);
  fmt::format_to(it, "kvblockd_disk_bytes_total{{direction=\"read\"}} {}\n", t.io.bytes_read);
  fmt::format_to(it,
                 "# HELP kvblockd_disk_writebacks_total Evicted host blocks offered to the disk tier, by outcome.\n");
  fmt::format_to(it, "# TYPE kvblockd_disk_writebacks_total counter\n");
  const std::pair<const char*, std::uint64_t> writebacks[] = {{"written", t.writebacks},
                                                              {"failed", t.writeback_failures},
                                                              {"skipped", t.writebacks_skipped},
                                                              {"not_admitted", t.admission_rejects}};
  for (const auto& [outcome, value] : writebacks)
    fmt::format_to(it, "kvblockd_disk_writebacks_total{{outcome=\"{}\"}} {}\n", outcome, value);
  fmt::format_to(it, "# HELP kvblockd_disk_reads_total Disk blocks read into host memory, by outcome.\n");
  fmt::format_to(it, "# TYPE kvblockd_disk_reads_total counter\n");
  fmt::format_to(it, "kvblockd_disk_reads_total{{outcome=\"ok\"}} {}\n", t.promotes);
  fmt::format_to(it, "kvblockd_disk_reads_total{{outcome=\"failed\"}} {}\n", t.promote_failures);
  counter("kvblockd_disk_checksum_failures_total", "Disk blocks that failed a header or payload check (dropped).",
          t.io.checksum_failures);
  counter("kvblockd_disk_io_errors_total", "Failed disk I/O calls (write, read, fdatasync).", t.io.io_errors);
  counter("kvblockd_disk_syncs_total", "fdatasync calls of the disk tier.", t.io.syncs);
  gauge("kvblockd_disk_queue_depth", "Disk I/O operations in flight now.", t.io.io_queue_depth);
  gauge("kvblockd_disk_writes_in_flight", "Write-backs accepted and not yet durable.", t.io.writes_in_flight);
}

}  // namespace kvb::daemon
