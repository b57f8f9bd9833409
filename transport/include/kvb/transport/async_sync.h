// AsyncEvent and AsyncSemaphore: single-executor coroutine synchronization on
// Asio timers (a parked waiter is a timer at time_point::max, woken by
// cancel()). No threads, no polling. Not thread-safe: every call must run on
// the io_context that owns them.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace kvb::transport {

namespace asio = boost::asio;

/// A one-shot (resettable) event: wait() resumes once set() was called.
class AsyncEvent {
 public:
  explicit AsyncEvent(const asio::any_io_executor& ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
  AsyncEvent(const AsyncEvent&) = delete;
  AsyncEvent& operator=(const AsyncEvent&) = delete;

  /// Wakes every current and future waiter until reset(). Idempotent.
  void set() {
    is_set_ = true;
    timer_.cancel();
    for (auto* t : waiters_) t->cancel();
  }
  /// Makes later waits park again.
  void reset() {
    is_set_ = false;
    timer_.expires_at(asio::steady_timer::time_point::max());
  }
  [[nodiscard]] bool is_set() const noexcept { return is_set_; }

  /// Resumes when set. Returns immediately if already set.
  asio::awaitable<void> wait() {
    while (!is_set_) {
      boost::system::error_code ec;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  /// Resumes when set or when `timeout` passed; returns whether it was set.
  asio::awaitable<bool> wait_for(std::chrono::steady_clock::duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!is_set_ && std::chrono::steady_clock::now() < deadline) {
      asio::steady_timer t(timer_.get_executor(), deadline);
      waiters_.push_back(&t);
      boost::system::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      std::erase(waiters_, &t);
    }
    co_return is_set_;
  }

 private:
  asio::steady_timer timer_;
  std::deque<asio::steady_timer*> waiters_;
  bool is_set_ = false;
};

/// Counting semaphore for coroutines. acquire() parks in FIFO order; a
/// release() hands the permit directly to the oldest waiter, so the number
/// of holders never exceeds the initial count.
class AsyncSemaphore {
 public:
  AsyncSemaphore(asio::any_io_executor ex, std::size_t permits) : ex_(std::move(ex)), available_(permits) {}
  AsyncSemaphore(const AsyncSemaphore&) = delete;
  AsyncSemaphore& operator=(const AsyncSemaphore&) = delete;

  /// Resumes holding one permit.
  asio::awaitable<void> acquire() {
    if (available_ > 0 && waiters_.empty()) {
      --available_;
      co_return;
    }
    auto waiter = std::make_shared<Waiter>(ex_);
    waiters_.push_back(waiter);
    while (!waiter->granted) {
      boost::system::error_code ec;
      co_await waiter->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  /// Returns one permit (to the oldest waiter if any).
  void release() {
    if (!waiters_.empty()) {
      auto w = waiters_.front();
      waiters_.pop_front();
      w->granted = true;
      w->timer.cancel();
      return;
    }
    ++available_;
  }

  [[nodiscard]] std::size_t available() const noexcept { return available_; }
  [[nodiscard]] std::size_t waiting() const noexcept { return waiters_.size(); }

 private:
  struct Waiter {
    explicit Waiter(const asio::any_io_executor& ex) : timer(ex, asio::steady_timer::time_point::max()) {}
    asio::steady_timer timer;
    bool granted = false;
  };
  asio::any_io_executor ex_;
  std::size_t available_;
  std::deque<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace kvb::transport
