#include "ucx_request.h"

#include <fmt/format.h>

namespace kvb::transport::detail {

Errc errc_of(ucs_status_t status) noexcept {
  switch (status) {
    case UCS_OK: return Errc::ok;
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED: return Errc::peer_lost;
    case UCS_ERR_CANCELED: return Errc::cancelled;
    case UCS_ERR_TIMED_OUT: return Errc::timeout;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT: return Errc::out_of_capacity;
    case UCS_ERR_INVALID_PARAM: return Errc::invalid_argument;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NO_DEVICE: return Errc::unavailable;
    case UCS_ERR_BUSY: return Errc::busy;
    default: return Errc::io_error;
  }
}

Error ucx_error(std::string_view what, ucs_status_t status) {
  return Error{errc_of(status), fmt::format("{}: {}", what, ucs_status_string(status))};
}

void throw_ucx(std::string_view what, ucs_status_t status) { throw TransportError(ucx_error(what, status)); }

namespace {

void on_send(void* request, ucs_status_t status, void* user_data) {
  auto* holder = static_cast<std::shared_ptr<RequestState>*>(user_data);
  (*holder)->status = status;
  (*holder)->done.set();
  if ((*holder)->abandoned) ucp_request_free(request);  // its waiter will not
  delete holder;
}

void on_am_recv(void* request, ucs_status_t status, size_t length, void* user_data) {
  auto* holder = static_cast<std::shared_ptr<RequestState>*>(user_data);
  (*holder)->status = status;
  (*holder)->length = length;
  (*holder)->done.set();
  if ((*holder)->abandoned) ucp_request_free(request);
  delete holder;
}

}  // namespace

void bind_send_callback(ucp_request_param_t& params, const std::shared_ptr<RequestState>& state) {
  params.op_attr_mask |= UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.send = on_send;
  params.user_data = new std::shared_ptr<RequestState>(state);
}

void bind_am_recv_callback(ucp_request_param_t& params, const std::shared_ptr<RequestState>& state) {
  params.op_attr_mask |= UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.recv_am = on_am_recv;
  params.user_data = new std::shared_ptr<RequestState>(state);
}

void unbind_callback(ucp_request_param_t& params) {
  delete static_cast<std::shared_ptr<RequestState>*>(params.user_data);
  params.user_data = nullptr;
}

asio::awaitable<Status> await_request(Worker& worker, ucs_status_ptr_t request, ucp_request_param_t& params,
                                      std::shared_ptr<RequestState> state, std::string_view what,
                                      std::chrono::steady_clock::duration timeout, Endpoint* endpoint) {
  if (request == nullptr) {
    unbind_callback(params);
    co_return ok();
  }
  if (UCS_PTR_IS_ERR(request)) {
    unbind_callback(params);
    co_return tl::unexpected(ucx_error(what, UCS_PTR_STATUS(request)));
  }
  worker.kick();
  if (endpoint != nullptr) endpoint->track(state);
  const bool finished = co_await state->done.wait_for(timeout);
  if (state->aborted || !finished) {
    // Left to UCX: its callback, when the request completes or is cancelled
    // (at the latest when the endpoint closes), releases our reference and
    // frees the request (before, nobody did: UCX warned of requests "not
    // returned to mpool" when the worker was destroyed). The buffers stay
    // alive with the state until then.
    if (state->status == UCS_INPROGRESS) {
      state->abandoned = true;
    } else {
      ucp_request_free(request);  // the callback ran after the abort
    }
    if (state->aborted) co_return tl::unexpected(endpoint->failure());
    co_return fail(Errc::timeout, "{}: not complete after {} ms", what,
                   std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
  }
  ucp_request_free(request);
  if (state->status != UCS_OK) co_return tl::unexpected(ucx_error(what, state->status));
  co_return ok();
}

}  // namespace kvb::transport::detail
