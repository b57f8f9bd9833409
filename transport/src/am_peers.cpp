// ActiveMessageManager: peers. Listen/connect, the hello that lets a peer
// connected by address answer on its own endpoint, process watching for
// transports without UCX peer-failure support, goodbyes, and peer loss.
#include <sys/syscall.h>
#include <unistd.h>

#include <random>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "am_wire.h"

namespace kvb::transport {

using namespace wire;

void ActiveMessageManager::adopt(std::shared_ptr<Endpoint> ep) {
  peer_of_ep_[ep->handle()] = ep->peer();
  peers_[ep->peer()] = std::move(ep);
}

Result<std::uint16_t> ActiveMessageManager::listen(const std::string& host, std::uint16_t port) {
  auto alive = alive_;
  auto listener = Listener::create(worker_, host, port, [this, alive](ucp_conn_request* request) {
    if (!*alive) return;
    const PeerId peer{next_accepted_peer_++};
    try {
      adopt(std::make_shared<Endpoint>(worker_, request, peer, [this, alive](PeerId p, const Error& e) {
        if (*alive) peer_lost(p, e);
      }));
    } catch (const TransportError& e) {
      spdlog::error("transport: accepting peer {} failed: {}", peer, e.what());
    }
  });
  if (!listener) return tl::unexpected(listener.error());
  listener_ = std::move(*listener);
  return listener_->port();
}

Status ActiveMessageManager::connect(PeerId peer, const std::string& host, std::uint16_t port) {
  if (peers_.contains(peer)) return fail(Errc::already_exists, "peer {} is already connected", peer);
  auto alive = alive_;
  auto ep = Endpoint::connect(worker_, host, port, peer, [this, alive](PeerId p, const Error& e) {
    if (*alive) peer_lost(p, e);
  });
  if (!ep) return tl::unexpected(ep.error());
  adopt(std::shared_ptr<Endpoint>(std::move(*ep)));
  return ok();
}

Status ActiveMessageManager::connect_address(PeerId peer, std::span<const std::byte> worker_address) {
  if (peers_.contains(peer)) return fail(Errc::already_exists, "peer {} is already connected", peer);
  auto alive = alive_;
  std::shared_ptr<Endpoint> ep;
  try {
    ep = std::make_shared<Endpoint>(worker_, worker_address, peer, [this, alive](PeerId p, const Error& e) {
      if (*alive) peer_lost(p, e);
    });
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
  adopt(ep);
  const Hello hello{token_, static_cast<std::uint32_t>(::getpid()), peer.value(), 0};
  Bytes header(sizeof(Hello));
  std::memcpy(header.data(), &hello, sizeof(Hello));
  asio::co_spawn(
      worker_.executor(),
      [this, alive, ep, header = std::move(header)]() mutable -> asio::awaitable<void> {
        const auto& address = worker_.address();
        auto st =
            co_await send_am(ep, kAmHello, std::move(header), Bytes(address.begin(), address.end()), kSendTimeout);
        if (!st) spdlog::warn("transport: hello to peer {} failed: {}", ep->peer(), st.error().message);
      },
      asio::detached);
  return ok();
}

void ActiveMessageManager::accept_hello(const Hello& hello, const Bytes& address) {
  if (hello.ack != 0) {
    // The answer to our hello: learn the peer's token and process.
    const PeerId peer{hello.sender_peer};
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    peer_of_token_[hello.token] = peer;
    if (!it->second->detects_failure()) watch_process(peer, hello.pid);
    return;
  }
  if (peer_of_token_.contains(hello.token)) return;
  const PeerId peer{next_accepted_peer_++};
  auto alive = alive_;
  std::shared_ptr<Endpoint> ep;
  try {
    ep = std::make_shared<Endpoint>(worker_, std::span<const std::byte>(address), peer,
                                    [this, alive](PeerId p, const Error& e) {
                                      if (*alive) peer_lost(p, e);
                                    });
  } catch (const TransportError& e) {
    spdlog::error("transport: hello from a new peer: endpoint back failed: {}", e.what());
    return;
  }
  adopt(ep);
  peer_of_token_[hello.token] = peer;
  if (!ep->detects_failure()) watch_process(peer, hello.pid);
  const Hello ack{token_, static_cast<std::uint32_t>(::getpid()), hello.sender_peer, 1};
  Bytes header(sizeof(Hello));
  std::memcpy(header.data(), &ack, sizeof(Hello));
  asio::co_spawn(
      worker_.executor(),
      [this, alive, ep, header = std::move(header)]() mutable -> asio::awaitable<void> {
        auto st = co_await send_am(ep, kAmHello, std::move(header), Bytes{}, kSendTimeout);
        if (!st) spdlog::warn("transport: hello ack to peer {} failed: {}", ep->peer(), st.error().message);
      },
      asio::detached);
}

void ActiveMessageManager::watch_process(PeerId peer, std::uint32_t pid) {
  if (pid == static_cast<std::uint32_t>(::getpid())) return;  // same process: the peer says goodbye instead
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  if (fd < 0) {
    peer_lost(peer, Error{Errc::peer_lost, fmt::format("peer lost: {} (process {} is gone)", peer, pid)});
    return;
  }
  auto desc = std::make_shared<asio::posix::stream_descriptor>(worker_.executor(), fd);
  watched_[peer] = desc;
  desc->async_wait(asio::posix::stream_descriptor::wait_read, [this, alive = alive_, desc, peer,
                                                               pid](const boost::system::error_code& ec) {
    if (ec || !*alive || !peers_.contains(peer)) return;
    peer_lost(peer, Error{Errc::peer_lost, fmt::format("peer lost: {} (process {} exited)", peer, pid)});
  });
}

void ActiveMessageManager::say_goodbye() {
  // Best effort, bounded: tell each live peer we are going, so that peers
  // without UCX failure detection fail their requests to us at once.
  // Peers whose endpoints report failures learn it from UCX.
  std::vector<std::pair<ucs_status_ptr_t, Endpoint*>> sent;
  for (auto& [peer, ep] : peers_) {
    if (ep->failed() || ep->detects_failure()) continue;
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    params.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t req = ucp_am_send_nbx(ep->handle(), kAmBye, &token_, sizeof(token_), nullptr, 0, &params);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) sent.emplace_back(req, ep.get());
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& [req, ep] : sent) {
    while (ucp_request_check_status(req) == UCS_INPROGRESS && std::chrono::steady_clock::now() < deadline) {
      worker_.progress_once();
    }
    if (ucp_request_check_status(req) != UCS_INPROGRESS) ucp_request_free(req);
  }
  // Flush so that the goodbyes leave before the endpoints are force-closed.
  for (auto& [peer, ep] : peers_) {
    if (ep->failed() || ep->detects_failure()) continue;
    ucp_request_param_t params{};
    ucs_status_ptr_t req = ucp_ep_flush_nbx(ep->handle(), &params);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) continue;
    while (ucp_request_check_status(req) == UCS_INPROGRESS && std::chrono::steady_clock::now() < deadline) {
      worker_.progress_once();
    }
    if (ucp_request_check_status(req) != UCS_INPROGRESS) ucp_request_free(req);
  }
}

Result<std::shared_ptr<Endpoint>> ActiveMessageManager::endpoint(PeerId peer) const {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return fail(Errc::peer_lost, "peer lost: {}", peer);
  if (it->second->failed()) return tl::unexpected(it->second->failure());
  return it->second;
}

void ActiveMessageManager::peer_lost(PeerId peer, const Error& error) {
  spdlog::warn("transport: {}", error.message);
  pending_.for_each([&](std::uint64_t, Pending& p) {
    if (p.peer == peer) finish(p, fail(Errc::peer_lost, "peer lost: {}", peer));
  });
  if (auto it = peers_.find(peer); it != peers_.end()) {
    it->second->mark_failed(Error{Errc::peer_lost, fmt::format("peer lost: {}", peer)});
    peer_of_ep_.erase(it->second->handle());
    if (auto w = watched_.find(peer); w != watched_.end()) {
      w->second->cancel();
      watched_.erase(w);
    }
    std::erase_if(peer_of_token_, [peer](const auto& kv) { return kv.second == peer; });
    peers_.erase(it);  // in-flight operations keep their shared_ptr
  }
  if (on_peer_lost_) on_peer_lost_(peer, error);
}

}  // namespace kvb::transport
