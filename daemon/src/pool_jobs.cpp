#include "pool_jobs.h"

#include <cstdio>
#include <exception>
#include <system_error>
#include <utility>

#include "background_priority.h"

namespace kvb::daemon {

PoolJobs::~PoolJobs() {
  {
    const std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PoolJobs::post(std::function<void()> job) {
  std::unique_lock lock(mu_);
  if (!thread_.joinable()) {
    try {
      thread_ = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
      lock.unlock();
      std::fprintf(stderr, "kvblockd: host pool thread: %s; running its job on the loop\n", e.what());
      job();
      return;
    }
  }
  queue_.push_back(std::move(job));
  pending_.fetch_add(1, std::memory_order_acq_rel);
  lock.unlock();
  wake_.notify_one();
}

void PoolJobs::drain() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
}

void PoolJobs::run() {
  lower_this_thread_priority();
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_, nothing left
    auto job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      job();
    } catch (const std::exception& e) {  // jobs report their own errors; this is a last resort
      std::fprintf(stderr, "kvblockd: host pool job: %s\n", e.what());
    }
    job = nullptr;  // what it captured goes here, off the loop
    lock.lock();
    pending_.fetch_sub(1, std::memory_order_acq_rel);
    idle_.notify_all();
  }
}

}  // namespace kvb::daemon
