// Private helpers of transport/src: UCX status -> kvb::Error, and awaiting a
// UCX non-blocking request from a coroutine.
#pragma once

#include <chrono>
#include <memory>
#include <string_view>

#include <ucp/api/ucp.h>

#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"
#include "kvb/transport/async_sync.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/transport_error.h"
#include "kvb/transport/worker.h"

namespace kvb::transport::detail {

/// UCS_ERR_CONNECTION_RESET / ENDPOINT_TIMEOUT / UNREACHABLE -> peer_lost, ...
[[nodiscard]] Errc errc_of(ucs_status_t status) noexcept;
[[nodiscard]] Error ucx_error(std::string_view what, ucs_status_t status);
[[noreturn]] void throw_ucx(std::string_view what, ucs_status_t status);

/// Completion state of one UCX request, shared between the coroutine and the
/// UCX callback (which holds a reference until it runs).
struct RequestState {
  explicit RequestState(const asio::any_io_executor& ex) : done(ex) {}
  ucs_status_t status = UCS_INPROGRESS;
  std::size_t length = 0;      // received length (am recv)
  std::shared_ptr<void> keep;  // buffers UCX reads until completion
  bool aborted = false;        // ended by the endpoint's failure, not by UCX
  bool abandoned = false;      // the waiter left (timeout, abort): the callback frees the UCX request
  AsyncEvent done;
};

/// Fills params->cb / user_data so that completion sets `state`.
/// `kind` picks the callback signature: send (also RMA/flush) or am-recv.
void bind_send_callback(ucp_request_param_t& params, const std::shared_ptr<RequestState>& state);
void bind_am_recv_callback(ucp_request_param_t& params, const std::shared_ptr<RequestState>& state);
/// Releases the callback's reference if the request completed immediately or
/// failed (the callback will never run).
void unbind_callback(ucp_request_param_t& params);

/// Awaits a request returned by a *_nbx call made with bind_*_callback.
/// `what` names the operation in errors. A timeout leaves the request to UCX
/// (its state stays alive) and returns Errc::timeout. With `endpoint`, the
/// request also ends (peer_lost) as soon as the endpoint fails.
asio::awaitable<Status> await_request(Worker& worker, ucs_status_ptr_t request, ucp_request_param_t& params,
                                      std::shared_ptr<RequestState> state, std::string_view what,
                                      std::chrono::steady_clock::duration timeout, Endpoint* endpoint = nullptr);

}  // namespace kvb::transport::detail
