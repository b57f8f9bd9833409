// DeadlineQueue: every request deadline of the daemon on ONE timer.
//
// Entries are (time, callback) in a min-heap; the single steady_timer is armed
// for the earliest. Cancelling is lazy: a callback checks whether its request
// is still pending (the owner keeps a token) and does nothing otherwise.
// O(log n) per deadline, no timer or task per request. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace kvb::daemon {

class DeadlineQueue {
 public:
  using Clock = std::chrono::steady_clock;

  explicit DeadlineQueue(boost::asio::io_context& io) : timer_(io) {}

  /// Runs `expired` on the loop at (or soon after) `when`, unless stop() ran first.
  void add(Clock::time_point when, std::function<void()> expired) {
    if (stopped_) return;
    const bool earliest = heap_.empty() || when < heap_.top().when;
    heap_.push(Entry{when, next_seq_++, std::move(expired)});
    if (earliest) arm();
  }

  /// Drops every entry without running it and cancels the timer. Idempotent.
  void stop() {
    stopped_ = true;
    heap_ = {};
    timer_.cancel();
  }

  [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }

 private:
  struct Entry {
    Clock::time_point when;
    std::uint64_t seq;
    std::function<void()> expired;
    bool operator>(const Entry& other) const { return when != other.when ? when > other.when : seq > other.seq; }
  };

  void arm() {
    timer_.expires_at(heap_.top().when);
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopped_) return;
      fire();
    });
  }

  void fire() {
    const auto now = Clock::now();
    while (!heap_.empty() && heap_.top().when <= now) {
      auto expired = std::move(const_cast<Entry&>(heap_.top()).expired);
      heap_.pop();
      expired();
      if (stopped_) return;
    }
    if (!heap_.empty()) arm();
  }

  boost::asio::steady_timer timer_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  std::uint64_t next_seq_ = 0;
  bool stopped_ = false;
};

}  // namespace kvb::daemon
