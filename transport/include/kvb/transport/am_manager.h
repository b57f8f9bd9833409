// ActiveMessageManager: named message types -> handlers, run under permits
// with a bounded queue; requests with a notification id get `<id>:ok` /
// `<id>:err(<message>)` back (with the Errc as a number) on a response
// channel the sender co_awaits. One manager per Worker (it owns the
// worker's AM ids). It composes four parts, one job each:
//   PeerDirectory  peers: listen/connect, hello/goodbye, liveness, loss
//   RequestTable   requests waiting for answers, with their deadlines
//   HandlerPool    handlers by type, permits (per manager and per type),
//                  runners and the queue
//   BulkWriter     bulk writes into exposed memory, and their refusal
// and keeps the wire: the UCX receive callbacks (am_receive.cpp), sending
// messages and replies.
// Threading: the worker's executor must be single-threaded (an io_context
// run by one thread, or a strand of it); every call is made on it, and
// handlers run on it. Nothing here is synchronized.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/transport/am_bulk_writer.h"
#include "kvb/transport/am_handler_pool.h"
#include "kvb/transport/am_peer_directory.h"
#include "kvb/transport/am_request_table.h"
#include "kvb/transport/am_types.h"
#include "kvb/transport/async_sync.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/listener.h"
#include "kvb/transport/memory.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

class ActiveMessageManager : private AmHandlerHost {
 public:
  /// Installs the AM receive handlers on `worker`. Throws TransportError.
  ActiveMessageManager(Worker& worker, AmOptions options = {});
  ActiveMessageManager(const ActiveMessageManager&) = delete;
  ActiveMessageManager& operator=(const ActiveMessageManager&) = delete;
  /// Says goodbye to every peer (they fail their requests to us with
  /// peer_lost), fails our pending requests (cancelled), drops peers.
  ~ActiveMessageManager();

  /// Registers `type`, at most `limits.max_concurrent` of its handlers at
  /// once (0: only the manager's limit). Errors: already_exists,
  /// invalid_argument (empty or too long for an AM header).
  [[nodiscard]] Status register_handler(const std::string& type, AmHandler handler, AmTypeLimits limits = {});
  /// Registers `type` with a synchronous handler (see AmSyncHandler); same
  /// limits and errors as register_handler.
  [[nodiscard]] Status register_sync_handler(const std::string& type, AmSyncHandler handler, AmTypeLimits limits = {});

  /// Listens on host:port; accepted peers get ids from 1'000'000 up. Returns
  /// the bound port.
  [[nodiscard]] Result<std::uint16_t> listen(const std::string& host, std::uint16_t port) {
    return peers_.listen(host, port);
  }
  /// Connects to a listening manager and adopts the endpoint as `peer`.
  [[nodiscard]] Status connect(PeerId peer, const std::string& host, std::uint16_t port) {
    return peers_.connect(peer, host, port);
  }
  /// Connects to a worker address (sm, or this worker's own with self; the
  /// address travels out of band). A hello carrying our address lets the
  /// peer open its own endpoint back to us (ids from 1'000'000 up, as for
  /// listen()).
  [[nodiscard]] Status connect_address(PeerId peer, std::span<const std::byte> worker_address) {
    return peers_.connect_address(peer, worker_address);
  }
  /// Whether `peer`'s endpoint was opened by IP:PORT (connect() or our
  /// listener) rather than by worker address.
  [[nodiscard]] bool peer_by_sockaddr(PeerId peer) const { return peers_.by_sockaddr(peer); }
  /// Completes once `peer` (connected by address) answered our hello, so it
  /// knows who sends our messages (see PeerDirectory::wait_hello_answered).
  asio::awaitable<Status> wait_hello_answered(PeerId peer, std::chrono::milliseconds timeout) {
    return peers_.wait_hello_answered(peer, timeout);
  }
  /// Every peer with an endpoint, in id order.
  [[nodiscard]] std::vector<PeerId> peers() const { return peers_.peers(); }
  /// The endpoint of a live peer, or peer_lost.
  [[nodiscard]] Result<std::shared_ptr<Endpoint>> endpoint(PeerId peer) const { return peers_.endpoint(peer); }
  /// Drops `peer` as if it were lost (its requests end peer_lost, the
  /// on_peer_lost callback runs). For a peer the caller knows is gone.
  void disconnect(PeerId peer, const std::string& reason);
  /// Called (on the executor) once per lost peer, after its requests failed.
  void on_peer_lost(std::function<void(PeerId, const Error&)> callback) { on_peer_lost_ = std::move(callback); }

  /// Fire-and-forget: completes when UCX has sent the message.
  asio::awaitable<Status> send(PeerId peer, std::string type, Bytes payload);
  /// Sends with a notification id and waits for `<id>:ok` (-> reply payload)
  /// or `<id>:err(<message>)` (-> Error with the code the handler gave),
  /// peer loss, or `timeout`.
  asio::awaitable<Result<Bytes>> send_request(PeerId peer, std::string type, Bytes payload,
                                              std::chrono::milliseconds timeout);
  /// send_request for a request whose handler writes into memory we
  /// exposed (write_chunks_am) before it answers: an ok answer becomes
  /// `err(rejected: ...)` (invalid_argument) when any bulk write to us was
  /// refused (outside our exposed memory, or failed to land) while the
  /// request waited, so the caller never trusts memory that was not written.
  asio::awaitable<Result<Bytes>> send_request_receiving_writes(PeerId peer, std::string type, Bytes payload,
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
  void expose(const MemoryRegistration& registration) { bulk_.expose(registration); }
  void unexpose(const MemoryRegistration& registration) { bulk_.unexpose(registration); }
  /// Allows peers to write into `ranges` of caller memory (not registered
  /// with UCX) until withdraw(); see ExposedRanges (a write still landing
  /// after withdraw() is counted there).
  [[nodiscard]] std::shared_ptr<ExposedRanges> expose_ranges(std::vector<ExposedRanges::Range> ranges) {
    return bulk_.expose_ranges(std::move(ranges));
  }
  void withdraw(const ExposedRanges& ranges) { bulk_.withdraw(ranges); }
  /// Sends each chunk as an active message into the peer's exposed memory
  /// (eager up to options().bulk_eager_max, else rendezvous). Completes when
  /// UCX finished every chunk; a message sent to the peer afterwards is
  /// handled there after every chunk landed (write_then_notify).
  asio::awaitable<Status> write_chunks_am(PeerId peer, std::span<const RmaChunk> chunks,
                                          std::chrono::milliseconds timeout);

  [[nodiscard]] AmStats stats() const noexcept {
    AmStats s = handlers_.stats();
    s.rejected_writes = bulk_.rejected_writes();
    s.landing_writes = bulk_.landing_writes();
    return s;
  }
  /// One message type's limit and counters; not_found for an unknown type.
  [[nodiscard]] Result<AmTypeStats> type_stats(const std::string& type) const { return handlers_.type_stats(type); }
  [[nodiscard]] Worker& worker() const noexcept { return worker_; }
  [[nodiscard]] const AmOptions& options() const noexcept { return options_; }
  /// Requests waiting for answers.
  [[nodiscard]] std::size_t requests_waiting() const noexcept { return requests_.size(); }
  /// Bytes of the fixed part of a message header (type name excluded).
  static constexpr std::size_t kFixedHeader = 16;

  // Internal: the UCX receive callbacks (am_receive.cpp).
  struct Impl;

 private:
  using Pending = RequestTable::Pending;
  // The first part of a request, run when its caller suspends: lists it and
  // sends (or starts a slow send). An error means nothing was sent.
  std::optional<Error> start_request(Pending& pending, std::string_view type, Bytes payload, std::uint8_t flags);
  asio::awaitable<void> send_request_slow(std::shared_ptr<bool> alive, std::uint64_t id, PeerId peer, Bytes header,
                                          Bytes payload, std::chrono::milliseconds timeout);
  asio::awaitable<Result<Bytes>> request(PeerId peer, std::string type, Bytes payload,
                                         std::chrono::milliseconds timeout, std::uint8_t flags, bool receives_writes);
  // An incoming message: an after-writes notification whose writes were
  // refused is answered here; everything else goes to the handler pool.
  void accept_message(IncomingMessage message, ucp_ep* reply_ep, std::uint32_t sender_token, bool after_writes);
  // A response header: [u16 Errc][<id>:ok | <id>:err(<message>)].
  void accept_response(std::span<const std::byte> header, Bytes payload);
  // Sends `<id>:ok` + payload or `<id>:err(<message>)` with the error's
  // code; completes at once when UCX can, else finishes on a spawned
  // coroutine. Runs no user code.
  void reply(PeerId peer, ucp_ep* reply_ep, std::uint64_t id, Result<Bytes> result) override;
  [[nodiscard]] PeerId sender(std::uint32_t token, ucp_ep* reply_ep) const override {
    return peers_.sender(token, reply_ep);
  }
  asio::awaitable<void> reply_slow(PeerId peer, ucp_ep* reply_ep, Bytes header, Bytes payload);
  [[nodiscard]] Status check_sizes(std::size_t header, std::size_t payload, std::string_view type) const;
  [[nodiscard]] Status check_type(const std::string& type) const;
  void peer_lost(PeerId peer, const Error& error);

  Worker& worker_;
  AmOptions options_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // false once the manager is destroyed
  std::uint32_t token_;                                         // identifies this manager in its message headers
  std::function<void(PeerId, const Error&)> on_peer_lost_;
  // Destroyed in reverse order: requests fail (cancelled) before the
  // handlers and peers go.
  PeerDirectory peers_;
  BulkWriter bulk_;
  HandlerPool handlers_;
  RequestTable requests_;
};

}  // namespace kvb::transport
