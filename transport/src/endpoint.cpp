#include "kvb/transport/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include <boost/asio/post.hpp>

#include "ucx_request.h"

namespace kvb::transport {

namespace {

constexpr auto kCloseTimeout = std::chrono::seconds(5);

void on_ep_error(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* state = static_cast<Endpoint::State*>(arg);
  if (state->failed) return;
  state->failed = true;
  state->failure = Error{Errc::peer_lost, fmt::format("peer lost: {} ({})", state->peer, ucs_status_string(status))};
  state->abort_inflight();
  if (!state->on_error) return;
  // Never call user code from inside ucp_worker_progress: defer it.
  asio::post(state->executor,
             [handler = state->on_error, peer = state->peer, error = state->failure] { handler(peer, error); });
}

}  // namespace

void Endpoint::State::abort_inflight() {
  for (auto& weak : inflight) {
    if (auto r = weak.lock(); r && r->status == UCS_INPROGRESS) {
      r->aborted = true;
      r->done.set();
    }
  }
  inflight.clear();
}

void Endpoint::mark_failed(const Error& error) {
  if (state_->failed) return;
  state_->failed = true;
  state_->failure = error;
  state_->abort_inflight();
}

void Endpoint::track(const std::shared_ptr<detail::RequestState>& request) {
  if (state_->failed) {
    request->aborted = true;
    request->done.set();
    return;
  }
  std::erase_if(state_->inflight, [](const auto& w) { return w.expired(); });
  state_->inflight.push_back(request);
}

void Endpoint::finish_create(const void* raw_params) {
  ucp_ep_params_t params = *static_cast<const ucp_ep_params_t*>(raw_params);
  params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  // sysv/posix/self refuse PEER mode in UCX 1.13 (ActiveMessageManager
  // watches such peers through their process instead).
  params.err_mode = detects_failure_ ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  params.err_handler.cb = on_ep_error;
  params.err_handler.arg = state_.get();
  const ucs_status_t st = ucp_ep_create(worker_.handle(), &params, &ep_);
  if (st != UCS_OK) {
    throw TransportError(Error{detail::errc_of(st) == Errc::peer_lost ? Errc::peer_lost : Errc::io_error,
                               fmt::format("ucp_ep_create for peer {}: {}", peer_, ucs_status_string(st))});
  }
  worker_.kick();
}

// Shared by the public constructors: the state every endpoint has before its
// ucp_ep is created (a throw after this still runs ~Endpoint, which skips a
// null ep_).
Endpoint::Endpoint(Worker& worker, PeerId peer, EndpointErrorHandler on_error)
    : worker_(worker),
      peer_(peer),
      state_(std::make_shared<State>()),
      detects_failure_(worker.context().peer_failure_detection()),
      worker_exists_(worker.exists()) {
  state_->peer = peer;
  state_->on_error = std::move(on_error);
  state_->executor = worker.executor();
}

Endpoint::Endpoint(Worker& worker, const std::string& host, std::uint16_t port, PeerId peer,
                   EndpointErrorHandler on_error)
    : Endpoint(worker, peer, std::move(on_error)) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    throw TransportError(Error{Errc::invalid_argument, fmt::format("host '{}' is not an IPv4 address", host)});
  }
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
  params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  params.sockaddr.addrlen = sizeof(addr);
  finish_create(&params);
}

Endpoint::Endpoint(Worker& worker, ucp_conn_request* request, PeerId peer, EndpointErrorHandler on_error)
    : Endpoint(worker, peer, std::move(on_error)) {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST;
  params.conn_request = request;
  finish_create(&params);
}

Endpoint::Endpoint(Worker& worker, std::span<const std::byte> worker_address, PeerId peer,
                   EndpointErrorHandler on_error)
    : Endpoint(worker, peer, std::move(on_error)) {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  params.address = reinterpret_cast<const ucp_address_t*>(worker_address.data());
  finish_create(&params);
}

Result<std::unique_ptr<Endpoint>> Endpoint::connect(Worker& worker, const std::string& host, std::uint16_t port,
                                                    PeerId peer, EndpointErrorHandler on_error) {
  try {
    return std::make_unique<Endpoint>(worker, host, port, peer, std::move(on_error));
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
}

Endpoint::~Endpoint() {
  // A destroyed worker already took its endpoints with it.
  if (closed_ || ep_ == nullptr || !*worker_exists_) return;
  closed_ = true;
  state_->on_error = nullptr;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep_, &params);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) return;
  // Bounded, and asleep on the worker's event fd while UCX has nothing to do.
  (void)worker_.progress_until([req] { return ucp_request_check_status(req) != UCS_INPROGRESS; },
                               std::chrono::steady_clock::now() + kCloseTimeout);
  ucp_request_free(req);
}

asio::awaitable<Status> Endpoint::flush() {
  if (state_->failed) co_return tl::unexpected(state_->failure);
  auto state = std::make_shared<detail::RequestState>(worker_.executor());
  ucp_request_param_t params{};
  detail::bind_send_callback(params, state);
  ucs_status_ptr_t req = ucp_ep_flush_nbx(ep_, &params);
  auto st = co_await detail::await_request(worker_, req, params, state, fmt::format("flush to peer {}", peer_),
                                           std::chrono::seconds(30), this);
  if (!st && state_->failed) co_return tl::unexpected(state_->failure);
  co_return st;
}

asio::awaitable<void> Endpoint::close() {
  if (closed_) co_return;
  closed_ = true;
  state_->on_error = nullptr;
  auto state = std::make_shared<detail::RequestState>(worker_.executor());
  ucp_request_param_t params{};
  detail::bind_send_callback(params, state);
  if (state_->failed) {
    params.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    params.flags = UCP_EP_CLOSE_FLAG_FORCE;
  }
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep_, &params);
  (void)co_await detail::await_request(worker_, req, params, state, "close", kCloseTimeout);
}

}  // namespace kvb::transport
