// PeerDirectory: listen/connect, the hello that lets a peer connected by
// address answer on its own endpoint, process watching for transports
// without UCX peer-failure support, goodbyes, and peer loss.
#include "kvb/transport/am_peer_directory.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "am_send.h"
#include "am_wire.h"
#include "ucx_request.h"

namespace kvb::transport {

using namespace wire;

PeerDirectory::PeerDirectory(Worker& worker, std::uint32_t token, LostHandler on_lost)
    : worker_(worker), token_(token), on_lost_(std::move(on_lost)) {}

PeerDirectory::~PeerDirectory() {
  *alive_ = false;
  // A destructor must not throw: what cannot be done here (an allocation in
  // a cancel or an error text) leaves the rest to the members' destructors.
  try {
    for (auto& [peer, fd] : watched_) fd->cancel();
    watched_.clear();
    listener_.reset();
    // Operations still in flight on an endpoint (a hello, a send, a reply:
    // their coroutines hold the endpoint) end now, with an error: nothing
    // progresses the worker for them any more, so they would otherwise wait
    // out their timeouts (30 s) and hold the event loop, and a daemon's
    // shutdown, that long. Waiters for a hello's answer wake too.
    for (auto& [peer, ep] : peers_) ep->mark_failed(Error{Errc::shutting_down, "the transport is shutting down"});
    for (auto& [peer, answered] : hello_pending_) answered->set();
    peers_.clear();
  } catch (...) {  // NOLINT(bugprone-empty-catch)
  }
}

void PeerDirectory::adopt(std::shared_ptr<Endpoint> ep) {
  peer_of_ep_[ep->handle()] = ep->peer();
  peers_[ep->peer()] = std::move(ep);
}

EndpointErrorHandler PeerDirectory::error_handler() {
  return [this, alive = alive_](PeerId p, const Error& e) {
    if (*alive) lost(p, e);
  };
}

Result<std::uint16_t> PeerDirectory::listen(const std::string& host, std::uint16_t port) {
  auto listener = Listener::create(worker_, host, port, [this, alive = alive_](ucp_conn_request* request) {
    if (!*alive) return;
    const PeerId peer{next_accepted_peer_++};
    try {
      adopt(std::make_shared<Endpoint>(worker_, request, peer, error_handler()));
      sockaddr_.insert(peer);
    } catch (const TransportError& e) {
      spdlog::error("transport: accepting peer {} failed: {}", peer, e.what());
    }
  });
  if (!listener) return tl::unexpected(listener.error());
  listener_ = std::move(*listener);
  return listener_->port();
}

Status PeerDirectory::connect(PeerId peer, const std::string& host, std::uint16_t port) {
  if (peers_.contains(peer)) return fail(Errc::already_exists, "peer {} is already connected", peer);
  auto ep = Endpoint::connect(worker_, host, port, peer, error_handler());
  if (!ep) return tl::unexpected(ep.error());
  adopt(std::shared_ptr<Endpoint>(std::move(*ep)));
  sockaddr_.insert(peer);
  return ok();
}

Status PeerDirectory::connect_address(PeerId peer, std::span<const std::byte> worker_address) {
  if (peers_.contains(peer)) return fail(Errc::already_exists, "peer {} is already connected", peer);
  std::shared_ptr<Endpoint> ep;
  try {
    ep = std::make_shared<Endpoint>(worker_, worker_address, peer, error_handler());
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
  adopt(ep);
  hello_pending_[peer] = std::make_shared<AsyncEvent>(worker_.executor());
  send_hello(std::move(ep), peer.value(), false);
  return ok();
}

asio::awaitable<Status> PeerDirectory::wait_hello_answered(PeerId peer, std::chrono::milliseconds timeout) {
  auto it = hello_pending_.find(peer);
  if (it == hello_pending_.end()) {
    if (!peers_.contains(peer)) co_return fail(Errc::peer_lost, "peer lost: {}", peer);
    co_return ok();
  }
  auto answered = it->second;
  const auto alive = alive_;  // the directory may be destroyed while this waits
  const bool done = co_await answered->wait_for(timeout);
  if (!*alive) co_return fail(Errc::shutting_down, "the transport is shutting down");
  if (!peers_.contains(peer)) co_return fail(Errc::peer_lost, "peer lost: {}", peer);
  if (!done) co_return fail(Errc::timeout, "peer {} did not answer our hello within {} ms", peer, timeout.count());
  co_return ok();
}

void PeerDirectory::send_hello(std::shared_ptr<Endpoint> ep, std::uint32_t sender_peer, bool ack) {
  const Hello hello{token_, static_cast<std::uint32_t>(::getpid()), sender_peer, ack ? 1U : 0U};
  Bytes header(sizeof(Hello));
  std::memcpy(header.data(), &hello, sizeof(Hello));
  // A hello carries our address (the peer opens its endpoint back to it);
  // an ack carries nothing.
  Bytes address = ack ? Bytes{} : Bytes(worker_.address().begin(), worker_.address().end());
  asio::co_spawn(
      worker_.executor(),
      [&worker = worker_, ep = std::move(ep), header = std::move(header), address = std::move(address),
       ack]() mutable -> asio::awaitable<void> {
        const PeerId peer = ep->peer();
        auto st = co_await detail::am_send(worker, std::move(ep), kAmHello, std::move(header), std::move(address),
                                           detail::kSendTimeout);
        if (!st) spdlog::warn("transport: hello{} to peer {} failed: {}", ack ? " ack" : "", peer, st.error().message);
      },
      asio::detached);
}

void PeerDirectory::accept_hello(std::uint32_t token, std::uint32_t pid, std::uint32_t sender_peer, bool ack,
                                 std::span<const std::byte> address) {
  if (ack) {
    // The answer to our hello: learn the peer's token and process.
    const PeerId peer{sender_peer};
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    peer_of_token_[token] = peer;
    if (auto waiting = hello_pending_.find(peer); waiting != hello_pending_.end()) {
      waiting->second->set();
      hello_pending_.erase(waiting);
    }
    if (!it->second->detects_failure()) watch_process(peer, pid);
    return;
  }
  if (peer_of_token_.contains(token)) return;
  const PeerId peer{next_accepted_peer_++};
  std::shared_ptr<Endpoint> ep;
  try {
    ep = std::make_shared<Endpoint>(worker_, address, peer, error_handler());
  } catch (const TransportError& e) {
    spdlog::error("transport: hello from a new peer: endpoint back failed: {}", e.what());
    return;
  }
  adopt(ep);
  peer_of_token_[token] = peer;
  if (!ep->detects_failure()) watch_process(peer, pid);
  send_hello(std::move(ep), sender_peer, true);
}

void PeerDirectory::watch_process(PeerId peer, std::uint32_t pid) {
  if (pid == static_cast<std::uint32_t>(::getpid())) return;  // same process: the peer says goodbye instead
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  if (fd < 0) {
    lost(peer, Error{Errc::peer_lost, fmt::format("peer lost: {} (process {} is gone)", peer, pid)});
    return;
  }
  auto desc = std::make_shared<asio::posix::stream_descriptor>(worker_.executor(), fd);
  watched_[peer] = desc;
  desc->async_wait(asio::posix::stream_descriptor::wait_read,
                   [this, alive = alive_, desc, peer, pid](const boost::system::error_code& ec) {
                     if (ec || !*alive) return;
                     lost(peer, Error{Errc::peer_lost, fmt::format("peer lost: {} (process {} exited)", peer, pid)});
                   });
}

void PeerDirectory::say_goodbye() {
  // Peers whose endpoints report failures learn it from UCX.
  std::vector<ucs_status_ptr_t> sent;
  for (auto& [peer, ep] : peers_) {
    if (ep->failed() || ep->detects_failure()) continue;
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    params.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t req = ucp_am_send_nbx(ep->handle(), kAmBye, &token_, sizeof(token_), nullptr, 0, &params);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) sent.push_back(req);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  // Asleep on the worker's event fd while UCX has nothing to do, not spinning.
  auto settle = [&](ucs_status_ptr_t req) {
    if (worker_.progress_until([req] { return ucp_request_check_status(req) != UCS_INPROGRESS; }, deadline)) {
      ucp_request_free(req);
    }
  };
  for (auto req : sent) settle(req);
  // Flush so that the goodbyes leave before the endpoints are force-closed.
  for (auto& [peer, ep] : peers_) {
    if (ep->failed() || ep->detects_failure()) continue;
    ucp_request_param_t params{};
    ucs_status_ptr_t req = ucp_ep_flush_nbx(ep->handle(), &params);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) settle(req);
  }
}

Result<std::shared_ptr<Endpoint>> PeerDirectory::endpoint(PeerId peer) const {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return fail(Errc::peer_lost, "peer lost: {}", peer);
  if (it->second->failed()) return tl::unexpected(it->second->failure());
  return it->second;
}

std::vector<PeerId> PeerDirectory::peers() const {
  std::vector<PeerId> out;
  out.reserve(peers_.size());
  for (const auto& [peer, ep] : peers_) out.push_back(peer);
  return out;
}

void PeerDirectory::lost(PeerId peer, const Error& error) {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return;
  spdlog::warn("transport: {}", error.message);
  it->second->mark_failed(Error{Errc::peer_lost, fmt::format("peer lost: {}", peer)});
  peer_of_ep_.erase(it->second->handle());
  if (auto w = watched_.find(peer); w != watched_.end()) {
    w->second->cancel();
    watched_.erase(w);
  }
  std::erase_if(peer_of_token_, [peer](const auto& kv) { return kv.second == peer; });
  if (auto waiting = hello_pending_.find(peer); waiting != hello_pending_.end()) {
    waiting->second->set();
    hello_pending_.erase(waiting);
  }
  sockaddr_.erase(peer);
  peers_.erase(it);  // in-flight operations keep their shared_ptr
  if (on_lost_) on_lost_(peer, error);
}

}  // namespace kvb::transport
