// CopyAdmission: the admission semaphore of one copy engine.
//
// `slots` copies run at once; up to `queue_limit` more wait in FIFO order;
// beyond that a request is refused (busy) at once, never dropped silently.
// A queued start whose request ended meanwhile (timeout, session gone) is
// skipped when its turn comes. Event-loop thread only; O(1) per operation.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "kvb/common/error.h"

namespace kvb::daemon {

class CopyAdmission {
 public:
  /// `start` runs when a slot is free; it must call release() exactly once
  /// when its copy ends (or at once when it decides not to copy).
  using Start = std::function<void()>;

  CopyAdmission(std::string engine_name, std::uint32_t slots, std::uint32_t queue_limit)
      : engine_name_(std::move(engine_name)), slots_(slots), queue_limit_(queue_limit) {}

  /// Whether admit() would run its start at once (a slot is free).
  [[nodiscard]] bool would_start_now() const noexcept { return running_ < slots_; }

  /// Runs `start` now when a slot is free, else queues it; busy when the
  /// queue is full.
  [[nodiscard]] Status admit(Start start) {
    if (running_ < slots_) {
      ++running_;
      start();
      return kvb::ok();
    }
    if (queue_.size() >= queue_limit_) {
      return fail(Errc::busy, "copy engine '{}' is full: {} copies running, {} queued (copy_slots {}, copy_queue {})",
                  engine_name_, running_, queue_.size(), slots_, queue_limit_);
    }
    queue_.push_back(std::move(start));
    return kvb::ok();
  }

  /// A slot is free again: starts queued copies while slots are free.
  /// Safe to call from inside a `start` (no recursion).
  void release() {
    if (running_ > 0) --running_;
    if (pumping_) return;
    pumping_ = true;
    while (running_ < slots_ && !queue_.empty()) {
      auto next = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      next();
    }
    pumping_ = false;
  }

  [[nodiscard]] std::uint32_t running() const noexcept { return running_; }
  [[nodiscard]] std::size_t queued() const noexcept { return queue_.size(); }
  [[nodiscard]] const std::string& engine_name() const noexcept { return engine_name_; }

 private:
  std::string engine_name_;
  std::uint32_t slots_;
  std::uint32_t queue_limit_;
  std::uint32_t running_ = 0;
  std::deque<Start> queue_;
  bool pumping_ = false;
};

}  // namespace kvb::daemon
