#include "kvb/transport/am_manager.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <random>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "ucx_request.h"

namespace kvb::transport {

namespace {

// UCX AM ids owned by the manager.
constexpr unsigned kAmMessage = 11;   // header: fixed 16 bytes + type; data: payload
constexpr unsigned kAmResponse = 12;  // header: "<id>:ok" | "<id>:err(<message>)"; data: reply payload
constexpr unsigned kAmWrite = 13;     // header: remote address, length; data: bulk bytes (rendezvous)
constexpr unsigned kAmHello = 14;     // header: Hello; data: sender's worker address (empty in an ack)
constexpr unsigned kAmBye = 15;       // header: u32 sender token
constexpr std::uint8_t kVersion = 1;
constexpr std::uint8_t kFlagNotify = 1;
constexpr auto kSendTimeout = std::chrono::milliseconds(30000);

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

Bytes message_header(std::string_view type, std::optional<std::uint64_t> id, std::uint32_t token) {
  Bytes h(ActiveMessageManager::kFixedHeader + type.size());
  h[0] = std::byte{kVersion};
  h[1] = std::byte{id ? kFlagNotify : std::uint8_t{0}};
  const auto len = static_cast<std::uint16_t>(type.size());
  std::memcpy(h.data() + 2, &len, 2);
  std::memcpy(h.data() + 4, &token, 4);
  const std::uint64_t nid = id.value_or(0);
  std::memcpy(h.data() + 8, &nid, 8);
  std::memcpy(h.data() + ActiveMessageManager::kFixedHeader, type.data(), type.size());
  return h;
}

/// Error code for an `err(<message>)` text received from a peer.
Errc errc_of_text(std::string_view message) {
  if (message.starts_with("busy")) return Errc::busy;
  if (message.starts_with("unknown message type")) return Errc::not_found;
  if (message.starts_with("peer lost")) return Errc::peer_lost;
  if (message.starts_with("timeout")) return Errc::timeout;
  return Errc::internal;
}

}  // namespace

struct ActiveMessageManager::Hello {
  std::uint32_t token = 0;        // the sender manager's token
  std::uint32_t pid = 0;          // the sender's process id
  std::uint32_t sender_peer = 0;  // the PeerId the connecting side uses
  std::uint32_t ack = 0;          // 1 in the answer to a hello
};

/// Receive path shared by the three AM ids: copy eager data inside the
/// callback; for rendezvous, start ucp_am_recv_data_nbx and finish later.
struct ActiveMessageManager::Impl {
  using Done = std::function<void(Result<Bytes>)>;

  static void receive(ActiveMessageManager& self, void* data, size_t length, const ucp_am_recv_param_t* param,
                      Done done) {
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0) {
      Bytes payload(length);
      if (length > 0) std::memcpy(payload.data(), data, length);
      asio::post(self.worker_.executor(),
                 [done = std::move(done), p = std::move(payload)]() mutable { done(std::move(p)); });
      return;
    }
    auto buffer = std::make_shared<Bytes>(length);
    receive_into(self, data, buffer->data(), length, [buffer, done = std::move(done)](Status st) {
      if (!st) return done(tl::unexpected(st.error()));
      done(std::move(*buffer));
    });
  }

  static void receive_into(ActiveMessageManager& self, void* data, std::byte* dest, size_t length,
                           std::function<void(Status)> done) {
    auto state = std::make_shared<detail::RequestState>(self.worker_.executor());
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
    params.datatype = ucp_dt_make_contig(1);
    detail::bind_am_recv_callback(params, state);
    ucs_status_ptr_t req = ucp_am_recv_data_nbx(self.worker_.handle(), data, dest, length, &params);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) {
      detail::unbind_callback(params);
      Status st = ok();
      if (req != nullptr) st = tl::unexpected(detail::ucx_error("ucp_am_recv_data_nbx", UCS_PTR_STATUS(req)));
      asio::post(self.worker_.executor(), [done = std::move(done), st]() { done(st); });
      return;
    }
    // Completion arrives from a later progress; resume on the executor.
    asio::co_spawn(
        self.worker_.executor(),
        [state, req, done = std::move(done)]() -> asio::awaitable<void> {
          co_await state->done.wait();
          ucp_request_free(req);
          if (state->status != UCS_OK) {
            done(tl::unexpected(detail::ucx_error("am receive", state->status)));
          } else {
            done(ok());
          }
        },
        asio::detached);
  }

  static ucs_status_t on_message(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                 const ucp_am_recv_param_t* param) {
    auto& self = *static_cast<ActiveMessageManager*>(arg);
    const auto* h = static_cast<const std::byte*>(header);
    if (header_length < kFixedHeader || std::to_integer<std::uint8_t>(h[0]) != kVersion) {
      spdlog::error("transport: dropped a message with a malformed header ({} bytes)", header_length);
      return UCS_OK;
    }
    const auto type_len = load<std::uint16_t>(h + 2);
    if (kFixedHeader + type_len > header_length) {
      spdlog::error("transport: dropped a message whose type length {} exceeds its header", type_len);
      return UCS_OK;
    }
    IncomingMessage msg;
    msg.type.assign(reinterpret_cast<const char*>(h + kFixedHeader), type_len);
    if (std::to_integer<std::uint8_t>(h[1]) & kFlagNotify) msg.notification_id = load<std::uint64_t>(h + 8);
    ucp_ep* reply_ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
    if (auto it = self.peer_of_ep_.find(reply_ep); it != self.peer_of_ep_.end()) msg.peer = it->second;
    if (auto it = self.peer_of_token_.find(load<std::uint32_t>(h + 4)); it != self.peer_of_token_.end()) {
      msg.peer = it->second;
    }
    auto alive = self.alive_;
    receive(self, data, length, param, [&self, alive, msg = std::move(msg), reply_ep](Result<Bytes> r) mutable {
      if (!*alive) return;
      if (!r) {
        spdlog::error("transport: lost the payload of a '{}' message: {}", msg.type, r.error().to_string());
        return;
      }
      msg.payload = std::move(*r);
      self.accept_message(std::move(msg), reply_ep);
    });
    return UCS_OK;
  }

  static ucs_status_t on_response(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                  const ucp_am_recv_param_t* param) {
    auto& self = *static_cast<ActiveMessageManager*>(arg);
    std::string text(static_cast<const char*>(header), header_length);
    auto alive = self.alive_;
    receive(self, data, length, param, [&self, alive, text = std::move(text)](Result<Bytes> r) {
      if (!*alive) return;
      if (!r) {
        spdlog::error("transport: lost the payload of response '{}': {}", text, r.error().to_string());
        r = Bytes{};
      }
      self.accept_response(text, std::move(*r));
    });
    return UCS_OK;
  }

  static ucs_status_t on_hello(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param) {
    auto& self = *static_cast<ActiveMessageManager*>(arg);
    if (header_length != sizeof(Hello)) return UCS_OK;
    Hello hello;
    std::memcpy(&hello, header, sizeof(Hello));
    auto alive = self.alive_;
    receive(self, data, length, param, [&self, alive, hello](Result<Bytes> r) {
      if (*alive && r) self.accept_hello(hello, *r);
    });
    return UCS_OK;
  }

  static ucs_status_t on_bye(void* arg, const void* header, size_t header_length, void*, size_t,
                             const ucp_am_recv_param_t* param) {
    auto& self = *static_cast<ActiveMessageManager*>(arg);
    if (header_length != 4) return UCS_OK;
    const auto token = load<std::uint32_t>(static_cast<const std::byte*>(header));
    ucp_ep* reply_ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
    std::optional<PeerId> peer;
    if (auto it = self.peer_of_token_.find(token); it != self.peer_of_token_.end()) peer = it->second;
    if (auto it = self.peer_of_ep_.find(reply_ep); !peer && it != self.peer_of_ep_.end()) peer = it->second;
    if (!peer) return UCS_OK;
    asio::post(self.worker_.executor(), [&self, alive = self.alive_, p = *peer] {
      if (*alive && self.peers_.contains(p))
        self.peer_lost(p, Error{Errc::peer_lost, fmt::format("peer lost: {} (it closed)", p)});
    });
    return UCS_OK;
  }

  static ucs_status_t on_write(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param) {
    auto& self = *static_cast<ActiveMessageManager*>(arg);
    if (header_length != 16) return UCS_OK;
    const auto address = load<std::uint64_t>(static_cast<const std::byte*>(header));
    const auto announced = load<std::uint64_t>(static_cast<const std::byte*>(header) + 8);
    bool allowed = announced == length;
    if (allowed) {
      allowed = false;
      for (const auto* reg : self.exposed_) allowed = allowed || reg->contains(address, length);
    }
    if (!allowed) {
      ++self.stats_.rejected_writes;
      spdlog::error("transport: rejected a bulk write of {} bytes at {:#x}: not in an exposed region", length, address);
      return UCS_OK;
    }
    auto* dest = reinterpret_cast<std::byte*>(address);
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0) {
      std::memcpy(dest, data, length);
      return UCS_OK;
    }
    receive_into(self, data, dest, length, [&self, alive = self.alive_](Status st) {
      if (*alive && !st) {
        ++self.stats_.rejected_writes;
        spdlog::error("transport: bulk write failed: {}", st.error().to_string());
      }
    });
    return UCS_OK;
  }
};

ActiveMessageManager::ActiveMessageManager(Worker& worker, AmOptions options)
    : worker_(worker),
      options_(options),
      permits_(worker.executor(), options.max_concurrent),
      alive_(std::make_shared<bool>(true)) {
  token_ = static_cast<std::uint32_t>(std::random_device{}());
  if (options.max_concurrent == 0) throw TransportError(Error{Errc::invalid_argument, "max_concurrent must be > 0"});
  const std::pair<unsigned, ucp_am_recv_callback_t> handlers[] = {{kAmMessage, Impl::on_message},
                                                                  {kAmResponse, Impl::on_response},
                                                                  {kAmWrite, Impl::on_write},
                                                                  {kAmHello, Impl::on_hello},
                                                                  {kAmBye, Impl::on_bye}};
  for (auto [id, cb] : handlers) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = id;
    p.cb = cb;
    p.arg = this;
    const ucs_status_t st = ucp_worker_set_am_recv_handler(worker.handle(), &p);
    if (st != UCS_OK) detail::throw_ucx("ucp_worker_set_am_recv_handler", st);
  }
}

ActiveMessageManager::~ActiveMessageManager() {
  say_goodbye();
  *alive_ = false;
  for (auto& [peer, fd] : watched_) fd->cancel();
  watched_.clear();
  for (auto& [id, p] : pending_) {
    p->result = fail(Errc::cancelled, "request {} cancelled: the manager is shutting down", id);
    p->done.set();
  }
  for (unsigned id : {kAmMessage, kAmResponse, kAmWrite, kAmHello, kAmBye}) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = id;
    p.cb = nullptr;
    p.arg = nullptr;
    (void)ucp_worker_set_am_recv_handler(worker_.handle(), &p);
  }
  listener_.reset();
  peers_.clear();
}

Status ActiveMessageManager::register_handler(const std::string& type, AmHandler handler) {
  if (type.empty()) return fail(Errc::invalid_argument, "message type must not be empty");
  if (auto st = check_sizes(kFixedHeader + type.size(), 0, type); !st) return st;
  if (!handlers_.emplace(type, std::move(handler)).second) {
    return fail(Errc::already_exists, "message type '{}' already has a handler", type);
  }
  return ok();
}

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
        auto st = co_await send_am(ep, kAmHello, std::move(header), Bytes(address.begin(), address.end()), {}, 0,
                                   kSendTimeout);
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
        auto st = co_await send_am(ep, kAmHello, std::move(header), Bytes{}, {}, 0, kSendTimeout);
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
  for (auto& [id, p] : pending_) {
    if (p->peer == peer && !p->result) {
      p->result = fail(Errc::peer_lost, "peer lost: {}", peer);
      p->done.set();
    }
  }
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

Status ActiveMessageManager::check_sizes(std::size_t header, std::size_t payload, std::string_view type) const {
  if (header > worker_.max_am_header()) {
    return fail(Errc::invalid_argument, "message type '{:.40}' makes a {}-byte AM header, over UCX's max_am_header {}",
                type, header, worker_.max_am_header());
  }
  if (payload > options_.max_payload) {
    return fail(Errc::invalid_argument, "payload of {} bytes for '{:.40}' exceeds max_payload {}", payload, type,
                options_.max_payload);
  }
  return ok();
}

asio::awaitable<Status> ActiveMessageManager::send_am(std::shared_ptr<Endpoint> ep, unsigned am_id, Bytes header,
                                                      Bytes payload, std::span<const std::byte> borrowed,
                                                      unsigned flags, std::chrono::milliseconds timeout) {
  if (ep->failed()) co_return tl::unexpected(ep->failure());
  auto state = std::make_shared<detail::RequestState>(worker_.executor());
  auto owned = std::make_shared<std::pair<Bytes, Bytes>>(std::move(header), std::move(payload));
  state->keep = owned;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
  params.flags = flags | UCP_AM_SEND_FLAG_REPLY;
  params.datatype = ucp_dt_make_contig(1);
  detail::bind_send_callback(params, state);
  const void* data = borrowed.empty() ? owned->second.data() : borrowed.data();
  const std::size_t size = borrowed.empty() ? owned->second.size() : borrowed.size();
  ucs_status_ptr_t req =
      ucp_am_send_nbx(ep->handle(), am_id, owned->first.data(), owned->first.size(), data, size, &params);
  auto st = co_await detail::await_request(worker_, req, params, state, fmt::format("am send to peer {}", ep->peer()),
                                           timeout, ep.get());
  if (!st && ep->failed()) co_return tl::unexpected(ep->failure());
  co_return st;
}

asio::awaitable<Status> ActiveMessageManager::send(PeerId peer, std::string type, Bytes payload) {
  if (auto st = check_sizes(kFixedHeader + type.size(), payload.size(), type); !st) co_return st;
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  co_return co_await send_am(*ep, kAmMessage, message_header(type, std::nullopt, token_), std::move(payload), {}, 0,
                             kSendTimeout);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::send_request(PeerId peer, std::string type, Bytes payload,
                                                                  std::chrono::milliseconds timeout) {
  if (auto st = check_sizes(kFixedHeader + type.size(), payload.size(), type); !st)
    co_return tl::unexpected(st.error());
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  const std::uint64_t id = next_request_id_++;
  auto pending = std::make_shared<Pending>(worker_.executor());
  pending->peer = peer;
  pending_[id] = pending;
  auto alive = alive_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto sent = co_await send_am(*ep, kAmMessage, message_header(type, id, token_), std::move(payload), {}, 0, timeout);
  if (!*alive) co_return fail(Errc::cancelled, "request {} cancelled: the manager is shutting down", id);
  if (!sent && !pending->result) pending->result = tl::unexpected(sent.error());
  if (!pending->result) {
    (void)co_await pending->done.wait_for(deadline - std::chrono::steady_clock::now());
    if (!*alive) co_return fail(Errc::cancelled, "request {} cancelled: the manager is shutting down", id);
  }
  pending_.erase(id);
  if (!pending->result) {
    co_return fail(Errc::timeout, "timeout: no answer to request {} ('{:.40}') from peer {} within {} ms", id, type,
                   peer, timeout.count());
  }
  co_return std::move(*pending->result);
}

void ActiveMessageManager::accept_message(IncomingMessage message, ucp_ep* reply_ep) {
  auto handler = handlers_.find(message.type);
  if (handler == handlers_.end()) {
    const std::string text = fmt::format("unknown message type: {}", message.type);
    if (message.notification_id) {
      asio::co_spawn(worker_.executor(),
                     reply(message.peer, reply_ep, *message.notification_id, fail(Errc::not_found, "{}", text)),
                     asio::detached);
    } else {
      ++stats_.fire_and_forget_failures;
      spdlog::warn("transport: fire-and-forget from peer {}: {}", message.peer, text);
    }
    return;
  }
  if (stats_.queued >= options_.max_queued) {
    if (message.notification_id) {
      ++stats_.busy_refusals;
      asio::co_spawn(worker_.executor(),
                     reply(message.peer, reply_ep, *message.notification_id,
                           fail(Errc::busy, "busy: {} messages already queued (max_queued {})", stats_.queued,
                                options_.max_queued)),
                     asio::detached);
    } else {
      ++stats_.dropped;
      spdlog::warn("transport: dropped fire-and-forget '{}' from peer {}: queue full ({})", message.type, message.peer,
                   stats_.queued);
    }
    return;
  }
  ++stats_.queued;
  stats_.peak_queued = std::max(stats_.peak_queued, stats_.queued);
  asio::co_spawn(worker_.executor(), run_message(std::move(message), reply_ep, alive_), asio::detached);
}

asio::awaitable<void> ActiveMessageManager::run_message(IncomingMessage message, ucp_ep* reply_ep,
                                                        std::shared_ptr<bool> alive) {
  co_await permits_.acquire();
  if (!*alive) co_return;
  --stats_.queued;
  ++stats_.running;
  stats_.peak_running = std::max(stats_.peak_running, stats_.running);
  const auto handler = handlers_.at(message.type);  // a copy: captured resources stay alive
  const PeerId peer = message.peer;
  const auto id = message.notification_id;
  const std::string type = message.type;
  Result<Bytes> result = Bytes{};
  try {
    result = co_await handler(std::move(message));
  } catch (const std::exception& e) {
    result = fail(Errc::internal, "{}", e.what());
  } catch (...) {
    result = fail(Errc::internal, "unknown exception");
  }
  if (!*alive) co_return;
  // The permit is held until the handler is done, reply excluded.
  --stats_.running;
  ++stats_.handled;
  permits_.release();
  if (!result) {
    ++stats_.handler_failures;
    if (!id) {
      ++stats_.fire_and_forget_failures;
      spdlog::warn("transport: fire-and-forget '{}' from peer {} failed: {}", type, peer, result.error().message);
    }
  }
  if (id) co_await reply(peer, reply_ep, *id, result);
}

asio::awaitable<void> ActiveMessageManager::reply(PeerId peer, ucp_ep* reply_ep, std::uint64_t id,
                                                  const Result<Bytes>& result) {
  std::string text = result ? fmt::format("{}:ok", id) : fmt::format("{}:err({})", id, result.error().message);
  const std::size_t limit = worker_.max_am_header();
  if (text.size() > limit) text = text.substr(0, limit - 4) + "...)";
  Bytes header(text.size());
  std::memcpy(header.data(), text.data(), text.size());
  Bytes payload = result ? *result : Bytes{};
  std::shared_ptr<Endpoint> ep;
  if (peer != PeerId{0}) {
    auto known = endpoint(peer);
    if (!known) {
      spdlog::warn("transport: reply {} to peer {} dropped: {}", text, peer, known.error().message);
      co_return;
    }
    ep = *known;
  }
  if (ep) {
    auto st = co_await send_am(ep, kAmResponse, std::move(header), std::move(payload), {}, 0, kSendTimeout);
    if (!st) spdlog::warn("transport: reply {} to peer {} failed: {}", text, peer, st.error().message);
    co_return;
  }
  if (reply_ep == nullptr) {
    spdlog::warn("transport: reply {} dropped: the sender gave no reply endpoint", text);
    co_return;
  }
  // A sender we have no Endpoint for (connect-by-address): answer on UCX's reply ep.
  auto state = std::make_shared<detail::RequestState>(worker_.executor());
  auto owned = std::make_shared<std::pair<Bytes, Bytes>>(std::move(header), std::move(payload));
  state->keep = owned;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
  params.datatype = ucp_dt_make_contig(1);
  detail::bind_send_callback(params, state);
  ucs_status_ptr_t req = ucp_am_send_nbx(reply_ep, kAmResponse, owned->first.data(), owned->first.size(),
                                         owned->second.data(), owned->second.size(), &params);
  (void)co_await detail::await_request(worker_, req, params, state, "reply", kSendTimeout);
}

void ActiveMessageManager::accept_response(std::string_view text, Bytes payload) {
  const auto colon = text.find(':');
  std::uint64_t id = 0;
  if (colon == std::string_view::npos || std::from_chars(text.data(), text.data() + colon, id).ec != std::errc{}) {
    spdlog::error("transport: malformed response '{:.80}'", text);
    return;
  }
  auto it = pending_.find(id);
  if (it == pending_.end() || it->second->result) return;  // timed out earlier
  const std::string_view status = text.substr(colon + 1);
  if (status == "ok") {
    it->second->result = std::move(payload);
  } else if (status.starts_with("err(") && status.ends_with(")")) {
    const std::string_view message = status.substr(4, status.size() - 5);
    it->second->result = make_error(errc_of_text(message), std::string(message));
  } else {
    it->second->result = fail(Errc::protocol_error, "malformed response status '{:.80}'", status);
  }
  it->second->done.set();
}

void ActiveMessageManager::expose(const MemoryRegistration& registration) { exposed_.push_back(&registration); }

void ActiveMessageManager::unexpose(const MemoryRegistration& registration) { std::erase(exposed_, &registration); }

asio::awaitable<Status> ActiveMessageManager::write_chunks_am(PeerId peer, std::span<const RmaChunk> chunks,
                                                              std::chrono::milliseconds timeout) {
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  // Issue every chunk, then await them all: UCX pipelines the rendezvous.
  struct Inflight {
    std::shared_ptr<detail::RequestState> state;
    ucs_status_ptr_t req;
  };
  std::vector<Inflight> inflight;
  inflight.reserve(chunks.size());
  Status first_error = ok();
  auto headers = std::make_shared<std::vector<std::array<std::uint64_t, 2>>>(chunks.size());
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto& c = chunks[i];
    (*headers)[i] = {c.remote_address, c.length};
    auto state = std::make_shared<detail::RequestState>(worker_.executor());
    state->keep = headers;
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
    params.flags = UCP_AM_SEND_FLAG_RNDV;
    params.datatype = ucp_dt_make_contig(1);
    detail::bind_send_callback(params, state);
    ucs_status_ptr_t req =
        ucp_am_send_nbx((*ep)->handle(), kAmWrite, (*headers)[i].data(), 16, c.local, c.length, &params);
    if (req == nullptr) {
      detail::unbind_callback(params);
    } else if (UCS_PTR_IS_ERR(req)) {
      detail::unbind_callback(params);
      first_error = tl::unexpected(detail::ucx_error(fmt::format("bulk write to peer {}", peer), UCS_PTR_STATUS(req)));
      break;
    } else {
      inflight.push_back({state, req});
    }
  }
  worker_.kick();
  for (auto& f : inflight) (*ep)->track(f.state);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto& f : inflight) {
    const bool done = co_await f.state->done.wait_for(deadline - std::chrono::steady_clock::now());
    if (f.state->aborted) co_return tl::unexpected((*ep)->failure());
    if (!done) co_return fail(Errc::timeout, "bulk write to peer {}: not complete after {} ms", peer, timeout.count());
    ucp_request_free(f.req);
    if (f.state->status != UCS_OK && first_error) {
      first_error = tl::unexpected(detail::ucx_error(fmt::format("bulk write to peer {}", peer), f.state->status));
    }
  }
  if (!first_error && (*ep)->failed()) co_return tl::unexpected((*ep)->failure());
  co_return first_error;
}

}  // namespace kvb::transport
