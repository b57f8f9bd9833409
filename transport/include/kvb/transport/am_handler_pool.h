// HandlerPool: the ActiveMessageManager's handlers by message type, run
// under permits. At most AmOptions::max_concurrent handlers hold a permit
// at once (running, or assigned to a runner or to the end of the current
// progress pass), and at most AmTypeLimits::max_concurrent of one type.
// A message that finds no permit waits in the shared FIFO queue; one whose
// type is at its limit waits in its type's FIFO queue and joins the shared
// one when a handler of its type ends. Both queues together hold at most
// max_queued messages; beyond that a request is answered err(busy: ...)
// and a fire-and-forget message is dropped and counted.
//
// Coroutine handlers run on runners: at most max_concurrent coroutines,
// each taking queued messages one at a time. Synchronous handlers with a
// free permit run right after the progress pass that received them, with
// no runner. Replies go out through the AmHandlerHost (the manager).
// Threading: the worker's executor only (see am_manager.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/transport/am_types.h"
#include "kvb/transport/completion.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

/// What the pool needs of its owner (the manager). Neither call runs user
/// code (both are made from UCX callbacks too).
class AmHandlerHost {
 public:
  /// Sends a handler's outcome: `<id>:ok` + payload or `<id>:err(...)` with
  /// the error's code, to `peer` (or, for an unknown sender, `reply_ep`).
  virtual void reply(PeerId peer, ucp_ep* reply_ep, std::uint64_t id, Result<Bytes> result) = 0;
  /// The sender of a message that arrived before its sender was known (its
  /// hello is accepted after the progress pass that received both).
  [[nodiscard]] virtual PeerId sender(std::uint32_t token, ucp_ep* reply_ep) const = 0;

 protected:
  ~AmHandlerHost() = default;
};

class HandlerPool {
 public:
  HandlerPool(Worker& worker, const AmOptions& options, AmHandlerHost& host);
  HandlerPool(const HandlerPool&) = delete;
  HandlerPool& operator=(const HandlerPool&) = delete;
  /// Idle runners end; running handlers finish without replying.
  ~HandlerPool();

  /// Registers `type` with exactly one of `coroutine`, `sync`. Errors:
  /// already_exists.
  [[nodiscard]] Status add(const std::string& type, AmHandler coroutine, AmSyncHandler sync, AmTypeLimits limits);
  /// Takes a permit and schedules the handler, or queues `message`, or
  /// answers unknown type / busy. Runs no user code (callable from a UCX
  /// callback inside the worker's loop).
  void accept(IncomingMessage message, ucp_ep* reply_ep, std::uint32_t sender_token);
  /// A message that will not be handled: `error` to a request; logged and
  /// counted (fire_and_forget_failures) for a fire-and-forget message.
  void refuse(const IncomingMessage& message, ucp_ep* reply_ep, Error error);

  [[nodiscard]] const AmStats& stats() const noexcept { return stats_; }
  /// not_found for a type without a handler.
  [[nodiscard]] Result<AmTypeStats> type_stats(const std::string& type) const;

 private:
  struct Entry;
  // An accepted message waiting for a runner (or, synchronous, for the end
  // of the progress pass).
  struct Queued {
    IncomingMessage message;
    ucp_ep* reply_ep = nullptr;
    std::uint32_t token = 0;            // the sender's, to name it when it was unknown on arrival
    Entry* entry = nullptr;             // in *handlers_, which runners keep alive
    const std::string* type = nullptr;  // its key there (message.type may be moved out)
  };
  // A registered type: exactly one of coroutine, sync is set.
  struct Entry {
    AmHandler coroutine;
    AmSyncHandler sync;
    std::size_t limit = 0;
    std::size_t held = 0;  // permits of this type: running, assigned, or reserved in the shared queue
    std::size_t running = 0;
    std::size_t peak_running = 0;
    std::uint64_t handled = 0;
    std::deque<Queued> waiting;  // over the type's limit
  };
  using HandlerMap = std::unordered_map<std::string, Entry>;

  // Handlers that hold a manager permit: running, or assigned to a runner
  // or to the end of this progress pass and about to run.
  [[nodiscard]] std::size_t permits_in_use() const noexcept {
    return stats_.running + woken_ + (sync_ready_.size() - sync_done_);
  }
  void note_queued() noexcept;
  void wake_runner();
  asio::awaitable<void> runner(std::shared_ptr<bool> alive, std::shared_ptr<HandlerMap> handlers);
  // Runs the synchronous messages accepted during the last progress pass.
  void run_sync_ready(const std::shared_ptr<bool>& alive);
  // Calls a synchronous handler (counted as running); exceptions -> err.
  static Result<Bytes> call_sync(const AmSyncHandler& handler, IncomingMessage& message);
  // A handler starts: counts it, and names a sender unknown on arrival.
  void started(Queued& q) noexcept;
  // A handler ended: frees its permits (a message of its type waiting for
  // the type's limit moves to the shared queue), counts it, logs a failed
  // fire-and-forget, replies.
  void ended(Entry& entry, PeerId peer, std::optional<std::uint64_t> id, const std::string& type, ucp_ep* reply_ep,
             Result<Bytes> result);

  Worker& worker_;
  const AmOptions& options_;
  AmHandlerHost& host_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // false once the pool is destroyed
  // Shared with the runners: a handler's captures outlive its coroutine even
  // if the pool goes first. Node-based: entries never move.
  std::shared_ptr<HandlerMap> handlers_ = std::make_shared<HandlerMap>();
  // The shared queue: messages that hold their type's permit, assigned to a
  // woken runner (woken_) or waiting for a manager permit (shared_waiting_).
  std::deque<Queued> incoming_;
  std::size_t shared_waiting_ = 0;
  std::size_t woken_ = 0;
  // Synchronous messages that took a permit in this progress pass; one
  // scheduled completion runs them all.
  std::vector<Queued> sync_ready_;
  std::size_t sync_done_ = 0;  // of sync_ready_, those already run
  bool sync_scheduled_ = false;
  std::vector<Completion> idle_runners_;
  AmStats stats_;  // queued = shared_waiting_ + every type's waiting
};

}  // namespace kvb::transport
