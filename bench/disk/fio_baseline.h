// fio as the baseline of kvblockd-bench disk: the same file system, block
// size, O_DIRECT and queue depth, run from the same invocation.
#pragma once

#include <cstdint>
#include <string>

#include "kvb/common/error.h"

namespace kvb::bench {

struct FioJob {
  std::string fio = "fio";  // the program
  std::string file;         // its data file (created, then removed by the caller)
  std::uint64_t bytes = 0;  // file size and bytes moved
  std::uint64_t block_bytes = 0;
  std::uint32_t queue_depth = 1;
  std::string ioengine = "io_uring";  // "io_uring", or "psync" to match the thread-pool backend
  bool write = true;                  // rw=write (with fallocate and a final fsync), else rw=read
};

struct FioResult {
  double gbps = 0;      // bytes / second / 1e9
  double seconds = 0;   // runtime fio reports
  std::string command;  // what ran, for the report
};

/// Runs fio once (JSON output) and reads its bandwidth. unavailable when
/// fio is not installed; io_error when it fails (its stderr is included).
[[nodiscard]] Result<FioResult> run_fio(const FioJob& job);

}  // namespace kvb::bench
