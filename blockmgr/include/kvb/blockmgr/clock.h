// Clock: where eviction policies read the time. Tests use ManualClock and
// move time themselves, so no test sleeps.
#pragma once

#include <cstdint>
#include <ctime>

namespace kvb {

class Clock {
 public:
  Clock() = default;
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual ~Clock() = default;
  /// Monotonic nanoseconds since an arbitrary epoch. Never goes backwards.
  [[nodiscard]] virtual std::uint64_t now_ns() const noexcept = 0;
};

/// CLOCK_MONOTONIC_COARSE: a few ms resolution for a few ns a call. The
/// BlockManager's default: policies read the time on every release. "lru"
/// and "s3fifo" order blocks by release order, never by the clock; "prefix"
/// measures idleness in its own count of uses, never by the clock either
/// (the clock only feeds oldest_inactive_since_ns()).
class CoarseClock final : public Clock {
 public:
  [[nodiscard]] std::uint64_t now_ns() const noexcept override {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
  }
  /// A process-wide instance.
  [[nodiscard]] static const CoarseClock& instance() noexcept {
    static const CoarseClock clock;
    return clock;
  }
};

/// A clock that only moves when told to. Single-threaded, like its users.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::uint64_t start_ns = 0) noexcept : now_(start_ns) {}
  [[nodiscard]] std::uint64_t now_ns() const noexcept override { return now_; }
  /// Moves time forward by `ns`.
  void advance(std::uint64_t ns) noexcept { now_ += ns; }

 private:
  std::uint64_t now_;
};

}  // namespace kvb
