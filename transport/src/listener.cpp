#include "kvb/transport/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <boost/asio/post.hpp>

#include "ucx_request.h"

namespace kvb::transport {

namespace {

void on_conn_request(ucp_conn_request_h request, void* arg) {
  auto* state = static_cast<Listener::State*>(arg);
  // Create the endpoint outside ucp_worker_progress.
  asio::post(state->executor, [state = state->self.lock(), request] {
    if (state && state->alive && state->on_accept) state->on_accept(request);
  });
}

}  // namespace

Listener::Listener(Worker& worker, const std::string& host, std::uint16_t port, AcceptHandler on_accept)
    : worker_(worker), state_(std::make_shared<State>()) {
  state_->on_accept = std::move(on_accept);
  state_->executor = worker.executor();
  state_->self = state_;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    throw TransportError(Error{Errc::invalid_argument, fmt::format("host '{}' is not an IPv4 address", host)});
  }
  ucp_listener_params_t params{};
  params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  params.sockaddr.addrlen = sizeof(addr);
  params.conn_handler.cb = on_conn_request;
  params.conn_handler.arg = state_.get();
  ucs_status_t st = ucp_listener_create(worker.handle(), &params, &listener_);
  if (st != UCS_OK) detail::throw_ucx(fmt::format("ucp_listener_create on {}:{}", host, port), st);

  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  st = ucp_listener_query(listener_, &attr);
  if (st != UCS_OK) {
    ucp_listener_destroy(listener_);
    detail::throw_ucx("ucp_listener_query", st);
  }
  port_ = ntohs(reinterpret_cast<const sockaddr_in*>(&attr.sockaddr)->sin_port);
  worker.kick();
}

Listener::~Listener() {
  state_->alive = false;
  ucp_listener_destroy(listener_);
}

Result<std::unique_ptr<Listener>> Listener::create(Worker& worker, const std::string& host, std::uint16_t port,
                                                   AcceptHandler on_accept) {
  try {
    return std::make_unique<Listener>(worker, host, port, std::move(on_accept));
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
}

}  // namespace kvb::transport
