// The same-run baselines of `kvblockd-bench transport` (memcpy of the same
// blocks, a plain TCP stream between the two processes) and the helpers they
// share with it: block stamps, full reads and writes, residency, pass times.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/common/error.h"
#include "kvb/transport/context.h"

namespace kvb::bench {

/// The working set a baseline moves: `blocks` blocks of `size` bytes,
/// `passes` times (pass 1 cold, the rest steady state).
struct BlockSet {
  std::size_t size = 0;
  std::size_t blocks = 0;
  std::size_t passes = 0;
};

/// Block i carries i + 1 in its first and ~i in its last 8 bytes.
void stamp_blocks(std::byte* base, std::size_t size, std::size_t blocks);
/// Blocks of a destination that do not carry their stamp (not delivered).
[[nodiscard]] std::uint64_t count_unstamped(const std::byte* base, std::size_t size, std::size_t blocks);
[[nodiscard]] bool write_full(int fd, const std::byte* data, std::size_t bytes);
[[nodiscard]] bool read_full(int fd, std::byte* data, std::size_t bytes);
/// Bytes of [addr, addr + bytes) whose pages are resident (mincore).
[[nodiscard]] std::uint64_t resident_bytes(const std::byte* addr, std::size_t bytes);
/// One line from `fd` (without the newline), waiting at most timeout_ms.
[[nodiscard]] std::string read_line(int fd, int timeout_ms);

/// Seconds per pass over the working set: [0] cold, the rest steady state.
struct PassTimes {
  std::vector<double> seconds;
  std::uint64_t resident_before = 0;  // destination bytes resident before the cold pass (should be 0)
  [[nodiscard]] double cold_gbps(std::size_t bytes) const {
    return seconds.empty() ? 0 : static_cast<double>(bytes) / seconds.front() / 1e9;
  }
  [[nodiscard]] double steady_gbps(std::size_t bytes) const {
    if (seconds.size() < 2) return 0;
    double sum = 0;
    for (std::size_t i = 1; i < seconds.size(); ++i) sum += seconds[i];
    return static_cast<double>(bytes) * static_cast<double>(seconds.size() - 1) / sum / 1e9;
  }
};

/// The TCP stream baseline's receiving end, run by the server for the
/// command "stream PORT SIZE BLOCKS PASSES". Returns the reply line.
[[nodiscard]] std::string receive_stream(transport::Context& context, const std::string& command);
/// memcpy of `set` from `src`, block i to block i, into a fresh destination
/// UCX allocates in `context` (untouched before the first pass).
[[nodiscard]] Result<PassTimes> memcpy_baseline(transport::Context& context, const std::byte* src, const BlockSet& set);
/// A plain TCP stream over 127.0.0.1 from `src` into a fresh destination in
/// the server (whose stdin is `to_server`, stdout `from_server`).
[[nodiscard]] Result<PassTimes> tcp_stream_baseline(int to_server, int from_server, const std::byte* src,
                                                    const BlockSet& set);

}  // namespace kvb::bench
