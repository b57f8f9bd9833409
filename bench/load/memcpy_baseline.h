// Same-run memcpy baselines of `kvblockd-bench load` for the mixes that move
// blocks: what the memory does with the bytes kvblockd moved.
//
//   cold:   the first requests' bytes, T threads, aggregate, between touched
//           buffers as large as the requests together (what those bytes
//           cost once the engine's and the pool's pages exist).
//   steady: request-sized copies by T threads cycling over touched buffers of
//           a working set several times the last-level cache, aggregate GB/s.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvb::bench {

/// Aggregate GB/s of `threads` threads copying `requests` pieces of `bytes`
/// each (split between them) between touched buffers of requests x bytes;
/// nullopt (and `why`) when memory could not be had.
[[nodiscard]] std::optional<double> memcpy_cold_gbps(std::uint64_t bytes, std::uint64_t requests, unsigned threads,
                                                     std::string& why);

struct SteadyMemcpy {
  double gbps = 0;                // aggregate over the threads
  std::uint64_t working_set = 0;  // bytes of source (and as many of destination)
  unsigned threads = 0;
};

/// `threads` threads each copy `chunk`-byte pieces over their share of a
/// working set of `working_set` bytes (source and destination each, touched
/// first) for `passes` passes; nullopt (and `why`) when memory could not be had.
[[nodiscard]] std::optional<SteadyMemcpy> memcpy_steady_gbps(std::uint64_t chunk, std::uint64_t working_set,
                                                             unsigned threads, unsigned passes, std::string& why);

}  // namespace kvb::bench
