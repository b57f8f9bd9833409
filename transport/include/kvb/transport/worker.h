// Worker: owns a ucp_worker (with wakeup) and drives it from an Asio
// executor: progress until idle, ucp_worker_arm, then wait on the worker's
// event fd through the io_context (UCS_ERR_BUSY: progress again). No busy
// polling unless WorkerOptions::spin asks for a bounded spin.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "kvb/common/error.h"
#include "kvb/transport/completion.h"
#include "kvb/transport/context.h"
#include "kvb/transport/ucx_fwd.h"

namespace kvb::transport {

struct WorkerOptions {
  /// After the last progress that did work, keep progressing (yielding to
  /// the io_context between passes) for this long before sleeping on the
  /// event fd. 0 (default) = never spin: sleep as soon as the worker is idle.
  std::chrono::microseconds spin{0};
};

class Worker {
 public:
  /// Creates the worker. Throws TransportError. Call start() to drive it.
  Worker(Context& context, boost::asio::any_io_executor executor, WorkerOptions options = {});
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  /// Stops the progress loop; the worker must have no endpoints left.
  ~Worker();

  /// Starts the progress coroutine on the executor. Idempotent.
  void start();
  /// Stops the progress coroutine (it exits at its next wake). Idempotent.
  void stop();
  /// Makes the progress loop run a pass soon (call after posting UCX work).
  void kick();
  /// One synchronous progress pass; returns whether it did work. Never call
  /// from inside a UCX callback.
  bool progress_once();
  /// Progresses the worker outside its loop until `done()` or `deadline`,
  /// for code that must wait for UCX synchronously (a destructor closing an
  /// endpoint, goodbyes). When a pass finds nothing to do it sleeps on the
  /// worker's event fd (ucp_worker_arm, then poll for at most 1 ms, so work
  /// UCX does not signal on the fd is still picked up within 1 ms) instead
  /// of spinning; the loop is kicked afterwards, so it re-arms. Blocks the
  /// calling thread up to `deadline`. Never call from a UCX callback.
  /// Returns done().
  bool progress_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline);
  /// One progress pass driven by the caller instead of start()'s loop (for
  /// callers that own a polling loop): UCX callbacks run as inside the loop,
  /// then the handlers they completed run inline. Call on the executor's
  /// thread, never from a UCX callback. Returns whether UCX did work.
  bool poll();
  /// Completes `handler` on the executor. From a UCX callback that runs
  /// inside the worker's own loop (in_loop_progress()), or from a handler the
  /// loop is completing, it is queued and invoked (dispatched) by the loop
  /// right after the current progress pass: no scheduler round trip between
  /// a message arriving and the coroutine waiting for it. Anywhere else it is
  /// posted. The handler must run on this worker's executor: it may be
  /// invoked inline by the worker's loop.
  void complete_soon(Completion handler);

  [[nodiscard]] ucp_worker* handle() const noexcept { return worker_; }
  [[nodiscard]] Context& context() const noexcept { return context_; }
  [[nodiscard]] const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  /// This worker's UCX address (for connect-by-address).
  [[nodiscard]] const std::vector<std::byte>& address() const noexcept { return address_; }
  /// Largest AM header UCX accepts on this worker (ucp_worker_query).
  [[nodiscard]] std::size_t max_am_header() const noexcept { return max_am_header_; }
  /// Shared flag that turns false when the worker is destroyed (objects that
  /// may outlive it, e.g. endpoints held by coroutine frames, check it).
  [[nodiscard]] std::shared_ptr<const bool> exists() const noexcept { return exists_; }
  /// True while the progress loop itself is inside ucp_worker_progress (UCX
  /// callbacks then run on the executor, outside any other user code).
  [[nodiscard]] bool in_loop_progress() const noexcept { return in_loop_progress_; }
  /// Number of times the loop slept on the event fd and woke (diagnostics).
  [[nodiscard]] std::uint64_t wakeups() const noexcept { return wakeups_; }
  /// 1 ms pauses taken because UCX kept answering ucp_worker_arm with BUSY
  /// while progress found nothing (diagnostics).
  [[nodiscard]] std::uint64_t degraded_polls() const noexcept { return degraded_polls_; }
  /// Progress passes made by progress_until (diagnostics: a wait that
  /// sleeps makes few, one that spins would make millions per second).
  [[nodiscard]] std::uint64_t blocking_passes() const noexcept { return blocking_passes_; }

 private:
  boost::asio::awaitable<void> run_loop(std::shared_ptr<bool> alive);
  // Runs the handlers complete_soon() queued; false when one of them
  // destroyed the worker (the rest were posted).
  bool run_ready(const std::shared_ptr<bool>& alive);
  // One ucp_worker_progress with in_loop_progress() set.
  bool progress_pass();

  Context& context_;
  boost::asio::any_io_executor executor_;
  WorkerOptions options_;
  ucp_worker* worker_ = nullptr;
  std::vector<std::byte> address_;
  std::size_t max_am_header_ = 0;
  std::unique_ptr<boost::asio::posix::stream_descriptor> efd_;
  std::shared_ptr<bool> alive_;
  std::shared_ptr<bool> exists_ = std::make_shared<bool>(true);
  bool started_ = false;
  bool waiting_ = false;
  bool in_loop_progress_ = false;
  bool running_ready_ = false;
  std::vector<Completion> ready_;
  std::vector<Completion> spare_;
  std::uint64_t wakeups_ = 0;
  std::uint64_t degraded_polls_ = 0;
  std::uint64_t blocking_passes_ = 0;
};

}  // namespace kvb::transport
