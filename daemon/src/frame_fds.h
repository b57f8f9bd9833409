// FrameFds: which frame the fds passed on a connection belong to.
//
// The kernel hands over SCM_RIGHTS fds with the read that reaches the bytes
// they were sent with, and a read that brings fds ends with the bytes of
// their sendmsg (it never reads past them). So a batch of fds belongs to the
// frame in which its read ended: the frame [start, end) of the stream owns
// every batch whose read ended in (start, end]. A client sends a frame that
// carries fds with one sendmsg for the frame (docs/protocol.md).
//
// claim() hands a complete frame its fds; whatever that frame does not use
// is closed with it (UniqueFd), so fds never outlive the frame they came
// with and never reach another request. Only the frame still being received
// holds fds here. Event-loop thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "kvb/common/unique_fd.h"

namespace kvb::daemon {

class FrameFds {
 public:
  /// A read that ended at stream offset `read_end` brought `fds`.
  void received(std::uint64_t read_end, std::vector<UniqueFd> fds) {
    if (fds.empty()) return;
    held_ += fds.size();
    batches_.push_back(Batch{read_end, std::move(fds)});
  }

  /// The fds of the frame that ends at stream offset `frame_end` (every
  /// batch whose read ended at or before it), in arrival order.
  [[nodiscard]] std::vector<UniqueFd> claim(std::uint64_t frame_end) {
    std::vector<UniqueFd> out;
    while (!batches_.empty() && batches_.front().read_end <= frame_end) {
      for (auto& fd : batches_.front().fds) out.push_back(std::move(fd));
      held_ -= batches_.front().fds.size();
      batches_.pop_front();
    }
    return out;
  }

  /// fds held for the frame still being received.
  [[nodiscard]] std::size_t held() const noexcept { return held_; }

  /// Closes every fd held. Idempotent.
  void clear() noexcept {
    batches_.clear();
    held_ = 0;
  }

 private:
  struct Batch {
    std::uint64_t read_end;
    std::vector<UniqueFd> fds;
  };
  std::deque<Batch> batches_;
  std::size_t held_ = 0;
};

}  // namespace kvb::daemon
