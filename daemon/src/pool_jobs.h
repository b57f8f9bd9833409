// A thread that builds and tears down host pools off the event loop
// (docs/operations.md, "Pool creation and reclaim"). Building a pool's
// bookkeeping (registry, eviction policy: ~70-210 bytes per block, written
// as it is allocated) and tearing a pool down (joining its prefault,
// unmapping hundreds of MiB of populated memory) each take tens of
// milliseconds, which every other session would otherwise wait out.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace kvb::daemon {

class PoolJobs {
 public:
  PoolJobs() = default;
  /// Runs every job still queued, then joins the thread.
  ~PoolJobs();
  PoolJobs(const PoolJobs&) = delete;
  PoolJobs& operator=(const PoolJobs&) = delete;

  /// Runs `job` on this queue's thread (started at the first call), after
  /// the jobs before it. What it touches must not be shared with the loop
  /// unguarded. If the thread cannot start, the job runs here, now.
  void post(std::function<void()> job);
  /// Blocks until every job posted so far has run.
  void drain();
  /// Jobs posted and not finished yet.
  [[nodiscard]] std::uint32_t pending() const noexcept { return pending_.load(std::memory_order_acquire); }

 private:
  void run();

  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> queue_;
  std::atomic<std::uint32_t> pending_{0};
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace kvb::daemon
