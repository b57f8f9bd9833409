// Private to transport/src: the two ways the active-message parts put one
// AM on the wire (used by the manager, the peer directory and the handler
// replies alike).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>

#include <boost/asio/awaitable.hpp>

#include "kvb/transport/am_types.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/worker.h"

namespace kvb::transport::detail {

/// Bound on sends that have no caller's deadline (hello, replies, goodbyes).
constexpr auto kSendTimeout = std::chrono::milliseconds(30000);

/// An eager send UCX completes inside the call (nothing to await): ok, an
/// error, or nullopt when UCX cannot send at once (use am_send). Messages
/// (every AM id but `response_am_id`) carry the reply endpoint.
[[nodiscard]] std::optional<Status> am_send_now(Worker& worker, ucp_ep* ep, PeerId peer, unsigned am_id,
                                                std::span<const std::byte> header, std::span<const std::byte> payload);

/// am_send_now, else a tracked request that owns the buffers (ends with the
/// endpoint's failure if the endpoint fails first, or timeout).
boost::asio::awaitable<Status> am_send(Worker& worker, std::shared_ptr<Endpoint> ep, unsigned am_id, Bytes header,
                                       Bytes payload, std::chrono::milliseconds timeout);

}  // namespace kvb::transport::detail
