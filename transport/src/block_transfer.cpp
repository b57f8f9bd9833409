#include "kvb/transport/block_transfer.h"

#include <algorithm>

#include "ucx_request.h"

namespace kvb::transport {

namespace {

/// Whether every transport of the comma-separated list `tls` puts into
/// registered caller memory with a lane of its own (no software emulation).
bool puts_reach_caller_memory(std::string_view tls) noexcept {
  static constexpr std::string_view kRegistering[] = {"self", "rc",   "rc_v",    "rc_x", "rc_verbs", "rc_mlx5",
                                                      "dc",   "dc_x", "dc_mlx5", "ib",   "xpmem"};
  if (tls.empty()) return false;
  while (!tls.empty()) {
    const auto comma = tls.find(',');
    const auto name = tls.substr(0, comma);
    if (std::find(std::begin(kRegistering), std::end(kRegistering), name) == std::end(kRegistering)) return false;
    tls = comma == std::string_view::npos ? std::string_view{} : tls.substr(comma + 1);
  }
  return true;
}

}  // namespace

BulkProtocol protocol_for_tls(std::string_view tls, Destination destination) noexcept {
  if (tls == "tcp") return BulkProtocol::am_rendezvous;
  if (destination == Destination::caller_memory && !puts_reach_caller_memory(tls)) return BulkProtocol::am_rendezvous;
  return BulkProtocol::rma_put;
}

std::string_view to_string(BulkProtocol protocol) noexcept {
  return protocol == BulkProtocol::rma_put ? "rma_put" : "am_rendezvous";
}

Result<std::vector<RmaChunk>> chunks_of_plan(const TransferPlan& plan,
                                             std::span<const std::uint64_t> remote_region_bases) {
  if (remote_region_bases.size() < plan.dst().regions.size()) {
    return fail(Errc::invalid_argument, "remote_region_bases has {} entries, the plan's destination has {} regions",
                remote_region_bases.size(), plan.dst().regions.size());
  }
  std::vector<RmaChunk> chunks;
  chunks.reserve(plan.runs().size());
  for (const CopyRun& run : plan.runs()) {
    chunks.push_back({plan.src_address(run), remote_region_bases[run.dst_region] + run.dst_offset, run.bytes});
  }
  return chunks;
}

namespace {

asio::awaitable<Status> rma_chunks(Endpoint& endpoint, const RemoteKey& rkey, std::span<const RmaChunk> chunks,
                                   std::chrono::milliseconds timeout, bool put, const MemoryRegistration* local) {
  if (endpoint.failed()) co_return tl::unexpected(endpoint.failure());
  for (const auto& c : chunks) {
    ucp_request_param_t params{};
    if (local != nullptr) {
      params.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
      params.memh = local->handle();
    }
    ucs_status_ptr_t req =
        put ? ucp_put_nbx(endpoint.handle(), c.local, c.length, c.remote_address, rkey.handle(), &params)
            : ucp_get_nbx(endpoint.handle(), c.local, c.length, c.remote_address, rkey.handle(), &params);
    if (UCS_PTR_IS_ERR(req)) {
      co_return tl::unexpected(detail::ucx_error(fmt::format("{} of {} bytes at {:#x} (peer {})", put ? "put" : "get",
                                                             c.length, c.remote_address, endpoint.peer()),
                                                 UCS_PTR_STATUS(req)));
    }
    // Completion is covered by the flush below; release the handle now.
    if (req != nullptr) ucp_request_free(req);
  }
  auto state = std::make_shared<detail::RequestState>(endpoint.worker().executor());
  ucp_request_param_t params{};
  detail::bind_send_callback(params, state);
  ucs_status_ptr_t req = ucp_ep_flush_nbx(endpoint.handle(), &params);
  auto st = co_await detail::await_request(
      endpoint.worker(), req, params, state,
      fmt::format("flush after {} {} chunks to peer {}", chunks.size(), put ? "put" : "get", endpoint.peer()), timeout,
      &endpoint);
  if (!st && endpoint.failed()) co_return tl::unexpected(endpoint.failure());
  co_return st;
}

}  // namespace

asio::awaitable<Status> put_chunks(Endpoint& endpoint, const RemoteKey& rkey, std::span<const RmaChunk> chunks,
                                   std::chrono::milliseconds timeout, const MemoryRegistration* local) {
  co_return co_await rma_chunks(endpoint, rkey, chunks, timeout, true, local);
}

asio::awaitable<Status> get_chunks(Endpoint& endpoint, const RemoteKey& rkey, std::span<const RmaChunk> chunks,
                                   std::chrono::milliseconds timeout, const MemoryRegistration* local) {
  co_return co_await rma_chunks(endpoint, rkey, chunks, timeout, false, local);
}

asio::awaitable<Result<Bytes>> write_then_notify(ActiveMessageManager& manager, PeerId peer, BulkProtocol protocol,
                                                 const RemoteKey* rkey, std::span<const RmaChunk> chunks,
                                                 std::string type, Bytes payload, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Status moved = ok();
  if (protocol == BulkProtocol::rma_put) {
    if (rkey == nullptr) co_return fail(Errc::invalid_argument, "rma_put to peer {} needs a remote key", peer);
    auto ep = manager.endpoint(peer);
    if (!ep) co_return tl::unexpected(ep.error());
    moved = co_await put_chunks(**ep, *rkey, chunks, timeout);
  } else {
    moved = co_await manager.write_chunks_am(peer, chunks, timeout);
  }
  if (!moved) co_return tl::unexpected(moved.error());
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  co_return co_await manager.send_notification_after_writes(peer, std::move(type), std::move(payload),
                                                            std::max(left, std::chrono::milliseconds(1)));
}

}  // namespace kvb::transport
