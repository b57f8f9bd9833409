// Flags of `kvblockd-bench load` and what every session of a run shares.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/client/kv_region.h"
#include "latency_histogram.h"

namespace kvb::bench {

enum class LoadMix : std::uint8_t { lookup, offload, onboard, mixed, replay };

struct LoadConfig {
  std::string socket;
  std::uint32_t sessions = 64;
  double duration_s = 10;
  LoadMix mix = LoadMix::lookup;
  double rate = 0;                     // total ops/s over all sessions; 0 = closed loop
  std::uint32_t threads = 1;           // io_context threads (one io_context each)
  std::uint32_t prefix_blocks = 16;    // blocks of the shared prefix (seeded by session 0)
  std::uint32_t onboard_blocks = 4;    // blocks per onboard op
  std::uint32_t offload_blocks = 1;    // blocks per offload op (fresh hashes, cycling over the region)
  std::uint32_t connect_window = 256;  // sessions setting up at once
  std::uint64_t tenant_salt = 0x5EED5A17ULL;
  client::BlockShape shape{};  // small by default: the load is about IPC, not bytes
  std::string trace;           // replay: a Mooncake-style JSONL trace (hash_ids)
  double passes = 0;           // replay: stop after this many passes over the trace (per thread); 0 = run --duration
  std::string redis_baseline = "auto";   // auto | on | off: redis-benchmark GET at the same concurrency
  bool wait_prefault = true;             // mixes that move blocks: measure once the daemon's prefaults are done
  std::string memcpy_baseline = "auto";  // auto | off: memcpy of the same bytes, mixes that move blocks
  std::string register_kv = "auto";      // auto: only sessions that move blocks (not lookup-only ones) | always
};

/// Counters a run's sessions add to (relaxed atomics; read by the progress line).
struct LoadCounters {
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> setup_errors{0};
  std::atomic<std::uint64_t> replay_blocks{0};      // replay: blocks looked up
  std::atomic<std::uint64_t> replay_hit_blocks{0};  // replay: of those, matched prefix blocks
  std::atomic<std::uint64_t> replay_requests{0};    // replay: trace requests issued
  std::atomic<std::uint64_t> offload_bytes{0};      // bytes of the measured window's successful offloads
  std::atomic<std::uint64_t> onboard_bytes{0};      // ... and onboards
  std::atomic<std::uint64_t> offload_ops{0};
  std::atomic<std::uint64_t> onboard_ops{0};
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> setup_done{0};  // ready or failed
  std::atomic<bool> measuring{false};
  std::atomic<bool> stopping{false};
};

/// The shared prefix every session looks up / onboards: chained hashes.
[[nodiscard]] std::vector<std::uint64_t> shared_prefix(std::uint64_t salt, std::uint32_t blocks);

/// Hash ids of a replay trace as sequences of u64 (one per request line).
[[nodiscard]] std::vector<std::vector<std::uint64_t>> load_trace_hash_ids(const std::string& path, std::string& error);

}  // namespace kvb::bench
