// FaultInjectingFileIo: wraps a real FileIo and makes chosen operations fail
// with a chosen errno (ENOSPC, EIO, ...) or complete late (a slow disk), so
// that the disk tier's failure handling runs on every machine. Never used
// unless asked for (tests, or the daemon's `disk.inject_faults` drill key);
// its name says so in logs and stats: "fault-injecting(io_uring)".
//
// Faults apply to operations submitted after set_plan(); the plan can change
// at any time (safe from any thread).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kvb/storage/file_io.h"

namespace kvb::storage {

struct FaultPlan {
  /// Writes fail with this errno (0 = never) once `writes_before_fault`
  /// writes have passed through untouched.
  int write_errno = 0;
  std::uint64_t writes_before_fault = 0;
  /// Reads fail with this errno (0 = never) after `reads_before_fault` reads.
  int read_errno = 0;
  std::uint64_t reads_before_fault = 0;
  /// fdatasync fails with this errno (0 = never).
  int sync_errno = 0;
  /// Every operation completes this much later than the real one (slow I/O).
  std::chrono::milliseconds delay{0};

  /// "write_errno=ENOSPC,writes_before_fault=4,read_errno=EIO,sync_errno=EIO,delay_ms=50"
  /// (any subset, comma separated). invalid_argument names a bad item.
  [[nodiscard]] static Result<FaultPlan> parse(std::string_view text);
  [[nodiscard]] std::string to_string() const;
};

class FaultInjectingFileIo final : public FileIo {
 public:
  FaultInjectingFileIo(std::unique_ptr<FileIo> real, FaultPlan plan);
  /// Waits for delayed operations, then for the real backend.
  ~FaultInjectingFileIo() override;

  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  void read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) override;
  void write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) override;
  void datasync(IoDone done) override;
  [[nodiscard]] std::uint32_t in_flight() const noexcept override { return real_->in_flight() + delayed_.load(); }

  void set_plan(FaultPlan plan);
  /// Operations failed on purpose so far.
  [[nodiscard]] std::uint64_t injected() const noexcept { return injected_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  // Runs `fn` after `delay` on the delay thread; with no delay, inline
  // unless `on_thread`.
  void later(std::chrono::milliseconds delay, std::function<void()> fn, bool on_thread = false);
  void fail_soon(std::chrono::milliseconds delay, IoDone done, int err, std::string_view what, std::uint64_t offset);
  void delay_loop();

  std::unique_ptr<FileIo> real_;
  std::string name_;
  std::mutex mu_;
  FaultPlan plan_;            // guarded by mu_
  std::uint64_t writes_ = 0;  // guarded by mu_
  std::uint64_t reads_ = 0;   // guarded by mu_
  std::condition_variable cv_;
  std::multimap<Clock::time_point, std::function<void()>> timers_;  // guarded by mu_
  bool stopping_ = false;                                           // guarded by mu_
  std::atomic<std::uint32_t> delayed_{0};
  std::atomic<std::uint64_t> injected_{0};
  std::thread delay_thread_;
};

}  // namespace kvb::storage
