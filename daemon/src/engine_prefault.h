// EnginePrefault: maps the pages an engine has already written into the
// daemon's mapping of its memfd KV regions, in the background, as soon as
// register_kv maps them (config key `prefault_engine_regions`).
//
// The daemon's mapping of an engine's memfd starts empty: without this, the
// first offload takes one minor fault per 64 KiB it reads (fault-around) and
// the first onboard one per 4 KiB page it writes, at 0.2-0.6x memcpy on a
// 1 GiB request (issue 13; `kvblockd-bench daemon` prints the faults). The
// pages are mapped for writing without changing a byte and without
// allocating any the engine has not (populate_resident_for_write: mincore,
// then MADV_POPULATE_WRITE per resident run), so an engine's untouched KV
// cache stays uncommitted: an onboard into it still allocates its pages.
//
// One thread for the daemon, at background priority, works through the
// registered regions in order, 4 MiB per call (the mmap lock is held for a
// call). A region is held only for the length of one call (a weak owner):
// a session that ends stops its region's prefault, and the memory is never
// unmapped under a call. The destructor stops between calls and joins.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace kvb::daemon {

class EnginePrefault {
 public:
  /// What the "g2_prefault" stats object shows of the engine regions.
  struct Totals {
    std::uint64_t queued_bytes = 0;  // bytes of every region handed to add()
    std::uint64_t done_bytes = 0;    // of those, walked (mapped, not resident, or given up: the region went)
    std::uint64_t mapped_bytes = 0;  // of those, resident pages mapped for writing
  };

  EnginePrefault();
  ~EnginePrefault();
  EnginePrefault(const EnginePrefault&) = delete;
  EnginePrefault& operator=(const EnginePrefault&) = delete;

  /// Queues the ranges of one engine's regions; `owner` keeps them mapped
  /// (each call holds it; once it expires the rest is skipped).
  void add(std::weak_ptr<const void> owner, std::vector<std::pair<std::byte*, std::uint64_t>> ranges);
  /// Stops after the current call and joins. Idempotent.
  void stop() noexcept;
  [[nodiscard]] Totals totals() const noexcept;

  static constexpr std::uint64_t kChunkBytes = std::uint64_t{4} << 20;

 private:
  struct Job {
    std::weak_ptr<const void> owner;
    std::vector<std::pair<std::byte*, std::uint64_t>> ranges;
  };
  void run() noexcept;
  void walk(const Job& job);

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> queued_{0}, done_{0}, mapped_{0};
  std::thread thread_;  // last: started once the rest exists
};

}  // namespace kvb::daemon
