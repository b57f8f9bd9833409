// DeadlineQueue: every request deadline of the daemon on ONE timer.
//
// Entries are (time, callback) in an ordered multimap; the single
// steady_timer is armed for the earliest. add() returns a handle that
// cancel() erases in O(1), so finished requests leave nothing behind: memory
// follows the requests in flight, not the request rate times the timeout.
// Inserting deadlines in time order (one timeout for every request) is
// amortised O(1). No timer or task per request. Event-loop thread only.
#pragma once

#include <chrono>
#include <functional>
#include <map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace kvb::daemon {

class DeadlineQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using Entries = std::multimap<Clock::time_point, std::function<void()>>;
  using Handle = Entries::iterator;

  explicit DeadlineQueue(boost::asio::io_context& io) : timer_(io) {}

  /// Runs `expired` on the loop at (or soon after) `when`, unless cancel() or
  /// stop() ran first. The entry is erased before `expired` runs: its handle
  /// is dead from then on. After stop() this returns a dead handle.
  Handle add(Clock::time_point when, std::function<void()> expired) {
    if (stopped_) return entries_.end();
    const bool earliest = entries_.empty() || when < entries_.begin()->first;
    auto handle = entries_.emplace_hint(entries_.end(), when, std::move(expired));
    if (earliest) arm();
    return handle;
  }

  /// Drops a pending entry. Precondition: `handle` came from add() and its
  /// entry has neither fired nor been cancelled. A no-op after stop().
  void cancel(Handle handle) {
    if (stopped_ || handle == entries_.end()) return;
    entries_.erase(handle);  // the timer may fire early once; it re-arms for the next
  }

  /// Drops every entry without running it and cancels the timer. Idempotent.
  void stop() {
    stopped_ = true;
    entries_.clear();
    timer_.cancel();
  }

  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  [[nodiscard]] bool stopped() const noexcept { return stopped_; }

 private:
  void arm() {
    timer_.expires_at(entries_.begin()->first);
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopped_) return;
      fire();
    });
  }

  void fire() {
    const auto now = Clock::now();
    while (!entries_.empty() && entries_.begin()->first <= now) {
      auto expired = std::move(entries_.begin()->second);
      entries_.erase(entries_.begin());
      expired();
      if (stopped_) return;
    }
    if (!entries_.empty()) arm();
  }

  boost::asio::steady_timer timer_;
  Entries entries_;
  bool stopped_ = false;
};

}  // namespace kvb::daemon
