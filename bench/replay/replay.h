// Trace replay through the real BlockManager (kvblockd-bench replay).
//
// Per request: move the clock to the request's timestamp; lookup() the
// longest registered prefix and count its blocks as hits (from any tier);
// onboard the part found only in G2 into G1; lease blocks of the rest that G1
// already holds; allocate, complete and register the others in G1, each with
// the hash before it as its parent (as many as G1 can hold: the request's own
// leased blocks cannot be evicted); then end the request's leases tail first.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "kvb/common/error.h"
#include "trace_reader.h"

namespace kvb::bench {

struct ReplayConfig {
  std::uint64_t capacity_tokens = 0;           // G1 size; 0 = unbounded (every distinct block fits)
  std::uint32_t block_tokens = 512;            // tokens per block (the trace's hash ids are 512-token blocks)
  std::string policy = "prefix";               // eviction policy of every tier, or "belady" (offline optimum)
  std::uint64_t host_capacity_tokens = 0;      // G2 size; 0 = no G2 tier
  std::uint64_t disk_capacity_tokens = 0;      // G3 size; 0 = no G3 tier (needs G2): a real slot store
  std::uint32_t disk_admit_min_frequency = 1;  // G3 admission filter (0 or 1: every G2 victim is written)
  std::string disk_dir;                        // parent of G3's temp dir (empty: /dev/shm, else $TMPDIR)
  /// Called every `progress_every` requests and at the end (optional).
  std::function<void(std::size_t done, std::size_t total, double hit_ratio)> progress;
  std::size_t progress_every = 2000;
};

struct ReplayResult {
  std::uint64_t requests = 0;
  std::uint64_t blocks = 0;      // all blocks of all requests
  std::uint64_t hit_blocks = 0;  // matched prefix blocks, any tier
  std::uint64_t g1_hit_blocks = 0;
  std::uint64_t g2_hit_blocks = 0;
  std::uint64_t g3_hit_blocks = 0;
  std::uint64_t distinct_blocks = 0;       // distinct hash ids in the trace
  std::uint64_t unbounded_hit_blocks = 0;  // baseline: hits with infinite capacity
  std::uint64_t uncached_blocks = 0;       // blocks a request could not place (G1 too small)
  std::uint32_t g1_blocks = 0;             // G1 capacity used, in blocks
  std::uint32_t g2_blocks = 0;             // G2 capacity, in blocks (0 = none)
  std::uint32_t g3_blocks = 0;             // G3 capacity, in blocks (0 = none)
  std::uint64_t g3_writes = 0;             // G2 victims written to G3
  std::uint64_t g3_admission_rejects = 0;  // G2 victims the admission filter kept off G3
  std::uint64_t evictions = 0;             // both tiers
  std::uint64_t g1_evictions = 0;
  std::uint64_t offloads = 0;
  std::uint64_t onboards = 0;
  double seconds = 0;  // wall time of the replay loop (not parsing)

  [[nodiscard]] double hit_ratio() const noexcept {
    return blocks == 0 ? 0.0 : static_cast<double>(hit_blocks) / static_cast<double>(blocks);
  }
  [[nodiscard]] double unbounded_hit_ratio() const noexcept {
    return blocks == 0 ? 0.0 : static_cast<double>(unbounded_hit_blocks) / static_cast<double>(blocks);
  }
};

/// "prefix, lru, s3fifo, belady": the policies replay_trace accepts.
[[nodiscard]] std::string replay_policy_names();

/// Replays `trace`. Errors: a capacity below one block, an unknown policy,
/// or a BlockManager error (named).
[[nodiscard]] Result<ReplayResult> replay_trace(std::span<const TraceRequest> trace, const ReplayConfig& config);

/// The result as one JSON object on one line.
[[nodiscard]] std::string to_json(const ReplayResult& result, const ReplayConfig& config);

}  // namespace kvb::bench
