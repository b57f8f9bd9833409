// WorkerProcess: one real kvblockd started by `kvblockd-bench cluster`.
//
// Spawned (posix_spawn) on a socket in a fresh temp dir with its stdout and
// stderr in a log file there; start() waits, bounded, for its "listening on"
// line and, with --cluster-listen, for its bootstrap address. The destructor
// stops it (SIGTERM, then SIGKILL) and removes the temp dir.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/client/client.h"
#include "kvb/client/kv_region.h"
#include "kvb/common/error.h"

namespace kvb::bench {

class WorkerProcess {
 public:
  WorkerProcess() = default;
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;
  ~WorkerProcess();

  /// Starts `binary --socket <tmp>/kvblockd.sock args...` and waits up to
  /// `timeout` for it to listen (and, when args hold --cluster-listen, to log
  /// its bootstrap address). Errors name the step and end with its log's tail.
  [[nodiscard]] Status start(const std::string& binary, std::vector<std::string> args,
                             std::chrono::milliseconds timeout = std::chrono::seconds(30));
  /// Waits (polling its log every 10 ms) until the log holds `text`.
  [[nodiscard]] bool wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const;
  /// SIGTERM, then SIGKILL after `timeout`; reaps. Idempotent.
  void stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_; }
  /// IP:PORT of its cluster bootstrap listener ("" without --cluster-listen).
  [[nodiscard]] const std::string& bootstrap() const noexcept { return bootstrap_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// Its log so far (stdout and stderr).
  [[nodiscard]] std::string log() const;
  /// The last `lines` lines of its log.
  [[nodiscard]] std::string log_tail(std::size_t lines = 20) const;

 private:
  std::string dir_;
  std::string socket_;
  std::string log_path_;
  std::string bootstrap_;
  pid_t pid_ = -1;
};

/// An engine of the bench: a client that said hello with `shape` and `salt`
/// and registered a fully contiguous region of `blocks` blocks.
struct BenchEngine {
  std::unique_ptr<client::Client> client;
  std::unique_ptr<client::KvRegion> region;
};
[[nodiscard]] Result<BenchEngine> attach_engine(const std::string& socket, const client::BlockShape& shape,
                                                std::uint64_t salt, std::uint32_t blocks,
                                                std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace kvb::bench
