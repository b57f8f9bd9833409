// LandingWindow: a second mapping of an engine's host KV region (the same
// pages, mapped again with mremap), that other workers' bulk writes land in
// when a remote onboard fetches straight into the engine
// (docs/cluster.md, "Fetched straight into the engine"). When a fetch
// ends while a write UCX already started may still be landing (a holder
// that timed out, a request the engine no longer waits for), the window's
// pages of its blocks are detached first: anonymous memory is mapped over
// them, so the late bytes land there and never in the engine's memory.
// A detached range comes back (the engine's pages mapped there again) once
// nothing lands in it any more. Event-loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "kvb/common/error.h"

namespace kvb::daemon {

class LandingWindow {
 public:
  /// Maps the `bytes` at `region` (a shared mapping, page aligned) again.
  /// Errors: io_error with the errno text.
  [[nodiscard]] static Result<std::unique_ptr<LandingWindow>> create(std::byte* region, std::uint64_t bytes);
  LandingWindow(const LandingWindow&) = delete;
  LandingWindow& operator=(const LandingWindow&) = delete;
  /// Unmaps the window, except detached ranges something may still land in
  /// (they stay mapped, anonymous, so a late write cannot fault).
  ~LandingWindow();

  /// Where `offset` of the region is seen through the window.
  [[nodiscard]] std::byte* at(std::uint64_t offset) const noexcept { return window_ + offset; }
  [[nodiscard]] std::uint64_t offset_of(const std::byte* p) const noexcept {
    return static_cast<std::uint64_t>(p - window_);
  }
  /// Whether writes into [offset, offset + bytes) reach the engine's pages:
  /// not detached (a detached range nothing lands in any more is first
  /// mapped back).
  [[nodiscard]] bool usable(std::uint64_t offset, std::uint64_t bytes);
  /// Detaches [offset, offset + bytes) (page aligned): from now on writes
  /// there land in anonymous memory, until `landing` says nothing does.
  [[nodiscard]] Status detach(std::uint64_t offset, std::uint64_t bytes, std::function<bool()> landing);
  /// Marks [offset, offset + bytes) as written by one fetch until
  /// release(): false (nothing marked) when a fetch in flight already
  /// writes there, so that no fetch's range is detached under another's
  /// writes (an engine that onboards into one block twice at once).
  [[nodiscard]] bool claim(std::uint64_t offset, std::uint64_t bytes);
  void release(std::uint64_t offset, std::uint64_t bytes);
  /// Ranges detached so far (monotonic).
  [[nodiscard]] std::uint64_t detached() const noexcept { return detached_count_; }

 private:
  struct Detached {
    std::uint64_t offset = 0;
    std::uint64_t bytes = 0;
    std::function<bool()> landing;
  };
  LandingWindow(std::byte* region, std::byte* window, std::uint64_t bytes) noexcept
      : region_(region), window_(window), bytes_(bytes) {}
  /// Maps the engine's pages back over detached ranges nothing lands in.
  void reattach();

  std::byte* region_;
  std::byte* window_;
  std::uint64_t bytes_;
  std::vector<Detached> detached_;
  std::map<std::uint64_t, std::uint64_t> claimed_;  // offset -> bytes, of fetches in flight
  std::uint64_t detached_count_ = 0;
};

}  // namespace kvb::daemon
