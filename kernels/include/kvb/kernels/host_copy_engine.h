// HostCopyEngine: runs TransferPlans between host memory (pageable or pinned)
// on a small pool of worker threads.
//
// Complete (CopyEngine contract, kvb/blockmgr/copy_engine.h): done(ok) runs
// only after every byte of every run of the plan has been stored to the
// destination and fenced (sfence after streaming stores, then a release on
// the plan's piece counter), so any thread that observes done(ok) reads the
// new bytes. done(error) leaves the destination untrustworthy. `done` runs
// exactly once per submit(): inline inside submit() for a plan that cannot
// run here (device memory) or is empty, else on the worker that finished the
// plan's last piece. `done` may submit() again, but must not destroy the
// engine (the destructor joins the worker running it). No thread per copy, no
// busy spin: idle workers sleep on a condition variable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kvb/blockmgr/copy_engine.h"

namespace kvb {

struct HostCopyEngineOptions {
  /// Worker threads; 0 = std::thread::hardware_concurrency() (at least 1).
  unsigned workers = 0;
  /// A plan is split into at most `workers` pieces of at least this many
  /// bytes; a single run larger than a piece is itself split.
  std::uint64_t min_piece_bytes = std::uint64_t{8} << 20;
  /// Copies of at least this many bytes, inside plans of at least
  /// `streaming_min_plan_bytes`, use non-temporal (streaming) stores: the
  /// destination of a block move is not read back by this core, and
  /// streaming stores skip the read-for-ownership of every destination line.
  std::uint64_t streaming_min_copy_bytes = 512;
  std::uint64_t streaming_min_plan_bytes = std::uint64_t{4} << 20;
};

/// Counters for tests and metrics. Monotonic.
struct HostCopyEngineStats {
  std::uint64_t plans = 0;   // plans that ran (ok) on the workers
  std::uint64_t pieces = 0;  // pieces the workers copied
  std::uint64_t bytes = 0;   // bytes the workers copied
};

class HostCopyEngine final : public CopyEngine {
 public:
  /// Starts the workers. Throws std::system_error if a thread cannot start.
  explicit HostCopyEngine(HostCopyEngineOptions options = {});
  /// Finishes every plan already submitted (each `done` runs), then joins.
  ~HostCopyEngine() override;

  [[nodiscard]] std::string_view name() const noexcept override { return "host"; }
  /// Host and pinned host memory on both sides; never device memory.
  [[nodiscard]] bool supports(MemoryKind src, MemoryKind dst) const noexcept override {
    return src != MemoryKind::device && dst != MemoryKind::device;
  }
  /// See the contract above. Safe from any thread, including from `done`.
  void submit(TransferPlan plan, CopyDone done) override;

  [[nodiscard]] unsigned workers() const noexcept { return static_cast<unsigned>(threads_.size()); }
  /// How many pieces a plan of `bytes` bytes is split into. Pure.
  [[nodiscard]] std::uint64_t pieces_for(std::uint64_t bytes) const noexcept;
  /// Snapshot of the counters. Safe from any thread.
  [[nodiscard]] HostCopyEngineStats stats() const noexcept;

 private:
  struct Job;
  struct Piece {
    std::shared_ptr<Job> job;
    std::uint64_t begin = 0;  // byte range of the plan's concatenated runs
    std::uint64_t end = 0;
  };

  void worker_loop();
  void run_piece(const Piece& piece);

  HostCopyEngineOptions options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Piece> queue_;  // guarded by mutex_
  bool stopping_ = false;    // guarded by mutex_
  std::vector<std::thread> threads_;
  std::atomic<std::uint64_t> plans_{0};
  std::atomic<std::uint64_t> pieces_{0};
  std::atomic<std::uint64_t> bytes_{0};
};

}  // namespace kvb
