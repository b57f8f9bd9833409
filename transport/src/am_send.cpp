#include "am_send.h"

#include "am_wire.h"
#include "ucx_request.h"

namespace kvb::transport::detail {

namespace {

unsigned send_flags(unsigned am_id) {
  // Messages carry the reply endpoint (it names senders without a hello);
  // responses need none.
  return am_id == wire::kAmResponse ? 0U : unsigned{UCP_AM_SEND_FLAG_REPLY};
}

}  // namespace

std::optional<Status> am_send_now(Worker& worker, ucp_ep* ep, PeerId peer, unsigned am_id,
                                  std::span<const std::byte> header, std::span<const std::byte> payload) {
  // Most small eager sends complete inside ucp_am_send_nbx; ask UCX to
  // finish now or refuse (NO_RESOURCE): no request state, callback or
  // buffer handover.
  ucp_request_param_t imm{};
  imm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
  imm.flags = send_flags(am_id);
  imm.datatype = ucp_dt_make_contig(1);
  ucs_status_ptr_t req = ucp_am_send_nbx(ep, am_id, header.data(), header.size(), payload.data(), payload.size(), &imm);
  if (req == nullptr) return ok();
  if (UCS_PTR_IS_ERR(req)) {
    if (UCS_PTR_STATUS(req) == UCS_ERR_NO_RESOURCE) return std::nullopt;
    return tl::unexpected(ucx_error(fmt::format("am send to peer {}", peer), UCS_PTR_STATUS(req)));
  }
  // Not expected with FORCE_IMM_CMPL: UCX took a request; it owns nothing of
  // ours after completion, so wait for it here (bounded by progress).
  while (ucp_request_check_status(req) == UCS_INPROGRESS) worker.progress_once();
  const ucs_status_t st = ucp_request_check_status(req);
  ucp_request_free(req);
  if (st != UCS_OK) return tl::unexpected(ucx_error(fmt::format("am send to peer {}", peer), st));
  return ok();
}

asio::awaitable<Status> am_send(Worker& worker, std::shared_ptr<Endpoint> ep, unsigned am_id, Bytes header,
                                Bytes payload, std::chrono::milliseconds timeout) {
  if (ep->failed()) co_return tl::unexpected(ep->failure());
  if (auto now = am_send_now(worker, ep->handle(), ep->peer(), am_id, header, payload)) co_return std::move(*now);
  // UCX cannot send at once: a tracked request that owns the buffers.
  auto state = std::make_shared<RequestState>(worker.executor());
  auto owned = std::make_shared<std::pair<Bytes, Bytes>>(std::move(header), std::move(payload));
  state->keep = owned;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
  params.flags = send_flags(am_id);
  params.datatype = ucp_dt_make_contig(1);
  bind_send_callback(params, state);
  ucs_status_ptr_t req = ucp_am_send_nbx(ep->handle(), am_id, owned->first.data(), owned->first.size(),
                                         owned->second.data(), owned->second.size(), &params);
  auto st = co_await await_request(worker, req, params, state, fmt::format("am send to peer {}", ep->peer()), timeout,
                                   ep.get());
  if (!st && ep->failed()) co_return tl::unexpected(ep->failure());
  co_return st;
}

}  // namespace kvb::transport::detail
