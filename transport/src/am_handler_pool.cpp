#include "kvb/transport/am_handler_pool.h"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace kvb::transport {

HandlerPool::HandlerPool(Worker& worker, const AmOptions& options, AmHandlerHost& host)
    : worker_(worker), options_(options), host_(host) {}

HandlerPool::~HandlerPool() {
  *alive_ = false;
  // Idle runners resume (posted), see the pool gone and end. A post that
  // cannot allocate leaves its runner parked: it is destroyed with the
  // worker's executor, never resumed into a pool that is gone.
  try {
    for (auto& h : idle_runners_) asio::post(worker_.executor(), [h = std::move(h)]() mutable { std::move(h)(); });
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
  }
  idle_runners_.clear();
}

Status HandlerPool::add(const std::string& type, AmHandler coroutine, AmSyncHandler sync, AmTypeLimits limits) {
  Entry entry;
  entry.coroutine = std::move(coroutine);
  entry.sync = std::move(sync);
  entry.limit =
      limits.max_concurrent == 0 ? options_.max_concurrent : std::min(limits.max_concurrent, options_.max_concurrent);
  if (!handlers_->emplace(type, std::move(entry)).second) {
    return fail(Errc::already_exists, "message type '{}' already has a handler", type);
  }
  return ok();
}

Result<AmTypeStats> HandlerPool::type_stats(const std::string& type) const {
  auto it = handlers_->find(type);
  if (it == handlers_->end()) return fail(Errc::not_found, "no handler for message type '{:.40}'", type);
  const Entry& e = it->second;
  return AmTypeStats{e.limit, e.running, e.peak_running, e.waiting.size(), e.handled};
}

void HandlerPool::refuse(const IncomingMessage& message, ucp_ep* reply_ep, Error error) {
  if (message.notification_id) {
    host_.reply(message.peer, reply_ep, *message.notification_id, tl::unexpected(std::move(error)));
  } else {
    ++stats_.fire_and_forget_failures;
    spdlog::warn("transport: fire-and-forget '{:.40}' from peer {}: {}", message.type, message.peer, error.message);
  }
}

void HandlerPool::note_queued() noexcept {
  ++stats_.queued;
  stats_.peak_queued = std::max(stats_.peak_queued, stats_.queued);
}

void HandlerPool::accept(IncomingMessage message, ucp_ep* reply_ep, std::uint32_t sender_token) {
  auto handler = handlers_->find(message.type);
  if (handler == handlers_->end()) {
    const std::string text = fmt::format("unknown message type: {}", message.type);
    return refuse(message, reply_ep, Error{Errc::not_found, text});
  }
  Entry& entry = handler->second;
  // A message takes a permit of its type and one of the manager (an idle
  // runner, a new one up to max_concurrent, or for a synchronous handler
  // the end of this progress pass), or waits (stats_.queued, bounded).
  const bool type_room = entry.held < entry.limit;
  const bool permit_free = permits_in_use() < options_.max_concurrent;
  if (!(type_room && permit_free) && stats_.queued >= options_.max_queued) {
    if (message.notification_id) {
      ++stats_.busy_refusals;
      host_.reply(
          message.peer, reply_ep, *message.notification_id,
          fail(Errc::busy, "busy: {} messages already queued (max_queued {})", stats_.queued, options_.max_queued));
    } else {
      ++stats_.dropped;
      spdlog::warn("transport: dropped fire-and-forget '{}' from peer {}: queue full ({})", message.type, message.peer,
                   stats_.queued);
    }
    return;
  }
  Queued q{std::move(message), reply_ep, sender_token, &entry, &handler->first};
  if (!type_room) {
    entry.waiting.push_back(std::move(q));
    note_queued();
    return;
  }
  ++entry.held;
  if (permit_free && entry.sync && shared_waiting_ == 0) {
    // No runner: it runs right after this pass (never inside the callback).
    sync_ready_.push_back(std::move(q));
    if (!sync_scheduled_) {
      sync_scheduled_ = true;
      worker_.complete_soon(Completion([this, alive = alive_] {
        if (*alive) run_sync_ready(alive);
      }));
    }
    return;
  }
  incoming_.push_back(std::move(q));
  if (permit_free) {
    ++woken_;
    wake_runner();
  } else {
    ++shared_waiting_;
    note_queued();
  }
}

void HandlerPool::started(Queued& q) noexcept {
  if (q.message.peer == PeerId{0}) q.message.peer = host_.sender(q.token, q.reply_ep);
  Entry& entry = *q.entry;
  ++stats_.running;
  stats_.peak_running = std::max(stats_.peak_running, stats_.running);
  ++entry.running;
  entry.peak_running = std::max(entry.peak_running, entry.running);
}

void HandlerPool::run_sync_ready(const std::shared_ptr<bool>& alive) {
  sync_scheduled_ = false;
  while (sync_done_ < sync_ready_.size()) {
    Queued& q = sync_ready_[sync_done_];
    ++sync_done_;
    started(q);  // the permit passes from sync_ready_ to running
    Result<Bytes> result = call_sync(q.entry->sync, q.message);
    if (!*alive) return;  // the handler destroyed the manager
    ended(*q.entry, q.message.peer, q.message.notification_id, *q.type, q.reply_ep, std::move(result));
  }
  sync_ready_.clear();  // keeps its capacity
  sync_done_ = 0;
  // Permits these held may be what queued messages wait for.
  while (shared_waiting_ > 0 && permits_in_use() < options_.max_concurrent) {
    --shared_waiting_;
    --stats_.queued;
    ++woken_;
    wake_runner();
  }
}

Result<Bytes> HandlerPool::call_sync(const AmSyncHandler& handler, IncomingMessage& message) {
  try {
    return handler(message);
  } catch (const std::exception& e) {
    return fail(Errc::internal, "{}", e.what());
  } catch (...) {
    return fail(Errc::internal, "unknown exception");
  }
}

void HandlerPool::ended(Entry& entry, PeerId peer, std::optional<std::uint64_t> id, const std::string& type,
                        ucp_ep* reply_ep, Result<Bytes> result) {
  --stats_.running;
  --entry.running;
  --entry.held;
  if (!entry.waiting.empty()) {
    // The type's permit passes to its oldest waiting message, which now
    // waits for a manager permit in the shared queue (still counted queued).
    ++entry.held;
    incoming_.push_back(std::move(entry.waiting.front()));
    entry.waiting.pop_front();
    ++shared_waiting_;
  }
  ++stats_.handled;
  ++entry.handled;
  if (!result) {
    ++stats_.handler_failures;
    if (!id) {
      ++stats_.fire_and_forget_failures;
      spdlog::warn("transport: fire-and-forget '{}' from peer {} failed: {}", type, peer, result.error().message);
    }
  }
  // The reply never blocks the caller (a slow send finishes elsewhere).
  if (id) host_.reply(peer, reply_ep, *id, std::move(result));
}

void HandlerPool::wake_runner() {
  if (!idle_runners_.empty()) {
    auto h = std::move(idle_runners_.back());
    idle_runners_.pop_back();
    worker_.complete_soon(std::move(h));
    return;
  }
  // Started by the worker after the current progress pass (never inside a
  // UCX callback): co_spawn then runs it inline up to its first wait.
  worker_.complete_soon(Completion([this, alive = alive_] {
    if (*alive) asio::co_spawn(worker_.executor(), runner(alive, handlers_), asio::detached);
  }));
}

asio::awaitable<void> HandlerPool::runner(std::shared_ptr<bool> alive,
                                          [[maybe_unused]] std::shared_ptr<HandlerMap> handlers) {
  // Each message in incoming_ is either assigned to a woken runner (woken_)
  // or waiting (shared_waiting_); incoming_.size() == woken_ + shared_waiting_.
  bool woken = true;  // spawned for a message
  for (;;) {
    if (woken) {
      --woken_;
      woken = false;
    } else if (shared_waiting_ > 0) {
      --shared_waiting_;
      --stats_.queued;
    } else {
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
          [this](auto handler) { idle_runners_.emplace_back(std::move(handler)); }, asio::use_awaitable);
      if (!*alive) co_return;
      woken = true;
      continue;
    }
    Queued q = std::move(incoming_.front());
    incoming_.pop_front();
    started(q);
    const PeerId peer = q.message.peer;  // the handler takes the message
    const auto id = q.message.notification_id;
    Result<Bytes> result = Bytes{};
    if (q.entry->sync) {
      // Queued behind other messages: the runner calls it in place.
      result = call_sync(q.entry->sync, q.message);
    } else {
      // `handlers` keeps the handler (and its captures) alive while its
      // coroutine runs.
      try {
        result = co_await q.entry->coroutine(std::move(q.message));
      } catch (const std::exception& e) {
        result = fail(Errc::internal, "{}", e.what());
      } catch (...) {
        result = fail(Errc::internal, "unknown exception");
      }
    }
    if (!*alive) co_return;
    ended(*q.entry, peer, id, *q.type, q.reply_ep, std::move(result));
  }
}

}  // namespace kvb::transport
