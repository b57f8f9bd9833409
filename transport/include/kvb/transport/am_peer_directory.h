// PeerDirectory: the ActiveMessageManager's peers. It opens endpoints
// (listen, connect, connect by worker address with a hello that lets the
// peer answer on its own endpoint), names the sender of each incoming
// message (by the token of its manager, else by its reply endpoint), watches
// liveness where UCX cannot (a pidfd of the peer process on sm), says
// goodbye, and reports each lost peer once.
// Threading: the worker's executor only (see am_manager.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/transport/am_types.h"
#include "kvb/transport/async_sync.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/listener.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

class PeerDirectory {
 public:
  /// Runs on the executor once per lost peer, after it left the directory.
  using LostHandler = std::function<void(PeerId, const Error&)>;

  /// `token` identifies this manager in its message headers and hellos.
  PeerDirectory(Worker& worker, std::uint32_t token, LostHandler on_lost);
  PeerDirectory(const PeerDirectory&) = delete;
  PeerDirectory& operator=(const PeerDirectory&) = delete;
  /// Stops watching, closes the listener, ends every operation still in
  /// flight on an endpoint (shutting_down) and wakes hello waiters, drops
  /// every endpoint (call say_goodbye() first to tell the peers).
  ~PeerDirectory();

  /// See ActiveMessageManager::listen / connect / connect_address.
  [[nodiscard]] Result<std::uint16_t> listen(const std::string& host, std::uint16_t port);
  [[nodiscard]] Status connect(PeerId peer, const std::string& host, std::uint16_t port);
  [[nodiscard]] Status connect_address(PeerId peer, std::span<const std::byte> worker_address);
  /// Completes once `peer` (connected by address) answered our hello: from
  /// then on it names our messages' sender. peer_lost when it is gone first,
  /// timeout after `timeout`; ok at once for a peer that needs no hello.
  asio::awaitable<Status> wait_hello_answered(PeerId peer, std::chrono::milliseconds timeout);

  /// A hello (ack = false: adopt an endpoint back to `address` and ack) or
  /// the ack of ours (learn the peer's token and process).
  void accept_hello(std::uint32_t token, std::uint32_t pid, std::uint32_t sender_peer, bool ack,
                    std::span<const std::byte> address);
  /// Best effort, bounded (1 s): tells each live peer without UCX failure
  /// detection that we are going, so it fails its requests to us at once.
  void say_goodbye();
  /// Removes `peer` (marking its endpoint failed, which ends the operations
  /// tracked on it) and calls the LostHandler. Ignored for a peer that is
  /// not in the directory, so each loss is reported once.
  void lost(PeerId peer, const Error& error);

  /// The endpoint of a live peer, or peer_lost.
  [[nodiscard]] Result<std::shared_ptr<Endpoint>> endpoint(PeerId peer) const;
  /// The live endpoint of `peer` without a shared_ptr copy, or nullptr.
  [[nodiscard]] Endpoint* live_endpoint(PeerId peer) const {
    auto it = peers_.find(peer);
    return it == peers_.end() || it->second->failed() ? nullptr : it->second.get();
  }
  /// The sender of a message: a hello'd manager by its token, else the peer
  /// whose endpoint is `reply_ep`; PeerId{0} when neither is known.
  [[nodiscard]] PeerId sender(std::uint32_t token, ucp_ep* reply_ep) const {
    if (auto it = peer_of_token_.find(token); it != peer_of_token_.end()) return it->second;
    if (auto it = peer_of_ep_.find(reply_ep); it != peer_of_ep_.end()) return it->second;
    return PeerId{0};
  }
  [[nodiscard]] bool contains(PeerId peer) const { return peers_.contains(peer); }
  /// Whether `peer`'s endpoint was opened by IP:PORT (connect(), or
  /// accepted by our listener) rather than by worker address.
  [[nodiscard]] bool by_sockaddr(PeerId peer) const { return sockaddr_.contains(peer); }
  /// Every peer in the directory, in id order.
  [[nodiscard]] std::vector<PeerId> peers() const;
  [[nodiscard]] std::uint32_t token() const noexcept { return token_; }

 private:
  void adopt(std::shared_ptr<Endpoint> ep);
  EndpointErrorHandler error_handler();
  void send_hello(std::shared_ptr<Endpoint> ep, std::uint32_t sender_peer, bool ack);
  void watch_process(PeerId peer, std::uint32_t pid);

  Worker& worker_;
  std::uint32_t token_;
  LostHandler on_lost_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::map<PeerId, std::shared_ptr<Endpoint>> peers_;
  std::unordered_map<ucp_ep*, PeerId> peer_of_ep_;
  std::unordered_map<std::uint32_t, PeerId> peer_of_token_;  // hello'd senders
  // Peers whose endpoints cannot report failure (shared memory): their
  // process is watched through a pidfd on the executor.
  std::map<PeerId, std::shared_ptr<boost::asio::posix::stream_descriptor>> watched_;
  std::unique_ptr<Listener> listener_;
  // Peers connected by address whose hello is not answered yet.
  std::map<PeerId, std::shared_ptr<AsyncEvent>> hello_pending_;
  std::uint32_t next_accepted_peer_ = 1'000'000;
  std::set<PeerId> sockaddr_;  // live peers opened by IP:PORT
};

}  // namespace kvb::transport
