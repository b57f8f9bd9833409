#include "kvb/transport/worker.h"

#include <cstring>

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
  stop();
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

asio::awaitable<void> Worker::run_loop(std::shared_ptr<bool> alive) {
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  constexpr int kMaxIdleBusy = 1000;
  int idle_busy = 0;
  int yields_since_work = 0;
  constexpr int kPlainYields = 2;
  constexpr auto kSpinSlice = std::chrono::microseconds(20);
  while (*alive) {
    // Progress until idle, but yield to the io_context every kMaxPasses so a
    // worker that always has work cannot starve the coroutines it serves.
    constexpr int kMaxPasses = 64;
    int passes = 0;
    in_loop_progress_ = true;
    while (passes < kMaxPasses && ucp_worker_progress(worker_) != 0) ++passes;
    in_loop_progress_ = false;
    auto now = clock::now();
    if (passes > 0) {
      last_work = now;
      yields_since_work = 0;
    }
    if (passes == kMaxPasses) {
      co_await asio::post(executor_, asio::use_awaitable);
      continue;
    }
    if (options_.spin.count() > 0 && now - last_work < options_.spin) {
      // Spin. The first kPlainYields passes after work yield at once, so the
      // handlers that work posted (and the ones they post) run promptly; after
      // that nothing of ours is queued, so progress inline for a short slice
      // (until UCX has work) and only then yield: each yield costs the
      // io_context a reactor poll (a syscall).
      if (++yields_since_work > kPlainYields) {
        const auto slice_end = std::min(now + kSpinSlice, last_work + options_.spin);
        in_loop_progress_ = true;
        int spins = 0;
        bool worked = false;
        while (!(worked = ucp_worker_progress(worker_) != 0)) {
          if ((++spins & 15) == 0 && clock::now() >= slice_end) break;
        }
        in_loop_progress_ = false;
        if (worked) {
          last_work = clock::now();
          yields_since_work = 0;
        }
      }
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
