#include "engine_prefault.h"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "background_priority.h"
#include "kvb/common/page_populate.h"

namespace kvb::daemon {

EnginePrefault::EnginePrefault() : thread_([this] { run(); }) {}

EnginePrefault::~EnginePrefault() { stop(); }

void EnginePrefault::add(std::weak_ptr<const void> owner, std::vector<std::pair<std::byte*, std::uint64_t>> ranges) {
  std::uint64_t bytes = 0;
  for (const auto& r : ranges) bytes += r.second;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    queued_.fetch_add(bytes, std::memory_order_relaxed);
    jobs_.push_back({std::move(owner), std::move(ranges)});
  }
  wake_.notify_one();
}

void EnginePrefault::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_.store(true, std::memory_order_release);
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

EnginePrefault::Totals EnginePrefault::totals() const noexcept {
  return {queued_.load(std::memory_order_relaxed), done_.load(std::memory_order_acquire),
          mapped_.load(std::memory_order_relaxed)};
}

void EnginePrefault::run() noexcept {
  lower_this_thread_priority();
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      walk(job);
    } catch (...) {  // NOLINT(bugprone-empty-catch): the log could not allocate; the copies fault the pages in
    }
  }
}

void EnginePrefault::walk(const Job& job) {
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t total = 0, mapped = 0;
  for (const auto& r : job.ranges) total += r.second;
  std::uint64_t left = total;
  for (const auto& [base, bytes] : job.ranges) {
    for (std::uint64_t off = 0; off < bytes;) {
      if (stop_.load(std::memory_order_acquire)) return;
      const std::uint64_t n = std::min(kChunkBytes, bytes - off);
      auto hold = job.owner.lock();
      if (!hold) {  // the session ended: nothing left to map
        done_.fetch_add(left, std::memory_order_release);
        return;
      }
      auto populated = populate_resident_for_write(base + off, n);
      hold.reset();
      if (!populated) {
        spdlog::warn("engine region prefault stopped after {} of {} bytes: {}; the first copies fault the rest in",
                     total - left, total, populated.error().message);
        done_.fetch_add(left, std::memory_order_release);
        return;
      }
      mapped += *populated;
      mapped_.fetch_add(*populated, std::memory_order_relaxed);
      done_.fetch_add(n, std::memory_order_release);
      left -= n;
      off += n;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::debug("engine region prefault: {} of {} bytes resident, mapped in {:.3f} s", mapped, total, seconds);
}

}  // namespace kvb::daemon
