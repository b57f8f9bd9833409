// kvblockd-bench cluster: real kvblockd workers on 127.0.0.1, three phases
// (docs/cluster.md, "Benchmark"):
//   hit     the shared trace spread over N workers: alone, as one cluster,
//           and one worker with N times the capacity;
//   onboard remote onboard GB/s of 2 MiB blocks over sm and tcp, beside
//           `kvblockd-bench transport` at the same size, same run;
//   index   one worker's lookup throughput while an unjoined peer offloads
//           vs while a joined peer offloads (its index events stream in).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvb/common/error.h"
#include "replay/trace_reader.h"

namespace kvb::bench::cluster {

struct Flags {
  std::string kvblockd;  // the daemon binary
  std::string trace = "/work/shared/traces/conversation_trace.jsonl";
  std::uint32_t workers = 4;
  std::uint64_t tokens_per_worker = 3'000'000;
  std::uint32_t block_tokens = 512;  // tokens per trace block (hash id)
  std::size_t requests = 0;          // 0 = the whole trace
  std::string eviction_policy = "prefix";
  bool cache_fetched = false;
  std::string hit_tls = "tcp";
  std::string route =
      "round-robin";   // hit phase: round-robin, or locate (each request to the worker with its longest prefix)
  double pace_ms = 0;  // hit phase: at least this long from one request's start to the next's (0: back to back)
  std::vector<std::string> phases{"hit", "onboard", "index"};
  // onboard
  std::vector<std::string> onboard_tls{"sm", "tcp"};
  std::uint32_t onboard_blocks = 64;     // --full: 512 (1 GiB)
  std::uint32_t onboard_batch = 32;      // blocks per onboard (64 MiB: the transport bench's batch at 2 MiB)
  int spin_us = 50;                      // both the daemons' cluster.spin_us and the transport bench's --spin-us
  std::vector<std::string> worker_args;  // more kvblockd arguments for both onboard workers
  int repeat = 1;
  // index
  double index_seconds = 3;
  int index_rounds = 3;
  double peer_blocks_per_s = 50'000;  // the peer's offered load (0: as fast as it can)
  std::uint32_t lookup_sessions = 4;
};

/// One configuration of the hit-ratio phase.
struct HitRun {
  std::string name;
  std::uint32_t workers = 0;
  std::uint64_t blocks_per_worker = 0;
  bool cluster = false;
  std::uint64_t blocks = 0;       // blocks looked up
  std::uint64_t hits = 0;         // of those, in the matched (and onboarded) prefix
  std::uint64_t remote_hits = 0;  // of the hits, tier 4 (fetched from another worker)
  std::uint64_t retries = 0;      // onboards that failed (a block gone since the lookup) and were looked up again
  std::uint64_t errors = 0;
  std::vector<std::uint64_t> routed;  // requests sent to each worker
  double seconds = 0;
  [[nodiscard]] double ratio() const { return blocks ? static_cast<double>(hits) / static_cast<double>(blocks) : 0; }
};

struct HitResult {
  std::vector<HitRun> runs;  // alone, cluster, single
  double unbounded = 0;      // every block ever offloaded kept (computed from the trace)
  std::size_t requests = 0;
};

struct OnboardResult {
  std::string tls;
  std::string protocol;                // the daemons' bulk protocol (from the worker's log line)
  std::vector<double> gbps;            // remote onboard, one per repetition
  std::vector<double> transport_gbps;  // kvblockd-bench transport, one per repetition
  std::vector<double> local_gbps;      // the same onboards on A from its own G2 (no fetch), one per repetition
  std::vector<double> fetch_gbps;      // B's fetches alone (bytes_in over fetch_us, request to answer); 0: none
  std::vector<double> serve_gbps;      // A's serving of them (the same bytes over A's serve_us); 0: none
  std::uint64_t fetched_blocks = 0;    // B's blocks_in + direct_blocks over the timed onboards (last repetition)
  std::uint64_t errors = 0;
};

struct IndexRound {
  double base_lookups_per_s = 0;    // the peer offloads, not joined
  double events_lookups_per_s = 0;  // the peer offloads, joined
  double base_offloads_per_s = 0;
  double events_offloads_per_s = 0;
  double index_events_per_s = 0;  // index events (entries) the worker received
  // CPU seconds per second of W's event loop thread (which serves every
  // lookup and applies every index event) and of all of W's threads.
  double base_loop_cpu = 0;
  double events_loop_cpu = 0;
  double base_process_cpu = 0;
  double events_process_cpu = 0;
  // The same with the lookups paused: W's loop with P offloading, not
  // joined (idle) and joined (index events only), and the events then.
  double base_idle_loop_cpu = 0;
  double events_idle_loop_cpu = 0;
  double idle_index_events_per_s = 0;
};

struct IndexResult {
  double alone_lookups_per_s = 0;  // nothing else running
  double alone_loop_cpu = 0;       // W's loop thread, CPU seconds per second, then
  std::vector<IndexRound> rounds;
  std::uint64_t errors = 0;
};

[[nodiscard]] Result<HitResult> run_hit_phase(const Flags& flags, const std::vector<TraceRequest>& trace);
[[nodiscard]] Result<OnboardResult> run_onboard_phase(const Flags& flags, const std::string& tls);
[[nodiscard]] Result<IndexResult> run_index_phase(const Flags& flags);

/// The trace's block ids as 64-bit sequence hashes (as `kvblockd-bench load` maps them).
[[nodiscard]] std::uint64_t trace_hash(std::uint64_t id);

double median(std::vector<double> v);

}  // namespace kvb::bench::cluster
