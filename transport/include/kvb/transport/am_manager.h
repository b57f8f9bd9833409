// ActiveMessageManager: named message types -> coroutine handlers, run under
// a bounded semaphore with a bounded queue; requests with a notification id
// get `<id>:ok` / `<id>:err(<message>)` back on a response channel the sender
// co_awaits. One manager per Worker (it owns the worker's AM ids).
// Threading: the worker's executor must be single-threaded (an io_context
// run by one thread, or a strand of it); every call is made on it, and
// handlers run on it. Nothing here is synchronized.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/transport/async_sync.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/listener.h"
#include "kvb/transport/memory.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

using Bytes = std::vector<std::byte>;

struct IncomingMessage {
  PeerId peer;  // PeerId{0} when the sender is not a known peer
  std::string type;
  Bytes payload;
  std::optional<std::uint64_t> notification_id;
};

/// A handler returns the reply payload (may be empty) or an error; a thrown
/// exception is reported as err(<what>). It may capture shared resources.
using AmHandler = std::function<asio::awaitable<Result<Bytes>>(IncomingMessage message)>;
/// A handler that answers without waiting (a lookup, an echo): it runs to
/// completion on the executor right after the progress pass that received
/// the message, with no coroutine, and counts against max_concurrent like
/// any handler. It may take the payload out of `message`. Work that waits
/// (I/O, copies, other requests) belongs in an AmHandler: a synchronous
/// handler holds the executor while it runs.
using AmSyncHandler = std::function<Result<Bytes>(IncomingMessage& message)>;

struct AmOptions {
  /// Handlers running at once; never exceeded.
  std::size_t max_concurrent = 8;
  /// Accepted messages waiting for a permit; beyond it new requests get
  /// err(busy: ...) and new fire-and-forget messages are dropped and counted.
  std::size_t max_queued = 256;
  /// Largest payload accepted for sending (refused before reaching UCX).
  std::size_t max_payload = std::size_t{1} << 30;
  /// write_chunks_am sends chunks up to this size eagerly (the receiver
  /// copies them into place once) and larger ones by rendezvous (received
  /// straight into place). Measured on tcp loopback (docs/transport.md):
  /// eager wins at 64-128 KiB (1.3x), rendezvous from 256 KiB (1.6x).
  std::size_t bulk_eager_max = std::size_t{128} << 10;
};

struct AmStats {
  std::size_t running = 0;
  std::size_t peak_running = 0;
  std::size_t queued = 0;
  std::size_t peak_queued = 0;
  std::uint64_t handled = 0;
  std::uint64_t handler_failures = 0;          // all failed handlers
  std::uint64_t fire_and_forget_failures = 0;  // failed handlers nobody hears about (logged)
  std::uint64_t busy_refusals = 0;             // requests answered err(busy: ...)
  std::uint64_t dropped = 0;                   // fire-and-forget refused with the queue full
  std::uint64_t rejected_writes = 0;           // bulk writes outside every exposed region
};

/// One bulk chunk: local bytes -> remote address (in the peer's registered
/// memory, rkey from the peer's MemoryRegistration).
struct RmaChunk {
  std::byte* local = nullptr;
  std::uint64_t remote_address = 0;
  std::uint64_t length = 0;
};

class ActiveMessageManager {
 public:
  /// Installs the AM receive handlers on `worker`. Throws TransportError.
  ActiveMessageManager(Worker& worker, AmOptions options = {});
  ActiveMessageManager(const ActiveMessageManager&) = delete;
  ActiveMessageManager& operator=(const ActiveMessageManager&) = delete;
  /// Says goodbye to every peer (they fail their requests to us with
  /// peer_lost), fails our pending requests (cancelled), drops peers.
  ~ActiveMessageManager();

  /// Registers `type`. Errors: already_exists, invalid_argument (empty or too
  /// long for an AM header).
  [[nodiscard]] Status register_handler(const std::string& type, AmHandler handler);
  /// Registers `type` with a synchronous handler (see AmSyncHandler); same
  /// errors as register_handler.
  [[nodiscard]] Status register_sync_handler(const std::string& type, AmSyncHandler handler);

  /// Listens on host:port; accepted peers get ids from 1'000'000 up. Returns
  /// the bound port.
  [[nodiscard]] Result<std::uint16_t> listen(const std::string& host, std::uint16_t port);
  /// Connects to a listening manager and adopts the endpoint as `peer`.
  [[nodiscard]] Status connect(PeerId peer, const std::string& host, std::uint16_t port);
  /// Connects to a worker address (sm, or this worker's own with self; the
  /// address travels out of band). A hello carrying our address lets the
  /// peer open its own endpoint back to us (ids from 1'000'000 up, as for
  /// listen()).
  [[nodiscard]] Status connect_address(PeerId peer, std::span<const std::byte> worker_address);
  /// The endpoint of a live peer, or not_found / peer_lost.
  [[nodiscard]] Result<std::shared_ptr<Endpoint>> endpoint(PeerId peer) const;
  /// Called (on the executor) when a peer is lost, after its requests failed.
  void on_peer_lost(std::function<void(PeerId, const Error&)> callback) { on_peer_lost_ = std::move(callback); }

  /// Fire-and-forget: completes when UCX has sent the message.
  asio::awaitable<Status> send(PeerId peer, std::string type, Bytes payload);
  /// Sends with a notification id and waits for `<id>:ok` (-> reply payload)
  /// or `<id>:err(<message>)`, peer loss, or `timeout`.
  asio::awaitable<Result<Bytes>> send_request(PeerId peer, std::string type, Bytes payload,
                                              std::chrono::milliseconds timeout);

  /// send_request for the notification that follows write_chunks_am to the
  /// same peer (write_then_notify uses it): if any of our writes since the
  /// last such notification was refused there (outside its exposed memory,
  /// or failed to land), the peer answers `err(rejected: ...)`
  /// (invalid_argument) and does not run the handler, so a handler never
  /// acts on data that did not arrive.
  asio::awaitable<Result<Bytes>> send_notification_after_writes(PeerId peer, std::string type, Bytes payload,
                                                                std::chrono::milliseconds timeout);

  /// Allows peers to write into `registration` with bulk AM writes.
  void expose(const MemoryRegistration& registration);
  void unexpose(const MemoryRegistration& registration);
  /// Sends each chunk as an active message into the peer's exposed memory
  /// (eager up to options().bulk_eager_max, else rendezvous). Completes when
  /// UCX finished every chunk; a message sent to the peer afterwards is
  /// handled there after every chunk landed (write_then_notify).
  asio::awaitable<Status> write_chunks_am(PeerId peer, std::span<const RmaChunk> chunks,
                                          std::chrono::milliseconds timeout);

  [[nodiscard]] AmStats stats() const noexcept { return stats_; }
  [[nodiscard]] Worker& worker() const noexcept { return worker_; }
  [[nodiscard]] const AmOptions& options() const noexcept { return options_; }
  /// Bytes of the fixed part of a message header (type name excluded).
  static constexpr std::size_t kFixedHeader = 16;

  // Internal: called from the UCX receive callbacks.
  struct Impl;

 private:
  // A request waiting for its answer. Lives in the frame of send_request's
  // asynchronous operation (its only coroutine frame) until the caller
  // resumes; pending_ lists it until it has a result.
  struct Pending {
    Pending() = default;
    Pending(Pending&&) noexcept = default;  // only before it is listed
    Pending& operator=(Pending&&) = delete;
    ~Pending() {
      if (listed && !manager_gone) self->pending_.erase(id);
    }
    ActiveMessageManager* self = nullptr;
    std::uint64_t id = 0;
    bool listed = false;
    PeerId peer;
    std::optional<Result<Bytes>> result;
    Completion waiter;          // resumes the caller with *result
    bool manager_gone = false;  // set by ~ActiveMessageManager: touch nothing of it
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds timeout{0};
    std::string type;
  };
  // Requests waiting for answers, by id. An id is (serial << 24 | slot): no
  // hashing or allocation per request, and a stale or forged id never
  // matches a later request in the same slot.
  class PendingTable {
   public:
    static constexpr std::size_t kMaxSlots = std::size_t{1} << 24;
    /// The new request's id, or 0 when kMaxSlots requests are in flight.
    std::uint64_t insert(Pending* pending) {
      std::uint32_t slot;
      if (!free_.empty()) {
        slot = free_.back();
        free_.pop_back();
      } else if (slots_.size() < kMaxSlots) {
        slot = static_cast<std::uint32_t>(slots_.size());
        slots_.emplace_back(0, nullptr);
      } else {
        return 0;
      }
      const std::uint64_t id = (serial_++ << 24) | slot;
      slots_[slot] = {id, pending};
      return id;
    }
    [[nodiscard]] Pending* find(std::uint64_t id) const {
      const auto slot = static_cast<std::size_t>(id & (kMaxSlots - 1));
      return slot < slots_.size() && slots_[slot].first == id ? slots_[slot].second : nullptr;
    }
    void erase(std::uint64_t id) {
      const auto slot = static_cast<std::uint32_t>(id & (kMaxSlots - 1));
      if (slot >= slots_.size() || slots_[slot].first != id) return;
      slots_[slot] = {0, nullptr};
      free_.push_back(slot);
    }
    template <class F>
    void for_each(F&& f) {
      for (auto& [id, p] : slots_)
        if (p != nullptr) f(id, *p);
    }

   private:
    std::vector<std::pair<std::uint64_t, Pending*>> slots_;
    std::vector<std::uint32_t> free_;
    std::uint64_t serial_ = 1;
  };
  // A registered type: exactly one of the two is set.
  struct HandlerEntry {
    AmHandler coroutine;
    AmSyncHandler sync;
  };
  // An accepted message waiting for a runner (or, synchronous, for the end
  // of the progress pass).
  struct Queued {
    IncomingMessage message;
    ucp_ep* reply_ep = nullptr;
    const HandlerEntry* handler = nullptr;  // in *handlers_, which runners keep alive
    const std::string* type = nullptr;      // its key there (message.type may be moved out)
  };
  // Sets the result (once), unlists the request and resumes its caller
  // through the worker.
  void finish(Pending& pending, Result<Bytes> result);
  // The first part of a request, run when its caller suspends: lists it and
  // sends (or starts a slow send). An error means nothing was sent.
  std::optional<Error> start_request(Pending& pending, std::string_view type, Bytes payload, std::uint8_t flags);
  asio::awaitable<void> send_request_slow(std::shared_ptr<bool> alive, std::uint64_t id, PeerId peer, Bytes header,
                                          Bytes payload, std::chrono::milliseconds timeout);
  // Request timeouts: one manager timer armed at the earliest deadline it
  // knows (no timer per request: each would reprogram the reactor's timerfd).
  void arm_deadline(std::chrono::steady_clock::time_point deadline);
  void expire_requests();
  void adopt(std::shared_ptr<Endpoint> ep);
  void peer_lost(PeerId peer, const Error& error);
  // Queues `message` for a runner, or answers unknown type / busy. Runs no
  // user code (callable from a UCX callback inside the worker's loop).
  void accept_message(IncomingMessage message, ucp_ep* reply_ep, std::uint32_t sender_token = 0,
                      bool after_writes = false);
  asio::awaitable<Result<Bytes>> request(PeerId peer, std::string type, Bytes payload,
                                         std::chrono::milliseconds timeout, std::uint8_t flags);
  struct Hello;
  void accept_hello(const Hello& hello, const Bytes& address);
  void watch_process(PeerId peer, std::uint32_t pid);
  void say_goodbye();
  void accept_response(std::string_view header, Bytes payload);
  // Runners: at most max_concurrent coroutines, each taking queued messages
  // one at a time, so the number of handlers running never exceeds it.
  using HandlerMap = std::unordered_map<std::string, HandlerEntry>;
  asio::awaitable<void> runner(std::shared_ptr<bool> alive, std::shared_ptr<const HandlerMap> handlers);
  void wake_runner();
  [[nodiscard]] Status add_handler(const std::string& type, HandlerEntry entry);
  // Handlers that hold a permit: running, or assigned to a runner or to the
  // end of this progress pass and about to run. Never above max_concurrent.
  [[nodiscard]] std::size_t permits_in_use() const noexcept {
    return stats_.running + woken_ + (sync_ready_.size() - sync_done_);
  }
  // Runs the synchronous messages accepted during the last progress pass.
  void run_sync_ready(const std::shared_ptr<bool>& alive);
  // Calls a synchronous handler (counted as running); exceptions -> err.
  Result<Bytes> call_sync(const AmSyncHandler& handler, IncomingMessage& message);
  // A handler ended: counts it, logs a failed fire-and-forget, replies.
  void handled(PeerId peer, std::optional<std::uint64_t> id, const std::string& type, ucp_ep* reply_ep,
               Result<Bytes> result);
  // Sends `<id>:ok` + payload or `<id>:err(<message>)`; completes at once
  // when UCX can, else finishes on a spawned coroutine. Runs no user code.
  void reply(PeerId peer, ucp_ep* reply_ep, std::uint64_t id, Result<Bytes> result);
  asio::awaitable<void> reply_slow(PeerId peer, ucp_ep* reply_ep, Bytes header, Bytes payload);
  // An eager send UCX completes inside the call (nothing to await): ok, an
  // error, or nullopt when UCX cannot send at once (use send_am).
  std::optional<Status> send_now(ucp_ep* ep, PeerId peer, unsigned am_id, std::span<const std::byte> header,
                                 std::span<const std::byte> payload);
  // send_now, else a tracked request owning the buffers.
  asio::awaitable<Status> send_am(std::shared_ptr<Endpoint> ep, unsigned am_id, Bytes header, Bytes payload,
                                  std::chrono::milliseconds timeout);
  [[nodiscard]] Status check_sizes(std::size_t header, std::size_t payload, std::string_view type) const;
  // The live endpoint of `peer` without a shared_ptr copy, or nullptr.
  [[nodiscard]] Endpoint* live_endpoint(PeerId peer) const;

  Worker& worker_;
  AmOptions options_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // false once the manager is destroyed
  // Shared with the runners: a handler's captures outlive its coroutine even
  // if the manager goes first. Node-based: entries never move.
  std::shared_ptr<HandlerMap> handlers_ = std::make_shared<HandlerMap>();
  std::deque<Queued> incoming_;
  // Synchronous messages that took a permit in this progress pass; one
  // scheduled completion runs them all.
  std::vector<Queued> sync_ready_;
  std::size_t sync_done_ = 0;  // of sync_ready_, those already run
  bool sync_scheduled_ = false;
  std::vector<Completion> idle_runners_;
  std::size_t runners_ = 0;
  std::size_t woken_ = 0;  // queued messages assigned to a runner not yet resumed
  std::map<PeerId, std::shared_ptr<Endpoint>> peers_;
  std::unordered_map<ucp_ep*, PeerId> peer_of_ep_;
  std::unordered_map<std::uint32_t, PeerId> peer_of_token_;  // hello'd senders
  std::uint32_t token_ = 0;                                  // identifies this manager in its message headers
  // Peers whose endpoints cannot report failure (shared memory): their
  // process is watched through a pidfd on the executor.
  std::map<PeerId, std::shared_ptr<asio::posix::stream_descriptor>> watched_;
  std::unique_ptr<Listener> listener_;
  std::uint32_t next_accepted_peer_ = 1'000'000;
  PendingTable pending_;
  asio::steady_timer deadline_timer_;
  std::optional<std::chrono::steady_clock::time_point> armed_deadline_;
  std::vector<const MemoryRegistration*> exposed_;
  // Bulk writes refused since the sender's last after-writes notification.
  std::unordered_map<std::uint32_t, std::uint64_t> refused_writes_by_token_;
  std::function<void(PeerId, const Error&)> on_peer_lost_;
  AmStats stats_;
};

}  // namespace kvb::transport
