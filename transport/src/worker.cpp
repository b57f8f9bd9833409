#include "kvb/transport/worker.h"

#include <poll.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "ucx_request.h"

namespace kvb::transport {

Worker::Worker(Context& context, asio::any_io_executor executor, WorkerOptions options)
    : context_(context), executor_(std::move(executor)), options_(options) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_EVENTS;
  params.thread_mode = UCS_THREAD_MODE_SINGLE;
  params.events = UCP_WAKEUP_RX | UCP_WAKEUP_TX | UCP_WAKEUP_RMA;
  ucs_status_t st = ucp_worker_create(context.handle(), &params, &worker_);
  if (st != UCS_OK) detail::throw_ucx("ucp_worker_create", st);

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER | UCP_WORKER_ATTR_FIELD_ADDRESS;
  st = ucp_worker_query(worker_, &attr);
  if (st != UCS_OK) {
    ucp_worker_destroy(worker_);
    detail::throw_ucx("ucp_worker_query", st);
  }
  max_am_header_ = attr.max_am_header;
  address_.resize(attr.address_length);
  std::memcpy(address_.data(), attr.address, attr.address_length);
  ucp_worker_release_address(worker_, attr.address);

  int fd = -1;
  st = ucp_worker_get_efd(worker_, &fd);
  if (st != UCS_OK) {
    ucp_worker_destroy(worker_);
    detail::throw_ucx("ucp_worker_get_efd", st);
  }
  efd_ = std::make_unique<asio::posix::stream_descriptor>(executor_, fd);
  alive_ = std::make_shared<bool>(true);
}

Worker::~Worker() {
  *exists_ = false;
  try {
    stop();
    // Handlers queued for the loop still run (posted), never silently dropped.
    for (auto& h : ready_) asio::post(executor_, [h = std::move(h)]() mutable { std::move(h)(); });
  } catch (const std::exception& e) {  // a cancel or a post that failed: nothing escapes a destructor
    std::fprintf(stderr, "kvb transport: worker shutdown: %s\n", e.what());
  }
  if (efd_) (void)efd_->release();  // the fd belongs to UCX
  ucp_worker_destroy(worker_);
}

void Worker::start() {
  if (started_) return;
  started_ = true;
  asio::co_spawn(executor_, run_loop(alive_), asio::detached);
}

void Worker::stop() {
  if (!*alive_) return;
  *alive_ = false;
  if (efd_) efd_->cancel();
}

void Worker::kick() {
  if (waiting_ && efd_) efd_->cancel();
}

bool Worker::progress_once() { return ucp_worker_progress(worker_) != 0; }

bool Worker::progress_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) {
  using clock = std::chrono::steady_clock;
  constexpr auto kMaxSleep = std::chrono::milliseconds(1);
  constexpr int kMaxIdleBusy = 1000;
  int idle_busy = 0;
  bool finished = done();
  while (!finished) {
    bool worked = false;
    while (ucp_worker_progress(worker_) != 0) {  // until idle, or done
      ++blocking_passes_;
      worked = true;
      if ((finished = done())) break;
    }
    ++blocking_passes_;
    if (finished || (finished = done())) break;
    const auto now = clock::now();
    if (now >= deadline) break;
    const auto sleep = std::min<clock::duration>(deadline - now, kMaxSleep);
    const ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_ERR_BUSY) {
      // Events arrived since the last pass: progress again, unless UCX keeps
      // answering BUSY with nothing to progress (see run_loop): then pause.
      idle_busy = worked ? 0 : idle_busy + 1;
      if (idle_busy < kMaxIdleBusy) continue;
      std::this_thread::sleep_for(sleep);
      continue;
    }
    idle_busy = 0;
    if (st != UCS_OK) {  // cannot arm: no fd to sleep on, pause instead of spinning
      std::this_thread::sleep_for(sleep);
      continue;
    }
    pollfd p{efd_->native_handle(), POLLIN, 0};
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(sleep).count();
    (void)::poll(&p, 1, static_cast<int>(std::max<std::chrono::milliseconds::rep>(ms, 1)));
  }
  kick();  // the loop, if it sleeps on the fd, progresses and re-arms
  return finished;
}

void Worker::complete_soon(Completion handler) {
  if (in_loop_progress_ || running_ready_) {
    ready_.push_back(std::move(handler));
    return;
  }
  asio::post(executor_, [h = std::move(handler)]() mutable { std::move(h)(); });
}

bool Worker::run_ready(const std::shared_ptr<bool>& alive) {
  // Handlers may queue more (e.g. a reply completing another waiter in this
  // process): a few rounds, the rest after the next progress pass.
  const auto executor = executor_;
  running_ready_ = true;
  for (int round = 0; round < 4 && !ready_.empty(); ++round) {
    std::vector<Completion> batch;
    batch.swap(ready_);
    ready_.swap(spare_);  // keep the capacity of both vectors
    for (std::size_t i = 0; i < batch.size(); ++i) {
      // Inline: complete_soon's contract is that handlers belong to this
      // executor (ActiveMessageManager wraps foreign ones in a post).
      std::move(batch[i])();
      if (!*alive) {  // a handler destroyed the worker: `this` is gone
        for (std::size_t j = i + 1; j < batch.size(); ++j)
          asio::post(executor, [h = std::move(batch[j])]() mutable { std::move(h)(); });
        return false;
      }
    }
    batch.clear();
    spare_.swap(batch);
  }
  running_ready_ = false;
  return true;
}

bool Worker::poll() {
  const bool worked = progress_pass();
  if (!ready_.empty()) {
    const auto exists = exists_;  // a handler may destroy the worker
    (void)run_ready(exists);
  }
  return worked;
}

bool Worker::progress_pass() {
  in_loop_progress_ = true;
  const bool worked = ucp_worker_progress(worker_) != 0;
  in_loop_progress_ = false;
  return worked;
}

asio::awaitable<void> Worker::run_loop(std::shared_ptr<bool> alive) {
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  constexpr int kMaxIdleBusy = 1000;
  int idle_busy = 0;
  // While spinning, yield to the io_context once per slice (each yield costs
  // it a reactor poll, a syscall); handlers completed by UCX callbacks do not
  // wait for the yield: they run between progress passes (complete_soon).
  constexpr auto kSpinSlice = std::chrono::microseconds(20);
  while (*alive) {
    // Progress until idle, but yield to the io_context every kMaxPasses so a
    // worker that always has work cannot starve the coroutines it serves.
    constexpr int kMaxPasses = 64;
    int passes = 0;
    for (;;) {
      const bool worked = progress_pass();
      if (!ready_.empty() && !run_ready(alive)) co_return;
      if (!worked || ++passes == kMaxPasses) break;
    }
    auto now = clock::now();
    if (passes > 0) last_work = now;
    if (passes == kMaxPasses) {
      co_await asio::post(executor_, asio::use_awaitable);
      continue;
    }
    if (options_.spin.count() > 0 && now - last_work < options_.spin) {
      const auto slice_end = now + kSpinSlice;
      bool worked_in_slice = false;
      for (int spins = 1;; ++spins) {
        worked_in_slice = progress_pass() || worked_in_slice;
        if (!ready_.empty() && !run_ready(alive)) co_return;
        if ((spins & 255) == 0 && clock::now() >= slice_end) break;
      }
      if (worked_in_slice) last_work = clock::now();
      co_await asio::post(executor_, asio::use_awaitable);
      continue;
    }
    const ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_ERR_BUSY) {
      // Events arrived between the last progress and arm: progress again,
      // but let other coroutines run first.
      idle_busy = passes == 0 ? idle_busy + 1 : 0;
      if (idle_busy < kMaxIdleBusy) {
        co_await asio::post(executor_, asio::use_awaitable);
      } else {
        // UCX keeps refusing to arm although progress finds nothing (seen
        // after a shared-memory peer died): poll at 1 kHz, don't spin.
        ++degraded_polls_;
        asio::steady_timer pause(executor_, std::chrono::milliseconds(1));
        boost::system::error_code ec;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (!*alive) co_return;
      }
      continue;
    }
    idle_busy = 0;
    waiting_ = true;
    boost::system::error_code ec;
    co_await efd_->async_wait(asio::posix::stream_descriptor::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (!*alive) co_return;  // `this` may be gone
    waiting_ = false;
    ++wakeups_;
  }
}

}  // namespace kvb::transport
